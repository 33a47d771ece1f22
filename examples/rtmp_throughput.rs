//! How many concurrent 6 Mbps RTMP publishes one core can demux.
//!
//! N ffmpeg processes stream the same 6 Mbps FLV (`-re -c copy`) into this
//! process; each publish goes through the shared listener, the sans-IO session,
//! FLV parsing and `rtmpingresssrc` into a fakesink. The process's own CPU time
//! (ffmpeg's is not counted) per stream-second is compared with a baseline
//! measured in the same run: the same streams read by a bare TCP server that
//! answers nothing (ffmpeg is pointed at a plain socket via a raw `-f flv` push
//! through `tcp://`), i.e. the cost of just receiving the bytes.
//!
//!   cargo run --release --example rtmp_throughput -- [streams] [seconds]

use gst::prelude::*;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let after = stat.rsplit(") ").next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn ffmpeg(input: &std::path::Path, url: &str, format_args: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-i",
        ])
        .arg(input)
        .args(["-c", "copy"])
        .args(format_args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let streams: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    gst::init().expect("gstreamer");
    gstlivekitingress::plugin_register_static().expect("plugin");

    let dir = std::env::temp_dir().join(format!("rtmp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let input = dir.join("6mbps.flv");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=30",
        ])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args([
            "-t",
            &(seconds + 1).to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-b:v", "6M", "-maxrate", "6M", "-bufsize", "6M", "-g", "60", "-c:a", "aac", "-f",
            "flv",
        ])
        .arg(&input)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "cannot make the input");
    let size = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    println!(
        "input: {:.1} Mbit/s FLV, {streams} concurrent streams, {seconds} s",
        size as f64 * 8.0 / f64::from(seconds + 1) / 1e6
    );

    // Baseline: a TCP server that only reads what arrives.
    let port = free_port();
    let server = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let reader = std::thread::spawn(move || {
        let mut threads = Vec::new();
        for _ in 0..streams {
            let Ok((mut s, _)) = server.accept() else {
                break;
            };
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }));
        }
        for t in threads {
            let _ = t.join();
        }
    });
    let before = cpu_seconds();
    let started = Instant::now();
    let mut children: Vec<Child> = (0..streams)
        .map(|_| ffmpeg(&input, &format!("tcp://127.0.0.1:{port}"), &["-f", "flv"]))
        .collect();
    for c in &mut children {
        let _ = c.wait();
    }
    let _ = reader.join();
    let baseline = (cpu_seconds() - before) / (streams as f64 * started.elapsed().as_secs_f64());

    // The ingress: rtmpingresssrc per stream key, into fakesinks.
    let port = free_port();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pipeline = gst::Pipeline::new();
    for i in 0..streams {
        let src = gst::ElementFactory::make("rtmpingresssrc")
            .property("address", "127.0.0.1")
            .property("port", u32::from(port))
            .property("stream-key", format!("bench{i}"))
            .build()
            .expect("rtmpingresssrc");
        pipeline.add(&src).expect("add");
        let weak = pipeline.downgrade();
        let counter = received.clone();
        src.connect_pad_added(move |_, pad| {
            let counter = counter.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                    counter.fetch_add(b.size() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .build()
                .expect("fakesink");
            pipeline.add(&sink).expect("add");
            sink.sync_state_with_parent().expect("sync");
            let _ = pad.link(&sink.static_pad("sink").expect("sink"));
        });
    }
    pipeline.set_state(gst::State::Playing).expect("playing");
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_seconds();
    let started = Instant::now();
    let mut children: Vec<Child> = (0..streams)
        .map(|i| {
            ffmpeg(
                &input,
                &format!("rtmp://127.0.0.1:{port}/live/bench{i}"),
                &["-f", "flv"],
            )
        })
        .collect();
    for c in &mut children {
        let _ = c.wait();
    }
    let stream_seconds = streams as f64 * started.elapsed().as_secs_f64();
    let ingress = (cpu_seconds() - before) / stream_seconds;
    let mbits =
        received.load(std::sync::atomic::Ordering::Relaxed) as f64 * 8.0 / stream_seconds / 1e6;
    println!("demuxed {mbits:.1} Mbit/s of media per stream");
    assert!(mbits > 4.0, "the publishes did not get through");
    let _ = pipeline.set_state(gst::State::Null);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "CPU per stream: bare TCP read {:.4} core, rtmpingresssrc {:.4} core ({:.2}x)",
        baseline,
        ingress,
        ingress / baseline.max(1e-9)
    );
    println!(
        "=> one core demuxes about {:.0} concurrent 6 Mbit/s publishes",
        1.0 / ingress.max(1e-9)
    );
}
