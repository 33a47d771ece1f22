//! livekit-ingress end to end, all real: a LiveKit server, the service, ingresses
//! made through the Rust and Python LiveKit API clients, ffmpeg publishing over
//! RTMP, and the Python subscriber watching the room.

mod common;

use common::service::{twirp_code, Harness};
use common::{RedisServer, ScratchDir, API_KEY, API_SECRET};
use gstlivekitingress::supervisor::config::RedisConfig;
use gstlivekitingress::supervisor::store::{redis::RedisStore, Store};
use livekit_api::services::ingress::{
    CreateIngressOptions, IngressClient, IngressListFilter, UpdateIngressOptions,
};
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_ingress_api_works_with_the_rust_client() {
    let h = Harness::start();
    let client = h.client();
    let a = h.create("room-a", "alice", "Alice");
    assert!(a.ingress_id.starts_with("IN_"));
    assert!(!a.stream_key.is_empty());
    assert_eq!(a.url, format!("rtmp://127.0.0.1:{}/live", h.rtmp_port));
    assert!(a.reusable);
    assert_eq!(
        a.state.as_ref().map(|s| s.status),
        Some(Status::EndpointInactive as i32)
    );
    let b = h.create("room-b", "bob", "Bob");

    let in_a =
        h.rt.block_on(client.list_ingress(IngressListFilter::Room("room-a".into())))
            .expect("list");
    assert_eq!(
        in_a.iter()
            .map(|i| i.ingress_id.clone())
            .collect::<Vec<_>>(),
        vec![a.ingress_id.clone()]
    );
    let all =
        h.rt.block_on(client.list_ingress(IngressListFilter::All))
            .expect("list");
    assert_eq!(all.len(), 2);

    // Only the fields given change.
    let updated =
        h.rt.block_on(client.update_ingress(
            &a.ingress_id,
            UpdateIngressOptions {
                room_name: "room-c".into(),
                ..Default::default()
            },
        ))
        .expect("update");
    assert_eq!(updated.room_name, "room-c");
    assert_eq!(updated.participant_identity, "alice");
    assert_eq!(updated.participant_name, "Alice");
    assert_eq!(updated.stream_key, a.stream_key);

    let missing_identity = h.rt.block_on(client.create_ingress(
        proto::IngressInput::RtmpInput,
        CreateIngressOptions {
            room_name: "r".into(),
            ..Default::default()
        },
    ));
    assert_eq!(
        twirp_code(missing_identity.expect_err("invalid")),
        "invalid_argument"
    );
    let not_found = h.rt.block_on(client.delete_ingress("IN_nosuchingress"));
    assert_eq!(twirp_code(not_found.expect_err("missing")), "not_found");
    let wrong_secret =
        IngressClient::with_api_key(&h.api_url(), API_KEY, "not-the-secret").with_failover(false);
    let denied =
        h.rt.block_on(wrong_secret.list_ingress(IngressListFilter::All));
    assert_eq!(twirp_code(denied.expect_err("denied")), "unauthenticated");

    h.rt.block_on(client.delete_ingress(&b.ingress_id))
        .expect("delete");
    let left =
        h.rt.block_on(client.list_ingress(IngressListFilter::All))
            .expect("list");
    assert_eq!(left.len(), 1);
}

