//! A node under load and at its end, all real: a LiveKit server, Redis,
//! `livekit-ingress` processes, ffmpeg publishers and the Python subscriber.
//! Admission by capacity (a full node refuses the next publish, with the
//! reason, and its live streams keep their frame rate; another node takes the
//! refused key) and the drain on SIGTERM.

mod common;

use common::service::{Harness, NodeProcess};
use common::{
    ended_within, http_answer as get, metric, RedisServer, ScratchDir, Subscriber,
    SubscriberOptions,
};
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::process::Child;
use std::time::{Duration, Instant};

/// One test at a time: the capacity test sizes a node for the machine's
/// cores, and a stream of the other test beside it would take them (seen:
/// 24 fps on an admitted stream when both ran at once).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// ffmpeg publishing 640x360: light enough for several at once on a small
/// machine.
fn publish(rtmp_port: u16, key: &str, seconds: u32) -> Child {
    Harness::publish_sized(rtmp_port, key, seconds, "640x360")
}

#[test]
fn a_full_node_refuses_the_next_publish_and_its_streams_keep_their_frame_rate() {
    let _serial = one_at_a_time();
    let redis = RedisServer::start();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    let h = Harness::start_with_store(ScratchDir::new("capacity"), store);
    // A node that carries two transcoded streams (0.45 core each of 1.0).
    let small = NodeProcess::start_with(
        &h,
        "small",
        &[],
        "capacity:\n  cores: 1.0\n  max_load: 1.0\n  transcode_cost: 0.45\n",
    );
    let infos: Vec<_> = (0..3)
        .map(|i| h.create(&format!("capacity-{i}"), &format!("camera-{i}"), "Camera"))
        .collect();
    assert_eq!(get(small.http_port, "/health").0, 200);

    // Two streams: both admitted, and the node is full.
    let mut admitted: Vec<Child> = infos[..2]
        .iter()
        .map(|info| publish(small.rtmp_port, &info.stream_key, 45))
        .collect();
    for info in &infos[..2] {
        h.wait_status(
            &info.ingress_id,
            Status::EndpointPublishing,
            Duration::from_secs(30),
        );
    }
    let (status, body) = get(small.http_port, "/health");
    assert_eq!(status, 503, "a full node is not ready: {body}");
    assert!(body.contains("at capacity"), "{body}");

    // Viewers on the high layer of each admitted stream while a third
    // publish is refused.
    let viewers: Vec<_> = (0..2)
        .map(|i| {
            let mut opts = SubscriberOptions::new(&format!("capacity-{i}"));
            opts.identity = format!("viewer-{i}");
            opts.quality = Some("high".into());
            opts.expect_tracks = 2;
            opts.duration = 12.0;
            Subscriber::spawn(&h.livekit, &opts)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let mut third = publish(small.rtmp_port, &infos[2].stream_key, 20);
    let (ok, stderr) =
        ended_within(&mut third, Duration::from_secs(15)).expect("the third publish is answered");
    assert!(!ok, "the third publish is refused");
    assert!(
        stderr.contains("at capacity"),
        "the publisher is told why: {stderr}"
    );
    let third_state = h.info(&infos[2].ingress_id).state.expect("state");
    assert_eq!(third_state.status, Status::EndpointInactive as i32);
    assert_eq!(
        third_state.error, "",
        "a refusal is not the ingress's error"
    );

    for (i, viewer) in viewers.into_iter().enumerate() {
        let report = viewer.report();
        let video = common::track_of(&report, &format!("camera-{i}"), "video");
        let fps = video["recent_fps"].as_f64().unwrap_or(0.0);
        assert!(
            fps >= 29.0,
            "stream {i} kept {fps} fps beside the refused one: {video}"
        );
        assert_eq!(video["last_size"], "640x360", "{video}");
    }
    let (_, metrics) = get(small.http_port, "/metrics");
    assert_eq!(
        metric(
            &metrics,
            "livekit_ingress_publishes_refused_unavailable_total"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "livekit_ingress_capacity_cores"),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "livekit_ingress_committed_cores"),
        Some(0.9)
    );

    // The refused key was left free: another node behind the same store
    // takes it at once.
    let mut elsewhere = Harness::publish_to(h.rtmp_port, &infos[2].stream_key, 10);
    h.wait_status(
        &infos[2].ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(30),
    );
    let _ = elsewhere.wait();

    // A stream ends: the node is ready again.
    let _ = admitted[0].kill();
    h.wait_status(
        &infos[0].ingress_id,
        Status::EndpointInactive,
        Duration::from_secs(20),
    );
    assert_eq!(get(small.http_port, "/health").0, 200);
    for mut publisher in admitted {
        let _ = publisher.kill();
        let _ = publisher.wait();
    }
}

#[test]
fn sigterm_drains_live_streams_then_ends_them() {
    let _serial = one_at_a_time();
    // Nodes that come and go over one store: Redis (SQLite is one node's).
    let redis = RedisServer::start();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    let h = Harness::start_with_store(ScratchDir::new("drain"), store);
    let node = NodeProcess::start_with(&h, "draining", &[], "drain_timeout: 8\n");
    let live = h.create("drain-live", "drain-cam", "Camera");
    let late = h.create("drain-late", "drain-late-cam", "Late");
    let mut streaming = publish(node.rtmp_port, &live.stream_key, 60);
    h.wait_status(
        &live.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(30),
    );

    let signalled = Instant::now();
    node.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    // Draining: not ready, new publishes refused with the reason, the live
    // stream goes on.
    let (status, body) = get(node.http_port, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    let mut refused = publish(node.rtmp_port, &late.stream_key, 10);
    let (ok, stderr) =
        ended_within(&mut refused, Duration::from_secs(10)).expect("the late publish is answered");
    assert!(!ok && stderr.contains("shutting down"), "{stderr}");
    assert_eq!(
        h.info(&live.ingress_id).state.map(|s| s.status),
        Some(Status::EndpointPublishing as i32)
    );
    assert!(h.participant("drain-live", "drain-cam").is_some());

    // At the drain timeout the stream is ended cleanly: the participant
    // leaves, the ingress is INACTIVE, the process exits.
    assert!(
        h.left_within("drain-live", "drain-cam", Duration::from_secs(20)),
        "the participant left at the end of the drain"
    );
    let drained = signalled.elapsed();
    assert!(
        drained >= Duration::from_secs(7),
        "the stream went on for the drain time, not {drained:?}"
    );
    let state = h.info(&live.ingress_id).state.expect("state");
    assert_eq!(state.status, Status::EndpointInactive as i32, "{state:?}");
    assert!(state.ended_at > 0);
    assert!(node.wait_exit(Duration::from_secs(10)), "{}", node.log());
    let _ = streaming.kill();
    let _ = streaming.wait();

    // A second signal cuts the drain short.
    let node = NodeProcess::start_with(&h, "cut-short", &[], "drain_timeout: 60\n");
    let mut streaming = publish(node.rtmp_port, &live.stream_key, 60);
    h.wait_status(
        &live.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(30),
    );
    node.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    assert!(h.participant("drain-live", "drain-cam").is_some());
    let cut = Instant::now();
    node.signal(libc::SIGINT);
    assert!(
        h.left_within("drain-live", "drain-cam", Duration::from_secs(10)),
        "a second signal ends the stream at once"
    );
    assert!(cut.elapsed() < Duration::from_secs(10));
    assert!(node.wait_exit(Duration::from_secs(10)), "{}", node.log());
    let _ = streaming.kill();
    let _ = streaming.wait();
}
