//! rtmpingresssrc with real publishers (ffmpeg, GStreamer's rtmp2sink): decoded
//! frames, sizes and timestamps, refusals seen from the publisher's side, bad
//! clients that must not disturb anyone else, RTMPS.

mod common;

use gst::prelude::*;
use gstlivekitingress::messages::publish::{PublishStarted, PublishStopped};
use gstlivekitingress::messages::rtmp::Metadata;
use gstlivekitingress::messages::BusMessage;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().expect("gstreamer");
        gstlivekitingress::plugin_register_static().expect("register plugin");
        // The listener logs with tracing: RUST_LOG=debug shows it.
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

#[derive(Default, Debug, Clone)]
struct Decoded {
    video_frames: usize,
    video_sizes: Vec<(i32, i32)>,
    video_pts: Vec<gst::ClockTime>,
    audio_buffers: usize,
    audio_caps: Option<gst::Caps>,
    messages: Vec<String>,
}

/// rtmpingresssrc on `port`/`key`, each pad decoded into an appsink.
struct Receiver {
    pipeline: gst::Pipeline,
    decoded: Arc<Mutex<Decoded>>,
}

impl Receiver {
    fn start(port: u16, key: &str, extra: &str) -> Receiver {
        let src = gst::parse::launch(&format!(
            "rtmpingresssrc name=src address=127.0.0.1 port={port} stream-key={key} {extra}"
        ))
        .expect("rtmpingresssrc");
        let pipeline = gst::Pipeline::new();
        pipeline.add(&src).expect("add source");
        let decoded: Arc<Mutex<Decoded>> = Arc::default();
        let weak = pipeline.downgrade();
        let d = decoded.clone();
        src.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            let is_video = pad.name() == "video";
            // A queue per branch (one streaming thread feeds both pads, as in a
            // demuxer), then the same parser + decoder choice the ingress makes.
            let caps = pad.current_caps().expect("caps before pad-added");
            let mut chain = vec![gst::ElementFactory::make("queue").build().expect("queue")];
            chain.extend(gstlivekitingress::decode::decoder_chain(&caps).expect("decoder"));
            let convert = if is_video {
                "videoconvert"
            } else {
                "audioconvert"
            };
            chain.push(gst::ElementFactory::make(convert).build().expect("convert"));
            let sink = gst_app::AppSink::builder().sync(false).build();
            chain.push(sink.clone().upcast());
            pipeline.add_many(&chain).expect("add");
            gst::Element::link_many(&chain).expect("link");
            let d = d.clone();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let mut d = d.lock().expect("lock");
                        if is_video {
                            d.video_frames += 1;
                            if let Some(s) = sample.caps().and_then(|c| c.structure(0)) {
                                let size =
                                    (s.get("width").unwrap_or(0), s.get("height").unwrap_or(0));
                                d.video_sizes.push(size);
                            }
                            if let Some(pts) = sample.buffer().and_then(|b| b.pts()) {
                                d.video_pts.push(pts);
                            }
                        } else {
                            d.audio_buffers += 1;
                            d.audio_caps = sample.caps().map(|c| c.to_owned());
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            for e in &chain {
                e.sync_state_with_parent().expect("sync");
            }
            pad.link(&chain[0].static_pad("sink").expect("sink"))
                .expect("link pad");
        });
        pipeline.set_state(gst::State::Playing).expect("playing");
        Receiver { pipeline, decoded }
    }

    /// Waits for EOS (the publisher left), collecting element messages.
    fn wait_end(&self, timeout: Duration) -> Decoded {
        let bus = self.pipeline.bus().expect("bus");
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                break;
            };
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => {
                    panic!("pipeline error: {} {:?}", e.error(), e.debug())
                }
                gst::MessageView::Element(_) => {
                    if let Some(s) = msg.structure() {
                        self.decoded
                            .lock()
                            .expect("lock")
                            .messages
                            .push(s.to_string());
                    }
                }
                _ => {}
            }
        }
        self.decoded.lock().expect("lock").clone()
    }
}

