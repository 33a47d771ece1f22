//! WHIP push end to end, all real: the service (WHIP on its API port), WHIP
//! ingresses made through the LiveKit API client, aiortc (Python WebRTC, its
//! own ICE, DTLS and encoders) as the WHIP client
//! (`tests/helpers/whip_aiortc.py`) and pion (Go WebRTC, simulcast with
//! rids: `tests/helpers/whip_pion`, sending files ffmpeg encodes here), the
//! Python LiveKit subscriber watching the room.

mod common;

use common::service::Harness;
use livekit_api::services::ingress::CreateIngressOptions;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The aiortc WHIP client publishing for `seconds` to `url` (the key in the
/// path, or as a Bearer token with `bearer`), then DELETE.
fn whip_publish(url: &str, seconds: u32, codec: &str, size: &str, bearer: Option<&str>) -> Child {
    whip_client(url, seconds, codec, size, bearer, &[])
}

fn whip_client(
    url: &str,
    seconds: u32,
    codec: &str,
    size: &str,
    bearer: Option<&str>,
    extra: &[&str],
) -> Child {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::project_dir().join("tests/helpers/whip_aiortc.py"))
        .arg(url)
        .args(["--seconds", &seconds.to_string()])
        .args(["--codec", codec, "--size", size])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = bearer {
        cmd.args(["--bearer", key]);
    }
    cmd.args(extra);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start the aiortc client (run scripts/setup.sh): {e}"))
}

