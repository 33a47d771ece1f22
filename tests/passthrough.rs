//! H.264 pass-through end to end, all real: the service with
//! `video_passthrough` set (or an ingress's own options), a LiveKit server, ffmpeg publishing RTMP
//! (libx264), and the Python subscriber decoding what the room forwards.
//!
//! The source is 1440x810, a size no preset makes (the default preset would
//! fit it to 1280x720), at about 2.5 Mbit/s (the preset's top layer is
//! 1.9 Mbit/s): what the room gets tells which way the top layer was made.

mod common;

use common::service::Harness;
use common::{Subscriber, SubscriberOptions};
use gst::prelude::*;
use gstlivekitingress::passthrough::Mode;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use reqwest::Method;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOURCE: &str = "1440x810";

/// One test at a time: each runs a 1440x810 encoder, the ingress and
/// several decoding viewers, which is what two cores hold.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// ffmpeg publishing a 1440x810 test pattern with a tone over RTMP for
/// `seconds`: libx264 with 2 s between keyframes and `bframes` B-frames.
fn publish(h: &Harness, key: &str, seconds: u32, bframes: u32) -> Child {
    publish_sized(h, key, seconds, bframes, SOURCE)
}

fn publish_sized(h: &Harness, key: &str, seconds: u32, bframes: u32, size: &str) -> Child {
    let url = format!("rtmp://127.0.0.1:{}/live/{key}", h.rtmp_port);
    publish_to(&url, "flv", seconds, bframes, size)
}

/// The same as MPEG-TS over SRT.
fn publish_srt(h: &Harness, key: &str, seconds: u32) -> Child {
    let port = h.srt_port();
    publish_to(
        &format!("srt://127.0.0.1:{port}?streamid={key}"),
        "mpegts",
        seconds,
        0,
        SOURCE,
    )
}

fn publish_to(url: &str, format: &str, seconds: u32, bframes: u32, size: &str) -> Child {
    Command::new("ffmpeg")
        // Info for the closing summary (bytes of video encoded).
        .args([
            "-hide_banner",
            "-loglevel",
            "info",
            "-nostats",
            "-nostdin",
            "-re",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "superfast", "-b:v", "4000k"])
        .args(["-bf", &bframes.to_string(), "-g", "60"])
        .args(["-c:a", "aac", "-ac", "2", "-f", format])
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg")
}

fn stop(mut ffmpeg: Child) {
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

/// The video track's layers as the room announced them, smallest first.
fn announced_layers(h: &Harness, id: &str) -> Vec<proto::VideoLayer> {
    let state = h.info(id).state.expect("state");
    let mut layers = state
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .and_then(|t| t.codecs.first())
        .map(|c| c.layers.clone())
        .unwrap_or_default();
    layers.sort_by_key(|l| l.width * l.height);
    layers
}

fn sizes(layers: &[proto::VideoLayer]) -> Vec<String> {
    layers
        .iter()
        .map(|l| format!("{}x{}", l.width, l.height))
        .collect()
}

fn metric(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{{labels}}} ")))
        .and_then(|v| v.parse().ok())
}

/// Cores the node's live streams hold (`/metrics`): what admission counts.
fn committed_cores(h: &Harness) -> f64 {
    let port = h.service.as_ref().expect("running").http_addr.port();
    let body = common::http_get(port, "/metrics").expect("/metrics");
    common::metric(&body, "livekit_ingress_committed_cores").expect("committed cores")
}

/// Bytes the service sent to the room on the video stream `rid`.
fn sent_bytes(h: &Harness, id: &str, rid: &str) -> Option<f64> {
    let port = h.service.as_ref().expect("running").http_addr.port();
    let labels = format!("ingress=\"{id}\",kind=\"video\",rid=\"{rid}\"");
    metric(
        &common::http_get(port, "/metrics")?,
        "livekit_ingress_sent_bytes_total",
        &labels,
    )
}