impl Receiver {
    /// Waits for an element message named `name`; true when it came.
    fn wait_message(&self, name: &str, timeout: Duration) -> bool {
        let bus = self.pipeline.bus().expect("bus");
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                break;
            };
            if let Some(s) = msg.structure() {
                self.decoded
                    .lock()
                    .expect("lock")
                    .messages
                    .push(s.to_string());
                if s.name() == name {
                    return true;
                }
            }
        }
        false
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn ffmpeg(args: &str) -> Output {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(args.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .expect("ffmpeg (run scripts/setup.sh)")
}

fn test_pattern(seconds: u32, extra: &str, url: &str) -> Output {
    ffmpeg(&format!(
        "-re -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
         -t {seconds} -c:v libx264 -preset ultrafast -g 30 {extra} -c:a aac -ac 2 -f flv {url}"
    ))
}

fn assert_video(d: &Decoded, min_frames: usize) {
    assert!(
        d.video_frames >= min_frames,
        "decoded {} video frames: {d:?}",
        d.video_frames
    );
    assert!(
        d.video_sizes.iter().all(|s| *s == (640, 360)),
        "sizes {:?}",
        d.video_sizes
    );
    // Presentation order out of the decoder: strictly increasing, one frame apart.
    for w in d.video_pts.windows(2) {
        let step = w[1].saturating_sub(w[0]).mseconds();
        assert!(
            (25..=45).contains(&step),
            "PTS step {step} ms in {:?}",
            d.video_pts
        );
    }
}

/// ffmpeg publishes `seconds` of test pattern (with `extra` encoder
/// arguments) to `url`, which must succeed; what `rx` received by its end.
fn publish_to(rx: &Receiver, url: &str, seconds: u32, extra: &str) -> Decoded {
    let out = test_pattern(seconds, extra, url);
    assert!(
        out.status.success(),
        "ffmpeg to {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rx.wait_end(Duration::from_secs(10))
}

/// ffmpeg publishes `seconds` of test pattern on `key`, which `rx` decodes
/// (at least `min_frames` frames of the right size and timing).
fn publish_and_decode(rx: &Receiver, port: u16, key: &str, seconds: u32, min_frames: usize) {
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
    assert_video(&publish_to(rx, &url, seconds, ""), min_frames);
}

#[test]
fn ffmpeg_with_b_frames_and_audio_is_decoded() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "key1", "");
    let d = publish_to(
        &rx,
        &format!("rtmp://127.0.0.1:{port}/live/key1"),
        3,
        "-bf 2",
    );
    assert_video(&d, 85);
    assert!(d.audio_buffers > 50, "audio buffers {}", d.audio_buffers);
    let audio = d
        .audio_caps
        .as_ref()
        .and_then(|c| c.structure(0))
        .expect("audio caps");
    assert_eq!(audio.get::<i32>("rate").ok(), Some(48000));
    assert_eq!(audio.get::<i32>("channels").ok(), Some(2));
    let joined = d.messages.join("\n");
    // The element was given its key: its messages do not repeat it.
    assert!(
        joined.contains(PublishStarted::NAME) && !joined.contains("key1"),
        "{joined}"
    );
    assert!(
        joined.contains(Metadata::NAME) && joined.contains("width=(uint)640"),
        "{joined}"
    );
    assert!(joined.contains(PublishStopped::NAME), "{joined}");
}

/// An element that lets any key in tells the application which one came, in
/// its messages (one that was given its key does not repeat it, above).
#[test]
fn an_element_taking_any_key_names_the_key_in_its_messages() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "\"\"", "");
    let d = publish_to(
        &rx,
        &format!("rtmp://127.0.0.1:{port}/live/whichever"),
        1,
        "",
    );
    let started = d
        .messages
        .iter()
        .find(|m| m.starts_with(PublishStarted::NAME))
        .expect(PublishStarted::NAME);
    assert!(started.contains("key=(string)whichever"), "{started}");
}