/// The client's JSON lines, one value per line.
fn steps(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The value of the first step that has `field`.
fn step(steps: &[serde_json::Value], field: &str) -> serde_json::Value {
    steps
        .iter()
        .find_map(|s| s.get(field).cloned())
        .unwrap_or(serde_json::Value::Null)
}

fn create_whip(h: &Harness, room: &str, identity: &str) -> proto::IngressInfo {
    h.rt.block_on(h.client().create_ingress(
        proto::IngressInput::WhipInput,
        CreateIngressOptions {
            name: format!("{room} whip"),
            room_name: room.into(),
            participant_identity: identity.into(),
            participant_name: "WHIP Streamer".into(),
            ..Default::default()
        },
    ))
    .expect("create WHIP ingress")
}

/// A client's publish: the room gets its video at `size` and its audio; the
/// ingress shows PUBLISHING with the input; DELETE ends it INACTIVE and the
/// participant leaves.
fn publish_and_watch(
    h: &Harness,
    info: &proto::IngressInfo,
    client: Child,
    size: &str,
    (mime, input_mime): (&str, &str),
) -> Vec<serde_json::Value> {
    let (room, identity, id) = (
        &info.room_name,
        &info.participant_identity,
        &info.ingress_id,
    );
    h.wait_status(id, Status::EndpointPublishing, Duration::from_secs(20));
    let mut opts = common::SubscriberOptions::new(room);
    opts.expect_tracks = 2;
    opts.duration = 15.0;
    opts.until_size = Some(size.into());
    let report = common::subscribe(&h.livekit, &opts);
    let video = common::track_of(&report, identity, "video");
    let at_size = video["sizes"][size].as_u64().unwrap_or(0);
    assert!(at_size >= 30, "only {at_size} frames at {size}: {video}");
    assert_eq!(video["last_size"], size, "{video}");
    // Bypass: the client's one encoding as it came, no simulcast layers.
    assert_eq!(video["simulcasted"], false, "{video}");
    let audio = common::track_of(&report, identity, "audio");
    assert!(common::frames(audio) >= 100, "{audio}");

    let state = h.info(id).state.expect("state");
    let participant = h.participant(room, identity).expect("streamer in the room");
    let video_track = participant
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .expect("a video track");
    assert_eq!(video_track.mime_type, mime, "{video_track:?}");
    // The state shows the input as it came and the one layer published.
    let input = state.video.as_ref().expect("input video");
    assert_eq!(input.mime_type, input_mime, "{state:?}");
    assert_eq!(format!("{}x{}", input.width, input.height), size);
    // aiortc sends 30 fps; VP8 carries no frame rate, it is measured.
    assert!((input.framerate - 30.0).abs() < 0.5, "{state:?}");
    let audio_in = state.audio.as_ref().expect("input audio");
    assert_eq!(audio_in.mime_type, "audio/x-opus", "{state:?}");
    let layers = state
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .and_then(|t| t.codecs.iter().map(|c| c.layers.len()).max());
    assert_eq!(layers, Some(1), "{state:?}");

    // The client DELETEs its session after its seconds.
    let out = client.wait_with_output().expect("client ends");
    let steps = steps(&out);
    assert!(
        out.status.success(),
        "client: {steps:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(step(&steps, "delete"), 200, "{steps:?}");
    let ended = h.wait_status(id, Status::EndpointInactive, Duration::from_secs(20));
    assert!(ended.state.expect("state").ended_at > 0);
    assert!(
        h.left_within(room, identity, Duration::from_secs(10)),
        "the streamer stayed in the room"
    );
    steps
}

#[test]
fn whip_publishes_reach_the_room_in_bypass_and_end_inactive() {
    let h = Harness::start();
    let info = create_whip(&h, "whip-room", "whip-streamer");
    // Created as livekit-server creates it: the WHIP URL, no transcoding.
    assert_eq!(info.url, format!("{}/w", h.api_url()));
    #[allow(deprecated)] // what LiveKit still fills for older clients
    let bypass = info.bypass_transcoding;
    assert!(bypass, "{info:?}");
    assert_eq!(info.enable_transcoding, Some(false), "{info:?}");
    let url = format!("{}/{}", info.url, info.stream_key);

    // A wrong key is refused with 404 before any ICE or DTLS; the ingress
    // stays as it was.
    let wrong = whip_publish(
        &format!("{}/not-a-key", info.url),
        1,
        "h264",
        "640x360",
        None,
    )
    .wait_with_output()
    .expect("client ends");
    let wrong_steps = steps(&wrong);
    assert_eq!(step(&wrong_steps, "post"), 404, "{wrong_steps:?}");
    assert!(!wrong.status.success());
    assert!(h.participant("whip-room", "whip-streamer").is_none());

    // H.264 at 640x360 with Opus, the key in the path.
    let client = whip_publish(&url, 25, "h264", "640x360", None);
    let published = publish_and_watch(&h, &info, client, "640x360", ("video/H264", "video/x-h264"));
    assert_eq!(step(&published, "post"), 201, "{published:?}");

    // Again on the same ingress: VP8 at 1280x720, the key as a Bearer token
    // on the base URL (what OBS sends).
    let client = whip_publish(&info.url, 25, "vp8", "1280x720", Some(&info.stream_key));
    publish_and_watch(&h, &info, client, "1280x720", ("video/VP8", "video/x-vp8"));

    // A client that vanishes (no DELETE, no DTLS close): the session ends
    // on its silence (15 s without a datagram), the ingress goes INACTIVE.
    let vanished = whip_client(&url, 6, "h264", "640x360", None, &["--vanish"])
        .wait_with_output()
        .expect("client ends");
    let vanished_steps = steps(&vanished);
    assert_eq!(step(&vanished_steps, "post"), 201, "{vanished_steps:?}");
    assert!(
        step(&vanished_steps, "delete").is_null(),
        "{vanished_steps:?}"
    );
    let live = h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(5),
    );
    assert!(
        h.participant("whip-room", "whip-streamer").is_some(),
        "{live:?}"
    );
    let gone = std::time::Instant::now();
    let ended = h.wait_status(
        &info.ingress_id,
        Status::EndpointInactive,
        Duration::from_secs(30),
    );
    assert!(ended.state.expect("state").ended_at > 0);
    assert!(
        h.left_within("whip-room", "whip-streamer", Duration::from_secs(10)),
        "the vanished streamer stayed in the room"
    );
    assert!(
        gone.elapsed() >= Duration::from_secs(10),
        "ended before the silence"
    );
}

/// With `enable_transcoding`, a single-layer WHIP publish is decoded and
/// encoded like RTMP: the room gets the preset's three layers.
#[test]
fn a_transcoded_whip_publish_reaches_the_room_in_three_layers() {
    let h = Harness::start();
    let info =
        h.rt.block_on(h.client().create_ingress(
            proto::IngressInput::WhipInput,
            CreateIngressOptions {
                name: "transcoded whip".into(),
                room_name: "whip-transcode".into(),
                participant_identity: "whip-transcoded".into(),
                enable_transcoding: Some(true),
                ..Default::default()
            },
        ))
        .expect("create WHIP ingress");
    assert_eq!(info.enable_transcoding, Some(true), "{info:?}");
    let url = format!("{}/{}", info.url, info.stream_key);
    let client = whip_publish(&url, 30, "h264", "1280x720", None);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );
    let expected = [("low", "320x180"), ("high", "1280x720")];
    let reports = common::watch_layers(&h.livekit, "whip-transcode", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        common::assert_layer_size(report, "whip-transcoded", quality, size);
        let video = common::track_of(report, "whip-transcoded", "video");
        assert_eq!(video["simulcasted"], true, "{video}");
        let audio = common::track_of(report, "whip-transcoded", "audio");
        assert!(common::frames(audio) >= 50, "{audio}");
    }
    let layers = h
        .info(&info.ingress_id)
        .state
        .expect("state")
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .and_then(|t| t.codecs.iter().map(|c| c.layers.len()).max());
    assert_eq!(layers, Some(3));
    let out = client.wait_with_output().expect("client ends");
    assert_eq!(step(&steps(&out), "delete"), 200);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointInactive,
        Duration::from_secs(20),
    );
}

