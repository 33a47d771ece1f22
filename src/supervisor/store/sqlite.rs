//! The embedded store: one SQLite file, with an ingress's info and its state
//! in two tables (the API writes the first, sessions the second), both kept as
//! protobuf beside the columns lookups need, and its options (JSON) in a third. Calls are short and serialized by
//! a mutex. One node uses it, so claims live in memory and stop requests have
//! no one else to reach. The file holds every stream key: it is created
//! readable by its owner only.

use super::{state_order, stored_options, StopHandler, Store, StoreError};
use crate::supervisor::ingress_options::IngressOptions;
use crate::sync::lock;
use livekit_protocol as proto;
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

pub struct SqliteStore {
    db: Mutex<Connection>,
    claims: Mutex<HashSet<String>>,
}

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     CREATE TABLE IF NOT EXISTS ingress (
         ingress_id TEXT PRIMARY KEY,
         stream_key TEXT NOT NULL UNIQUE,
         room_name TEXT NOT NULL,
         info BLOB NOT NULL
     );
     CREATE INDEX IF NOT EXISTS ingress_room ON ingress (room_name);
     CREATE TABLE IF NOT EXISTS ingress_state (
         ingress_id TEXT PRIMARY KEY,
         started_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         state BLOB NOT NULL
     );
     CREATE TABLE IF NOT EXISTS ingress_options (
         ingress_id TEXT PRIMARY KEY,
         options TEXT NOT NULL
     );";

/// The `stream_key` column's value: the key, or for an ingress without one
/// (a URL pull) a stand-in unique to it, since the column is UNIQUE and NOT
/// NULL in databases made by earlier versions. `by_stream_key` never answers
/// with a stand-in's ingress.
fn key_column(info: &proto::IngressInfo) -> String {
    if info.stream_key.is_empty() {
        format!("no key: {}", info.ingress_id)
    } else {
        info.stream_key.clone()
    }
}

/// Creates the file (and its directory) for its owner only, before SQLite
/// opens it; SQLite gives its WAL and shared-memory files the same mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", path.display())))
}

/// A busy or locked database is one that does not answer now; a damaged one
/// holds corrupt records.
fn db_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::unreachable(e),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::corrupt(e),
        _ => StoreError::other(e),
    }
}

fn decode_state(blob: Option<Vec<u8>>) -> Result<Option<proto::IngressState>, StoreError> {
    blob.map(|b| proto::IngressState::decode(b.as_slice()).map_err(StoreError::corrupt))
        .transpose()
}

impl SqliteStore {
    /// Opens (creating if needed) the SQLite store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let db = Connection::open(path)
            .map_err(|e| StoreError::Other(format!("cannot open {}: {e}", path.display())))?;
        db.execute_batch(SCHEMA).map_err(db_error)?;
        let store = SqliteStore {
            db: Mutex::new(db),
            claims: Mutex::default(),
        };
        store.move_states_out_of_info()?;
        Ok(store)
    }

    /// Files written before states had their own table kept the state inside
    /// the info: move it out once.
    fn move_states_out_of_info(&self) -> Result<(), StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT ingress_id, info FROM ingress
                 WHERE ingress_id NOT IN (SELECT ingress_id FROM ingress_state)",
            )
            .map_err(db_error)?;
        let rows: Vec<(String, Vec<u8>)> = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db_error)?
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
        drop(stmt);
        for (id, blob) in rows {
            let mut info =
                proto::IngressInfo::decode(blob.as_slice()).map_err(StoreError::corrupt)?;
            let state = info.state.take().unwrap_or_default();
            insert_state(&db, &id, &state)?;
            db.execute(
                "UPDATE ingress SET info = ?2 WHERE ingress_id = ?1",
                params![id, info.encode_to_vec()],
            )
            .map_err(db_error)?;
        }
        Ok(())
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.db)
    }

    /// Ingresses with their states, selected by `filter` (a WHERE clause on
    /// table `i`).
    fn select(&self, filter: &str, values: &[&str]) -> Result<Vec<proto::IngressInfo>, StoreError> {
        let db = self.db();
        let mut stmt = db
            .prepare(&format!(
                "SELECT i.info, s.state FROM ingress i
                 LEFT JOIN ingress_state s ON s.ingress_id = i.ingress_id
                 WHERE {filter} ORDER BY i.rowid"
            ))
            .map_err(db_error)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |row| {
                Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Option<Vec<u8>>>(1)?))
            })
            .map_err(db_error)?;
        rows.map(|row| {
            let (info, state) = row.map_err(db_error)?;
            let mut info =
                proto::IngressInfo::decode(info.as_slice()).map_err(StoreError::corrupt)?;
            info.state = decode_state(state)?;
            Ok(info)
        })
        .collect()
    }

    fn one(&self, filter: &str, value: &str) -> Result<Option<proto::IngressInfo>, StoreError> {
        Ok(self.select(filter, &[value])?.into_iter().next())
    }
}

fn insert_state(db: &Connection, id: &str, state: &proto::IngressState) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO ingress_state (ingress_id, started_at, updated_at, state) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(ingress_id) DO UPDATE SET started_at = ?2, updated_at = ?3, state = ?4",
        params![id, state.started_at, state.updated_at, state.encode_to_vec()],
    )
    .map(|_| ())
    .map_err(db_error)
}

