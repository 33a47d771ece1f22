//! Where ingresses live, and who may run their streams.
//!
//! Two implementations of one contract:
//! - [`sqlite::SqliteStore`], the embedded default: one node, one file that
//!   survives restarts.
//! - [`redis::RedisStore`]: several nodes sharing one Redis. A per-ingress lease
//!   (`SET NX PX`, renewed while the stream lives) keeps one stream key from being
//!   published on two nodes at once, and a pub/sub channel carries "stop this
//!   ingress" to the node that holds its session.

pub mod redis;
pub mod sqlite;

use super::config::StoreConfig;
use livekit_protocol as proto;
use std::sync::Arc;
use std::time::Duration;

/// How long a claim outlives its last renewal; sessions renew every third of it.
pub const LEASE: Duration = Duration::from_secs(10);

/// Called with an ingress id when some node asks for its session to stop.
pub type StopHandler = Box<dyn Fn(&str) + Send + Sync>;

pub trait Store: Send + Sync {
    /// Inserts or replaces an ingress.
    fn put(&self, info: &proto::IngressInfo) -> Result<(), String>;
    fn get(&self, ingress_id: &str) -> Result<Option<proto::IngressInfo>, String>;
    fn by_stream_key(&self, stream_key: &str) -> Result<Option<proto::IngressInfo>, String>;
    /// Every ingress, or those of one room and/or one id (empty means any).
    fn list(&self, room: &str, ingress_id: &str) -> Result<Vec<proto::IngressInfo>, String>;
    fn delete(&self, ingress_id: &str) -> Result<(), String>;

    /// Takes the right to run the ingress's stream; false when a session, on
    /// this node or another, holds it.
    fn claim(&self, ingress_id: &str) -> Result<bool, String>;
    /// Keeps a claim alive while the stream runs; false when it was lost.
    fn renew(&self, ingress_id: &str) -> Result<bool, String>;
    /// Gives a claim back (only this node's own).
    fn release(&self, ingress_id: &str);
    /// Writes a stream's state into the stored ingress, in one step with the
    /// check that this node holds the ingress's claim (a node whose claim
    /// lapsed must not write over the state of the node that took the key
    /// over). False, and nothing written, without the claim or the ingress.
    fn put_state(&self, ingress_id: &str, state: &proto::IngressState) -> Result<bool, String>;
    /// Whether any node holds the ingress's claim.
    fn is_claimed(&self, ingress_id: &str) -> Result<bool, String>;

    /// Asks the other nodes to stop the ingress's session, wherever it runs.
    fn broadcast_stop(&self, ingress_id: &str) -> Result<(), String>;
    /// Delivers the other nodes' stop requests to `handler` until it returns
    /// false from `alive` (checked about once a second).
    fn watch_stops(
        &self,
        handler: StopHandler,
        alive: Box<dyn Fn() -> bool + Send>,
    ) -> Result<(), String>;
}

/// Opens the configured store: Redis when an address is given, else SQLite.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, String> {
    match &config.redis {
        Some(redis) => Ok(Arc::new(redis::RedisStore::connect(redis)?)),
        None => Ok(Arc::new(sqlite::SqliteStore::open(&config.sqlite)?)),
    }
}

fn store_error<E: std::fmt::Display>(e: E) -> String {
    format!("ingress store: {e}")
}