#[test]
fn video_only_and_audio_only_publishes() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "vonly", "");
    let out = ffmpeg(&format!(
        "-re -f lavfi -i testsrc2=size=640x360:rate=30 -t 2 -c:v libx264 -preset ultrafast -f flv rtmp://127.0.0.1:{port}/live/vonly"
    ));
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = rx.wait_end(Duration::from_secs(10));
    assert_video(&d, 55);
    assert_eq!(d.audio_buffers, 0);
    drop(rx);

    let rx = Receiver::start(port, "aonly", "");
    let out = ffmpeg(&format!(
        "-re -f lavfi -i sine=frequency=440:sample_rate=44100 -t 2 -c:a aac -ac 1 -f flv rtmp://127.0.0.1:{port}/live/aonly"
    ));
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = rx.wait_end(Duration::from_secs(10));
    assert_eq!(d.video_frames, 0);
    assert!(d.audio_buffers > 30, "audio {}", d.audio_buffers);
    let audio = d
        .audio_caps
        .as_ref()
        .and_then(|c| c.structure(0))
        .expect("audio caps");
    assert_eq!(audio.get::<i32>("rate").ok(), Some(44100));
    assert_eq!(audio.get::<i32>("channels").ok(), Some(1));
}

#[test]
fn gstreamer_rtmp2sink_publishes() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "gstkey", "");
    let publisher = gst::parse::launch(&format!(
        "videotestsrc num-buffers=60 ! video/x-raw,width=640,height=360,framerate=30/1 ! x264enc tune=zerolatency \
         ! flvmux name=mux streamable=true ! rtmp2sink location=rtmp://127.0.0.1:{port}/live/gstkey \
         audiotestsrc num-buffers=90 ! audioconvert ! voaacenc ! mux."
    ))
    .or_else(|_| {
        gst::parse::launch(&format!(
            "videotestsrc num-buffers=60 ! video/x-raw,width=640,height=360,framerate=30/1 ! x264enc tune=zerolatency \
             ! flvmux streamable=true ! rtmp2sink location=rtmp://127.0.0.1:{port}/live/gstkey"
        ))
    })
    .expect("publisher");
    publisher.set_state(gst::State::Playing).expect("publish");
    let bus = publisher.bus().expect("bus");
    let end = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(20),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    publisher
        .set_state(gst::State::Null)
        .expect("stop publisher");
    assert!(
        matches!(
            end.as_ref().map(|m| m.view()),
            Some(gst::MessageView::Eos(_))
        ),
        "{end:?}"
    );
    let d = rx.wait_end(Duration::from_secs(10));
    assert_video(&d, 55);
}

#[test]
fn wrong_key_and_second_publisher_are_refused_without_disturbing_the_stream() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "right", "");
    let url = format!("rtmp://127.0.0.1:{port}/live");
    let good = std::thread::spawn({
        let url = url.clone();
        move || test_pattern(4, "", &format!("{url}/right"))
    });
    std::thread::sleep(Duration::from_millis(1500));

    let wrong = test_pattern(1, "", &format!("{url}/wrong"));
    assert!(
        !wrong.status.success(),
        "a wrong key must fail for the publisher"
    );
    let second = test_pattern(1, "", &format!("{url}/right"));
    assert!(
        !second.status.success(),
        "a second publisher on a busy key must fail"
    );

    let good = good.join().expect("publisher thread");
    assert!(
        good.status.success(),
        "the first stream is untouched: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    let d = rx.wait_end(Duration::from_secs(10));
    assert_video(&d, 110);
}

/// Whether the server closed `stream` within `within`: a read sees the end of
/// the stream or a reset (what the server sent before, such as handshake
/// replies, is read past). A read that times out means it is still open.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    let mut received = 0usize;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("still open after {within:?} ({received} bytes read)"))?;
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => received += n,
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    return Err(format!(
                        "still open after {within:?} ({received} bytes read)"
                    ))
                }
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                    return Ok(())
                }
                _ => return Err(format!("read failed: {e}")),
            },
        }
    }
}

