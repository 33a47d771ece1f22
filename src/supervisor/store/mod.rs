//! Where ingresses live, and who may run their streams.
//!
//! Two implementations of one contract:
//! - [`sqlite::SqliteStore`], the embedded default: one node, one file that
//!   survives restarts.
//! - [`redis::RedisStore`]: several nodes sharing one Redis. A per-ingress lease
//!   (`SET NX PX`, renewed while the stream lives) keeps one stream key from being
//!   published on two nodes at once, and a per-node queue carries "stop this
//!   ingress" to the node that holds its session.
//!
//! An ingress is two records, as in LiveKit's own store: its info, written by
//! the API, and its state, written by the session that runs its stream while it
//! holds the claim. An API update never writes the state, so it can neither
//! lose a session's state change nor bring back a stream that just ended.
//! Whether a key may publish follows the live claim, never the stored state: a
//! state left BUFFERING or PUBLISHING by a node that died is repaired by the
//! first node that finds the claim gone ([`settle_orphan`]). Beside them an
//! ingress may have options of this service's own, which LiveKit lacks.

pub mod redis;
pub mod sqlite;

use super::config::StoreConfig;
use super::ingress_options::IngressOptions;
use livekit_protocol as proto;
use proto::ingress_state::Status;
use std::sync::Arc;
use std::time::Duration;

/// How long a claim outlives its last renewal; sessions renew every third of it.
pub const LEASE: Duration = Duration::from_secs(10);

/// An ingress's options as a store keeps them: JSON, or nothing when it set
/// none.
fn stored_options(json: Option<&str>) -> Result<IngressOptions, StoreError> {
    json.map_or(Ok(IngressOptions::default()), |json| {
        IngressOptions::from_json(json.as_bytes()).map_err(StoreError::corrupt)
    })
}

/// Called with an ingress id when some node asks for its session to stop.
pub type StopHandler = Box<dyn Fn(&str) + Send + Sync>;

pub trait Store: Send + Sync {
    /// Inserts or replaces an ingress's info. Its state is written only when
    /// the ingress has none yet (a new ingress); after that only
    /// [`Store::put_state`] and [`Store::swap_state`] change it.
    fn put(&self, info: &proto::IngressInfo) -> Result<(), StoreError>;
    /// An ingress with its current state.
    fn get(&self, ingress_id: &str) -> Result<Option<proto::IngressInfo>, StoreError>;
    fn by_stream_key(&self, stream_key: &str) -> Result<Option<proto::IngressInfo>, StoreError>;
    /// Every ingress, or those of one room and/or one id (empty means any).
    fn list(&self, room: &str, ingress_id: &str) -> Result<Vec<proto::IngressInfo>, StoreError>;
    /// Removes an ingress: info, state and options.
    fn delete(&self, ingress_id: &str) -> Result<(), StoreError>;
    /// The ingress's own options (see `super::ingress_options`; empty when
    /// it set none); `None` when there is no such ingress.
    fn options(&self, ingress_id: &str) -> Result<Option<IngressOptions>, StoreError>;
    /// Replaces the ingress's options (an API update of its info keeps
    /// them); false, and nothing written, when there is no such ingress.
    fn put_options(&self, ingress_id: &str, options: &IngressOptions) -> Result<bool, StoreError>;

    /// Takes the right to run the ingress's stream; false when a session, on
    /// this node or another, holds it.
    fn claim(&self, ingress_id: &str) -> Result<bool, StoreError>;
    /// Keeps a claim alive while the stream runs; false when it was lost.
    fn renew(&self, ingress_id: &str) -> Result<bool, StoreError>;
    /// Gives a claim back (only this node's own).
    fn release(&self, ingress_id: &str);
    /// Whether any node holds the ingress's claim.
    fn is_claimed(&self, ingress_id: &str) -> Result<bool, StoreError>;
    /// Writes a stream's state, in one step with the checks that this node
    /// holds the ingress's claim (a node whose claim lapsed must not write over
    /// the node that took the key over), that the ingress exists, and that the
    /// stored state is not newer (ordered by `started_at`, then `updated_at`).
    /// False, and nothing written, when a check fails.
    fn put_state(&self, ingress_id: &str, state: &proto::IngressState) -> Result<bool, StoreError>;
    /// Replaces the state only if it is still `expected` (compare and set):
    /// how the API resets an ingress in error without racing its sessions.
    fn swap_state(
        &self,
        ingress_id: &str,
        expected: &proto::IngressState,
        state: &proto::IngressState,
    ) -> Result<bool, StoreError>;

