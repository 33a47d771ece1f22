//! `livekit-ingress`, the managed service: the `livekit.Ingress` API over a store
//! of IngressInfo, one RTMP port for every ingress (and, with `srt_port`, one
//! SRT port taking the same stream keys), WHIP on the API's HTTP port (`/w`),
//! and a pipeline of the plugin's elements for each accepted stream.
//!
//! - [`config`]: YAML and environment.
//! - [`ingress`]: LiveKit's semantics (validation, create, update, may a stream start).
//! - [`store`]: the embedded SQLite store, or Redis shared by several nodes.
//! - [`sessions`]: publish decisions and live sessions, keeping IngressState true.
//! - [`api`]: Twirp, health, metrics.
//! - [`ingress_options`], [`options_api`]: an ingress's settings beyond
//!   LiveKit's API (H.264 pass-through), kept in the store, set over HTTP.
//! - [`serve`]: the HTTP server under them, with deadlines.
//! - [`webhooks`]: ingress_started / ingress_ended, signed as LiveKit signs them.

pub mod api;
pub mod capacity;
pub mod config;
pub mod ingress;
pub mod ingress_options;
pub mod options_api;
pub mod process_stats;
pub mod serve;
pub mod sessions;
pub mod store;
pub mod webhooks;

use crate::input::Refusal;
use crate::rtmp::listener::{self, Decision, Listener, ListenerConfig};
use std::sync::Arc;
use std::time::Duration;

/// A running service: dropping it does not stop it, [`Service::shutdown`] does.
pub struct Service {
    pub config: config::Config,
    pub sessions: Arc<sessions::Sessions>,
    pub store: Arc<dyn store::Store>,
    pub http_addr: std::net::SocketAddr,
    pub rtmp_addr: std::net::SocketAddr,
    /// Where SRT callers publish, when `srt_port` is set.
    pub srt_addr: Option<std::net::SocketAddr>,
    /// Where `/metrics` is served when `prometheus_port` is set.
    pub metrics_addr: Option<std::net::SocketAddr>,
    listener: Arc<Listener>,
    whip: Arc<crate::whip::listener::Listener>,
    srt_listener: Option<Arc<crate::srt::listener::Listener>>,
    /// The API's server, and the metrics' own when it has one.
    http: Vec<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Opens the store, listens for RTMP and serves the API. Call from a tokio runtime.
    pub async fn start(config: config::Config) -> Result<Service, String> {
        // Also for a configuration that did not come through Config::load.
        let mut config = config.checked_exposure()?;
        if config.whip_base_url.is_empty() {
            // A configuration that did not come through Config::load.
            let host = if config::is_loopback(&config.bind_address)
                || config.bind_address == "0.0.0.0"
                || config.bind_address == "::"
            {
                "127.0.0.1"
            } else {
                config.bind_address.as_str()
            };
            config.whip_base_url = format!("http://{host}:{}/w", config.http_port);
        }
        gst::init().map_err(|e| format!("GStreamer: {e}"))?;
        let _ = crate::plugin_register_static();
        let store = store::open(&config.store)?;
        store::settle_orphans(store.as_ref())?;
        // The API's port first: WHIP is served there, and sessions name it.
        let api_listener = bind(&config.bind_address, config.http_port).await?;
        let http_addr = api_listener.local_addr().map_err(|e| e.to_string())?;
        config.http_port = http_addr.port();
        let sessions = sessions::Sessions::new(config.clone(), store.clone())?;

        let listener = listener::listener(&ListenerConfig {
            address: config.bind_address.clone(),
            port: config.rtmp_port,
            tls: None,
            handshake_timeout: Duration::from_secs(config.rtmp_limits.publish_deadline.into()),
            idle_timeout: Duration::from_secs(30),
        })
        .map_err(|e| e.to_string())?;
        listener.set_limits(pending_limits(&config));
        listener.set_authorizer(Some(authorizer(&sessions)));
        let srt_listener = start_srt(&config, &sessions)?;

        let whip = crate::whip::listener::mount(&config.bind_address, http_addr);
        whip.set_authorizer(Some(authorizer(&sessions)));

        let api = Arc::new(api::Api::new(store.clone(), sessions.clone(), &config));
        let router = api::router(api.clone(), config.prometheus_port.is_none())
            .merge(crate::whip::listener::router(&whip));
        let mut http = vec![tokio::spawn(serve::serve(api_listener, router))];
        let mut metrics_addr = None;
        if let Some(port) = config.prometheus_port {
            let (addr, server) =
                listen(&config.bind_address, port, api::metrics_router(api)).await?;
            metrics_addr = Some(addr);
            http.push(server);
        }
        let rtmp_addr = listener.local_addr();
        let srt_addr = srt_listener.as_ref().map(|l| l.local_addr());
        tracing::info!(%http_addr, %rtmp_addr, ?srt_addr, ws_url = %config.ws_url, "livekit-ingress ready");
        Ok(Service {
            config,
            sessions,
            store,
            http_addr,
            rtmp_addr,
            srt_addr,
            metrics_addr,
            listener,
            whip,
            srt_listener,
            http,
        })
    }