#[test]
fn garbage_floods_and_idle_connections_do_not_take_the_listener_down() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "survivor", "handshake-timeout=1");

    // Garbage instead of a handshake: the server hangs up.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let _ = garbage.write_all(&[0x42; 4096]);
    let closed = closed_by_server(&mut garbage, Duration::from_secs(5));
    assert!(closed.is_ok(), "garbage connection: {closed:?}");

    // A valid handshake start followed by a flood of junk chunks: cut off, memory bounded.
    let mut flood = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    flood
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    let _ = flood.write_all(&c0c1);
    let junk = vec![0x3fu8; 64 * 1024];
    let mut sent = 0usize;
    while sent < 8 * 1024 * 1024 && flood.write_all(&junk).is_ok() {
        sent += junk.len();
    }
    assert!(
        sent < 8 * 1024 * 1024,
        "the server kept reading {sent} bytes of junk"
    );
    // Writes stop as well when the server merely stops reading: it must have
    // closed the socket (at the latest at its 1 s handshake deadline).
    let closed = closed_by_server(&mut flood, Duration::from_secs(5));
    assert!(
        closed.is_ok(),
        "flood connection after {sent} bytes: {closed:?}"
    );

    // An idle connection is dropped after the handshake timeout.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let started = Instant::now();
    let closed = closed_by_server(&mut idle, Duration::from_secs(4));
    assert!(
        closed.is_ok(),
        "idle connection after {:?}: {closed:?}",
        started.elapsed()
    );

    // Many wrong keys in a row, then the real publisher still gets in.
    for i in 0..5 {
        let out = test_pattern(1, "", &format!("rtmp://127.0.0.1:{port}/live/nope{i}"));
        assert!(!out.status.success());
    }
    publish_and_decode(&rx, port, "survivor", 2, 50);
}

#[test]
fn rtmps_with_a_configured_certificate() {
    init();
    let dir = common::ScratchDir::new("rtmps");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let port = common::free_tcp_port();
    let rx = Receiver::start(
        port,
        "secure",
        &format!(
            "tls-certificate={} tls-key={}",
            cert.display(),
            key.display()
        ),
    );
    let d = publish_to(&rx, &format!("rtmps://127.0.0.1:{port}/live/secure"), 2, "");
    assert_video(&d, 50);
}

// ---------------------------------------------------------------------------
// Hardening: scripted clients that break the protocol at chosen points. They
// speak RTMP with rml_rtmp's client-side handshake and chunk serializer
// (`common::rtmp_client`).

use common::rtmp_client::RawClient;
use rml_rtmp::messages::RtmpMessage;
use std::collections::HashMap;

/// An AAC-LC 44.1 kHz stereo sequence header as an FLV audio tag body.
const AAC_CONFIG: [u8; 4] = [0xaf, 0x00, 0x12, 0x10];

#[test]
fn broken_publishes_never_leave_the_key_stuck() {
    init();
    let port = common::free_tcp_port();
    let mut rx = Receiver::start(port, "sticky", "");

    // Reset in the middle of the handshake: nothing reaches the element.
    let mut c = RawClient::connect(port);
    c.stream.write_all(&[3u8; 700]).expect("half a c0c1");
    std::thread::sleep(Duration::from_millis(100));
    c.reset();

    type Step = fn(&mut RawClient) -> bool;
    let scenarios: [(&str, Step); 4] = [
        ("publish without createStream", |c| {
            c.handshake();
            c.connect_app("live").expect("connect");
            assert!(c.wait_for(b"NetConnection.Connect.Success"));
            c.publish("sticky", 0).expect("publish");
            c.wait_for(b"NetStream.Publish");
            true
        }),
        ("reset right after publish was accepted", |c| {
            c.start_publish("sticky");
            assert!(c.wait_for(b"NetStream.Publish.Start"), "accepted");
            true
        }),
        ("reset after the first media message", |c| {
            c.start_publish("sticky");
            assert!(c.wait_for(b"NetStream.Publish.Start"), "accepted");
            c.send(
                RtmpMessage::AudioData {
                    data: AAC_CONFIG.to_vec().into(),
                },
                0,
                1,
            )
            .expect("audio");
            std::thread::sleep(Duration::from_millis(300));
            true
        }),
        // Without waiting for the answer: the reset may beat the reply.
        ("reset right after sending publish", |c| {
            c.start_publish("sticky");
            false
        }),
    ];
    for (name, step) in scenarios {
        let mut c = RawClient::connect(port);
        let must_end = step(&mut c);
        c.reset();
        // The element learns that the publish it was handed is over.
        let stopped = rx.wait_message(
            PublishStopped::NAME,
            Duration::from_secs(if must_end { 10 } else { 3 }),
        );
        assert!(stopped || !must_end, "{name}: no ingress-publish-stopped");
        if stopped {
            drop(rx);
            rx = Receiver::start(port, "sticky", "");
        }
    }

    // The key is free: a real publisher gets in and is decoded.
    publish_and_decode(&rx, port, "sticky", 2, 50);
}

