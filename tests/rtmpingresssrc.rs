//! rtmpingresssrc with real publishers (ffmpeg, GStreamer's rtmp2sink): decoded
//! frames, sizes and timestamps, refusals seen from the publisher's side, bad
//! clients that must not disturb anyone else, RTMPS.

mod common;

use gst::prelude::*;
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

#[test]
fn ffmpeg_with_b_frames_and_audio_is_decoded() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "key1", "");
    let out = test_pattern(3, "-bf 2", &format!("rtmp://127.0.0.1:{port}/live/key1"));
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = rx.wait_end(Duration::from_secs(10));
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
    assert!(
        joined.contains("rtmp-publish-started") && joined.contains("key1"),
        "{joined}"
    );
    assert!(
        joined.contains("rtmp-metadata") && joined.contains("width=(uint)640"),
        "{joined}"
    );
    assert!(joined.contains("rtmp-publish-stopped"), "{joined}");
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

#[test]
fn garbage_floods_and_idle_connections_do_not_take_the_listener_down() {
    init();
    let port = common::free_tcp_port();
    let rx = Receiver::start(port, "survivor", "handshake-timeout=1");

    // Garbage instead of a handshake: the server hangs up.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = garbage.write_all(&[0x42; 4096]);
    let mut buf = [0u8; 16];
    let closed = matches!(garbage.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "garbage connection closed");

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

    // An idle connection is dropped after the handshake timeout.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let closed = matches!(idle.read(&mut buf), Ok(0) | Err(_));
    assert!(
        closed && started.elapsed() < Duration::from_secs(4),
        "idle connection closed after {:?}",
        started.elapsed()
    );

    // Many wrong keys in a row, then the real publisher still gets in.
    for i in 0..5 {
        let out = test_pattern(1, "", &format!("rtmp://127.0.0.1:{port}/live/nope{i}"));
        assert!(!out.status.success());
    }
    let out = test_pattern(2, "", &format!("rtmp://127.0.0.1:{port}/live/survivor"));
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = rx.wait_end(Duration::from_secs(10));
    assert_video(&d, 50);
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
    let out = test_pattern(2, "", &format!("rtmps://127.0.0.1:{port}/live/secure"));
    assert!(
        out.status.success(),
        "ffmpeg over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = rx.wait_end(Duration::from_secs(10));
    assert_video(&d, 50);
}
