//! How many concurrent 6 Mbps RTMP publishes one core can demux.
//!
//! N ffmpeg processes stream the same 6 Mbps FLV (`-re -c copy`) into this
//! process; each publish goes through the shared listener, the sans-IO session,
//! FLV parsing and `rtmpingresssrc` into a fakesink. This process's own CPU time
//! (getrusage; ffmpeg's is not counted) per stream-second is compared with a
//! baseline measured in the same run: the same streams pushed by ffmpeg as raw
//! FLV over plain TCP to a reader that only receives the bytes. The two are
//! measured alternately, `runs` times, and the medians are reported.
//!
//!   cargo run --release --example rtmp_throughput -- [streams] [seconds] [runs]

use gst::prelude::*;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// User + system CPU seconds of this process, microsecond resolution.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn ffmpeg_push(input: &Path, url: &str) -> Child {
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
        .args(["-c", "copy", "-f", "flv"])
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

fn make_input(path: &Path, seconds: u32) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "6M"])
        .args(["-maxrate", "6M", "-bufsize", "6M", "-g", "60"])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "cannot make the input");
}

/// Runs `children` to their end and returns this process's CPU seconds per
/// stream-second over that time.
fn measure(children: Vec<Child>) -> f64 {
    let streams = children.len() as f64;
    let before = cpu_seconds();
    let started = Instant::now();
    for mut c in children {
        let _ = c.wait();
    }
    (cpu_seconds() - before) / (streams * started.elapsed().as_secs_f64())
}

/// Baseline: a TCP server that only reads what arrives.
fn bare_tcp(input: &Path, streams: usize) -> f64 {
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let reader = std::thread::spawn(move || {
        let readers: Vec<_> = (0..streams)
            .filter_map(|_| server.accept().ok())
            .map(|(mut s, _)| {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                })
            })
            .collect();
        for r in readers {
            let _ = r.join();
        }
    });
    let children = (0..streams)
        .map(|_| ffmpeg_push(input, &format!("tcp://127.0.0.1:{port}")))
        .collect();
    let cpu = measure(children);
    let _ = reader.join();
    cpu
}

/// The ingress: one rtmpingresssrc per stream key, into fakesinks. Returns the
/// CPU per stream-second and the media bit rate demuxed per stream.
fn ingress(input: &Path, streams: usize) -> (f64, f64) {
    let port = free_port();
    let received = Arc::new(AtomicU64::new(0));
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
                    counter.fetch_add(b.size() as u64, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            // Not async: a sink added to a playing pipeline would otherwise
            // preroll on its first buffer and hold the one streaming thread
            // that also feeds the other pad's sink.
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
                .expect("fakesink");
            pipeline.add(&sink).expect("add");
            sink.sync_state_with_parent().expect("sync");
            let _ = pad.link(&sink.static_pad("sink").expect("sink"));
        });
    }
    pipeline.set_state(gst::State::Playing).expect("playing");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let children = (0..streams)
        .map(|i| ffmpeg_push(input, &format!("rtmp://127.0.0.1:{port}/live/bench{i}")))
        .collect();
    let cpu = measure(children);
    let stream_seconds = streams as f64 * started.elapsed().as_secs_f64();
    let mbits = received.load(Ordering::Relaxed) as f64 * 8.0 / stream_seconds / 1e6;
    let _ = pipeline.set_state(gst::State::Null);
    (cpu, mbits)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |default: u32| args.next().and_then(|a| a.parse().ok()).unwrap_or(default);
    let (streams, seconds, runs) = (next(4) as usize, next(15), next(3).max(1));
    gst::init().expect("gstreamer");
    gstlivekitingress::plugin_register_static().expect("plugin");

    let dir = std::env::temp_dir().join(format!("rtmp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let input = dir.join("6mbps.flv");
    make_input(&input, seconds);
    let size = std::fs::metadata(&input).map(|m| m.len()).unwrap_or(0);
    println!(
        "input: {:.1} Mbit/s FLV; {streams} concurrent streams of {seconds} s; {runs} runs",
        size as f64 * 8.0 / f64::from(seconds) / 1e6
    );

    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let b = bare_tcp(&input, streams);
        let (o, mbits) = ingress(&input, streams);
        assert!(
            mbits > 4.0,
            "the publishes did not get through ({mbits:.1} Mbit/s)"
        );
        println!(
            "run {run}: CPU per stream: bare TCP read {b:.5} core, rtmpingresssrc {o:.5} core \
             ({:.2}x); demuxed {mbits:.1} Mbit/s of media per stream",
            o / b.max(1e-9)
        );
        bare.push(b);
        ours.push(o);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (b, o) = (median(bare), median(ours));
    println!(
        "median CPU per stream: bare TCP read {b:.5} core, rtmpingresssrc {o:.5} core, ratio {:.2}",
        o / b.max(1e-9)
    );
    println!(
        "=> one core demuxes about {:.0} concurrent 6 Mbit/s publishes",
        1.0 / o.max(1e-9)
    );
}