/// What the room got of the video stream `rid` over the whole publish,
/// against what ffmpeg encoded (its closing summary): followed until the
/// ingress ends, the last count livekitsink reported.
fn sent_over_encoded(h: &Harness, id: &str, rid: &str, ffmpeg: Child) -> f64 {
    let mut sent = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Some(bytes) = sent_bytes(h, id, rid) {
            sent = Some(bytes);
        }
        let status = h.info(id).state.map(|s| s.status);
        if status == Some(Status::EndpointInactive as i32) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = ffmpeg.wait_with_output().expect("ffmpeg ends");
    let log = String::from_utf8_lossy(&out.stderr);
    let encoded_kb: f64 = log
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("video:")?
                .split("kB")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no summary from ffmpeg: {log}"));
    let sent = sent.expect("the stream's sent bytes in /metrics");
    let ratio = sent / (encoded_kb * 1024.0);
    eprintln!("rid {rid:?}: sent {sent:.0} bytes, ffmpeg encoded {encoded_kb} kB: {ratio:.3}");
    ratio
}

/// A viewer on the high layer that switches to low at 6 s and back at 14 s.
fn switching_viewer(h: &Harness, room: &str) -> Subscriber {
    let mut opts = SubscriberOptions::new(room);
    opts.identity = "switcher".into();
    opts.quality = Some("high".into());
    opts.expect_tracks = 2;
    opts.duration = 22.0;
    opts.switches = vec!["low@6".into(), "high@14".into()];
    Subscriber::spawn(&h.livekit, &opts)
}

/// Seconds from the viewer asking for `quality` until it decoded `size`.
fn switch_time(report: &serde_json::Value, identity: &str, quality: &str, size: &str) -> f64 {
    let asked = report["events"]
        .as_array()
        .and_then(|events| {
            events
                .iter()
                .find(|e| e["event"] == "switch" && e["quality"] == quality)
        })
        .and_then(|e| e["t"].as_f64())
        .unwrap_or_else(|| panic!("no switch to {quality}: {report}"));
    let video = common::track_of(report, identity, "video");
    let reached = video["size_changes"]
        .as_array()
        .and_then(|changes| {
            changes
                .iter()
                .find(|c| c["size"] == size && c["t"].as_f64().unwrap_or(0.0) >= asked)
        })
        .and_then(|c| c["t"].as_f64())
        .unwrap_or_else(|| panic!("never reached {size} after asking for {quality}: {video}"));
    reached - asked
}

#[test]
fn hybrid_sends_the_source_as_the_top_layer() {
    let _serial = one_at_a_time();
    let h = Harness::start_with_passthrough(Mode::Hybrid);
    let info = h.create("hybrid", "streamer", "Streamer");
    let id = info.ingress_id.clone();

    let ffmpeg = publish(&h, &info.stream_key, 45, 0);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let switcher = switching_viewer(&h, "hybrid");

    // Each layer decodes at its size: the source's own on top, the
    // preset's lower layers below it.
    let expected = [("low", "320x180"), ("medium", "640x360"), ("high", SOURCE)];
    let reports = common::watch_layers(&h.livekit, "hybrid", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        let video = common::track_of(report, "streamer", "video");
        assert_eq!(video["simulcasted"], true, "{video}");
        assert_eq!(video["mime_type"], "video/H264", "{video}");
        common::assert_layer_size(report, "streamer", quality, size);
        assert!(common::frames(common::track_of(report, "streamer", "audio")) >= 100);
    }
    let state = h.info(&id).state.expect("state");
    assert_eq!(
        state.error, "",
        "passed through, nothing to tell: {state:?}"
    );
    let layers = announced_layers(&h, &id);
    assert_eq!(sizes(&layers), ["320x180", "640x360", SOURCE], "{layers:?}");
    // Admitted at a transcode's cost, it holds hybrid's once passed through.
    assert_eq!(committed_cores(&h), 0.3);

    // A viewer switches down and back up within two source GOPs (4 s):
    // down at once (the lower layers answer keyframe requests), up at the
    // source's next keyframe.
    let report = switcher.report();
    let down = switch_time(&report, "streamer", "low", "320x180");
    let up = switch_time(&report, "streamer", "high", SOURCE);
    assert!(down <= 4.0, "to low in {down:.2} s");
    assert!(up <= 4.0, "back to high in {up:.2} s");
    eprintln!("switched down in {down:.2} s, up in {up:.2} s");

    // The top layer is the source's bytes: the room got what ffmpeg
    // encoded (less the first second, measured for the bitrate, and the
    // join; plus RTP's headers), where a transcode makes the preset's
    // 1.9 Mbit/s.
    let ratio = sent_over_encoded(&h, &id, "f", ffmpeg);
    assert!(
        (0.85..1.06).contains(&ratio),
        "top layer sent/encoded {ratio:.3}"
    );
}

