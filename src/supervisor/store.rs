//! Where ingresses live: an embedded SQLite file, IngressInfo kept as protobuf
//! with the columns lookups need. Calls are short and serialized by a mutex.

use livekit_protocol as proto;
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

pub struct Store {
    db: Mutex<Connection>,
}

fn io<E: std::fmt::Display>(e: E) -> String {
    format!("ingress store: {e}")
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `path`.
    pub fn open(path: &Path) -> Result<Store, String> {
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
        Ok(Store { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces an ingress.
    pub fn put(&self, info: &proto::IngressInfo) -> Result<(), String> {
        self.db()
            .execute(
                "INSERT INTO ingress (ingress_id, stream_key, room_name, info) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(ingress_id) DO UPDATE SET stream_key = ?2, room_name = ?3, info = ?4",
                params![info.ingress_id, info.stream_key, info.room_name, info.encode_to_vec()],
            )
            .map(|_| ())
            .map_err(io)
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

    pub fn get(&self, ingress_id: &str) -> Result<Option<proto::IngressInfo>, String> {
        self.one("SELECT info FROM ingress WHERE ingress_id = ?1", ingress_id)
    }

    pub fn by_stream_key(&self, stream_key: &str) -> Result<Option<proto::IngressInfo>, String> {
        self.one("SELECT info FROM ingress WHERE stream_key = ?1", stream_key)
    }

    /// Every ingress, or those of one room and/or one id.
    pub fn list(&self, room: &str, ingress_id: &str) -> Result<Vec<proto::IngressInfo>, String> {
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

    pub fn delete(&self, ingress_id: &str) -> Result<(), String> {
        self.db()
            .execute("DELETE FROM ingress WHERE ingress_id = ?1", [ingress_id])
            .map(|_| ())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopening() {
        let dir = std::env::temp_dir().join(format!("lk-store-{}", std::process::id()));
        let path = dir.join("ingress.db");
        let _ = std::fs::remove_dir_all(&dir);
        let info = proto::IngressInfo {
            ingress_id: "IN_a".into(),
            stream_key: "key".into(),
            room_name: "r".into(),
            ..Default::default()
        };
        {
            let store = Store::open(&path).expect("open");
            store.put(&info).expect("put");
            let other = proto::IngressInfo {
                ingress_id: "IN_b".into(),
                stream_key: "k2".into(),
                room_name: "s".into(),
                ..Default::default()
            };
            store.put(&other).expect("put");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.by_stream_key("key").expect("get"), Some(info.clone()));
        assert_eq!(store.list("r", "").expect("list"), vec![info.clone()]);
        assert_eq!(store.list("", "").expect("list").len(), 2);
        assert_eq!(store.list("", "IN_b").expect("list").len(), 1);
        store.delete("IN_a").expect("delete");
        assert_eq!(store.get("IN_a").expect("get"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
