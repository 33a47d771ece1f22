//! Proves the test harness against the real components: a LiveKit server started
//! for this test, its Twirp API through the Rust `livekit-api` RoomClient, and the
//! Python subscriber joining a room.

mod common;

use common::{LiveKitServer, Subscriber, SubscriberOptions, API_KEY, API_SECRET};
use livekit_api::services::room::{CreateRoomOptions, RoomClient};
use std::time::Duration;

fn room_client(server: &LiveKitServer) -> RoomClient {
    RoomClient::with_api_key(&server.http_url(), API_KEY, API_SECRET).with_failover(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_room_is_listed_by_the_real_server() {
    let server = LiveKitServer::start();
    let rooms = room_client(&server);

    let created = rooms
        .create_room("harness-room", CreateRoomOptions::default())
        .await
        .expect("create room");
    assert_eq!(created.name, "harness-room");
    assert!(created.sid.starts_with("RM_"), "room sid: {}", created.sid);

    let listed = rooms.list_rooms(vec![]).await.expect("list rooms");
    let found = listed
        .iter()
        .find(|r| r.name == "harness-room")
        .expect("created room is listed");
    assert_eq!(found.sid, created.sid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_subscriber_joins_and_is_seen_by_the_server() {
    let server = LiveKitServer::start();
    let rooms = room_client(&server);
    rooms
        .create_room("harness-join", CreateRoomOptions::default())
        .await
        .expect("create room");

    let mut opts = SubscriberOptions::new("harness-join");
    opts.identity = "harness-viewer".into();
    opts.duration = 4.0;
    let subscriber = Subscriber::spawn(&server, &opts);

    // While the subscriber sits in the room, the server lists it as a participant.
    let mut seen = false;
    for _ in 0..100 {
        let participants = rooms
            .list_participants("harness-join")
            .await
            .expect("list participants");
        if participants.iter().any(|p| p.identity == "harness-viewer") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let report = tokio::task::spawn_blocking(move || subscriber.report())
        .await
        .expect("join subscriber");
    assert!(
        seen,
        "the server never listed the subscriber; report: {report}"
    );
    assert_eq!(report["connected"], true, "report: {report}");
    assert_eq!(report["room"], "harness-join");
}