/// SRT's MPEG-TS carries the SPS in-band only; srtingresssrc hands H.264
/// on as AVC, so the pipeline finds it in the caps and passes it through as
/// for RTMP.
#[test]
fn srt_h264_is_passed_through_too() {
    let _serial = one_at_a_time();
    let h = Harness::start_with_passthrough(Mode::Hybrid);
    let info = h.create("srt-hybrid", "streamer", "Streamer");
    let id = info.ingress_id.clone();

    let ffmpeg = publish_srt(&h, &info.stream_key, 30);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let expected = [("low", "320x180"), ("high", SOURCE)];
    let reports = common::watch_layers(&h.livekit, "srt-hybrid", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        common::assert_layer_size(report, "streamer", quality, size);
    }
    let state = h.info(&id).state.expect("state");
    assert_eq!(state.error, "", "passed through: {state:?}");
    assert_eq!(
        sizes(&announced_layers(&h, &id)),
        ["320x180", "640x360", SOURCE]
    );
    let ratio = sent_over_encoded(&h, &id, "f", ffmpeg);
    assert!(
        (0.85..1.06).contains(&ratio),
        "top layer sent/encoded {ratio:.3}"
    );
}

#[test]
fn b_frames_are_transcoded_as_the_preset_says() {
    let _serial = one_at_a_time();
    let h = Harness::start_with_passthrough(Mode::Hybrid);
    let info = h.create("bframes", "streamer", "Streamer");
    let id = info.ingress_id.clone();

    let ffmpeg = publish(&h, &info.stream_key, 40, 3);
    let publishing = h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let expected = [("low", "320x180"), ("high", "1280x720")];
    let reports = common::watch_layers(&h.livekit, "bframes", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        common::assert_layer_size(report, "streamer", quality, size);
    }
    let state = h.info(&id).state.expect("state");
    assert_eq!(state.status, Status::EndpointPublishing as i32);
    assert!(
        state.error.contains("pass-through off") && state.error.contains("B-frames"),
        "the reason in the state: {:?} (at publishing: {:?})",
        state.error,
        publishing.state
    );
    let layers = announced_layers(&h, &id);
    assert_eq!(
        sizes(&layers),
        ["320x180", "640x360", "1280x720"],
        "{layers:?}"
    );
    assert_eq!(committed_cores(&h), 0.6, "a transcode's cost");
    stop(ffmpeg);
    h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(30));
}

#[test]
fn single_sends_only_the_source() {
    let _serial = one_at_a_time();
    let h = Harness::start_with_passthrough(Mode::Single);
    let info = h.create("single", "streamer", "Streamer");
    let id = info.ingress_id.clone();

    let ffmpeg = publish(&h, &info.stream_key, 25, 0);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let reports = common::watch_layers(&h.livekit, "single", 2, &[("high", SOURCE)]);
    let video = common::track_of(&reports[0], "streamer", "video");
    assert_eq!(video["simulcasted"], false, "{video}");
    common::assert_layer_size(&reports[0], "streamer", "high", SOURCE);
    assert_eq!(
        video["sizes"].as_object().map(|s| s.len()),
        Some(1),
        "only the source's size: {video}"
    );
    let state = h.info(&id).state.expect("state");
    assert_eq!(state.error, "", "{state:?}");
    assert_eq!(sizes(&announced_layers(&h, &id)), [SOURCE]);
    assert_eq!(committed_cores(&h), 0.05, "a forwarded stream's cost");
    let ratio = sent_over_encoded(&h, &id, "", ffmpeg);
    assert!((0.85..1.06).contains(&ratio), "sent/encoded {ratio:.3}");
}

