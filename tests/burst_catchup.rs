//! A publisher whose connection stalls and then delivers its backlog at once:
//! the room must be live again within seconds, not behind by the stall.
//!
//! Real components: a LiveKit server, the service, ffmpeg publishing frames
//! that carry their creation time (`tests/helpers/publish_stamped.py`), and
//! the Python SDK reading that time back from every decoded frame
//! (`tests/helpers/watch_latency.py`). Between ffmpeg and the service a TCP
//! proxy holds the publisher's bytes for the stall, then lets them all go.

mod common;

use common::service::Harness;
use livekit_protocol::ingress_state::Status;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Latency a live room has (creation to decoded frame); the brief's bound.
const LIVE_MS: u32 = 200;
/// How soon after the backlog is released the room must be live again.
const BACK_WITHIN_MS: i64 = 5_000;
/// Older than this, a frame shown after the release is the backlog replayed.
const STALE_MS: u32 = 1_000;
/// Seconds of publishing before the stall and after the release.
const BEFORE_S: u64 = 5;
const AFTER_S: u64 = 10;

/// A loopback TCP forwarder whose publisher-to-server direction can be held:
/// while held, the publisher's bytes are read (so the publisher is not slowed,
/// as when a network path stalls behind it) and kept; on release they go to
/// the server at once, in order.
struct HoldingProxy {
    port: u16,
    held: Arc<(Mutex<bool>, Condvar)>,
}

impl HoldingProxy {
    fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let held = Arc::new((Mutex::new(false), Condvar::new()));
        let gate = held.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                forward_held(client_in, server, gate.clone());
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server_in, client);
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        HoldingProxy { port, held }
    }

    fn hold(&self, on: bool) {
        let (lock, wake) = &*self.held;
        *lock.lock().expect("proxy lock") = on;
        wake.notify_all();
    }
}

/// Bytes read from the publisher and not yet written on; whether it closed.
type Chunks = (VecDeque<Vec<u8>>, bool);

/// Publisher to server through a queue that a reader fills and a writer
/// drains only while the gate is open.
fn forward_held(mut from: TcpStream, mut to: TcpStream, gate: Arc<(Mutex<bool>, Condvar)>) {
    let queue: Arc<(Mutex<Chunks>, Condvar)> = Arc::default();
    let filled = queue.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let (lock, wake) = &*filled;
            let mut q = lock.lock().expect("queue lock");
            if n == 0 {
                q.1 = true;
                wake.notify_all();
                return;
            }
            q.0.push_back(buf[..n].to_vec());
            wake.notify_all();
        }
    });
    std::thread::spawn(move || loop {
        {
            let (lock, wake) = &*gate;
            let mut held = lock.lock().expect("gate lock");
            while *held {
                held = wake.wait(held).expect("gate wait");
            }
        }
        let (chunks, ended) = {
            let (lock, wake) = &*queue;
            let mut q = lock.lock().expect("queue lock");
            while q.0.is_empty() && !q.1 {
                q = wake
                    .wait_timeout(q, Duration::from_millis(20))
                    .expect("queue wait")
                    .0;
                if *gate.0.lock().expect("gate lock") {
                    break;
                }
            }
            (q.0.drain(..).collect::<Vec<_>>(), q.1)
        };
        for chunk in chunks {
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
        if ended {
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        }
    });
}

/// Wall-clock milliseconds on the 32-bit circle the helpers stamp with.
fn now_ms() -> u32 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    (ms & 0xFFFF_FFFF) as u32
}

/// Signed distance from `from` to `to` on the 32-bit millisecond circle.
fn since(to: u32, from: u32) -> i64 {
    i64::from(to.wrapping_sub(from) as i32)
}