#[test]
fn the_ingress_api_works_with_the_python_client() {
    let h = Harness::start();
    let script = r#"
import asyncio, sys
from livekit import api
async def main():
    lk = api.LiveKitAPI(sys.argv[1], "devkey", "secret")
    info = await lk.ingress.create_ingress(api.CreateIngressRequest(
        input_type=api.IngressInput.RTMP_INPUT, name="py", room_name="py-room",
        participant_identity="py-host", participant_name="Py Host",
        video=api.IngressVideoOptions(name="cam", source=api.TrackSource.SCREEN_SHARE,
            preset=api.IngressVideoEncodingPreset.H264_540P_25FPS_2_LAYERS)))
    listed = await lk.ingress.list_ingress(api.ListIngressRequest(room_name="py-room"))
    assert [i.ingress_id for i in listed.items] == [info.ingress_id], listed
    upd = await lk.ingress.update_ingress(api.UpdateIngressRequest(ingress_id=info.ingress_id, participant_name="Renamed"))
    assert upd.participant_name == "Renamed" and upd.participant_identity == "py-host", upd
    assert upd.video.preset == api.IngressVideoEncodingPreset.H264_540P_25FPS_2_LAYERS, upd
    try:
        await lk.ingress.create_ingress(api.CreateIngressRequest(input_type=api.IngressInput.RTMP_INPUT, room_name="x"))
        raise SystemExit("an ingress without identity was accepted")
    except api.TwirpError as e:
        assert e.code == "invalid_argument", e
    await lk.ingress.delete_ingress(api.DeleteIngressRequest(ingress_id=info.ingress_id))
    assert not (await lk.ingress.list_ingress(api.ListIngressRequest())).items
    await lk.aclose()
    print("python client ok")
asyncio.run(main())
"#;
    let out = Command::new(common::python())
        .args(["-c", script, &h.api_url()])
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python client ok"),
        "python client: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rtmp_stream_reaches_the_room_and_the_ingress_is_reusable() {
    let h = Harness::start();
    let info = h.create("live-room", "streamer", "The Streamer");
    let id = info.ingress_id.clone();

    let mut ffmpeg = h.publish(&info.stream_key, 40);
    let publishing = h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));

    // Each simulcast quality decodes at its layer's size; audio flows.
    let expected = [("low", "320x180"), ("high", "1280x720")];
    let reports = common::watch_layers(&h.livekit, "live-room", 2, &expected);
    for ((quality, size), report) in expected.iter().zip(&reports) {
        let participant = report["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["identity"] == "streamer"))
            .unwrap_or_else(|| panic!("streamer not in the room: {report}"));
        assert_eq!(participant["name"], "The Streamer");
        let video = common::track_of(report, "streamer", "video");
        let audio = common::track_of(report, "streamer", "audio");
        assert_eq!(video["simulcasted"], true, "{video}");
        assert_eq!(video["source"], "SOURCE_CAMERA");
        common::assert_layer_size(report, "streamer", quality, size);
        assert!(audio["frames"].as_u64().unwrap_or(0) >= 100, "{audio}");
    }

    // /metrics tells what each stream sends to its room and what the room asks.
    let metric = |body: &str, name: &str, labels: &str| -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{{labels}}} ")))
            .and_then(|v| v.parse().ok())
    };
    let port = h.service.as_ref().expect("running").http_addr.port();
    let metrics = common::wait_for(Duration::from_secs(10), || {
        common::http_get(port, "/metrics").filter(|body| {
            let f = format!("ingress=\"{id}\",kind=\"video\",rid=\"f\"");
            metric(body, "livekit_ingress_sent_bytes_total", &f).is_some()
        })
    })
    .expect("per-stream metrics of the live ingress");
    assert_eq!(
        metric(&metrics, "livekit_ingress_sessions_live", ""),
        None,
        "a metric without labels is written without braces"
    );
    assert!(
        metrics.contains("\nlivekit_ingress_sessions_live 1\n"),
        "{metrics}"
    );
    for (kind, rid) in [
        ("video", "q"),
        ("video", "h"),
        ("video", "f"),
        ("audio", ""),
    ] {
        let labels = format!("ingress=\"{id}\",kind=\"{kind}\",rid=\"{rid}\"");
        let packets = metric(&metrics, "livekit_ingress_sent_packets_total", &labels);
        let bytes = metric(&metrics, "livekit_ingress_sent_bytes_total", &labels);
        assert!(packets.is_some_and(|p| p >= 30.0), "{labels}: {metrics}");
        assert!(bytes.is_some_and(|b| b >= 1000.0), "{labels}: {metrics}");
    }
    let rtt = metric(
        &metrics,
        "livekit_ingress_rtt_seconds",
        &format!("ingress=\"{id}\""),
    );
    assert!(rtt.is_some_and(|r| r < 1.0), "{metrics}");
    // And the process's own figures, under Prometheus's standard names.
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert!(
        gauge("process_resident_memory_bytes").is_some_and(|b| b > 10e6),
        "{metrics}"
    );
    assert!(
        gauge("process_threads").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        gauge("process_open_fds").is_some_and(|n| n >= 3.0),
        "{metrics}"
    );
    assert!(
        gauge("process_cpu_seconds_total").is_some_and(|s| s > 0.0),
        "{metrics}"
    );

    // ListIngress tells what is coming in.
    let state = h.info(&id).state.expect("state");
    assert_eq!(state.status, Status::EndpointPublishing as i32);
    let input = state.video.expect("input video");
    assert_eq!((input.width, input.height), (1280, 720));
    assert_eq!(input.mime_type, "video/x-h264");
    assert!((input.framerate - 30.0).abs() < 0.5, "{}", input.framerate);
    assert_eq!(state.audio.expect("input audio").channels, 2);
    assert!(state.room_id.starts_with("RM_"), "{}", state.room_id);
    assert_eq!(state.tracks.len(), 2);
    // The tracks as the server published them.
    let video_track = state
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Video as i32)
        .expect("video track in the state");
    assert!(video_track.sid.starts_with("TR_"), "{video_track:?}");
    assert_eq!(video_track.source, proto::TrackSource::Camera as i32);
    let layers = video_track.codecs.iter().map(|c| c.layers.len()).max();
    assert_eq!(layers, Some(3), "{video_track:?}");
    let audio_track = state
        .tracks
        .iter()
        .find(|t| t.r#type == proto::TrackType::Audio as i32)
        .expect("audio track in the state");
    assert_eq!(audio_track.source, proto::TrackSource::Microphone as i32);
    assert!(state.started_at > 0 && publishing.state.is_some());

    // A new participant name reaches the live participant in place.
    let before = h
        .participant("live-room", "streamer")
        .expect("streamer in the room");
    h.rt.block_on(h.client().update_ingress(
        &id,
        UpdateIngressOptions {
            participant_name: "Renamed Streamer".into(),
            ..Default::default()
        },
    ))
    .expect("rename");
    let renamed = common::wait_for(Duration::from_secs(5), || {
        h.participant("live-room", "streamer")
            .filter(|p| p.name == "Renamed Streamer")
    })
    .expect("the live participant renamed");
    assert_eq!(renamed.sid, before.sid, "renamed in place, not rejoined");

    // The source stops: the participant leaves, the ingress is inactive and reusable.
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    let ended = h.wait_status(&id, Status::EndpointInactive, Duration::from_secs(45));
    assert!(ended.state.expect("state").ended_at > 0);
    assert!(
        h.left_within("live-room", "streamer", Duration::from_secs(5)),
        "the streamer stayed in the room"
    );

    // ingress_started and ingress_ended reached the webhook receiver, signed.
    let events = common::wait_for(Duration::from_secs(10), || {
        let events = h.webhooks.events();
        (events
            .iter()
            .filter(|e| e.ingress_info.as_ref().map(|i| i.ingress_id.as_str()) == Some(id.as_str()))
            .count()
            >= 2)
            .then_some(events)
    })
    .expect("two webhooks");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["ingress_started", "ingress_ended"], "{events:?}");
    let started_state = events[0]
        .ingress_info
        .as_ref()
        .and_then(|i| i.state.clone())
        .expect("state");
    assert_eq!(started_state.status, Status::EndpointPublishing as i32);

    let mut again = h.publish(&info.stream_key, 20);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));
    assert!(h.participant("live-room", "streamer").is_some());

    // Deleting the ingress ends the live stream.
    h.rt.block_on(h.client().delete_ingress(&id))
        .expect("delete");
    h.assert_stream_cut(
        "live-room",
        "streamer",
        &mut again,
        Duration::from_secs(5),
        "the ingress was deleted",
    );
}

