//! SRT push end to end, all real: the service listening for SRT (`srt_port`),
//! ingresses made through the LiveKit API client, ffmpeg (libsrt) publishing
//! MPEG-TS, the Python subscriber watching the room; and srt-tokio's own
//! caller for a publisher that sends what is not MPEG-TS.

mod common;

use common::service::Harness;
use futures::SinkExt;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const H264_AAC: [&str; 8] = [
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-c:a",
    "aac",
    "-ac",
    "2",
];
const H265_OPUS: [&str; 8] = [
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-c:a",
    "libopus",
    "-ac",
    "2",
];

/// ffmpeg publishing a 720p test pattern with a tone as MPEG-TS over SRT,
/// `stream_id` as given (ffmpeg 5.1 passes it on verbatim, undecoded).
fn publish_srt(port: u16, stream_id: &str, seconds: u32, codecs: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string(), "-g", "30"])
        .args(["-x265-params", "log-level=error"])
        .args(codecs)
        .args(["-f", "mpegts"])
        .arg(format!("srt://127.0.0.1:{port}?streamid={stream_id}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg")
}

/// What the ingress's state says came in.
fn input_of(h: &Harness, id: &str) -> (proto::InputVideoState, proto::InputAudioState) {
    let state = h.info(id).state.expect("state");
    (
        state.video.expect("input video"),
        state.audio.expect("input audio"),
    )
}

#[test]
fn srt_publishes_reach_the_room_and_end_inactive() {
    let h = Harness::start_with_srt();
    let port = h.srt_port();
    let info = h.create("srt-room", "srt-streamer", "SRT Streamer");
    let id = info.ingress_id.clone();
    // The API answers as LiveKit's: the RTMP URL; the same key is taken over SRT.
    assert!(info.url.starts_with("rtmp://"), "{}", info.url);

    let mut ffmpeg = publish_srt(port, &info.stream_key, 40, &H264_AAC);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let expected = [
        ("low", "320x180"),
        ("medium", "640x360"),
        ("high", "1280x720"),
    ];
    let reports = common::watch_layers(&h.livekit, "srt-room", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        let video = common::track_of(report, "srt-streamer", "video");
        assert_eq!(video["simulcasted"], true, "{video}");
        common::assert_layer_size(report, "srt-streamer", quality, size);
        let audio = common::track_of(report, "srt-streamer", "audio");
        assert!(common::frames(audio) >= 100, "{quality}: {audio}");
    }
    let (video, audio) = input_of(&h, &id);
    assert_eq!(video.mime_type, "video/x-h264");
    assert_eq!((video.width, video.height), (1280, 720));
    assert!((video.framerate - 30.0).abs() < 0.5, "{}", video.framerate);
    assert_eq!(audio.mime_type, "audio/mpeg");
    assert_eq!(audio.channels, 2);
    let state = h.info(&id).state.expect("state");
    let layers = state
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .and_then(|t| t.codecs.iter().map(|c| c.layers.len()).max());
    assert_eq!(layers, Some(3), "{state:?}");

    // The publisher leaves: the participant leaves, the ingress is inactive.
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let ended = h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(30));
    assert!(ended.state.expect("state").ended_at > 0);
    assert!(
        h.left_within("srt-room", "srt-streamer", Duration::from_secs(10)),
        "the streamer stayed in the room"
    );

    // Again, with the key in SRT's access-control form, in H.265 and Opus.
    let stream_id = format!("#!::u=someone,r={},m=publish", info.stream_key);
    let mut again = publish_srt(port, &stream_id, 30, &H265_OPUS);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let reports = common::watch_layers(&h.livekit, "srt-room", 2, &[("high", "1280x720")]);
    common::assert_layer_size(&reports[0], "srt-streamer", "high", "1280x720");
    assert!(common::frames(common::track_of(&reports[0], "srt-streamer", "audio")) >= 100);
    let (video, audio) = input_of(&h, &id);
    assert_eq!(video.mime_type, "video/x-h265");
    assert_eq!(audio.mime_type, "audio/x-opus");
    let _ = again.kill();
    let _ = again.wait();
    h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(30));
}

