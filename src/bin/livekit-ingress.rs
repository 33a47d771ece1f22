//! `livekit-ingress`: the LiveKit Ingress service (see the README).

use gstlivekitingress::supervisor::{config::Config, Service};
use std::path::PathBuf;

const USAGE: &str = "usage: livekit-ingress [--config FILE]

Serves the LiveKit Ingress API and accepts RTMP streams for the ingresses it
manages. With no configuration it runs next to a LiveKit server in dev mode on
this machine (ws://127.0.0.1:7880, devkey/secret), RTMP on :1935, API on :7888,
listening on loopback only: with the dev credentials it refuses any other
bind_address. Set a real API key and secret to serve other hosts.
Environment: LIVEKIT_API_KEY, LIVEKIT_API_SECRET, LIVEKIT_WS_URL,
LIVEKIT_INGRESS_BIND_ADDRESS, LIVEKIT_INGRESS_RTMP_PORT, LIVEKIT_INGRESS_HTTP_PORT,
LIVEKIT_INGRESS_PROMETHEUS_PORT, LIVEKIT_INGRESS_RTMP_BASE_URL,
LIVEKIT_INGRESS_SQLITE, LIVEKIT_INGRESS_REDIS_ADDRESS, LIVEKIT_INGRESS_REDIS_PASSWORD,
LIVEKIT_INGRESS_CONFIG (a YAML body).";

fn parse_args() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?))
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" | "-V" => {
                println!("livekit-ingress {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(config)
}

fn main() {
    // Before any thread allocates: see `heap`.
    let heap_bounded = gstlivekitingress::heap::bound_heap_growth();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(serve(heap_bounded));
}

async fn serve(heap_bounded: bool) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match parse_args().and_then(|path| Config::load(path.as_deref())) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("livekit-ingress: {e}");
            std::process::exit(2);
        }
    };
    if config.dev_credentials() {
        eprintln!(
            "livekit-ingress: dev credentials (api_secret is LiveKit's dev secret): \
             listening on {} only; set api_key/api_secret to serve other hosts",
            config.bind_address
        );
    }
    // Idle connections should meet the listener's own bounds, not a soft
    // descriptor limit far below what the system allows.
    match gstlivekitingress::fdlimit::raise_nofile_limit() {
        Ok(limit) => tracing::info!("open files limit: {limit}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    if heap_bounded {
        tracing::debug!("large allocations mapped from 128 KiB up (heap growth bounded)");
    }
    let service = match Service::start(config).await {
        Ok(service) => service,
        Err(e) => {
            eprintln!("livekit-ingress: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "livekit-ingress: API on http://{}, RTMP on {}",
        service.http_addr, service.rtmp_addr
    );
    if let Some(addr) = service.metrics_addr {
        println!("livekit-ingress: metrics on http://{addr}/metrics");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            eprintln!("livekit-ingress: interrupted, ending live streams");
        }
        _ = term.recv() => {
            // A rolling update: let live streams go on for the drain time;
            // a second signal (SIGTERM or SIGINT) ends them at once.
            eprintln!("livekit-ingress: SIGTERM, draining (a second signal ends live streams now)");
            let second = async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            };
            if !service.drain(second).await {
                eprintln!("livekit-ingress: drain over, ending live streams");
            }
        }
    }
    service.shutdown().await;
}
