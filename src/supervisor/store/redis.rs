//! The shared store for several nodes: ingresses, their claims and stop
//! requests in one Redis.
//!
//! Keys (under a prefix, `livekit-ingress` by default):
//! - `{p}:ingress`, a hash of ingress id -> IngressInfo protobuf;
//! - `{p}:stream_key`, a hash of stream key -> ingress id;
//! - `{p}:room:{room}`, the set of a room's ingress ids;
//! - `{p}:lease:{id}`, the claim: a token unique to one session, set with
//!   `NX PX` and renewed by that session only (checked in a script), so a
//!   node that dies lets the claim lapse after [`LEASE`];
//! - channel `{p}:stop`, ingress ids whose session should end wherever it runs.

use super::{store_error as io, StopHandler, Store, LEASE};
use crate::supervisor::config::RedisConfig;
use crate::sync::lock;
use livekit_protocol as proto;
use prost::Message;
use redis::{Commands, Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    /// One connection for commands, made again after an error.
    connection: Mutex<Option<Connection>>,
    /// This node's claims: ingress id -> the token stored in its lease.
    tokens: Mutex<HashMap<String, String>>,
    renew: redis::Script,
    release: redis::Script,
}

fn connection_info(config: &RedisConfig) -> Result<redis::ConnectionInfo, String> {
    let (host, port) = match config.address.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("redis address {:?}: bad port", config.address))?,
        ),
        None => (config.address.as_str(), 6379),
    };
    let mut settings = RedisConnectionInfo::default().set_db(config.db);
    if !config.username.is_empty() {
        settings = settings.set_username(&config.username);
    }
    if !config.password.is_empty() {
        settings = settings.set_password(&config.password);
    }
    Ok(ConnectionAddr::Tcp(host.to_string(), port)
        .into_connection_info()
        .map_err(io)?
        .set_redis_settings(settings))
}

impl RedisStore {
    /// Connects (and checks the connection works) to the configured Redis.
    pub fn connect(config: &RedisConfig) -> Result<RedisStore, String> {
        let client = redis::Client::open(connection_info(config)?).map_err(io)?;
        let store = RedisStore {
            client,
            prefix: config.prefix.clone(),
            connection: Mutex::default(),
            tokens: Mutex::default(),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        };
        store
            .with(|c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| format!("cannot reach Redis at {}: {e}", config.address))?;
        Ok(store)
    }

    fn open_connection(&self) -> redis::RedisResult<Connection> {
        let c = self.client.get_connection_with_timeout(TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        c.set_write_timeout(Some(TIMEOUT))?;
        Ok(c)
    }

    /// Runs `f` on the command connection, connecting first if there is none;
    /// a connection that failed is dropped so the next call makes a new one.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        let mut slot = lock(&self.connection);
        if slot.is_none() {
            *slot = Some(self.open_connection().map_err(io)?);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(io("no connection"));
        };
        let result = f(connection);
        if let Err(e) = &result {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                *slot = None;
            }
        }
        result.map_err(io)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    fn lease_key(&self, ingress_id: &str) -> String {
        format!("{}:lease:{ingress_id}", self.prefix)
    }

    fn decode_all(blobs: Vec<Option<Vec<u8>>>) -> Result<Vec<proto::IngressInfo>, String> {
        let mut items = blobs
            .into_iter()
            .flatten()
            .map(|b| proto::IngressInfo::decode(b.as_slice()).map_err(io))
            .collect::<Result<Vec<_>, _>>()?;
        items.sort_by(|a, b| a.ingress_id.cmp(&b.ingress_id));
        Ok(items)
    }
}