#[test]
fn wrong_and_disabled_keys_are_refused() {
    let h = Harness::start();
    let info = h.create("closed-room", "nobody", "Nobody");
    let mut wrong = h.publish("not-a-key", 2);
    assert!(
        !wrong.wait().expect("ffmpeg").success(),
        "a wrong key is refused"
    );

    h.rt.block_on(h.client().update_ingress(
        &info.ingress_id,
        UpdateIngressOptions {
            ..Default::default()
        },
    ))
    .expect("update without changes");
    let disable = proto::UpdateIngressRequest {
        ingress_id: info.ingress_id.clone(),
        enabled: Some(false),
        ..Default::default()
    };
    // The Rust client cannot send `enabled` yet; speak Twirp JSON directly.
    let token = livekit_api::access_token::AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_grants(livekit_api::access_token::VideoGrants {
            ingress_admin: true,
            ..Default::default()
        })
        .to_jwt()
        .expect("token");
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-d", &serde_json::to_string(&disable).expect("json")])
        .arg(format!(
            "{}/twirp/livekit.Ingress/UpdateIngress",
            h.api_url()
        ))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"enabled\":false"), "{body}");

    let mut disabled = h.publish(&info.stream_key, 2);
    assert!(
        !disabled.wait().expect("ffmpeg").success(),
        "a disabled ingress is refused"
    );
    assert_eq!(
        h.info(&info.ingress_id).state.map(|s| s.status),
        Some(Status::EndpointInactive as i32)
    );
}

