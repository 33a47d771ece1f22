//! The embedded store: one SQLite file, IngressInfo kept as protobuf with the
//! columns lookups need. Calls are short and serialized by a mutex. One node
//! uses it, so claims live in memory and stop requests have no one else to reach.

use super::{store_error as io, StopHandler, Store};
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

impl SqliteStore {
    /// Opens (creating if needed) the SQLite store at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let db =
            Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS ingress (
                 ingress_id TEXT PRIMARY KEY,
                 stream_key TEXT NOT NULL UNIQUE,
                 room_name TEXT NOT NULL,
                 info BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS ingress_room ON ingress (room_name);",
        )
        .map_err(io)?;
        Ok(SqliteStore {
            db: Mutex::new(db),
            claims: Mutex::default(),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.db)
    }

    fn one(&self, sql: &str, value: &str) -> Result<Option<proto::IngressInfo>, String> {
        let blob: Option<Vec<u8>> = self
            .db()
            .query_row(sql, [value], |row| row.get(0))
            .optional()
            .map_err(io)?;
        blob.map(|b| proto::IngressInfo::decode(b.as_slice()).map_err(io))
            .transpose()
    }
}

impl Store for SqliteStore {
    fn put(&self, info: &proto::IngressInfo) -> Result<(), String> {
        self.db()
            .execute(
                "INSERT INTO ingress (ingress_id, stream_key, room_name, info) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(ingress_id) DO UPDATE SET stream_key = ?2, room_name = ?3, info = ?4",
                params![info.ingress_id, info.stream_key, info.room_name, info.encode_to_vec()],
            )
            .map(|_| ())
            .map_err(io)
    }

    fn get(&self, ingress_id: &str) -> Result<Option<proto::IngressInfo>, String> {
        self.one("SELECT info FROM ingress WHERE ingress_id = ?1", ingress_id)
    }

    fn by_stream_key(&self, stream_key: &str) -> Result<Option<proto::IngressInfo>, String> {
        self.one("SELECT info FROM ingress WHERE stream_key = ?1", stream_key)
    }

    fn list(&self, room: &str, ingress_id: &str) -> Result<Vec<proto::IngressInfo>, String> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT info FROM ingress WHERE (?1 = '' OR room_name = ?1) AND (?2 = '' OR ingress_id = ?2)
                 ORDER BY rowid",
            )
            .map_err(io)?;
        let rows = stmt
            .query_map([room, ingress_id], |row| row.get::<_, Vec<u8>>(0))
            .map_err(io)?;
        rows.map(|blob| {
            let blob = blob.map_err(io)?;
            proto::IngressInfo::decode(blob.as_slice()).map_err(io)
        })
        .collect()
    }

    fn delete(&self, ingress_id: &str) -> Result<(), String> {
        self.db()
            .execute("DELETE FROM ingress WHERE ingress_id = ?1", [ingress_id])
            .map(|_| ())
            .map_err(io)
    }

    fn claim(&self, ingress_id: &str) -> Result<bool, String> {
        Ok(lock(&self.claims).insert(ingress_id.to_string()))
    }

    fn renew(&self, ingress_id: &str) -> Result<bool, String> {
        Ok(lock(&self.claims).contains(ingress_id))
    }

    fn release(&self, ingress_id: &str) {
        lock(&self.claims).remove(ingress_id);
    }

    fn put_state(&self, ingress_id: &str, state: &proto::IngressState) -> Result<bool, String> {
        if !lock(&self.claims).contains(ingress_id) {
            return Ok(false);
        }
        // One connection behind a lock: the read and the write are one step.
        let db = self.db();
        let blob: Option<Vec<u8>> = db
            .query_row(
                "SELECT info FROM ingress WHERE ingress_id = ?1",
                [ingress_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(io)?;
        let Some(blob) = blob else {
            return Ok(false);
        };
        let mut info = proto::IngressInfo::decode(blob.as_slice()).map_err(io)?;
        info.state = Some(state.clone());
        db.execute(
            "UPDATE ingress SET info = ?2 WHERE ingress_id = ?1",
            params![ingress_id, info.encode_to_vec()],
        )
        .map_err(io)?;
        Ok(true)
    }

    fn is_claimed(&self, ingress_id: &str) -> Result<bool, String> {
        Ok(lock(&self.claims).contains(ingress_id))
    }

    fn broadcast_stop(&self, _ingress_id: &str) -> Result<(), String> {
        Ok(())
    }

    fn watch_stops(
        &self,
        _handler: StopHandler,
        _alive: Box<dyn Fn() -> bool + Send>,
    ) -> Result<(), String> {
        Ok(())
    }
}
