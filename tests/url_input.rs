//! URL input end to end, all real: ingresses created through the Rust LiveKit
//! API client pull an MP4 and an HLS playlist from a local HTTP file server
//! (media made by ffmpeg), an RTSP server on GStreamer's RTSP server library
//! (interleaved TCP, then UDP), and ffmpeg listening as an SRT server; the
//! Python subscriber watches the room.

mod common;

use common::service::Harness;
use common::ScratchDir;
use livekit_api::services::ingress::CreateIngressOptions;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when the test is done with it.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's Python, which has the GObject bindings (the test venv does not).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A 720p30 H.264 + AAC clip of `seconds` (moov first: a server without
/// range requests serves it), and the same as an HLS playlist of 2 s segments.
fn make_media(dir: &Path, seconds: u32) {
    let run = |args: &[&str]| {
        let status = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y"])
            .args(args)
            .current_dir(dir)
            .status()
            .expect("ffmpeg");
        assert!(status.success(), "ffmpeg {args:?}");
    };
    let t = seconds.to_string();
    run(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &t,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-bf",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-b:a",
        "96k",
        "-movflags",
        "+faststart",
        "clip.mp4",
    ]);
    run(&[
        "-i",
        "clip.mp4",
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "2",
        "-hls_playlist_type",
        "vod",
        "clip.m3u8",
    ]);
}

/// A plain HTTP file server over `dir` (Python's, no range requests).
fn file_server(dir: &Path) -> (Killed, u16) {
    let port = common::free_tcp_port();
    let child = Command::new(SYSTEM_PYTHON)
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("http.server");
    let server = Killed(child);
    common::wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("the file server listens");
    (server, port)
}

/// The RTSP test server, `transport` tcp or udp only.
fn rtsp_server(transport: &str) -> (Killed, u16) {
    let port = common::free_tcp_port();
    (rtsp_server_on(port, transport), port)
}

fn rtsp_server_on(port: u16, transport: &str) -> Killed {
    let script = common::project_dir().join("tests/helpers/rtsp_server.py");
    let mut child = Command::new(SYSTEM_PYTHON)
        .arg(script)
        .args([&port.to_string(), transport])
        .stdout(Stdio::piped())
        .spawn()
        .expect("rtsp server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready", "the RTSP server did not start");
    Killed(child)
}

fn create_url_ingress(h: &Harness, url: &str, room: &str) -> proto::IngressInfo {
    h.rt.block_on(h.client().create_ingress(
        proto::IngressInput::UrlInput,
        CreateIngressOptions {
            name: format!("{room} pull"),
            room_name: room.into(),
            participant_identity: "puller".into(),
            participant_name: "Puller".into(),
            url: url.into(),
            ..Default::default()
        },
    ))
    .expect("create URL ingress")
}

/// The ingress pulls as it is created, as LiveKit's does: BUFFERING, no
/// stream key, not reusable.
fn assert_pulling(info: &proto::IngressInfo, url: &str) {
    assert!(info.stream_key.is_empty(), "{info:?}");
    assert!(!info.reusable);
    assert_eq!(info.url, url);
    let status = info.state.as_ref().map(|s| s.status);
    assert!(
        status == Some(Status::EndpointBuffering as i32)
            || status == Some(Status::EndpointPublishing as i32),
        "{info:?}"
    );
}

/// The puller is in `room` with three simulcast layers (low and high
/// decoded at their sizes) and audio, and the state tells the input.
fn assert_in_the_room(h: &Harness, id: &str, room: &str, input_mime: &str) {
    h.wait_status(id, Status::EndpointPublishing, Duration::from_secs(20));
    let expected = [("low", "320x180"), ("high", "1280x720")];
    let reports = common::watch_layers(&h.livekit, room, 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        common::assert_layer_size(report, "puller", quality, size);
        let audio = common::track_of(report, "puller", "audio");
        assert!(common::frames(audio) >= 50, "{audio}");
    }
    let state = h.info(id).state.expect("state");
    let video = state.video.expect("input video");
    assert_eq!((video.width, video.height), (1280, 720));
    assert_eq!(video.mime_type, input_mime);
    assert!(state.audio.is_some(), "input audio");
    let layers = state
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .map(|t| t.codecs.iter().map(|c| c.layers.len()).max());
    assert_eq!(layers, Some(Some(3)), "{:?}", state.tracks);
}