/// The pion WHIP client, built by `scripts/setup.sh`.
fn pion() -> PathBuf {
    common::tools_dir().join("bin/whip-pion")
}

/// What the pion client sends from `dir` (see `make_media`) to `url` for
/// `seconds`, with these rids (smallest first) and codec.
fn pion_publish(url: &str, dir: &Path, codec: &str, rids: &[&str], seconds: u32) -> Child {
    Command::new(pion())
        .args(["-codec", codec, "-layers", &rids.join(",")])
        .args(["-seconds", &seconds.to_string()])
        .arg("-media")
        .arg(dir)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the pion client (run scripts/setup.sh): {e}"))
}

/// Media for the pion client in `dir`, made by ffmpeg: per (rid, WxH) 4 s
/// of 30 fps video, H.264 constrained baseline without B-frames (Annex B,
/// SPS and PPS at each keyframe) or VP8 (IVF), a keyframe every second on
/// the same frames in every size (no scene-cut keyframes); and Opus in Ogg,
/// one 20 ms packet per page.
fn make_media(dir: &Path, codec: &str, layers: &[(&str, &str)]) {
    let ffmpeg = |args: &[&str], out: PathBuf| {
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args)
            .arg(&out)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg made no {}", out.display());
    };
    for (rid, size) in layers {
        let source = format!("testsrc2=size={size}:rate=30");
        let mut args = vec![
            "-f", "lavfi", "-i", &source, "-t", "4", "-pix_fmt", "yuv420p",
        ];
        args.extend(["-g", "30", "-keyint_min", "30"]);
        let file = match codec {
            "h264" => {
                args.extend([
                    "-c:v",
                    "libx264",
                    "-profile:v",
                    "baseline",
                    "-preset",
                    "veryfast",
                ]);
                args.extend(["-sc_threshold", "0", "-bf", "0", "-b:v", "1M"]);
                args.extend(["-x264-params", "repeat-headers=1", "-f", "h264"]);
                format!("{rid}.h264")
            }
            _ => {
                args.extend(["-c:v", "libvpx", "-b:v", "1M", "-deadline", "realtime"]);
                args.extend([
                    "-cpu-used",
                    "8",
                    "-auto-alt-ref",
                    "0",
                    "-lag-in-frames",
                    "0",
                ]);
                args.extend(["-f", "ivf"]);
                format!("{rid}.ivf")
            }
        };
        ffmpeg(&args, dir.join(file));
    }
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
            "-ac",
            "2",
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-frame_duration",
            "20",
            "-page_duration",
            "20000",
            "-f",
            "ogg",
        ],
        dir.join("audio.ogg"),
    );
}

