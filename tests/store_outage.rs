//! Redis stopped under a live stream, all real: a LiveKit server, a
//! persistent redis-server that is shut down for 10 s and started again,
//! the service, ffmpeg publishing and the Python subscriber watching.
//!
//! What must hold: the stream goes on in the room through the outage (same
//! participant, no gap a viewer sees); the API answers `unavailable` with the
//! reason, `/health` is not ready and a new publish is refused with the
//! reason, all while Redis is down; once it is back the API answers again,
//! the stream's claim is held in Redis again (it lapsed during the outage),
//! the stored state is the live stream's, and the stream ends as usual.

mod common;

use common::service::{twirp_code, Harness};
use common::{ended_within, http_answer, metric, RedisServer, ScratchDir};
use common::{Subscriber, SubscriberOptions};
use livekit_api::services::ingress::IngressListFilter;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::time::{Duration, Instant};

const ROOM: &str = "outage-room";
const IDENTITY: &str = "outage-cam";
const OUTAGE: Duration = Duration::from_secs(10);

/// The holder of the ingress's claim in Redis (`None` when no one holds it).
fn claim_holder(redis: &RedisServer, id: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{}", redis.address())).ok()?;
    let mut connection = client.get_connection().ok()?;
    redis::cmd("GET")
        .arg(format!("livekit-ingress:lease:{id}"))
        .query(&mut connection)
        .ok()?
}

#[test]
fn a_redis_outage_keeps_live_streams_and_their_claims() {
    let mut redis = RedisServer::start_persistent();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    let h = Harness::start_with_store(ScratchDir::new("redis-outage"), store);
    let http_port = h.service.as_ref().expect("running").http_addr.port();
    let info = h.create(ROOM, IDENTITY, "Outage camera");
    let other = h.create("outage-other", "outage-other-cam", "Other");
    let id = info.ingress_id.clone();

    let mut streaming = Harness::publish_sized(h.rtmp_port, &info.stream_key, 60, "640x360");
    let before = h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(30));
    let before = before.state.expect("state");
    let sid_before = h.participant(ROOM, IDENTITY).expect("in the room").sid;
    let holder_before = claim_holder(&redis, &id).expect("claimed while publishing");

    let mut opts = SubscriberOptions::new(ROOM);
    opts.identity = "outage-viewer".into();
    opts.quality = Some("high".into());
    opts.expect_tracks = 2;
    opts.duration = 26.0;
    let viewer = Subscriber::spawn(&h.livekit, &opts);
    std::thread::sleep(Duration::from_secs(5));

    // Redis goes away.
    redis.stop();
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_secs(1));

    // The API says it cannot answer, and why.
    let err =
        h.rt.block_on(h.client().list_ingress(IngressListFilter::All))
            .expect_err("no list without the store");
    let shown = format!("{err:?}");
    assert_eq!(twirp_code(err), "unavailable");
    assert!(shown.contains("cannot reach Redis"), "{shown}");
    // Not ready for a load balancer; a new publish is refused with the reason
    // (as the node's trouble: another node, or a later try, may take it).
    let (status, body) = http_answer(http_port, "/health");
    assert_eq!(status, 503, "{body}");
    let mut refused = Harness::publish_sized(h.rtmp_port, &other.stream_key, 5, "640x360");
    let (ok, stderr) =
        ended_within(&mut refused, Duration::from_secs(15)).expect("the publish is answered");
    assert!(!ok, "a publish is refused while the store is out of reach");
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
    let (_, metrics) = http_answer(http_port, "/metrics");
    assert_eq!(
        metric(
            &metrics,
            "livekit_ingress_publishes_refused_unavailable_total"
        ),
        Some(1.0),
        "refused as the node's trouble, not the key's: {metrics}"
    );

    // Redis comes back after the outage, with its data.
    std::thread::sleep(OUTAGE.saturating_sub(stopped.elapsed()));
    redis.restart();
    let back = common::wait_for(Duration::from_secs(15), || {
        h.rt.block_on(
            h.client()
                .list_ingress(IngressListFilter::IngressId(id.clone())),
        )
        .ok()
    });
    assert!(back.is_some(), "the API answers again once Redis is back");

    // The claim lapsed in the outage (a lease is 10 s) and is held again, by
    // the same node.
    let holder = common::wait_for(Duration::from_secs(10), || claim_holder(&redis, &id))
        .expect("the live stream's claim is taken again");
    let node = |holder: &str| holder.split(':').next().unwrap_or_default().to_string();
    assert_eq!(node(&holder), node(&holder_before));
    let (_, metrics) = http_answer(http_port, "/metrics");
    assert!(
        metric(&metrics, "livekit_ingress_claims_retaken_total") >= Some(1.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "livekit_ingress_claim_renewals_failed_total") >= Some(1.0),
        "{metrics}"
    );
    assert_eq!(http_answer(http_port, "/health").0, 200);

    // The stored state is the live stream's, nothing lost.
    let after = h.info(&id).state.expect("state");
    assert_eq!(after.status, Status::EndpointPublishing as i32, "{after:?}");
    assert_eq!(after.started_at, before.started_at, "{after:?}");
    assert_eq!(after.ended_at, 0, "{after:?}");
    assert_eq!(after.room_id, before.room_id);
    let sids = |s: &proto::IngressState| {
        let mut sids: Vec<_> = s.tracks.iter().map(|t| t.sid.clone()).collect();
        sids.sort();
        sids
    };
    assert_eq!(sids(&after), sids(&before));
    assert_eq!(
        h.info(&other.ingress_id).state.map(|s| s.status),
        Some(Status::EndpointInactive as i32)
    );

    // The viewer saw one participant stream on through it all.
    let report = viewer.report();
    let video = common::track_of(&report, IDENTITY, "video");
    let frames = common::frames(video);
    let max_gap = video["max_gap_s"].as_f64().unwrap_or(f64::MAX);
    assert!(frames >= 25 * 26, "{frames} frames in 26 s: {video}");
    assert!(max_gap < 1.0, "a {max_gap} s gap in the video: {video}");
    assert_eq!(video["last_size"], "640x360", "{video}");
    let left = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["event"] == "participant_disconnected" && e["identity"] == IDENTITY);
    assert!(!left, "the participant never left: {report}");
    assert_eq!(
        h.participant(ROOM, IDENTITY)
            .expect("still in the room")
            .sid,
        sid_before
    );

    // The stream ends as usual, and says so in the store.
    let _ = streaming.kill();
    let _ = streaming.wait();
    let ended = h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(20));
    assert!(ended.state.expect("state").ended_at > 0);
    assert!(
        common::wait_for(Duration::from_secs(5), || claim_holder(&redis, &id)
            .is_none()
            .then_some(()))
        .is_some(),
        "the claim is given back"
    );
}