/// Pass-through asked for by one ingress, through its own options, on a
/// service whose default is off; with them cleared, its next stream is
/// transcoded again. The Ingress API's answers are untouched by them.
#[test]
fn an_ingress_asks_for_pass_through_on_its_own() {
    let _serial = one_at_a_time();
    let h = Harness::start();
    let info = h.create("own-options", "streamer", "Streamer");
    let id = info.ingress_id.clone();
    let options = |method: Method, body: Option<&str>| h.ingress_options(method, &id, body, true);

    let (status, answer) = options(Method::GET, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ingress_id"], id.as_str(), "{answer}");
    assert_eq!(answer["options"], json!({}), "{answer}");
    assert_eq!(answer["in_effect"], json!({"video_passthrough": "off"}));

    // Refusals say what is wrong, where the caller reads; nothing is set.
    for (body, code, needle) in [
        (
            r#"{"video_passthrough": "always"}"#,
            "invalid_argument",
            r#"video_passthrough is off, hybrid or single, not "always""#,
        ),
        (
            r#"{"passthrough": "hybrid"}"#,
            "invalid_argument",
            r#"no ingress option "passthrough""#,
        ),
        ("hybrid", "invalid_argument", "ingress options are not JSON"),
    ] {
        let (status, answer) = options(Method::PUT, Some(body));
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some(code)),
            "{body}: {answer}"
        );
        assert!(
            answer["msg"].as_str().is_some_and(|m| m.contains(needle)),
            "{answer}"
        );
    }
    let hybrid = r#"{"video_passthrough": "hybrid"}"#;
    let (status, answer) = h.ingress_options(Method::PUT, &id, Some(hybrid), false);
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("unauthenticated")),
        "{answer}"
    );
    let (status, answer) = h.ingress_options(Method::PUT, "IN_none", Some(hybrid), true);
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
    assert_eq!(options(Method::GET, None).1["options"], json!({}));

    let (status, answer) = options(Method::PUT, Some(hybrid));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["options"], json!({"video_passthrough": "hybrid"}));
    assert_eq!(answer["in_effect"], json!({"video_passthrough": "hybrid"}));
    // LiveKit's answers stay LiveKit's.
    let listed = h.info(&id);
    assert_eq!(
        proto::IngressInfo {
            state: None,
            ..listed
        },
        proto::IngressInfo {
            state: None,
            ..info.clone()
        }
    );

    // Its stream passes the source through; the service's default is off.
    let ffmpeg = publish(&h, &info.stream_key, 25, 0);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let expected = [("low", "320x180"), ("high", SOURCE)];
    let reports = common::watch_layers(&h.livekit, "own-options", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        common::assert_layer_size(report, "streamer", quality, size);
    }
    assert_eq!(
        sizes(&announced_layers(&h, &id)),
        ["320x180", "640x360", SOURCE]
    );
    assert_eq!(h.info(&id).state.expect("state").error, "");
    stop(ffmpeg);
    h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(30));

    // Cleared: the service's default again, for the next stream.
    let (status, answer) = options(Method::DELETE, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["options"], json!({}));
    assert_eq!(answer["in_effect"], json!({"video_passthrough": "off"}));
    let ffmpeg = publish(&h, &info.stream_key, 25, 0);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let reports = common::watch_layers(&h.livekit, "own-options", 2, &[("high", "1280x720")]);
    common::assert_layer_size(&reports[0], "streamer", "high", "1280x720");
    assert_eq!(
        sizes(&announced_layers(&h, &id)),
        ["320x180", "640x360", "1280x720"]
    );
    stop(ffmpeg);
    h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(30));

    // Deleting the ingress deletes its options.
    assert_eq!(options(Method::PUT, Some(hybrid)).0, 200);
    h.rt.block_on(h.client().delete_ingress(&id))
        .expect("delete");
    let (status, answer) = options(Method::GET, None);
    assert_eq!(
        (status, answer["code"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
}

/// In hybrid, a source no larger than the smallest lower layer has nothing
/// to encode below it: it goes out alone, decoded by no one, and holds a
/// forwarded stream's share of the node.
#[test]
fn hybrid_with_no_smaller_layer_sends_the_source_alone() {
    let _serial = one_at_a_time();
    let h = Harness::start_with_passthrough(Mode::Hybrid);
    let info = h.create("small", "streamer", "Streamer");
    let id = info.ingress_id.clone();

    let ffmpeg = publish_sized(&h, &info.stream_key, 25, 0, "320x180");
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let reports = common::watch_layers(&h.livekit, "small", 2, &[("high", "320x180")]);
    common::assert_layer_size(&reports[0], "streamer", "high", "320x180");
    assert_eq!(sizes(&announced_layers(&h, &id)), ["320x180"]);
    assert_eq!(h.info(&id).state.expect("state").error, "");
    assert_eq!(committed_cores(&h), 0.05, "a forwarded stream's cost");
    stop(ffmpeg);
    h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(30));
}

/// ffmpeg making `seconds` of a 960x540 pattern as MPEG-TS, with `bframes`
/// B-frames.
fn encode_part(path: &std::path::Path, seconds: u32, bframes: u32) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=960x540:rate=30"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "superfast"])
        .args(["-bf", &bframes.to_string(), "-g", "60", "-f", "mpegts"])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "encoding {}", path.display());
}