#[test]
fn wrong_streamids_are_refused_before_media_and_the_key_stays_usable() {
    let h = Harness::start_with_srt();
    let port = h.srt_port();
    let info = h.create("srt-closed", "srt-guest", "Guest");
    let key = &info.stream_key;
    for stream_id in [
        "not-a-key".to_string(),
        format!("#!::r={key},m=request"),
        format!("#!::u={key}"),
    ] {
        let started = Instant::now();
        let out = publish_srt(port, &stream_id, 5, &H264_AAC)
            .wait_with_output()
            .expect("ffmpeg");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stream_id}: accepted");
        // libsrt reports the listener's rejection; nothing was streamed.
        assert!(
            stderr.to_lowercase().contains("reject"),
            "{stream_id}: {stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{stream_id}");
    }
    // None of them got as far as the ingress.
    assert_eq!(
        h.info(&info.ingress_id).state.map(|s| s.status),
        Some(Status::EndpointInactive as i32)
    );
    assert!(h.webhooks.events().is_empty(), "no stream started");

    let mut right = publish_srt(port, key, 30, &H264_AAC);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );
    assert!(h.participant("srt-closed", "srt-guest").is_some());
    // A second publisher on the live key is refused; the first goes on.
    let out = publish_srt(port, key, 5, &H264_AAC)
        .wait_with_output()
        .expect("ffmpeg");
    assert!(!out.status.success(), "a key publishing already was taken");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("reject"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        h.info(&info.ingress_id).state.map(|s| s.status),
        Some(Status::EndpointPublishing as i32)
    );
    let _ = right.kill();
    let _ = right.wait();
}

/// Random bytes, cheaply (no cryptographic quality needed).
fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 24) as u8
        })
        .collect()
}

#[test]
fn garbage_srt_callers_and_an_unreachable_url_do_not_disturb_a_live_rtmp_stream() {
    let h = Harness::start_with_srt();
    let port = h.srt_port();
    let live = h.create("steady-room", "steady", "Steady");
    let junk = h.create("junk-room", "junk", "Junk");
    let mut rtmp = h.publish(&live.stream_key, 90);
    h.wait_status(
        &live.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );

    // A viewer of the live stream for the whole time the garbage comes.
    let mut opts = common::SubscriberOptions::new("steady-room");
    opts.quality = Some("high".into());
    opts.expect_tracks = 2;
    opts.duration = 20.0;
    let viewer = common::Subscriber::spawn(&h.livekit, &opts);

    // A URL ingress whose camera does not answer: it retries, then fails.
    let unreachable = format!("rtsp://127.0.0.1:{}/nothing", common::free_tcp_port());
    let pull =
        h.rt.block_on(h.client().create_ingress(
            proto::IngressInput::UrlInput,
            livekit_api::services::ingress::CreateIngressOptions {
                room_name: "pull-room".into(),
                participant_identity: "pull".into(),
                url: unreachable,
                ..Default::default()
            },
        ))
        .expect("create a URL ingress");

    // Random UDP datagrams at the SRT port, from several sockets.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..8 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        for _ in 0..250 {
            let len = 1 + (seed % 1400) as usize;
            let _ = socket.send_to(&noise(&mut seed, len), ("127.0.0.1", port));
        }
    }
    // A caller with a valid key whose stream is not MPEG-TS.
    let junk_key = junk.stream_key.clone();
    let sender = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let mut caller = srt_tokio::SrtSocket::builder()
                .call(format!("127.0.0.1:{port}").as_str(), Some(&junk_key))
                .await
                .expect("a valid key is accepted");
            let mut seed = 42u64;
            let until = Instant::now() + Duration::from_secs(25);
            while Instant::now() < until {
                let data = bytes::Bytes::from(noise(&mut seed, 1316));
                if caller.send((Instant::now(), data)).await.is_err() {
                    return "the server closed the connection";
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            "still connected after 25 s"
        })
    });

    // The junk publish ends in ERROR, saying why.
    let failed = h.wait_status(
        &junk.ingress_id,
        Status::EndpointError,
        Duration::from_secs(30),
    );
    let error = failed.state.expect("state").error;
    assert!(error.contains("no audio or video"), "{error}");
    assert_eq!(
        sender.join().expect("sender"),
        "the server closed the connection"
    );

    // The pull is still retrying (30 s) or has failed; it never joined.
    let pull_status = h.info(&pull.ingress_id).state.map(|s| s.status);
    assert!(
        pull_status == Some(Status::EndpointBuffering as i32)
            || pull_status == Some(Status::EndpointError as i32),
        "{pull_status:?}"
    );
    assert!(h.participant("pull-room", "pull").is_none());

    // The live stream kept its frame rate (30 fps nominal) meanwhile.
    let report = viewer.report();
    let video = common::track_of(&report, "steady", "video");
    let fps = common::frames(video) as f64 / opts.duration;
    assert!(fps >= 20.0, "{fps:.1} fps: {video}");
    assert_eq!(
        h.info(&live.ingress_id).state.map(|s| s.status),
        Some(Status::EndpointPublishing as i32)
    );
    let _ = rtmp.kill();
    let _ = rtmp.wait();
}

