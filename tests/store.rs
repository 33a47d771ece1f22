//! The ingress stores against their real backends: an SQLite file and a real
//! redis-server. Both keep one contract; Redis also carries claims and stop
//! requests between nodes (two stores on one Redis stand for two nodes).

mod common;

use common::{RedisServer, ScratchDir};
use gstlivekitingress::passthrough::Mode;
use gstlivekitingress::supervisor::config::RedisConfig;
use gstlivekitingress::supervisor::ingress_options::IngressOptions;
use gstlivekitingress::supervisor::store::{
    redis::RedisStore, settle_orphan, sqlite::SqliteStore, Store, StoreError,
};
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::sync::mpsc;
use std::time::Duration;

fn ingress(id: &str, key: &str, room: &str) -> proto::IngressInfo {
    proto::IngressInfo {
        ingress_id: id.into(),
        stream_key: key.into(),
        room_name: room.into(),
        name: format!("{id} in {room}"),
        // As the API creates them: inactive.
        state: Some(proto::IngressState::default()),
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

    // URL pulls have no stream key: any number of them, found by no key.
    let pulls = [
        ingress("IN_u1", "", "room-3"),
        ingress("IN_u2", "", "room-3"),
    ];
    for pull in &pulls {
        store.put(pull).expect("put a keyless ingress");
    }
    assert_eq!(store.list("room-3", "").expect("list").len(), 2);
    assert_eq!(store.by_stream_key("").expect("by no key"), None);
    assert_eq!(store.by_stream_key("no key: IN_u1").expect("by key"), None);
    for pull in &pulls {
        assert_eq!(
            store.get(&pull.ingress_id).expect("get"),
            Some(pull.clone())
        );
        store.delete(&pull.ingress_id).expect("delete");
    }
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

    check_states_apart_from_info(store);
    check_options(store);
}

/// An ingress's own options: kept beside it, through updates of its info,
/// and gone with it; none for an ingress that does not exist.
fn check_options(store: &dyn Store) {
    let hybrid = IngressOptions {
        video_passthrough: Some(Mode::Hybrid),
    };
    let e = ingress("IN_e", "key-e", "room-4");
    let options = |id: &str| store.options(id).expect("options");
    store.put(&e).expect("put");
    assert_eq!(options("IN_e"), Some(IngressOptions::default()));
    assert!(store.put_options("IN_e", &hybrid).expect("put options"));
    assert_eq!(options("IN_e"), Some(hybrid.clone()));
    // The API's update writes the info only.
    store
        .put(&proto::IngressInfo {
            name: "renamed".into(),
            ..e.clone()
        })
        .expect("update");
    assert_eq!(options("IN_e"), Some(hybrid.clone()));
    // Replaced whole; empty ones are the service's defaults again.
    let single = IngressOptions {
        video_passthrough: Some(Mode::Single),
    };
    assert!(store.put_options("IN_e", &single).expect("replace"));
    assert_eq!(options("IN_e"), Some(single));
    assert!(store
        .put_options("IN_e", &IngressOptions::default())
        .expect("clear"));
    assert_eq!(options("IN_e"), Some(IngressOptions::default()));
    // No ingress, no options; a deleted one takes them along.
    assert!(!store.put_options("IN_none", &hybrid).expect("put for none"));
    assert_eq!(options("IN_none"), None);
    assert!(store.put_options("IN_e", &hybrid).expect("put options"));
    store.delete("IN_e").expect("delete");
    assert_eq!(options("IN_e"), None);
    store.put(&e).expect("the same id again");
    assert_eq!(options("IN_e"), Some(IngressOptions::default()));
    store.delete("IN_e").expect("delete");
}

fn live(started_at: i64, updated_at: i64) -> proto::IngressState {
    proto::IngressState {
        status: Status::EndpointPublishing as i32,
        started_at,
        updated_at,
        ..Default::default()
    }
}

/// The state is the sessions' record: the API's writes of the info never
/// touch it, a state never replaces a newer one, and a live state no one
/// holds the claim for is repaired.
fn check_states_apart_from_info(store: &dyn Store) {
    let mut d = ingress("IN_d", "key-d", "room-3");
    d.state = Some(proto::IngressState::default());
    store.put(&d).expect("put");
    assert!(store.claim("IN_d").expect("claim"));
    assert!(store.put_state("IN_d", &live(100, 110)).expect("state"));

    // An update made from a read taken before the stream started (its state
    // inactive) changes the info, not the state.
    let renamed = proto::IngressInfo {
        name: "renamed".into(),
        ..d.clone()
    };
    store.put(&renamed).expect("update");
    let stored = store.get("IN_d").expect("get").expect("IN_d");
    assert_eq!(stored.name, "renamed");
    assert_eq!(stored.state, Some(live(100, 110)));

    // Ordered by time: an older write is refused, a newer one taken.
    assert!(!store.put_state("IN_d", &live(100, 105)).expect("older"));
    assert!(!store
        .put_state("IN_d", &live(90, 500))
        .expect("older stream"));
    assert!(store.put_state("IN_d", &live(100, 120)).expect("newer"));

    // Compare and set: only from the state expected.
    let reset = proto::IngressState::default();
    assert!(!store
        .swap_state("IN_d", &live(100, 110), &reset)
        .expect("swap from a stale state"));
    assert!(store
        .swap_state("IN_d", &live(100, 120), &live(100, 130))
        .expect("swap"));
    assert_eq!(
        store.get("IN_d").expect("get").and_then(|i| i.state),
        Some(live(100, 130))
    );

    // Live while claimed: left alone. Live with no claim (its node died):
    // repaired to inactive, with the time it was found ended.
    let mut seen = store.get("IN_d").expect("get").expect("IN_d");
    assert!(!settle_orphan(store, &mut seen).expect("settle"));
    assert_eq!(seen.state, Some(live(100, 130)));
    store.release("IN_d");
    assert!(settle_orphan(store, &mut seen).expect("settle"));
    let state = seen.state.clone().expect("state");
    assert_eq!(state.status, Status::EndpointInactive as i32);
    assert_eq!(state.started_at, 100);
    assert!(state.ended_at > 0);
    assert_eq!(store.get("IN_d").expect("get"), Some(seen));
    assert!(!store.is_claimed("IN_d").expect("claim given back"));

    // Deleting removes the state with the info: a new ingress of the same id
    // starts from its own.
    store.delete("IN_d").expect("delete");
    store.put(&d).expect("put again");
    assert_eq!(
        store.get("IN_d").expect("get").and_then(|i| i.state),
        Some(proto::IngressState::default())
    );
    store.delete("IN_d").expect("delete");
}

#[test]
fn sqlite_store_keeps_the_contract_and_survives_reopening() {
    let dir = ScratchDir::new("sqlite-store");
    let path = dir.path().join("ingress.db");
    check_contract(&SqliteStore::open(&path).expect("open"));
    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(reopened.list("", "").expect("list").len(), 2);
    assert!(reopened.by_stream_key("key-b").expect("by key").is_some());

    // It holds every stream key: its files are for their owner only.
    use std::os::unix::fs::PermissionsExt;
    for file in ["ingress.db", "ingress.db-wal", "ingress.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} has mode {mode:o}");
    }
}