impl Store for SqliteStore {
    fn put(&self, info: &proto::IngressInfo) -> Result<(), StoreError> {
        let stripped = proto::IngressInfo {
            state: None,
            ..info.clone()
        };
        let mut db = self.db();
        let tx = db.transaction().map_err(db_error)?;
        tx.execute(
            "INSERT INTO ingress (ingress_id, stream_key, room_name, info) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(ingress_id) DO UPDATE SET stream_key = ?2, room_name = ?3, info = ?4",
            params![
                info.ingress_id,
                key_column(info),
                info.room_name,
                stripped.encode_to_vec()
            ],
        )
        .map_err(db_error)?;
        let state = info.state.clone().unwrap_or_default();
        tx.execute(
            "INSERT OR IGNORE INTO ingress_state (ingress_id, started_at, updated_at, state)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                info.ingress_id,
                state.started_at,
                state.updated_at,
                state.encode_to_vec()
            ],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    fn get(&self, ingress_id: &str) -> Result<Option<proto::IngressInfo>, StoreError> {
        self.one("i.ingress_id = ?1", ingress_id)
    }

    fn by_stream_key(&self, stream_key: &str) -> Result<Option<proto::IngressInfo>, StoreError> {
        if stream_key.is_empty() {
            return Ok(None);
        }
        // The key's own record, never the stand-in of a keyless one.
        Ok(self
            .one("i.stream_key = ?1", stream_key)?
            .filter(|info| info.stream_key == stream_key))
    }

    fn list(&self, room: &str, ingress_id: &str) -> Result<Vec<proto::IngressInfo>, StoreError> {
        self.select(
            "(?1 = '' OR i.room_name = ?1) AND (?2 = '' OR i.ingress_id = ?2)",
            &[room, ingress_id],
        )
    }

    fn delete(&self, ingress_id: &str) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(db_error)?;
        for table in ["ingress", "ingress_state", "ingress_options"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE ingress_id = ?1"),
                [ingress_id],
            )
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)
    }

    fn options(&self, ingress_id: &str) -> Result<Option<IngressOptions>, StoreError> {
        let row: Option<Option<String>> = self
            .db()
            .query_row(
                "SELECT o.options FROM ingress i
                 LEFT JOIN ingress_options o ON o.ingress_id = i.ingress_id
                 WHERE i.ingress_id = ?1",
                [ingress_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error)?;
        row.map(|json| stored_options(json.as_deref())).transpose()
    }

    fn put_options(&self, ingress_id: &str, options: &IngressOptions) -> Result<bool, StoreError> {
        let mut db = self.db();
        let tx = db.transaction().map_err(db_error)?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM ingress WHERE ingress_id = ?1",
                [ingress_id],
                |_| Ok(()),
            )
            .optional()
            .map_err(db_error)?
            .is_some();
        if !exists {
            return Ok(false);
        }
        if options.is_empty() {
            tx.execute(
                "DELETE FROM ingress_options WHERE ingress_id = ?1",
                [ingress_id],
            )
        } else {
            tx.execute(
                "INSERT INTO ingress_options (ingress_id, options) VALUES (?1, ?2)
                 ON CONFLICT(ingress_id) DO UPDATE SET options = ?2",
                params![ingress_id, options.to_json()],
            )
        }
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(true)
    }

    fn claim(&self, ingress_id: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.claims).insert(ingress_id.to_string()))
    }

    fn renew(&self, ingress_id: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.claims).contains(ingress_id))
    }

    fn release(&self, ingress_id: &str) {
        lock(&self.claims).remove(ingress_id);
    }

    fn is_claimed(&self, ingress_id: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.claims).contains(ingress_id))
    }

    fn put_state(&self, ingress_id: &str, state: &proto::IngressState) -> Result<bool, StoreError> {
        if !lock(&self.claims).contains(ingress_id) {
            return Ok(false);
        }
        // One connection behind a lock: the checks and the write are one step.
        let db = self.db();
        let stored: Option<(i64, i64)> = db
            .query_row(
                "SELECT s.started_at, s.updated_at FROM ingress i
                 LEFT JOIN ingress_state s ON s.ingress_id = i.ingress_id
                 WHERE i.ingress_id = ?1",
                [ingress_id],
                |row| {
                    Ok((
                        row.get::<_, Option<i64>>(0)?.unwrap_or(0),
                        row.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    ))
                },
            )
            .optional()
            .map_err(db_error)?;
        match stored {
            Some(order) if order <= state_order(state) => {
                insert_state(&db, ingress_id, state)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn swap_state(
        &self,
        ingress_id: &str,
        expected: &proto::IngressState,
        state: &proto::IngressState,
    ) -> Result<bool, StoreError> {
        let db = self.db();
        let stored: Option<Vec<u8>> = db
            .query_row(
                "SELECT state FROM ingress_state WHERE ingress_id = ?1",
                [ingress_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error)?;
        if decode_state(stored)?.as_ref() != Some(expected) {
            return Ok(false);
        }
        insert_state(&db, ingress_id, state)?;
        Ok(true)
    }

    fn request_stop(&self, _ingress_id: &str) -> Result<(), StoreError> {
        // One node: its own sessions were stopped by the caller.
        Ok(())
    }

    fn watch_stops(
        &self,
        _handler: StopHandler,
        _alive: Box<dyn Fn() -> bool + Send>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.db()
            .query_row("SELECT count(*) FROM ingress", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(db_error)
    }
}