/// Publishes through a proxy that holds the publisher's bytes for `stall`
/// after the stream is live, then releases them; asserts what the room sees.
fn catches_up_after(stall: Duration, room: &str) {
    let h = Harness::start();
    let info = h.create(room, "stalled-streamer", "Stalled streamer");
    let proxy = HoldingProxy::start(h.rtmp_port);
    let publish_s = BEFORE_S + stall.as_secs() + AFTER_S;
    let watcher = common::watch_latency(&h.livekit, room, publish_s + 10);
    let mut publisher = common::publish_stamped(
        &format!("rtmp://127.0.0.1:{}/live/{}", proxy.port, info.stream_key),
        publish_s,
    );
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(BEFORE_S - 1));
    let held_at = now_ms();
    proxy.hold(true);
    std::thread::sleep(stall);
    proxy.hold(false);
    let released_at = now_ms();
    let status = publisher.wait().expect("publisher ends");
    let ended_at = now_ms();
    let out = watcher.wait_with_output().expect("watcher output");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "watcher printed no report ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(status.success(), "the publisher failed: {status}");
    let frames: Vec<(u32, u32)> = report["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| {
            (
                f[0].as_u64().unwrap_or(0) as u32,
                f[1].as_u64().unwrap_or(0) as u32,
            )
        })
        .collect();
    // The stream as the room saw it, relative to the release: (ms, latency).
    let timeline: Vec<(i64, u32)> = frames
        .iter()
        .map(|&(at, lat)| (since(at, released_at), lat))
        .filter(|&(t, _)| t <= since(ended_at, released_at) - 500)
        .collect();
    let summary = summarize(&timeline);
    eprintln!(
        "stall {stall:?}: held at {} ms, {summary}",
        since(held_at, released_at)
    );
    let before: Vec<u32> = timeline
        .iter()
        .filter(|&&(t, _)| t < since(held_at, released_at))
        .map(|&(_, lat)| lat)
        .collect();
    assert!(
        before.len() >= 30 && before.iter().filter(|&&l| l < LIVE_MS).count() >= before.len() / 2,
        "the stream was not live before the stall: {summary}"
    );
    // The first frame after which every frame is live.
    let back = timeline
        .iter()
        .rposition(|&(_, lat)| lat >= LIVE_MS)
        .map_or(timeline.first(), |i| timeline.get(i + 1))
        .map(|&(t, _)| t);
    let settled: Vec<&(i64, u32)> = timeline
        .iter()
        .filter(|&&(t, _)| t > BACK_WITHIN_MS)
        .collect();
    assert!(
        settled.len() >= 45,
        "too few frames reached the room after {BACK_WITHIN_MS} ms from the release: {summary}"
    );
    // The backlog is not replayed: a viewer's own decoder may also catch up
    // by playing stale frames fast (libwebrtc does after a long stall), which
    // is not live either.
    let stale = timeline
        .iter()
        .filter(|&&(t, lat)| t >= 0 && lat > STALE_MS)
        .count();
    assert_eq!(
        stale, 0,
        "{stale} frames older than {STALE_MS} ms were shown after the release: {summary}"
    );
    // The service counts what was dropped: at least the stall's video.
    let metrics = common::http_get(
        h.service.as_ref().expect("service").http_addr.port(),
        "/metrics",
    )
    .expect("/metrics");
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("livekit_ingress_late_frames_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        dropped >= stall.as_secs() * 30,
        "{dropped} late frames counted in /metrics for a {stall:?} stall"
    );
    match back {
        Some(t) if t <= BACK_WITHIN_MS => {}
        _ => panic!(
            "the room was not live (< {LIVE_MS} ms) within {BACK_WITHIN_MS} ms of the release: {summary}"
        ),
    }
}

/// One line: latencies per second around the release, for the failure text.
fn summarize(timeline: &[(i64, u32)]) -> String {
    let mut by_second = std::collections::BTreeMap::<i64, Vec<u32>>::new();
    for &(t, lat) in timeline {
        by_second.entry(t.div_euclid(1000)).or_default().push(lat);
    }
    let parts: Vec<String> = by_second
        .iter()
        .map(|(s, lats)| {
            let max = lats.iter().max().copied().unwrap_or(0);
            let min = lats.iter().min().copied().unwrap_or(0);
            format!("{s:+}s: {} frames {min}-{max} ms", lats.len())
        })
        .collect();
    format!("seconds from the release: {}", parts.join("; "))
}

#[test]
fn live_again_within_seconds_after_a_3s_stall() {
    catches_up_after(Duration::from_secs(3), "burst-3s");
}

#[test]
fn live_again_within_seconds_after_a_10s_stall() {
    catches_up_after(Duration::from_secs(10), "burst-10s");
}