/// The element alone, as gst-launch composes it: a wrong key is refused, the
/// right one brings parsed video and audio pads, the contract's messages, and
/// EOS when ffmpeg ends.
#[test]
fn srtingresssrc_in_a_launch_line_gives_parsed_pads_and_eos() {
    use gst::prelude::*;
    use gstlivekitingress::messages::publish::{PublishStarted, PublishStopped};
    use gstlivekitingress::messages::BusMessage;
    gst::init().expect("gstreamer");
    // Other tests of this binary may have registered it (through the service).
    let _ = gstlivekitingress::plugin_register_static();
    assert!(gst::ElementFactory::find("srtingresssrc").is_some());
    let port = common::free_udp_port();
    let pipeline = gst::parse::launch(&format!(
        "srtingresssrc address=127.0.0.1 port={port} stream-key=element-key name=s \
         s.video ! queue ! fakesink name=v  s.audio ! queue ! fakesink name=a"
    ))
    .expect("launch line")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    pipeline.set_state(gst::State::Playing).expect("playing");

    let wrong = publish_srt(port, "another-key", 3, &H264_AAC)
        .wait_with_output()
        .expect("ffmpeg");
    assert!(!wrong.status.success(), "a wrong key was accepted");
    let mut ffmpeg = publish_srt(port, "#!::r=element-key", 3, &H264_AAC);

    let bus = pipeline.bus().expect("bus");
    let (mut started, mut stopped, mut eos) = (None, None, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !eos && Instant::now() < deadline {
        let Some(message) = bus.timed_pop(gst::ClockTime::from_seconds(1)) else {
            continue;
        };
        match message.view() {
            gst::MessageView::Eos(_) => eos = true,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(_) => {
                let s = message.structure().expect("structure");
                started = started.or(PublishStarted::from_structure(s));
                stopped = stopped.or(PublishStopped::from_structure(s));
            }
            _ => {}
        }
    }
    let _ = ffmpeg.wait();
    let caps = |sink: &str| {
        pipeline
            .by_name(sink)
            .and_then(|e| e.static_pad("sink"))
            .and_then(|p| p.current_caps())
            .map(|c| c.to_string())
            .unwrap_or_default()
    };
    let (video, audio) = (caps("v"), caps("a"));
    pipeline.set_state(gst::State::Null).expect("null");
    assert!(eos, "no EOS after the caller left");
    let started = started.expect("ingress-publish-started");
    assert_eq!(started.input, "srt");
    assert!(started.peer.starts_with("127.0.0.1:"), "{started:?}");
    assert_eq!(
        started.key, None,
        "an element given its key does not repeat it"
    );
    assert!(stopped.is_some(), "no ingress-publish-stopped");
    assert!(
        video.starts_with("video/x-h264") && video.contains("parsed=(boolean)true"),
        "{video}"
    );
    assert!(
        video.contains("width=(int)1280") && video.contains("height=(int)720"),
        "{video}"
    );
    assert!(
        audio.starts_with("audio/mpeg") && audio.contains("channels=(int)2"),
        "{audio}"
    );
}

/// What reached a sink pad: each buffer's PTS and whether it was a
/// keyframe and marked DISCONT; how many stream-starts and segments came.
#[derive(Default)]
struct Seen {
    buffers: Vec<(gst::ClockTime, bool, bool)>,
    stream_starts: usize,
    segments: usize,
}

fn watch_sink(pipeline: &gst::Pipeline, name: &str) -> std::sync::Arc<std::sync::Mutex<Seen>> {
    use gst::prelude::*;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let pad = pipeline
        .by_name(name)
        .and_then(|e| e.static_pad("sink"))
        .expect("sink pad");
    let record = seen.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => {
                    if let Some(pts) = b.pts() {
                        let flags = b.flags();
                        seen.buffers.push((
                            pts,
                            !flags.contains(gst::BufferFlags::DELTA_UNIT),
                            flags.contains(gst::BufferFlags::DISCONT),
                        ));
                    }
                }
                Some(gst::PadProbeData::Event(e)) => match e.view() {
                    gst::EventView::StreamStart(_) => seen.stream_starts += 1,
                    gst::EventView::Segment(_) => seen.segments += 1,
                    _ => {}
                },
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
    seen
}

/// The element alone with a grace period: a caller that comes back goes on
/// through the same pads as one stream (no EOS between, one stream-start and
/// one segment downstream, timestamps going on in running time after the
/// gap although its MPEG-TS starts from another clock), its video from its
/// first keyframe although it starts mid-GOP with SPS and PPS before every
/// frame (so the parser would pass the frames before it); EOS once the grace
/// after the second caller passes.
#[test]
fn srtingresssrc_goes_on_with_a_caller_back_within_its_grace() {
    use gst::prelude::*;
    use gstlivekitingress::messages::publish::{PublishPaused, PublishResumed, PublishStopped};
    use gstlivekitingress::messages::BusMessage;
    gst::init().expect("gstreamer");
    let _ = gstlivekitingress::plugin_register_static();
    let dir = common::ScratchDir::new("srt-grace");
    // A keyframe every 3 s, so a caller sending from 1 s in starts mid-GOP.
    let file = dir.path().join("gop90.ts");
    let encoded = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args([
            "-t",
            "8",
            "-g",
            "90",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(&file)
        .status()
        .expect("ffmpeg");
    assert!(encoded.success());
    let port = common::free_udp_port();
    let url = format!("srt://127.0.0.1:{port}?streamid=k");
    let send = |extra: &[&str]| {
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-re",
                "-i",
            ])
            .arg(&file)
            .args(extra)
            .args(["-t", "4", "-c", "copy", "-f", "mpegts", &url])
            .stdin(Stdio::null())
            .status()
            .expect("ffmpeg")
    };
    let pipeline = gst::parse::launch(&format!(
        "srtingresssrc address=127.0.0.1 port={port} stream-key=k reconnect-grace=3 name=s \
         s.video ! queue ! fakesink name=v async=false  s.audio ! queue ! fakesink name=a async=false"
    ))
    .expect("launch line")
    .downcast::<gst::Pipeline>()
    .expect("pipeline");
    let (video, audio) = (watch_sink(&pipeline, "v"), watch_sink(&pipeline, "a"));
    pipeline.set_state(gst::State::Playing).expect("playing");

    assert!(send(&[]).success(), "first caller");
    std::thread::sleep(Duration::from_secs(1));
    let mid_gop = ["-ss", "1", "-copyinkf", "-bsf:v", "dump_extra=freq=all"];
    assert!(send(&mid_gop).success(), "second caller");

    let bus = pipeline.bus().expect("bus");
    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(message) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            continue;
        };
        match message.view() {
            gst::MessageView::Eos(_) => {
                order.push("eos");
                break;
            }
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(_) => {
                let s = message.structure().expect("structure");
                if PublishPaused::from_structure(s).is_some() {
                    order.push("paused");
                } else if PublishResumed::from_structure(s).is_some() {
                    order.push("resumed");
                } else if PublishStopped::from_structure(s).is_some() {
                    order.push("stopped");
                }
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).expect("null");
    assert_eq!(
        order,
        ["paused", "resumed", "paused", "stopped", "eos"],
        "one stream from the first caller to the grace after the second"
    );

    for (name, seen) in [("video", &video), ("audio", &audio)] {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            (seen.stream_starts, seen.segments),
            (1, 1),
            "{name}: downstream saw one stream"
        );
        // tsdemux's audio timestamps wobble by a few tens of ms (seen for
        // any one caller); the returning caller's must not go back.
        let pts: Vec<_> = seen.buffers.iter().map(|b| b.0).collect();
        let back: Vec<_> = pts
            .windows(2)
            .filter(|w| w[0] > w[1] + gst::ClockTime::from_mseconds(100))
            .collect();
        assert!(back.is_empty(), "{name}: timestamps went back: {back:?}");
    }
    let video = video.lock().unwrap_or_else(|e| e.into_inner());
    // The gap: where the second caller's first frame comes.
    let (at, gap) = video
        .buffers
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[1].0 - w[0].0))
        .max_by_key(|(_, gap)| *gap)
        .expect("video buffers");
    assert!(
        gap > gst::ClockTime::from_seconds(1) && gap < gst::ClockTime::from_seconds(8),
        "the gap in running time: {gap}"
    );
    let (_, keyframe, discont) = video.buffers[at];
    assert!(
        keyframe && discont,
        "the second caller's video starts at a keyframe"
    );
    // About 4 s from each caller at 30 fps, less the second's frames before
    // its first keyframe (2 s).
    assert!(
        video.buffers.len() - at >= 45,
        "{} frames after the gap",
        video.buffers.len() - at
    );
}