/// The video track's layers in a TrackInfo, as WxH from the smallest up.
fn layer_sizes(track: &proto::TrackInfo) -> Vec<String> {
    let mut layers: Vec<&proto::VideoLayer> =
        track.codecs.iter().flat_map(|c| c.layers.iter()).collect();
    layers.sort_by_key(|l| l.width * l.height);
    layers.dedup_by_key(|l| (l.width, l.height));
    layers
        .iter()
        .map(|l| format!("{}x{}", l.width, l.height))
        .collect()
}

/// A pion client sending simulcast (three rids, H.264 at 320x180, 640x360
/// and 1280x720) in bypass: the room gets one simulcast video track whose
/// layers are the client's encodings, each decoded at its size by a viewer
/// pinned to its quality; the room's keyframe requests reach the client on
/// each rid; the state shows the largest encoding with its frame rate.
#[test]
fn a_simulcast_whip_publish_reaches_the_room_as_the_clients_layers() {
    let h = Harness::start();
    let info = create_whip(&h, "whip-simulcast", "whip-pion");
    let media = common::ScratchDir::new("whip-simulcast");
    let layers = [("q", "320x180"), ("h", "640x360"), ("f", "1280x720")];
    make_media(media.path(), "h264", &layers);
    let url = format!("{}/{}", info.url, info.stream_key);
    let client = pion_publish(&url, media.path(), "h264", &["q", "h", "f"], 40);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );

    // The server's TrackInfo: one simulcast track of the client's sizes.
    let participant = h
        .participant("whip-simulcast", "whip-pion")
        .expect("streamer in the room");
    let track = participant
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .expect("a video track");
    assert_eq!(track.mime_type, "video/H264", "{track:?}");
    assert_eq!(
        layer_sizes(track),
        ["320x180", "640x360", "1280x720"],
        "{track:?}"
    );

    let expected = [
        ("low", "320x180"),
        ("medium", "640x360"),
        ("high", "1280x720"),
    ];
    let reports = common::watch_layers(&h.livekit, "whip-simulcast", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        common::assert_layer_size(report, "whip-pion", quality, size);
        let video = common::track_of(report, "whip-pion", "video");
        assert_eq!(video["simulcasted"], true, "{video}");
        let audio = common::track_of(report, "whip-pion", "audio");
        assert!(common::frames(audio) >= 50, "{audio}");
    }

    // The state: the client's largest picture as the input, its three
    // layers as the track.
    let state = h.info(&info.ingress_id).state.expect("state");
    let input = state.video.as_ref().expect("input video");
    assert_eq!(input.mime_type, "video/x-h264", "{state:?}");
    assert_eq!((input.width, input.height), (1280, 720), "{state:?}");
    assert!((input.framerate - 30.0).abs() < 0.5, "{state:?}");
    let published = state
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .expect("video track in the state");
    assert_eq!(
        layer_sizes(published),
        ["320x180", "640x360", "1280x720"],
        "{state:?}"
    );

    let out = client.wait_with_output().expect("client ends");
    let steps = steps(&out);
    assert!(
        out.status.success(),
        "client: {steps:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(step(&steps, "post"), 201, "{steps:?}");
    assert_eq!(step(&steps, "delete"), 200, "{steps:?}");
    eprintln!("pion client: {steps:?}");
    // Keyframe requests from the room reached the client on each rid (the
    // server asks for one on a layer when a viewer starts on it).
    let plis = step(&steps, "pli");
    for rid in ["q", "h", "f"] {
        assert!(
            plis[rid].as_u64().unwrap_or(0) >= 1,
            "no PLI on {rid}: {steps:?}"
        );
    }
    h.wait_status(
        &info.ingress_id,
        Status::EndpointInactive,
        Duration::from_secs(20),
    );
    assert!(
        h.left_within("whip-simulcast", "whip-pion", Duration::from_secs(10)),
        "the streamer stayed in the room"
    );
}