/// Sends one byte of a handshake every 500 ms until the server hangs up; the
/// time that took.
fn trickle_until_closed(port: u16, give_up: Duration) -> Option<Duration> {
    let mut c = RawClient::connect(port);
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 8192];
    let mut first = true;
    while started.elapsed() < give_up {
        let byte = if first { 3 } else { 0 };
        first = false;
        if c.stream.write_all(&[byte]).is_err() {
            return Some(started.elapsed());
        }
        match c.stream.read(&mut buf[..]) {
            Ok(0) => return Some(started.elapsed()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            // The server's part of the handshake: read and ignored.
            Ok(_) => std::thread::sleep(Duration::from_millis(500)),
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// Completes the handshake, then sends `connect` after `connect` without
/// ever reading the answers, until the server hangs up: (bytes sent, time).
fn deaf_until_closed(port: u16, give_up: Duration) -> Option<(usize, Duration)> {
    let mut c = RawClient::connect(port);
    c.handshake();
    let started = Instant::now();
    while started.elapsed() < give_up {
        if c.connect_app("live").is_err() {
            return Some((c.sent, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn trickling_and_deaf_clients_are_closed_in_bounded_time_while_a_stream_flows() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "live", "handshake-timeout=3");
    let url = format!("rtmp://127.0.0.1:{port}/live/live");
    let live = std::thread::spawn(move || test_pattern(10, "", &url));
    std::thread::sleep(Duration::from_millis(1500));

    // A byte every 500 ms never lets a per-read timeout expire; the deadline
    // for everything before publishing (3 s here) does.
    let trickle = trickle_until_closed(port, Duration::from_secs(15));
    eprintln!("trickling client closed after {trickle:?}");
    let trickle = trickle.expect("the trickling client was never closed");
    assert!(
        trickle >= Duration::from_millis(2500) && trickle < Duration::from_millis(4500),
        "closed after {trickle:?}, deadline 3 s"
    );

    // A client that never reads what it is sent is cut off at the write
    // budget (64 KiB of replies), well before the deadline and before the
    // 256 KiB it may send.
    let deaf = deaf_until_closed(port, Duration::from_secs(15));
    eprintln!("deaf client closed after (bytes sent, time) {deaf:?}");
    let (sent, took) = deaf.expect("the deaf client was never closed");
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
    assert!(sent < 128 * 1024, "it could send {sent} bytes");

    let live = live.join().expect("publisher thread");
    assert!(
        live.status.success(),
        "the live stream is untouched: {}",
        String::from_utf8_lossy(&live.stderr)
    );
    let d = rx.wait_end(Duration::from_secs(10));
    assert_video(&d, 260);
}

#[test]
fn waiting_connections_are_bounded_per_address() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "bounded", "");
    let mut idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let waits = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let n = s.read(&mut [0u8; 1]);
        matches!(&n, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    };
    assert!(waits(&mut idle[15]), "the first 16 from one address wait");
    let mut extra = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let started = Instant::now();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let n = extra.read(&mut [0u8; 1]);
    assert!(
        matches!(n, Ok(0)) && started.elapsed() < Duration::from_secs(1),
        "the 17th is closed at once: {n:?} after {:?}",
        started.elapsed()
    );
    // Another address is not affected.
    let mut other = common::connect_from([127, 0, 0, 2], port).expect("connect from 127.0.0.2");
    assert!(waits(&mut other), "127.0.0.2 waits like any client");
    idle.clear();
    std::thread::sleep(Duration::from_millis(300));
    publish_and_decode(&rx, port, "bounded", 2, 50);
}

// ---------------------------------------------------------------------------
// A separate process with rtmpingresssrc: this test binary started again to
// run only `probe_child`, which (with RTMP_PROBE_PORT and RTMP_PROBE_KEYS set)
// receives on one rtmpingresssrc per key and prints the video buffers each has
// pushed, every 200 ms: `frames <key>=<n> ...`. Its resource limits, CPU time
// and logs are then its own.

/// Adds an rtmpingresssrc for `key` on `port` whose pads each end in a
/// fakesink (not synchronised, not prerolling: a live source), calling
/// `on_video_buffer` for every video buffer.
fn add_source_into_fakesinks(
    pipeline: &gst::Pipeline,
    port: u32,
    key: &str,
    on_video_buffer: impl Fn() + Clone + Send + Sync + 'static,
) {
    let src = gst::ElementFactory::make("rtmpingresssrc")
        .property("address", "127.0.0.1")
        .property("port", port)
        .property("stream-key", key)
        .build()
        .expect("rtmpingresssrc");
    pipeline.add(&src).expect("add");
    let weak = pipeline.downgrade();
    src.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .expect("fakesink");
        pipeline.add(&sink).expect("add sink");
        sink.sync_state_with_parent().expect("sync");
        pad.link(&sink.static_pad("sink").expect("pad"))
            .expect("link");
        if pad.name() == "video" {
            let on_video_buffer = on_video_buffer.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                on_video_buffer();
                gst::PadProbeReturn::Ok
            });
        }
    });
}