/// A file written when the state was kept inside the info opens with each
/// state moved to its own record.
#[test]
fn sqlite_store_moves_states_out_of_older_files() {
    let dir = ScratchDir::new("sqlite-old");
    let path = dir.path().join("ingress.db");
    let mut old = ingress("IN_old", "key-old", "room");
    old.state = Some(live(5, 6));
    {
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE ingress (ingress_id TEXT PRIMARY KEY, stream_key TEXT NOT NULL UNIQUE,
                                   room_name TEXT NOT NULL, info BLOB NOT NULL);",
        )
        .expect("old schema");
        db.execute(
            "INSERT INTO ingress VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                old.ingress_id,
                old.stream_key,
                old.room_name,
                prost::Message::encode_to_vec(&old)
            ],
        )
        .expect("old row");
    }
    let store = SqliteStore::open(&path).expect("open");
    assert_eq!(store.get("IN_old").expect("get"), Some(old.clone()));
    // The state is the state record's now: an update of the info keeps it.
    store
        .put(&proto::IngressInfo {
            state: None,
            ..old.clone()
        })
        .expect("update");
    assert_eq!(store.get("IN_old").expect("get"), Some(old));
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

    // A stop request reaches the node that holds the claim, also when it was
    // sent before that node listened (as while it reconnects to Redis), and
    // only that node.
    redis::cmd("DEL")
        .arg("nodes:lease:IN_shared")
        .exec(&mut raw)
        .expect("lapse");
    assert!(two.claim("IN_shared").expect("claim"));
    one.request_stop("IN_shared").expect("request");
    let heard = |node: &RedisStore| {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let watching = alive.clone();
        node.watch_stops(
            Box::new(move |id| {
                let _ = tx.lock().expect("lock").send(id.to_string());
            }),
            Box::new(move || watching.load(std::sync::atomic::Ordering::Relaxed)),
        )
        .expect("watch");
        let got = rx.recv_timeout(Duration::from_secs(3)).ok();
        alive.store(false, std::sync::atomic::Ordering::Relaxed);
        got
    };
    assert_eq!(heard(&one), None, "not the holder's request");
    assert_eq!(heard(&two).as_deref(), Some("IN_shared"));
    // With no claim there is no one to stop: nothing is queued.
    two.release("IN_shared");
    one.request_stop("IN_shared").expect("request");
    assert_eq!(heard(&two), None);
}