#[test]
fn nodes_sharing_redis_publish_a_key_once_and_stop_each_others_streams() {
    let redis = RedisServer::start();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    let mut h = Harness::start_with_store(ScratchDir::new("redis-service"), store);
    let other = h.start_node();
    let (other_rtmp, other_client) = (other.rtmp_addr.port(), Harness::client_of(&other));
    h.others.push(other);

    // Made on the first node, known to the second.
    let info = h.create("shared-room", "relay", "Relay");
    let listed =
        h.rt.block_on(other_client.list_ingress(IngressListFilter::Room("shared-room".into())))
            .expect("list on the other node");
    assert_eq!(listed.len(), 1);

    // Streamed into the second node, seen as publishing through the first.
    let mut streaming = Harness::publish_to(other_rtmp, &info.stream_key, 60);
    h.wait_status(
        &info.ingress_id,
        Status::EndpointPublishing,
        Duration::from_secs(20),
    );
    assert!(h.participant("shared-room", "relay").is_some());

    // The same key on the first node is refused while the second holds it.
    let mut twice = h.publish(&info.stream_key, 5);
    let refused = twice.wait().expect("ffmpeg");
    assert!(
        !refused.success(),
        "a key already live on another node is refused"
    );
    assert_eq!(
        h.info(&info.ingress_id).state.map(|s| s.status),
        Some(Status::EndpointPublishing as i32),
        "the refusal did not disturb the live stream"
    );

    // Deleting through the first node ends the stream on the second.
    h.rt.block_on(h.client().delete_ingress(&info.ingress_id))
        .expect("delete");
    h.assert_stream_cut(
        "shared-room",
        "relay",
        &mut streaming,
        Duration::from_secs(10),
        "the ingress was deleted on the other node",
    );
}

/// A node whose claim lapsed (here: taken over, as by another node while this
/// one could not reach Redis) ends its stream and leaves the ingress's state
/// to the node that holds the key now.
#[test]
fn a_lapsed_claim_leaves_the_state_to_the_node_that_took_the_key_over() {
    let redis = RedisServer::start();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    let h = Harness::start_with_store(ScratchDir::new("redis-lapse"), store);
    let info = h.create("lapse-room", "lapsing", "Lapsing");
    let id = info.ingress_id.clone();
    let mut streaming = h.publish(&info.stream_key, 60);
    h.wait_status(&id, Status::EndpointPublishing, Duration::from_secs(20));

    // Another node takes the key and writes its own state.
    let config = RedisConfig {
        address: redis.address(),
        ..RedisConfig::default()
    };
    let other = RedisStore::connect(&config).expect("redis");
    let client = redis::Client::open(format!("redis://{}", redis.address())).expect("client");
    let mut connection = client.get_connection().expect("connection");
    // The claim lapses (as when this node cannot reach Redis for a lease)...
    redis::cmd("DEL")
        .arg(format!("{}:lease:{id}", config.prefix))
        .query::<()>(&mut connection)
        .expect("lapse the claim");
    // ...and the other node takes it and writes its state.
    assert!(
        other.claim(&id).expect("claim"),
        "the other node takes the key"
    );
    let taken = proto::IngressState {
        status: Status::EndpointBuffering as i32,
        room_id: "RM_other_node".into(),
        started_at: gstlivekitingress::supervisor::ingress::now_nanos(),
        ..Default::default()
    };
    assert!(other.put_state(&id, &taken).expect("put state"));

    // This node notices at its next renewal and stops streaming...
    h.assert_stream_cut(
        "lapse-room",
        "lapsing",
        &mut streaming,
        Duration::from_secs(10),
        "its claim was taken over",
    );
    // ...without writing over the state of the node that holds the key.
    std::thread::sleep(Duration::from_millis(500));
    let state = h.info(&id).state.expect("state");
    assert_eq!(state.room_id, "RM_other_node", "{state:?}");
    assert_eq!(state.status, Status::EndpointBuffering as i32, "{state:?}");
}

/// `/health` says whether the store answers: a node that cannot reach Redis
/// can neither authorize a publish nor serve the API, so a load balancer
/// should stop sending to it; it is ready again once Redis answers.
#[test]
fn health_follows_the_store() {
    let redis = RedisServer::start();
    let store = format!("  redis:\n    address: {}\n", redis.address());
    let h = Harness::start_with_store(ScratchDir::new("health"), store);
    let port = h.service.as_ref().expect("running").http_addr.port();
    let health = || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        std::io::Write::write_all(&mut stream, b"GET /health HTTP/1.0\r\n\r\n").expect("send");
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut response);
        response
    };
    assert!(health().starts_with("HTTP/1.0 200"), "{}", health());

    redis.freeze();
    let frozen = health();
    redis.thaw();
    assert!(frozen.starts_with("HTTP/1.0 503"), "{frozen}");
    assert!(frozen.contains("store unreachable"), "{frozen}");
    let back = common::wait_for(Duration::from_secs(10), || {
        health().starts_with("HTTP/1.0 200").then_some(())
    });
    assert!(back.is_some(), "ready again: {}", health());
}
