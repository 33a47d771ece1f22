//! A publisher that drops and publishes again on the same key within the
//! grace period (the service's `reconnect_grace`, 5 s by default) goes on in
//! the same stream: the room keeps its participant and tracks, subscribers
//! see no leave or join, and the new frames arrive on the same tracks. Over
//! RTMP and over SRT (where the returning caller's MPEG-TS starts from
//! another clock, with fresh continuity counters and tables).
//!
//! Real components: a LiveKit server, the service, ffmpeg publishing frames
//! stamped with their creation time (`tests/helpers/publish_stamped.py`,
//! killed with SIGKILL as when an encoder crashes) and the Python SDK
//! watching the room (`tests/helpers/watch_latency.py`).

mod common;

use common::service::Harness;
use livekit_protocol::ingress_state::Status;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const IDENTITY: &str = "returning-streamer";

/// One test at a time: each runs an encoder, the ingress's transcode and a
/// decoding viewer, which is what two cores hold.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How the publisher reaches the service.
#[derive(Clone, Copy, Debug)]
enum Input {
    Rtmp,
    Srt,
}

fn now_ms() -> u32 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    (ms & 0xFFFF_FFFF) as u32
}

/// The participant's sid and its track sids, sorted, as the server lists them.
fn sids(h: &Harness, room: &str) -> Option<(String, Vec<String>)> {
    let p = h.participant(room, IDENTITY)?;
    let mut tracks: Vec<String> = p.tracks.iter().map(|t| t.sid.clone()).collect();
    tracks.sort();
    Some((p.sid, tracks))
}

#[test]
fn a_publisher_back_within_the_grace_period_goes_on_in_the_same_tracks() {
    back_within_the_grace_period(Input::Rtmp);
}

#[test]
fn an_srt_caller_back_within_the_grace_period_goes_on_in_the_same_tracks() {
    back_within_the_grace_period(Input::Srt);
}

fn back_within_the_grace_period(input: Input) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let room = "grace";
    let (h, info, url, noticed) = match input {
        Input::Rtmp => {
            let h = Harness::start();
            let info = h.create(room, IDENTITY, "Returning streamer");
            let url = format!("rtmp://127.0.0.1:{}/live/{}", h.rtmp_port, info.stream_key);
            // TCP tells of a crashed publisher at once.
            (h, info, url, Duration::from_secs(3))
        }
        Input::Srt => {
            let h = Harness::start_with_srt();
            let info = h.create(room, IDENTITY, "Returning streamer");
            let port = h.srt_port();
            let url = format!("srt://127.0.0.1:{port}?streamid={}", info.stream_key);
            // A crashed SRT caller says nothing: its silence ends it at
            // SRT's peer idle timeout (5 s).
            (h, info, url, Duration::from_secs(10))
        }
    };
    // Long enough to see the second publish (SRT notices the drop later).
    let watched = match input {
        Input::Rtmp => 34,
        Input::Srt => 40,
    };
    let watcher = common::watch_latency(&h.livekit, room, watched);
    let mut first = common::publish_stamped(&url, 60);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(30),
    );
    let before = common::wait_for(Duration::from_secs(10), || {
        sids(&h, room).filter(|(_, tracks)| tracks.len() == 2)
    })
    .expect("the participant publishes video and audio");
    std::thread::sleep(Duration::from_secs(3));

    // The encoder crashes: its connection closes without an unpublish.
    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    let _ = first.wait();
    let dropped_at = now_ms();
    let waiting = h.wait_status(&info.ingress_id, Status::EndpointBuffering, noticed);
    assert_eq!(
        sids(&h, room),
        Some(before.clone()),
        "{input:?}: the participant and its tracks left the room at the drop: {:?}",
        waiting.state
    );
    std::thread::sleep(Duration::from_secs(2));

    let mut second = common::publish_stamped(&url, 8);
    let back_at = now_ms();
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(10),
    );
    assert_eq!(
        sids(&h, room),
        Some(before.clone()),
        "the publish after the drop is not in the same participant and tracks"
    );
    let status = second.wait().expect("second publisher");
    assert!(status.success(), "second publisher: {status}");
    let ended_at = now_ms();

    // After the grace period the participant leaves, as without one.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sids(&h, room),
        Some(before.clone()),
        "the participant left before the grace period ended"
    );
    assert!(
        h.left_within(room, IDENTITY, Duration::from_secs(8)),
        "the participant stayed after the grace period"
    );
    h.wait_status(
        &info.ingress_id,
        Status::EndpointInactive,
        Duration::from_secs(5),
    );

    let out = watcher.wait_with_output().expect("watcher");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "watcher printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // One subscription per track, all of the one participant: the drop was
    // not seen as a leave and a join.
    let subscribed = report["sids"].as_array().expect("sids");
    let mut tracks: Vec<&str> = subscribed
        .iter()
        .filter_map(|s| s["track"].as_str())
        .collect();
    tracks.sort();
    assert_eq!(
        tracks,
        before.1.iter().map(String::as_str).collect::<Vec<_>>(),
        "{report}"
    );
    assert!(
        subscribed
            .iter()
            .all(|s| s["participant"].as_str() == Some(before.0.as_str())),
        "{report}"
    );
    let leaves: Vec<i64> = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e[1] == "left" && e[2] == IDENTITY)
        .filter_map(|e| e[0].as_i64())
        .collect();
    assert!(
        leaves
            .iter()
            .all(|&at| (at as u32).wrapping_sub(ended_at) as i32 > 0),
        "the viewer saw the participant leave before the last publisher ended: {leaves:?} (dropped at {dropped_at}, back at {back_at}, ended at {ended_at})"
    );
    // The second publisher's frames were decoded on the same video track:
    // stamped after it started, shown live.
    let frames = report["frames"].as_array().expect("frames");
    let resumed = frames
        .iter()
        .filter(|f| {
            let at = f[0].as_u64().unwrap_or(0) as u32;
            let lat = f[1].as_u64().unwrap_or(u64::MAX);
            let made = at.wrapping_sub(lat as u32);
            (made.wrapping_sub(back_at) as i32) > 0 && lat < 1000
        })
        .count();
    assert!(
        resumed >= 90,
        "{resumed} frames of the second publish decoded (of ~240)"
    );
}