/// What the room cannot carry in bypass is refused in the answer to the
/// POST, with a text that names the codec: video only in H.265, only in
/// AV1, or only in plain H.264 baseline (not constrained). Nothing starts:
/// the ingress stays INACTIVE without an error and no one joins; a client
/// offering what the room takes (VP8 simulcast) gets in next.
#[test]
fn offers_the_room_cannot_carry_are_refused_naming_the_codec() {
    let h = Harness::start();
    let info = create_whip(&h, "whip-refused", "whip-refused");
    let url = format!("{}/{}", info.url, info.stream_key);
    let media = common::ScratchDir::new("whip-refused");
    for (codec, named) in [
        ("h265", "offered H265;"),
        ("av1", "offered AV1;"),
        ("h264-baseline", "offered H264 (profile-level-id 42001f);"),
    ] {
        let out = pion_publish(&url, media.path(), codec, &["f"], 1)
            .wait_with_output()
            .expect("client ends");
        let steps = steps(&out);
        assert!(!out.status.success(), "{codec}: {steps:?}");
        assert_eq!(step(&steps, "post"), 406, "{codec}: {steps:?}");
        let error = step(&steps, "error");
        let error = error.as_str().unwrap_or_default();
        assert!(
            error.starts_with("no video codec the room takes: ") && error.contains(named),
            "{codec}: {error}"
        );
        assert!(error.contains("taken: VP8, or H264"), "{codec}: {error}");
        assert!(
            step(&steps, "content_type")
                .as_str()
                .is_some_and(|t| t.starts_with("text/plain")),
            "{codec}: {steps:?}"
        );
    }
    let state = h.info(&info.ingress_id).state.expect("state");
    assert_eq!(state.status, Status::EndpointInactive as i32, "{state:?}");
    assert_eq!(state.started_at, 0, "{state:?}");
    assert!(state.error.is_empty(), "{state:?}");
    assert!(h.participant("whip-refused", "whip-refused").is_none());

    // The same key with VP8 in two encodings is taken: a two-layer VP8
    // track of the client's sizes (read from its keyframes), the state
    // showing the larger one at the frame rate measured from RTP time.
    make_media(media.path(), "vp8", &[("h", "640x360"), ("f", "1280x720")]);
    let client = pion_publish(&url, media.path(), "vp8", &["h", "f"], 12);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );
    let track = common::wait_for(Duration::from_secs(10), || {
        h.participant("whip-refused", "whip-refused")?
            .tracks
            .into_iter()
            .find(|t| t.r#type == proto::TrackType::Video as i32)
    })
    .expect("a video track in the room");
    assert_eq!(track.mime_type, "video/VP8", "{track:?}");
    assert_eq!(layer_sizes(&track), ["640x360", "1280x720"], "{track:?}");
    let input = common::wait_for(Duration::from_secs(10), || {
        let video = h.info(&info.ingress_id).state?.video?;
        (video.framerate > 0.0).then_some(video)
    })
    .expect("a frame rate in the state");
    assert_eq!(input.mime_type, "video/x-vp8", "{input:?}");
    assert_eq!((input.width, input.height), (1280, 720), "{input:?}");
    assert!((input.framerate - 30.0).abs() < 0.5, "{input:?}");
    let out = client.wait_with_output().expect("client ends");
    assert_eq!(step(&steps(&out), "delete"), 200);
}