/// A Redis written when every ingress, state inside, was one field of one
/// hash is moved to one record per ingress on connect.
#[test]
fn redis_store_moves_older_layouts() {
    let server = RedisServer::start();
    let mut old = ingress("IN_old", "key-old", "room-old");
    old.state = Some(live(5, 6));
    let client = redis::Client::open(format!("redis://{}", server.address())).expect("client");
    let mut raw = client.get_connection().expect("connection");
    redis::pipe()
        .hset(
            "old:ingress",
            &old.ingress_id,
            prost::Message::encode_to_vec(&old),
        )
        .hset("old:stream_key", &old.stream_key, &old.ingress_id)
        .sadd("old:room:room-old", &old.ingress_id)
        .exec(&mut raw)
        .expect("old layout");
    let store = redis_node(&server, "old");
    assert_eq!(store.get("IN_old").expect("get"), Some(old.clone()));
    assert_eq!(
        store.by_stream_key("key-old").expect("by key"),
        Some(old.clone())
    );
    assert_eq!(store.list("room-old", "").expect("list"), vec![old]);
    let kind: String = redis::cmd("TYPE")
        .arg("old:ingress")
        .query(&mut raw)
        .expect("type");
    assert_eq!(kind, "none", "the old hash is gone");
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
    assert!(matches!(err, StoreError::Unreachable(_)), "{err:?}");
    assert!(err.to_string().contains("cannot reach Redis"), "{err}");
}

/// A record that no longer decodes is a corrupt record, not an unreachable
/// store (the API answers `internal`, not `unavailable`).
#[test]
fn sqlite_store_reports_a_damaged_record_as_corrupt() {
    let dir = ScratchDir::new("sqlite-corrupt");
    let path = dir.path().join("ingress.db");
    let store = SqliteStore::open(&path).expect("open");
    store
        .put(&ingress("IN_bad", "key-bad", "room"))
        .expect("put");
    {
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute(
            "UPDATE ingress SET info = x'ffffffff' WHERE ingress_id = 'IN_bad'",
            [],
        )
        .expect("damage");
    }
    let err = store.get("IN_bad").expect_err("damaged record");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().starts_with("ingress store: "), "{err}");
}
