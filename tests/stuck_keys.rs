//! No publish attempt, however it ends, keeps its stream key from the next
//! one: a reset right after `publish` or after the accept, a `publish`
//! without `createStream`, a close in the middle of the handshake, a pipeline
//! that cannot start, a LiveKit server that cannot be joined. Each way is
//! followed by a real ffmpeg publish on the same key that must reach the room,
//! on the embedded store and on Redis. And a node killed mid-stream does not
//! keep its keys from the other nodes beyond its claim's lease.

mod common;

use common::rtmp_client::RawClient;
use common::service::Harness;
use common::{RedisServer, ScratchDir};
use gstlivekitingress::rtmp::listener::{self, ListenerConfig};
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a failed attempt may keep its ingress from going back to rest.
const SETTLE: Duration = Duration::from_secs(15);

fn status(info: &proto::IngressInfo) -> Status {
    info.state
        .as_ref()
        .and_then(|s| Status::try_from(s.status).ok())
        .unwrap_or(Status::EndpointInactive)
}

fn now() -> i64 {
    gstlivekitingress::supervisor::ingress::now_nanos()
}

/// Waits until the ingress is at rest (inactive or in error) after a stream
/// started since `since` (nanoseconds), and returns it.
fn settled(h: &Harness, id: &str, since: i64, why: &str) -> proto::IngressInfo {
    common::wait_for(SETTLE, || {
        let info = h.info(id);
        let started = info.state.as_ref().map_or(0, |s| s.started_at);
        (started >= since
            && matches!(
                status(&info),
                Status::EndpointInactive | Status::EndpointError
            ))
        .then_some(info)
    })
    .unwrap_or_else(|| panic!("{why}: still {:?} after {SETTLE:?}", h.info(id).state))
}

/// Streams accepted by the service so far (its metrics).
fn started(h: &Harness) -> u64 {
    let port = h.service.as_ref().expect("running").http_addr.port();
    let metrics = common::http_get(port, "/metrics").expect("metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("livekit_ingress_sessions_started_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("sessions started counter")
}

/// The last step of every way: a real publish on the key reaches the room,
/// then ends and leaves the ingress inactive.
fn real_publish_succeeds(h: &Harness, info: &proto::IngressInfo, after: &str) {
    let since = now();
    let mut ffmpeg = h.publish(&info.stream_key, 30);
    let live = common::wait_for(Duration::from_secs(20), || {
        let now = h.info(&info.ingress_id);
        if let Ok(Some(exit)) = ffmpeg.try_wait() {
            panic!(
                "after {after}: the publish was refused ({exit}); state {:?}",
                now.state
            );
        }
        (status(&now) == Status::EndpointPublishing).then_some(now)
    });
    assert!(
        live.is_some(),
        "after {after}: the next publish never reached the room: {:?}",
        h.info(&info.ingress_id).state
    );
    assert!(
        h.participant(&info.room_name, &info.participant_identity)
            .is_some(),
        "after {after}: the participant is in the room"
    );
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let rest = settled(h, &info.ingress_id, since, "a real publish that stopped");
    assert_eq!(status(&rest), Status::EndpointInactive, "{:?}", rest.state);
}

/// A publish that reached the service, then a reset at `when`.
fn reset_after_publish(h: &Harness, info: &proto::IngressInfo, accepted: bool) {
    let (before, since) = (started(h), now());
    let mut client = RawClient::connect(h.rtmp_port);
    client.start_publish(&info.stream_key);
    if accepted {
        assert!(client.wait_for(b"NetStream.Publish.Start"), "accepted");
    } else {
        // Long enough for the service to take the publish up, too short for
        // it to have answered (it builds the pipeline first).
        std::thread::sleep(Duration::from_millis(5));
    }
    client.reset();
    let after = if accepted { "the accept" } else { "publish" };
    // The service took the attempt up (or this way tests nothing).
    assert!(
        common::wait_for(Duration::from_secs(5), || (started(h) > before)
            .then_some(()))
        .is_some(),
        "the publish before the reset after {after} was never started"
    );
    settled(
        h,
        &info.ingress_id,
        since,
        &format!("a reset after {after}"),
    );
    real_publish_succeeds(h, info, &format!("a reset after {after}"));
}

fn no_attempt_locks_its_key(h: &mut Harness) {
    let info = h.create("stuck-room", "streamer", "Streamer");

    reset_after_publish(h, &info, false);
    reset_after_publish(h, &info, true);

    let mut client = RawClient::connect(h.rtmp_port);
    client.handshake();
    client.connect_app("live").expect("connect");
    assert!(client.wait_for(b"NetConnection.Connect.Success"));
    client.publish(&info.stream_key, 0).expect("publish");
    assert!(
        client.closed_within(Duration::from_secs(10)),
        "a publish without createStream is answered by a close"
    );
    real_publish_succeeds(h, &info, "publish without createStream");

    let mut half = RawClient::connect(h.rtmp_port);
    half.stream.write_all(&[3u8; 700]).expect("half a C0+C1");
    drop(half);
    real_publish_succeeds(h, &info, "a close during the handshake");

    // A pipeline that cannot start: its source cannot claim the key, which
    // something else in the process holds.
    let rtmp = listener::listener(&ListenerConfig {
        address: "127.0.0.1".into(),
        port: h.rtmp_port,
        tls: None,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
    })
    .expect("the service's listener");
    let squatter = rtmp.claim(&info.stream_key, None).expect("claim the key");
    let since = now();
    let mut refused = h.publish(&info.stream_key, 5);
    assert!(
        !refused.wait().expect("ffmpeg").success(),
        "a publish whose pipeline cannot start is refused"
    );
    let failed = settled(
        h,
        &info.ingress_id,
        since,
        "a pipeline that could not start",
    );
    let state = failed.state.expect("state");
    assert_eq!(state.status, Status::EndpointError as i32, "{state:?}");
    assert!(!state.error.is_empty(), "the error says why");
    drop(squatter);
    drop(rtmp);
    real_publish_succeeds(h, &info, "a pipeline that could not start");

    // A LiveKit server that cannot be joined.
    h.livekit.stop();
    let since = now();
    let mut cut = h.publish(&info.stream_key, 30);
    let failed = settled(h, &info.ingress_id, since, "a LiveKit join that failed");
    let state = failed.state.expect("state");
    assert_eq!(state.status, Status::EndpointError as i32, "{state:?}");
    assert!(!state.error.is_empty(), "the error says why");
    assert!(
        !cut.wait().expect("ffmpeg").success(),
        "the publisher sees its stream end"
    );
    h.livekit.start_again();
    real_publish_succeeds(h, &info, "a LiveKit join that failed");
}

#[test]
fn no_publish_attempt_locks_its_key() {
    no_attempt_locks_its_key(&mut Harness::start());
}

#[test]
fn no_publish_attempt_locks_its_key_with_redis() {
    let redis = RedisServer::start();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    no_attempt_locks_its_key(&mut Harness::start_with_store(
        ScratchDir::new("stuck-redis"),
        store,
    ));
}

/// Two nodes on one Redis (the harness's in-process node, and another as its
/// own process); the other node streams an ingress into the room and is
/// killed with SIGKILL (nothing cleans up), its publisher cut. Returns
/// Redis, the surviving harness and the ingress.
fn node_killed_mid_stream(room: &str) -> (RedisServer, Harness, proto::IngressInfo) {
    let redis = RedisServer::start();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    let h = Harness::start_with_store(ScratchDir::new(room), store);
    let mut doomed = common::service::NodeProcess::start(&h, "doomed");
    let info = h.create(room, "survivor", "Survivor");
    let mut streaming = Harness::publish_to(doomed.rtmp_port, &info.stream_key, 60);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );
    doomed.kill();
    let _ = streaming.wait();
    (redis, h, info)
}