#[test]
fn a_file_and_a_playlist_over_http_play_into_the_room_and_end() {
    let media = ScratchDir::new("url-media");
    make_media(media.path(), 14);
    let (_server, port) = file_server(media.path());
    let h = Harness::start();

    for (file, room) in [("clip.mp4", "url-mp4"), ("clip.m3u8", "url-hls")] {
        let url = format!("http://127.0.0.1:{port}/{file}");
        let info = create_url_ingress(&h, &url, room);
        assert_pulling(&info, &url);
        assert_in_the_room(&h, &info.ingress_id, room, "video/x-h264");

        // The clip's end ends the ingress: INACTIVE with its end time, the
        // participant gone.
        let ended = h.wait_status(
            &info.ingress_id,
            Status::EndpointInactive,
            Duration::from_secs(20),
        );
        let state = ended.state.expect("state");
        assert!(state.ended_at > state.started_at, "{state:?}");
        assert!(state.error.is_empty(), "{state:?}");
        assert!(
            h.left_within(room, "puller", Duration::from_secs(10)),
            "{file}"
        );
    }
}

#[test]
fn a_missing_file_ends_in_error_with_the_reason() {
    let media = ScratchDir::new("url-missing");
    let (_server, port) = file_server(media.path());
    let h = Harness::start();
    let url = format!("http://127.0.0.1:{port}/nothing-here.mp4");
    let info = create_url_ingress(&h, &url, "url-missing");
    let failed = h.wait_status(
        &info.ingress_id,
        Status::EndpointError,
        Duration::from_secs(20),
    );
    let error = failed.state.expect("state").error;
    assert!(error.to_lowercase().contains("not found"), "{error}");
    assert!(h.participant("url-missing", "puller").is_none());
}

#[test]
fn an_rtsp_camera_over_tcp_or_udp_is_pulled_until_the_ingress_is_deleted() {
    let h = Harness::start();
    for transport in ["tcp", "udp"] {
        let (_camera, port) = rtsp_server(transport);
        let room = format!("url-rtsp-{transport}");
        let url = format!("rtsp://127.0.0.1:{port}/test");
        let info = create_url_ingress(&h, &url, &room);
        assert_pulling(&info, &url);
        assert_in_the_room(&h, &info.ingress_id, &room, "video/x-h264");

        h.rt.block_on(h.client().delete_ingress(&info.ingress_id))
            .expect("delete");
        assert!(
            h.left_within(&room, "puller", Duration::from_secs(10)),
            "{transport}: the puller stayed after the delete"
        );
    }
}

#[test]
fn an_srt_server_is_pulled_once_it_comes_up() {
    let h = Harness::start();
    let port = common::free_udp_port();
    let url = format!("srt://127.0.0.1:{port}");
    // Nothing listens yet: the pull retries until ffmpeg does.
    let info = create_url_ingress(&h, &url, "url-srt");
    assert_pulling(&info, &url);
    std::thread::sleep(Duration::from_secs(2));
    let ffmpeg = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "40",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g", "30", "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2",
        ])
        .args([
            "-f",
            "mpegts",
            &format!("srt://127.0.0.1:{port}?mode=listener"),
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    let mut ffmpeg = Killed(ffmpeg);
    assert_in_the_room(&h, &info.ingress_id, "url-srt", "video/x-h264");

    // The sender goes away: the pull tries to get it back for 30 s, then
    // ends and the participant leaves.
    let _ = ffmpeg.0.kill();
    assert!(h.participant("url-srt", "puller").is_some());
    assert!(h.left_within("url-srt", "puller", Duration::from_secs(50)));
    let state = h.info(&info.ingress_id).state.expect("state");
    assert!(
        state.status == Status::EndpointInactive as i32
            || state.status == Status::EndpointError as i32,
        "{state:?}"
    );
}

#[test]
fn an_rtsp_camera_that_restarts_is_pulled_again_in_the_same_session() {
    let h = Harness::start();
    let (camera, port) = rtsp_server("tcp");
    let url = format!("rtsp://127.0.0.1:{port}/test");
    let info = create_url_ingress(&h, &url, "url-restart");
    assert_in_the_room(&h, &info.ingress_id, "url-restart", "video/x-h264");
    let before = h.participant("url-restart", "puller").expect("in the room");

    // The camera goes away and comes back on its address 3 s later: the pull
    // reconnects (within its 30 s) and the same participant goes on.
    drop(camera);
    std::thread::sleep(Duration::from_secs(3));
    let _camera = rtsp_server_on(port, "tcp");
    let reports = common::watch_layers(&h.livekit, "url-restart", 2, &[("high", "1280x720")]);
    common::assert_layer_size(&reports[0], "puller", "high", "1280x720");
    let after = h
        .participant("url-restart", "puller")
        .expect("still in the room");
    assert_eq!(after.sid, before.sid, "the participant did not rejoin");
    let state = h.info(&info.ingress_id).state.expect("state");
    assert_eq!(state.status, Status::EndpointPublishing as i32, "{state:?}");
}