#[test]
fn b_frames_mid_stream_turn_the_top_layer_into_a_transcode() {
    let _serial = one_at_a_time();
    let h = Harness::start_with_passthrough(Mode::Hybrid);
    let info = h.create("restart", "streamer", "Streamer");
    let id = info.ingress_id.clone();
    // One RTMP publish whose encoder "restarts" with B-frames after 8 s:
    // the concatenation of two encodes, sent as they are (-c:v copy).
    let dir = h.dir.path();
    encode_part(&dir.join("plain.ts"), 8, 0);
    encode_part(&dir.join("bframes.ts"), 40, 3);
    std::fs::write(
        dir.join("parts.txt"),
        "file 'plain.ts'\nfile 'bframes.ts'\n",
    )
    .expect("list");
    let ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "concat", "-safe", "0", "-i"])
        .arg(dir.join("parts.txt"))
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args([
            "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-t", "45",
        ])
        .args(["-f", "flv"])
        .arg(format!(
            "rtmp://127.0.0.1:{}/live/{}",
            h.rtmp_port, info.stream_key
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg");

    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    let participant = h.participant("restart", "streamer").expect("in the room");
    let state = h.info(&id).state.expect("state");
    assert_eq!(state.error, "", "passed through at first: {state:?}");
    assert_eq!(committed_cores(&h), 0.3, "hybrid's cost");

    // The B-frames come: the reason shows while the ingress publishes on.
    let changed = common::wait_for(Duration::from_secs(20), || {
        let state = h.info(&id).state?;
        state.error.contains("B-frames").then_some(state)
    })
    .unwrap_or_else(|| panic!("no fallback: {:?}", h.info(&id).state));
    assert_eq!(
        changed.status,
        Status::EndpointPublishing as i32,
        "{changed:?}"
    );
    assert_eq!(committed_cores(&h), 0.6, "a transcode's cost again");

    // Same participant, same layers, each still decoded at its size: the
    // top one now encoded from the decoded source.
    let expected = [("low", "320x180"), ("high", "960x540")];
    let reports = common::watch_layers(&h.livekit, "restart", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        common::assert_layer_size(report, "streamer", quality, size);
    }
    let now = h
        .participant("restart", "streamer")
        .expect("still in the room");
    assert_eq!(now.sid, participant.sid, "the participant stayed");
    assert_eq!(
        sizes(&announced_layers(&h, &id)),
        ["320x180", "640x360", "960x540"]
    );
    stop(ffmpeg);
    h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(30));
}

// The element alone, no server: what leaves h264passthrough's pads.

/// One access unit or picture as a fakesink saw it.
#[derive(Debug, Clone, PartialEq)]
struct Unit {
    pts: Option<gst::ClockTime>,
    keyframe: bool,
    hash: u64,
}

/// Runs `launch` to its end; what each named fakesink received.
fn run_to_eos(launch: &str, sinks: &[&str]) -> Vec<Vec<Unit>> {
    use std::hash::{Hash, Hasher};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().expect("gstreamer");
        gstlivekitingress::plugin_register_static().expect("register plugin");
    });
    let pipeline = gst::parse::launch(launch)
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let seen: Vec<std::sync::Arc<std::sync::Mutex<Vec<Unit>>>> =
        sinks.iter().map(|_| Default::default()).collect();
    for (name, seen) in sinks.iter().zip(&seen) {
        let seen = seen.clone();
        let pad = pipeline
            .by_name(name)
            .and_then(|s| s.static_pad("sink"))
            .expect("a named fakesink");
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                if let Ok(map) = buffer.map_readable() {
                    map.as_slice().hash(&mut hasher);
                }
                seen.lock().expect("units").push(Unit {
                    pts: buffer.pts(),
                    keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    hash: hasher.finish(),
                });
            }
            gst::PadProbeReturn::Ok
        });
    }
    pipeline.set_state(gst::State::Playing).expect("playing");
    let bus = pipeline.bus().expect("bus");
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the end within a minute");
    pipeline.set_state(gst::State::Null).expect("stopped");
    if let gst::MessageView::Error(err) = message.view() {
        panic!("{launch}: {}", err.error());
    }
    seen.iter()
        .map(|s| s.lock().expect("units").clone())
        .collect()
}