/// A node killed mid-stream (SIGKILL: nothing cleans up) leaves its ingress
/// publishing in Redis; another node takes the key once the dead node's
/// claim lapses, and the state follows the live claim.
#[test]
fn a_killed_node_frees_its_keys_for_the_others() {
    let (_redis, h, info) = node_killed_mid_stream("killed-room");
    let killed = Instant::now();
    // Nothing cleaned up: the store still says publishing.
    assert_eq!(
        status(&h.info(&info.ingress_id)),
        Status::EndpointPublishing
    );

    // The other node refuses the key while the dead node's claim lives, and
    // takes it within 15 s of the kill.
    let mut attempts = 0;
    let mut publisher = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the key was still refused {:?} after the node was killed ({attempts} attempts)",
            killed.elapsed()
        );
        attempts += 1;
        let mut ffmpeg = h.publish(&info.stream_key, 60);
        std::thread::sleep(Duration::from_millis(1500));
        match ffmpeg.try_wait().expect("ffmpeg") {
            None => break ffmpeg,
            Some(_) => continue,
        }
    };
    let live = h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );
    eprintln!(
        "key taken over {:?} after the kill, after {attempts} attempts",
        killed.elapsed()
    );
    let state = live.state.expect("state");
    assert!(state.started_at > 0 && state.ended_at == 0, "{state:?}");
    assert!(h
        .participant(&info.room_name, &info.participant_identity)
        .is_some());
    let _ = publisher.kill();
    let _ = publisher.wait();
    settled(&h, &info.ingress_id, 0, "the survivor's stream stopped");
}

/// A dead node's stale state, with no one publishing again, is repaired by
/// the first node that looks once the claim is gone.
#[test]
fn a_killed_nodes_stale_state_is_repaired_by_the_next_reader() {
    let (_redis, h, info) = node_killed_mid_stream("stale-room");
    // Within the lease and a renewal of listing, the state is repaired.
    let rest = settled(&h, &info.ingress_id, 0, "a node killed mid-stream");
    let state = rest.state.expect("state");
    assert_eq!(state.status, Status::EndpointInactive as i32);
    assert!(state.ended_at >= state.started_at && state.ended_at > 0);
}