    /// Asks the node that holds the ingress's claim, wherever it runs, to stop
    /// its session. The request waits for that node (it survives the node's
    /// reconnects) until it is taken or the claim it was meant for lapses.
    fn request_stop(&self, ingress_id: &str) -> Result<(), StoreError>;
    /// Delivers stop requests meant for this node to `handler` until `alive`
    /// returns false (checked about once a second).
    fn watch_stops(
        &self,
        handler: StopHandler,
        alive: Box<dyn Fn() -> bool + Send>,
    ) -> Result<(), StoreError>;

    /// Whether the store answers now (for `/health`).
    fn ping(&self) -> Result<(), StoreError>;
}

/// Opens the configured store: Redis when an address is given, else SQLite.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    match &config.redis {
        Some(redis) => Ok(Arc::new(redis::RedisStore::connect(redis)?)),
        None => Ok(Arc::new(sqlite::SqliteStore::open(&config.sqlite)?)),
    }
}

/// What went wrong in a store call, by what a caller can do about it. Each
/// kind carries the backend's message as it is logged and shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer: connection refused, dropped or timed out,
    /// database busy. Worth retrying; the API answers `unavailable`.
    #[error("{0}")]
    Unreachable(String),
    /// A stored record could not be read back (bad protobuf, damaged file).
    /// Retrying does not help; the API answers `internal`.
    #[error("{0}")]
    Corrupt(String),
    /// Anything else the backend or its setup reported (bad address, a file
    /// that cannot be created, a failed query).
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub fn unreachable(e: impl std::fmt::Display) -> StoreError {
        StoreError::Unreachable(format!("ingress store: {e}"))
    }

    pub fn corrupt(e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("ingress store: {e}"))
    }

    pub fn other(e: impl std::fmt::Display) -> StoreError {
        StoreError::Other(format!("ingress store: {e}"))
    }

    /// The same kind, its message prefixed with `context`.
    pub fn context(self, context: impl std::fmt::Display) -> StoreError {
        match self {
            StoreError::Unreachable(m) => StoreError::Unreachable(format!("{context}: {m}")),
            StoreError::Corrupt(m) => StoreError::Corrupt(format!("{context}: {m}")),
            StoreError::Other(m) => StoreError::Other(format!("{context}: {m}")),
        }
    }
}

/// For callers that only report the error (the service's start, sessions).
impl From<StoreError> for String {
    fn from(e: StoreError) -> String {
        e.to_string()
    }
}

/// Whether a state says a stream is running.
pub fn is_live(state: Option<&proto::IngressState>) -> bool {
    matches!(
        state.and_then(|s| Status::try_from(s.status).ok()),
        Some(Status::EndpointBuffering | Status::EndpointPublishing)
    )
}

/// The order states are written in: a state never replaces a newer one.
fn state_order(state: &proto::IngressState) -> (i64, i64) {
    (state.started_at, state.updated_at)
}

/// Repairs the state of an ingress that says it is live while no node holds
/// its claim (the node that ran it died, or was cut off, before it could say
/// the stream ended): the claim is taken for the moment of the write, so no
/// session can start or write in between, and the state is read again under
/// it. `info` is updated to what is stored afterwards. Returns whether it
/// repaired anything.
pub fn settle_orphan(store: &dyn Store, info: &mut proto::IngressInfo) -> Result<bool, StoreError> {
    if !is_live(info.state.as_ref()) || !store.claim(&info.ingress_id)? {
        return Ok(false);
    }
    let repaired = (|| {
        let Some(current) = store.get(&info.ingress_id)? else {
            return Ok(false);
        };
        let Some(mut state) = current.state.clone().filter(|s| is_live(Some(s))) else {
            *info = current;
            return Ok(false);
        };
        let now = super::ingress::now_nanos();
        state.status = Status::EndpointInactive as i32;
        state.ended_at = now;
        state.updated_at = now.max(state.updated_at);
        let written = store.put_state(&info.ingress_id, &state)?;
        if written {
            tracing::info!(ingress = %info.ingress_id, "stream marked inactive: no node runs it any more");
            *info = proto::IngressInfo {
                state: Some(state),
                ..current
            };
        }
        Ok(written)
    })();
    store.release(&info.ingress_id);
    repaired
}

/// [`settle_orphan`] over every ingress (at start and shutdown).
pub fn settle_orphans(store: &dyn Store) -> Result<(), StoreError> {
    for mut info in store.list("", "")? {
        settle_orphan(store, &mut info)?;
    }
    Ok(())
}