/// A 4 s 320x180 FLV from ffmpeg: a keyframe every second, `bframes` B-frames.
fn flv_file(dir: &std::path::Path, bframes: u32) -> std::path::PathBuf {
    let path = dir.join(format!("bf{bframes}.flv"));
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x180:rate=30",
            "-t",
            "4",
        ])
        .args(["-c:v", "libx264", "-preset", "superfast", "-g", "30"])
        .args(["-bf", &bframes.to_string(), "-f", "flv"])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    path
}

/// The access units of `head` (a parsed H.264 source) as they come, in the
/// byte-stream h264passthrough gives: what a passed-through layer must equal.
fn source_units(head: &str) -> Vec<Unit> {
    run_to_eos(
        &format!(
            "{head} config-interval=-1 ! video/x-h264,stream-format=byte-stream,alignment=au \
             ! fakesink name=source"
        ),
        &["source"],
    )
    .remove(0)
}

#[test]
fn the_element_sends_the_source_untouched_and_keys_the_lower_layers_with_it() {
    let dir = common::ScratchDir::new("passthrough-element");
    let file = flv_file(dir.path(), 0);
    let head = format!("filesrc location={} ! flvdemux ! h264parse", file.display());
    let reference = source_units(&head);
    let out = run_to_eos(
        &format!(
            "{head} ! h264passthrough name=pass pass.src ! fakesink name=top \
             pass.raw ! queue ! simulcastenc codec=h264-high layers=160x90 keyframe-interval=10 \
             name=enc enc.src_0 ! fakesink name=low"
        ),
        &["top", "low"],
    );
    let (top, low) = (&out[0], &out[1]);
    assert_eq!(reference.len(), 120);
    // The top layer is the source's access units, byte for byte, from the
    // end of its first second (measured for the bitrate, not sent) on.
    let first = top.first().expect("the top layer flowed");
    let from = reference
        .iter()
        .position(|u| u.pts == first.pts)
        .expect("a source time");
    assert!(from <= 31, "started at access unit {from}");
    assert_eq!(top[..], reference[from..]);
    // Each lower-layer keyframe is on a source keyframe and each source
    // keyframe is one (its own interval, 10 s, would give only the first).
    // Times from each stream's first picture (the encoder's output segment
    // starts elsewhere than the demuxer's).
    let keys = |units: &[Unit]| -> Vec<u64> {
        let start = units
            .first()
            .and_then(|u| u.pts)
            .map_or(0, |t| t.nseconds());
        units
            .iter()
            .filter(|u| u.keyframe)
            .filter_map(|u| u.pts.map(|t| t.nseconds() - start))
            .collect()
    };
    assert_eq!(keys(&reference).len(), 4);
    assert_eq!(keys(low), keys(&reference));
}

#[test]
fn the_element_encodes_the_top_layer_of_a_stream_with_b_frames() {
    let dir = common::ScratchDir::new("passthrough-element-b");
    let file = flv_file(dir.path(), 3);
    let head = format!("filesrc location={} ! flvdemux ! h264parse", file.display());
    let reference = source_units(&head);
    let launch = format!("{head} ! h264passthrough name=pass pass.src ! fakesink name=top");
    let top = run_to_eos(&launch, &["top"]).remove(0);
    // Every picture, encoded again: none is a source access unit.
    assert!(top.len() >= 115, "{} pictures", top.len());
    assert!(top
        .iter()
        .all(|u| !reference.iter().any(|r| r.hash == u.hash)));
    // In order: no reordering left on the way out.
    assert!(top.windows(2).all(|w| w[0].pts < w[1].pts));
}