    /// The first half of a graceful stop: no new publish is taken (refused
    /// with the reason, `/health` not ready) while live streams go on, until
    /// none is left, `drain_timeout` has passed, or `cut_short` fires (a
    /// second signal). Whether every stream ended by itself.
    pub async fn drain(&self, cut_short: impl std::future::Future) -> bool {
        self.sessions.drain();
        let live = self.sessions.live_count();
        let timeout = std::time::Duration::from_secs(self.config.drain_timeout.into());
        if live > 0 {
            tracing::info!("draining: {live} live streams go on for up to {timeout:?}; no new publish is taken");
        }
        self.sessions.wait_drained(timeout, cut_short).await
    }

    /// Ends live streams cleanly (participants leave, ingresses inactive) and stops serving.
    pub async fn shutdown(self) {
        self.listener.set_authorizer(None);
        self.whip.set_authorizer(None);
        if let Some(srt) = &self.srt_listener {
            srt.set_authorizer(None);
        }
        let sessions = self.sessions.clone();
        let _ = tokio::task::spawn_blocking(move || sessions.stop_all()).await;
        let _ = store::settle_orphans(self.store.as_ref());
        for server in self.http {
            server.abort();
        }
    }
}

/// Bounds on connections that have not started publishing, RTMP and SRT alike.
fn pending_limits(config: &config::Config) -> crate::rtmp::admission::Limits {
    crate::rtmp::admission::Limits {
        max_pending: config.rtmp_limits.max_pending_connections,
        max_pending_per_ip: config.rtmp_limits.max_pending_per_address,
        ..Default::default()
    }
}

/// The sessions' answer to every push publish, off the IO runtime's threads.
fn authorizer(sessions: &Arc<sessions::Sessions>) -> crate::input::Authorizer {
    let decider = sessions.clone();
    Arc::new(move |request| {
        let sessions = decider.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || sessions.authorize(request))
                .await
                .unwrap_or_else(|e| {
                    Decision::Reject(Refusal::internal(format!("internal error: {e}")))
                })
        })
    })
}

/// The SRT listener on `srt_port`, when set: an RTMP ingress's stream key is
/// also taken there (`srt://HOST:srt_port?streamid=KEY`), under the same
/// bounds as RTMP callers before their publish is accepted.
fn start_srt(
    config: &config::Config,
    sessions: &Arc<sessions::Sessions>,
) -> Result<Option<Arc<crate::srt::listener::Listener>>, String> {
    let Some(port) = config.srt_port else {
        return Ok(None);
    };
    let listener = crate::srt::listener::listener(&crate::srt::listener::ListenerConfig {
        address: config.bind_address.clone(),
        port,
        decision_timeout: Duration::from_secs(config.rtmp_limits.publish_deadline.into()),
        idle_timeout: Duration::from_secs(10),
    })
    .map_err(|e| e.to_string())?;
    listener.set_limits(pending_limits(config));
    listener.set_authorizer(Some(authorizer(sessions)));
    Ok(Some(listener))
}

async fn bind(address: &str, port: u16) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind((address, port))
        .await
        .map_err(|e| format!("cannot listen on {address}:{port}: {e}"))
}

/// Binds `address:port` and serves `router` there (see [`serve`]).
async fn listen(
    address: &str,
    port: u16,
    router: axum::Router,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = bind(address, port).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((addr, tokio::spawn(serve::serve(listener, router))))
}
