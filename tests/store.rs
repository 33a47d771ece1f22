//! The ingress stores against their real backends: an SQLite file and a real
//! redis-server. Both keep one contract; Redis also carries claims and stop
//! requests between nodes (two stores on one Redis stand for two nodes).

mod common;

use common::{RedisServer, ScratchDir};
use gstlivekitingress::supervisor::config::RedisConfig;
use gstlivekitingress::supervisor::store::{redis::RedisStore, sqlite::SqliteStore, Store};
use livekit_protocol as proto;
use std::sync::mpsc;
use std::time::Duration;

fn ingress(id: &str, key: &str, room: &str) -> proto::IngressInfo {
    proto::IngressInfo {
        ingress_id: id.into(),
        stream_key: key.into(),
        room_name: room.into(),
        name: format!("{id} in {room}"),
        ..Default::default()
    }
}

/// What the service relies on from any store.
fn check_contract(store: &dyn Store) {
    let a = ingress("IN_a", "key-a", "room-1");
    let b = ingress("IN_b", "key-b", "room-1");
    let c = ingress("IN_c", "key-c", "room-2");
    for info in [&a, &b, &c] {
        store.put(info).expect("put");
    }
    assert_eq!(store.get("IN_a").expect("get"), Some(a.clone()));
    assert_eq!(store.get("IN_zz").expect("get"), None);
    assert_eq!(
        store.by_stream_key("key-b").expect("by key"),
        Some(b.clone())
    );
    assert_eq!(store.by_stream_key("nope").expect("by key"), None);
    assert_eq!(store.list("", "").expect("list").len(), 3);
    assert_eq!(
        store.list("room-1", "").expect("list"),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(store.list("", "IN_c").expect("list"), vec![c.clone()]);
    assert_eq!(store.list("room-1", "IN_c").expect("list"), vec![]);

    // An update that moves an ingress to another room moves it in the room lists.
    let moved = proto::IngressInfo {
        room_name: "room-2".into(),
        ..b.clone()
    };
    store.put(&moved).expect("update");
    assert_eq!(store.list("room-1", "").expect("list"), vec![a.clone()]);
    assert_eq!(store.list("room-2", "").expect("list").len(), 2);

    store.delete("IN_a").expect("delete");
    assert_eq!(store.get("IN_a").expect("get"), None);
    assert_eq!(store.by_stream_key("key-a").expect("by key"), None);
    assert_eq!(store.list("room-1", "").expect("list"), vec![]);
    store.delete("IN_a").expect("deleting twice is fine");

    // One claim per ingress at a time.
    assert!(store.claim("IN_b").expect("claim"));
    assert!(!store.claim("IN_b").expect("second claim"));
    assert!(store.is_claimed("IN_b").expect("claimed"));
    assert!(store.renew("IN_b").expect("renew"));
    store.release("IN_b");
    assert!(!store.is_claimed("IN_b").expect("released"));
    assert!(!store.renew("IN_b").expect("renew after release"));
    assert!(store.claim("IN_b").expect("claim again"));

    // A stream's state is written only under the claim, and nothing else changes.
    let state = proto::IngressState {
        status: proto::ingress_state::Status::EndpointPublishing as i32,
        room_id: "RM_b".into(),
        ..Default::default()
    };
    assert!(store.put_state("IN_b", &state).expect("put state"));
    let stored = store.get("IN_b").expect("get").expect("IN_b");
    assert_eq!(stored.state.as_ref(), Some(&state));
    assert_eq!(stored.stream_key, "key-b");
    store.release("IN_b");
    let later = proto::IngressState {
        room_id: "RM_later".into(),
        ..state.clone()
    };
    assert!(!store
        .put_state("IN_b", &later)
        .expect("put state unclaimed"));
    assert!(!store
        .put_state("IN_gone", &later)
        .expect("put state of no ingress"));
    let stored = store.get("IN_b").expect("get").expect("IN_b");
    assert_eq!(stored.state.as_ref(), Some(&state));
}

#[test]
fn sqlite_store_keeps_the_contract_and_survives_reopening() {
    let dir = ScratchDir::new("sqlite-store");
    let path = dir.path().join("ingress.db");
    check_contract(&SqliteStore::open(&path).expect("open"));
    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(reopened.list("", "").expect("list").len(), 2);
    assert!(reopened.by_stream_key("key-b").expect("by key").is_some());
}

fn redis_node(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(&RedisConfig {
        address: server.address(),
        prefix: prefix.into(),
        ..Default::default()
    })
    .expect("connect to redis")
}

#[test]
fn redis_store_keeps_the_contract() {
    let server = RedisServer::start();
    check_contract(&redis_node(&server, "contract"));
    // Another prefix is another deployment: it sees none of it.
    assert_eq!(
        redis_node(&server, "other").list("", "").expect("list"),
        vec![]
    );
}

#[test]
fn redis_nodes_share_ingresses_claims_and_stop_requests() {
    let server = RedisServer::start();
    let (one, two) = (redis_node(&server, "nodes"), redis_node(&server, "nodes"));
    let info = ingress("IN_shared", "shared-key", "room");
    one.put(&info).expect("put on node one");
    assert_eq!(two.by_stream_key("shared-key").expect("by key"), Some(info));

    // Node one streams: node two can neither claim the key nor renew or release
    // node one's claim.
    assert!(one.claim("IN_shared").expect("claim"));
    assert!(!two.claim("IN_shared").expect("claim elsewhere"));
    assert!(!two.renew("IN_shared").expect("renew elsewhere"));
    two.release("IN_shared");
    assert!(two.is_claimed("IN_shared").expect("still claimed"));
    // Nor write the stream's state; node one can.
    let state = proto::IngressState {
        room_id: "RM_one".into(),
        ..Default::default()
    };
    assert!(!two.put_state("IN_shared", &state).expect("state elsewhere"));
    assert!(one.put_state("IN_shared", &state).expect("state"));
    one.release("IN_shared");
    assert!(two.claim("IN_shared").expect("claim once released"));
    two.release("IN_shared");
    // A claim that lapsed and was taken by another node (here: overwritten):
    // its old holder can neither renew it nor write the state any more.
    assert!(one.claim("IN_shared").expect("claim"));
    let client = redis::Client::open(format!("redis://{}", server.address())).expect("client");
    let mut raw = client.get_connection().expect("connection");
    redis::cmd("SET")
        .arg("nodes:lease:IN_shared")
        .arg("a-third-node")
        .arg("PX")
        .arg(10_000)
        .exec(&mut raw)
        .expect("take over");
    assert!(!one.renew("IN_shared").expect("renew"));
    assert!(!one
        .put_state("IN_shared", &proto::IngressState::default())
        .expect("state"));
    assert_eq!(
        two.get("IN_shared").expect("get").and_then(|i| i.state),
        Some(state)
    );

    // A stop request sent by one node reaches the others.
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    two.watch_stops(
        Box::new(move |id| {
            let _ = tx.lock().expect("lock").send(id.to_string());
        }),
        Box::new(|| true),
    )
    .expect("watch");
    // The subscription is made on another thread: send until it is heard.
    let heard = common::wait_for(Duration::from_secs(10), || {
        one.broadcast_stop("IN_shared").expect("broadcast");
        rx.recv_timeout(Duration::from_millis(200)).ok()
    });
    assert_eq!(heard.as_deref(), Some("IN_shared"));
}

#[test]
fn unreachable_redis_is_a_clear_error() {
    let port = common::free_tcp_port();
    let err = RedisStore::connect(&RedisConfig {
        address: format!("127.0.0.1:{port}"),
        ..Default::default()
    })
    .err()
    .expect("no redis there");
    assert!(err.contains("cannot reach Redis"), "{err}");
}