#[test]
fn probe_child() {
    let (Ok(port), Ok(keys)) = (
        std::env::var("RTMP_PROBE_PORT"),
        std::env::var("RTMP_PROBE_KEYS"),
    ) else {
        return;
    };
    init();
    let port: u32 = port.parse().expect("port");
    let pipeline = gst::Pipeline::new();
    let keys: Vec<String> = keys.split(',').map(str::to_string).collect();
    let counts: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new(keys.iter().map(|_| Default::default()).collect());
    for (i, key) in keys.iter().enumerate() {
        let counts = counts.clone();
        add_source_into_fakesinks(&pipeline, port, key, move || {
            counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                println!("error {}", e.error());
            }
        }
        let line: Vec<String> = keys
            .iter()
            .zip(counts.iter())
            .map(|(k, n)| format!("{k}={}", n.load(std::sync::atomic::Ordering::Relaxed)))
            .collect();
        println!("frames {}", line.join(" "));
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = pipeline.set_state(gst::State::Null);
}

struct Probe {
    child: std::process::Child,
    frames: Arc<Mutex<HashMap<String, u64>>>,
}

impl Probe {
    /// The probe on `port` for `keys`, under `prlimit --nofile=N:N` when
    /// `nofile` is given, with `env` added; stderr goes to `stderr`.
    fn spawn(
        port: u16,
        keys: &str,
        nofile: Option<u32>,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Probe {
        let exe = std::env::current_exe().expect("test binary");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(["probe_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("RTMP_PROBE_PORT", port.to_string())
            .env("RTMP_PROBE_KEYS", keys)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("probe process");
        let stdout = child.stdout.take().expect("stdout");
        let frames: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let f = frames.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(counts) = line.strip_prefix("frames ") {
                    let mut f = f.lock().expect("lock");
                    for kv in counts.split(' ') {
                        if let Some((k, v)) = kv.split_once('=') {
                            f.insert(k.to_string(), v.parse().unwrap_or(0));
                        }
                    }
                } else if line.starts_with("error") {
                    eprintln!("probe: {line}");
                }
            }
        });
        Probe { child, frames }
    }

    fn frames(&self, key: &str) -> u64 {
        self.frames
            .lock()
            .expect("lock")
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// User + system CPU seconds the process has used.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / hz
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to loopback `port` from source address `from`, or none
/// within 200 ms (the listen backlog may be full).
#[test]
fn out_of_file_descriptors_the_listener_waits_instead_of_spinning() {
    let port = common::free_tcp_port();
    const NOFILE: u32 = 128;
    let probe = Probe::spawn(port, "live,late", Some(NOFILE), &[], Stdio::inherit());
    let url = format!("rtmp://127.0.0.1:{port}/live/live");
    let live = std::thread::spawn(move || test_pattern(14, "", &url));
    assert!(
        common::wait_for(Duration::from_secs(10), || (probe.frames("live") > 30)
            .then_some(()))
        .is_some(),
        "the live stream started"
    );
    eprintln!("probe uses {} descriptors of {NOFILE}", probe.open_fds());

    // More idle connections than the process may have descriptors, from
    // many addresses (16 may wait per address).
    let mut flood = Vec::new();
    for i in 0..(2 * NOFILE as usize) {
        let from = [127, 0, 1, 2 + (i / 12) as u8];
        if let Some(s) = common::connect_from(from, port) {
            flood.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    eprintln!(
        "{} flood connections made; probe holds {} descriptors",
        flood.len(),
        probe.open_fds()
    );
    let (cpu_before, frames_before, t) =
        (probe.cpu_seconds(), probe.frames("live"), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (probe.cpu_seconds() - cpu_before) / t.elapsed().as_secs_f64();
    let frames = probe.frames("live") - frames_before;
    eprintln!(
        "under the flood: CPU {:.0}% of a core, {frames} live frames in 2 s",
        cpu * 100.0
    );
    assert!(cpu < 0.4, "the process spins: {:.0}% CPU", cpu * 100.0);
    assert!(
        frames >= 40,
        "the live stream stalled: {frames} frames in 2 s"
    );

    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    let out = test_pattern(2, "", &format!("rtmp://127.0.0.1:{port}/live/late"));
    assert!(
        out.status.success(),
        "a new publish after the flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        probe.frames("late") >= 50,
        "late frames {}",
        probe.frames("late")
    );
    let live = live.join().expect("publisher thread");
    assert!(
        live.status.success(),
        "the live stream was not cut: {}",
        String::from_utf8_lossy(&live.stderr)
    );
}

/// Publishes `key` with a raw client and returns what the server answered
/// (up to the publish status).
fn raw_publish_answer(port: u16, key: &str) -> Vec<u8> {
    let mut c = RawClient::connect(port);
    c.start_publish(key);
    c.wait_for(b"NetStream.Publish");
    // The rest of the status (description) follows in the same chunk.
    std::thread::sleep(Duration::from_millis(100));
    c.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        c.received.extend_from_slice(&buf[..n]);
    }
    if c.received
        .windows(24)
        .any(|w| w == b"NetStream.Publish.Start\0")
    {
        let _ = c.send(
            RtmpMessage::AudioData {
                data: AAC_CONFIG.to_vec().into(),
            },
            0,
            1,
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    c.received
}

#[test]
fn stream_keys_stay_out_of_logs_and_oversized_keys_are_refused() {
    let port = common::free_tcp_port();
    let dir = common::ScratchDir::new("key-logs");
    let log_path = dir.path().join("probe.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let valid = "valid-key-5150";
    let probe = Probe::spawn(
        port,
        valid,
        None,
        &[
            ("GST_DEBUG", "*:9"),
            ("GST_DEBUG_NO_COLOR", "1"),
            ("RUST_LOG", "trace"),
            ("NO_COLOR", "1"),
        ],
        Stdio::from(log),
    );
    assert!(
        common::wait_for(Duration::from_secs(20), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .ok())
        .is_some(),
        "probe listening"
    );

    let oversized: String = "overlong-".repeat(60_000 / 9);
    let answer = raw_publish_answer(port, &oversized);
    let answer_text = String::from_utf8_lossy(&answer);
    assert!(
        answer_text.contains("NetStream.Publish.BadName"),
        "{answer_text}"
    );
    assert!(answer_text.contains("stream key too long"), "{answer_text}");
    assert!(
        !answer_text.contains("overlong-overlong"),
        "the refusal echoes the key"
    );

    let wrong = "wrong-key-8a7b";
    let answer = String::from_utf8_lossy(&raw_publish_answer(port, wrong)).to_string();
    assert!(answer.contains("NetStream.Publish.BadName"), "{answer}");
    assert!(
        !answer.contains(wrong),
        "the refusal echoes the key: {answer}"
    );

    let answer = String::from_utf8_lossy(&raw_publish_answer(port, valid)).to_string();
    assert!(answer.contains("NetStream.Publish.Start"), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    drop(probe);

    let logs = std::fs::read(&log_path).expect("read logs");
    let logs = String::from_utf8_lossy(&logs);
    eprintln!("{} bytes of logs", logs.len());
    assert!(logs.contains("key#"), "redactions are logged");
    assert!(
        !logs.contains("overlong-overlong"),
        "the oversized key is in the logs"
    );
    assert!(!logs.contains(wrong), "a refused key is in the logs");
    // Not even GStreamer's own bus logging (GST_BUS, DEBUG), which prints
    // every message posted: the element that was given its key does not put
    // it in its messages.
    let leaks: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(valid))
        .take(10)
        .collect();
    assert!(
        leaks.is_empty(),
        "stream keys in the logs:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn crafted_timestamps_end_the_publish_with_an_error_not_a_panic() {
    init();
    // Panics on the element's streaming threads are recorded (the default
    // hook prints them, but a panicking thread fails no test by itself).
    static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        if thread
            .name()
            .is_some_and(|n| n.starts_with("rtmpingresssrc"))
        {
            PANICS.lock().expect("lock").push(info.to_string());
        }
        default_hook(info);
    }));

    let port = common::free_tcp_port();
    let pipeline = gst::Pipeline::new();
    add_source_into_fakesinks(&pipeline, u32::from(port), "clock", || {});
    pipeline.set_state(gst::State::Playing).expect("playing");

    let mut c = RawClient::connect(port);
    c.start_publish("clock");
    assert!(c.wait_for(b"NetStream.Publish.Start"), "accepted");
    let audio = |data: &[u8]| RtmpMessage::AudioData {
        data: data.to_vec().into(),
    };
    c.send(audio(&AAC_CONFIG), 0, 1).expect("config");
    // Every frame ~24.8 days after the one before: the old mapping overflowed
    // its nanosecond offset after ~4300 of them.
    let mut ts = 0u32;
    let mut closed_after = None;
    for i in 0..20_000 {
        if c.send(audio(&[0xaf, 0x01, 0x21, 0x10, 0x04]), ts, 1)
            .is_err()
        {
            closed_after = Some(i);
            break;
        }
        ts = ts.wrapping_add(i32::MAX as u32);
    }
    // The publisher sees the connection end.
    if closed_after.is_none() {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.stream.read(&mut buf) {
            if n == 0 {
                closed_after = Some(20_000);
                break;
            }
        }
    }
    let bus = pipeline.bus().expect("bus");
    let error = bus.timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error]);
    let _ = pipeline.set_state(gst::State::Null);
    let panics = PANICS.lock().expect("lock").clone();
    assert!(
        panics.is_empty(),
        "the streaming thread panicked: {panics:?}"
    );
    let error = match error.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(e)) => e.error().to_string(),
        other => panic!("no error message: {other:?}"),
    };
    assert!(error.contains("timestamps"), "{error}");
    assert!(
        closed_after.is_some(),
        "the publisher's connection was not closed"
    );
}

/// A publisher that is accepted and then sends nothing (no sequence header,
/// so no pad and nothing downstream can notice) is cut after the element's
/// first-media deadline, with an error on the bus; the key is free after.
#[test]
fn an_accepted_publish_that_sends_nothing_ends_in_bounded_time() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "silent", "");
    let mut client = RawClient::connect(port);
    client.start_publish("silent");
    assert!(client.wait_for(b"NetStream.Publish.Start"), "accepted");
    let accepted = Instant::now();
    assert!(
        client.closed_within(Duration::from_secs(25)),
        "a silent publisher is never cut"
    );
    let cut = accepted.elapsed();
    eprintln!("silent publisher cut after {cut:?}");
    assert!(
        cut >= Duration::from_secs(14) && cut < Duration::from_secs(18),
        "cut after {cut:?}, deadline 15 s"
    );
    let bus = rx.pipeline.bus().expect("bus");
    let error = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(2), &[gst::MessageType::Error])
        .expect("an error on the bus");
    let gst::MessageView::Error(error) = error.view() else {
        unreachable!("filtered on errors")
    };
    eprintln!("error: {}", error.error());

    drop(rx);
    let rx = Receiver::start(port, "silent", "");
    publish_and_decode(&rx, port, "silent", 2, 50);
}