impl Store for RedisStore {
    fn put(&self, info: &proto::IngressInfo) -> Result<(), String> {
        let previous = self.get(&info.ingress_id)?;
        let (ingresses, keys) = (self.key("ingress"), self.key("stream_key"));
        self.with(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hset(&ingresses, &info.ingress_id, info.encode_to_vec())
                .hset(&keys, &info.stream_key, &info.ingress_id)
                .sadd(self.room_key(&info.room_name), &info.ingress_id);
            if let Some(old) = &previous {
                if old.stream_key != info.stream_key {
                    pipe.hdel(&keys, &old.stream_key);
                }
                if old.room_name != info.room_name {
                    pipe.srem(self.room_key(&old.room_name), &info.ingress_id);
                }
            }
            pipe.exec(c)
        })
    }

    fn get(&self, ingress_id: &str) -> Result<Option<proto::IngressInfo>, String> {
        let blob: Option<Vec<u8>> = self.with(|c| c.hget(self.key("ingress"), ingress_id))?;
        blob.map(|b| proto::IngressInfo::decode(b.as_slice()).map_err(io))
            .transpose()
    }

    fn by_stream_key(&self, stream_key: &str) -> Result<Option<proto::IngressInfo>, String> {
        let id: Option<String> = self.with(|c| c.hget(self.key("stream_key"), stream_key))?;
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    fn list(&self, room: &str, ingress_id: &str) -> Result<Vec<proto::IngressInfo>, String> {
        let items = if !ingress_id.is_empty() {
            self.get(ingress_id)?.into_iter().collect()
        } else if !room.is_empty() {
            let ids: Vec<String> = self.with(|c| c.smembers(self.room_key(room)))?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            Self::decode_all(self.with(|c| c.hmget(self.key("ingress"), &ids))?)?
        } else {
            let blobs: Vec<Vec<u8>> = self.with(|c| c.hvals(self.key("ingress")))?;
            Self::decode_all(blobs.into_iter().map(Some).collect())?
        };
        Ok(items
            .into_iter()
            .filter(|i| room.is_empty() || i.room_name == room)
            .collect())
    }

    fn delete(&self, ingress_id: &str) -> Result<(), String> {
        let Some(info) = self.get(ingress_id)? else {
            return Ok(());
        };
        self.with(|c| {
            redis::pipe()
                .atomic()
                .hdel(self.key("ingress"), ingress_id)
                .hdel(self.key("stream_key"), &info.stream_key)
                .srem(self.room_key(&info.room_name), ingress_id)
                .exec(c)
        })
    }

    fn claim(&self, ingress_id: &str) -> Result<bool, String> {
        let token = format!("{:032x}", rand::random::<u128>());
        let set: Option<String> = self.with(|c| {
            redis::cmd("SET")
                .arg(self.lease_key(ingress_id))
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(LEASE.as_millis() as u64)
                .query(c)
        })?;
        if set.is_some() {
            lock(&self.tokens).insert(ingress_id.to_string(), token);
        }
        Ok(set.is_some())
    }

    fn renew(&self, ingress_id: &str) -> Result<bool, String> {
        let Some(token) = lock(&self.tokens).get(ingress_id).cloned() else {
            return Ok(false);
        };
        let renewed: i64 = self.with(|c| {
            self.renew
                .key(self.lease_key(ingress_id))
                .arg(&token)
                .arg(LEASE.as_millis() as u64)
                .invoke(c)
        })?;
        Ok(renewed == 1)
    }

    fn put_state(&self, ingress_id: &str, state: &proto::IngressState) -> Result<bool, String> {
        let Some(token) = lock(&self.tokens).get(ingress_id).cloned() else {
            return Ok(false);
        };
        let (lease, ingresses) = (self.lease_key(ingress_id), self.key("ingress"));
        // Optimistic transaction: retried if the claim or any ingress changes
        // between the reads and the write (an API update, another node).
        self.with(|c| {
            redis::transaction(c, &[&lease, &ingresses], |c, pipe| {
                let holder: Option<String> = c.get(&lease)?;
                let blob: Option<Vec<u8>> = c.hget(&ingresses, ingress_id)?;
                let (Some(holder), Some(blob)) = (holder, blob) else {
                    return Ok(Some(false));
                };
                if holder != token {
                    return Ok(Some(false));
                }
                let Ok(mut info) = proto::IngressInfo::decode(blob.as_slice()) else {
                    return Ok(Some(false));
                };
                info.state = Some(state.clone());
                let written: Option<()> = pipe
                    .hset(&ingresses, ingress_id, info.encode_to_vec())
                    .ignore()
                    .query(c)?;
                Ok(written.map(|()| true))
            })
        })
    }

    fn release(&self, ingress_id: &str) {
        let Some(token) = lock(&self.tokens).remove(ingress_id) else {
            return;
        };
        let released = self.with(|c| {
            self.release
                .key(self.lease_key(ingress_id))
                .arg(&token)
                .invoke::<i64>(c)
        });
        if let Err(e) = released {
            tracing::warn!(ingress = %ingress_id, "claim not released (it lapses by itself): {e}");
        }
    }

    fn is_claimed(&self, ingress_id: &str) -> Result<bool, String> {
        self.with(|c| c.exists(self.lease_key(ingress_id)))
    }

    fn broadcast_stop(&self, ingress_id: &str) -> Result<(), String> {
        self.with(|c| c.publish(self.key("stop"), ingress_id))
    }

    fn watch_stops(
        &self,
        handler: StopHandler,
        alive: Box<dyn Fn() -> bool + Send>,
    ) -> Result<(), String> {
        let client = self.client.clone();
        let channel = self.key("stop");
        std::thread::Builder::new()
            .name("redis-stops".into())
            .spawn(move || {
                while alive() {
                    if let Err(e) = follow_stops(&client, &channel, &handler, &alive) {
                        tracing::warn!("Redis stop channel lost, reconnecting: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot watch stop requests: {e}"))
    }
}

/// Subscribes to the stop channel and hands each id to `handler` until the
/// connection fails or the owner is gone.
fn follow_stops(
    client: &redis::Client,
    channel: &str,
    handler: &StopHandler,
    alive: &dyn Fn() -> bool,
) -> redis::RedisResult<()> {
    let mut connection = client.get_connection_with_timeout(TIMEOUT)?;
    let mut pubsub = connection.as_pubsub();
    pubsub.subscribe(channel)?;
    // A short read timeout lets the loop notice when the service is gone.
    pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
    while alive() {
        match pubsub.get_message() {
            Ok(message) => match message.get_payload::<String>() {
                Ok(ingress_id) => handler(&ingress_id),
                Err(e) => tracing::warn!("malformed stop request: {e}"),
            },
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
