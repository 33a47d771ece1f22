//! The shared store for several nodes: ingresses, their states, claims and
//! stop requests in one Redis.
//!
//! Keys (under a prefix, `livekit-ingress` by default):
//! - `{p}:ingress:{id}`, a hash: `info` (IngressInfo protobuf, no state),
//!   `stream_key` and `room`, so that moving or deleting it can clean the
//!   indexes, and `options` (the service's own, JSON) when it has any;
//! - `{p}:ingresses`, the set of every id; `{p}:room:{room}`, a room's ids;
//!   `{p}:stream_key`, a hash of stream key -> id;
//! - `{p}:state:{id}`, a hash: `state` (IngressState protobuf) and `order`
//!   (`started_at` and `updated_at`, zero-padded so strings compare as times);
//! - `{p}:lease:{id}`, the claim: `{node}:{token}`, unique to one session,
//!   set with `NX PX` and renewed by that session only, so a node that dies
//!   lets the claim lapse after [`LEASE`];
//! - `{p}:stops:{node}`, the list of ingresses a node is asked to stop.
//!
//! Every write is one Lua script, atomic on the server and depending only on
//! the keys it reads, so no write watches anything or is retried. Claims and
//! state writes have their own connection, so an API call or a metrics scrape
//! on a slow Redis never holds up a session's renewals.

use super::{state_order, stored_options, StopHandler, Store, StoreError, LEASE};
use crate::supervisor::config::RedisConfig;
use crate::supervisor::ingress_options::IngressOptions;
use crate::sync::lock;
use livekit_protocol as proto;
use prost::Message;
use redis::{Commands, Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stop request waits in a node's queue: beyond a lease, the
/// session it was meant for has ended one way or another.
const STOP_TTL: Duration = Duration::from_secs(30);

/// ARGV: prefix, id, info, stream key, room, initial state, its order.
const PUT: &str = r#"
local p, id = ARGV[1], ARGV[2]
local key = p .. ':ingress:' .. id
local old = redis.call('HMGET', key, 'stream_key', 'room')
if old[1] and old[1] ~= ARGV[4] and redis.call('HGET', p .. ':stream_key', old[1]) == id then
  redis.call('HDEL', p .. ':stream_key', old[1])
end
if old[2] and old[2] ~= ARGV[5] then redis.call('SREM', p .. ':room:' .. old[2], id) end
redis.call('HSET', key, 'info', ARGV[3], 'stream_key', ARGV[4], 'room', ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', p .. ':stream_key', ARGV[4], id) end
redis.call('SADD', p .. ':room:' .. ARGV[5], id)
redis.call('SADD', p .. ':ingresses', id)
if redis.call('HSETNX', p .. ':state:' .. id, 'state', ARGV[6]) == 1 then
  redis.call('HSET', p .. ':state:' .. id, 'order', ARGV[7])
end
return 1
"#;

/// ARGV: prefix, id.
const DELETE: &str = r#"
local p, id = ARGV[1], ARGV[2]
local key = p .. ':ingress:' .. id
local old = redis.call('HMGET', key, 'stream_key', 'room')
if old[1] and redis.call('HGET', p .. ':stream_key', old[1]) == id then
  redis.call('HDEL', p .. ':stream_key', old[1])
end
if old[2] then redis.call('SREM', p .. ':room:' .. old[2], id) end
redis.call('SREM', p .. ':ingresses', id)
return redis.call('DEL', key, p .. ':state:' .. id)
"#;

/// KEYS: ingress. ARGV: options as JSON, empty to remove them.
const PUT_OPTIONS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'options')
else
  redis.call('HSET', KEYS[1], 'options', ARGV[1])
end
return 1
"#;

/// KEYS: lease, ingress, state. ARGV: lease value, state, order.
const PUT_STATE: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local order = redis.call('HGET', KEYS[3], 'order')
if order and order > ARGV[3] then return 0 end
redis.call('HSET', KEYS[3], 'state', ARGV[2], 'order', ARGV[3])
return 1
"#;

/// KEYS: state. ARGV: expected state, new state, its order.
const SWAP_STATE: &str = r#"
if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'order', ARGV[3])
return 1
"#;

const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

/// A connection made on first use and again after an error.
struct Lane {
    client: redis::Client,
    /// Where Redis is, for the errors people read.
    address: String,
    connection: Mutex<Option<Connection>>,
}

impl Lane {
    fn new(client: &redis::Client, address: &str) -> Lane {
        Lane {
            client: client.clone(),
            address: address.to_string(),
            connection: Mutex::default(),
        }
    }

    fn run<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = lock(&self.connection);
        if slot.is_none() {
            let opened = open_connection(&self.client);
            *slot = Some(opened.map_err(|e| redis_error(e, &self.address))?);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(StoreError::unreachable("no connection"));
        };
        let result = f(connection);
        if let Err(e) = &result {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                *slot = None;
            }
        }
        result.map_err(|e| redis_error(e, &self.address))
    }
}

/// Errors of the connection (refused, dropped, timed out) say Redis does not
/// answer; the rest (a script's error, a wrong type) are the store's own.
fn redis_error(e: redis::RedisError, address: &str) -> StoreError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
        StoreError::unreachable(format_args!("cannot reach Redis at {address}: {e}"))
    } else {
        StoreError::other(e)
    }
}

fn open_connection(client: &redis::Client) -> redis::RedisResult<Connection> {
    let c = client.get_connection_with_timeout(TIMEOUT)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    c.set_write_timeout(Some(TIMEOUT))?;
    Ok(c)
}

struct Scripts {
    put: redis::Script,
    delete: redis::Script,
    put_options: redis::Script,
    put_state: redis::Script,
    swap_state: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

pub struct RedisStore {
    client: redis::Client,
    prefix: String,
    /// This process's name in lease values, where stop requests find it.
    node: String,
    /// API calls, lookups and scrapes.
    commands: Lane,
    /// Claims and the state writes made under them.
    leases: Lane,
    /// This node's claims: ingress id -> the value stored in its lease.
    tokens: Mutex<HashMap<String, String>>,
    scripts: Scripts,
}

fn connection_info(config: &RedisConfig) -> Result<redis::ConnectionInfo, StoreError> {
    let (host, port) = match config.address.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>().map_err(|_| {
                StoreError::Other(format!("redis address {:?}: bad port", config.address))
            })?,
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
        .map_err(StoreError::other)?
        .set_redis_settings(settings))
}

/// `started_at` and `updated_at` as one string that compares as the pair does.
fn order_string(state: &proto::IngressState) -> String {
    let (started, updated) = state_order(state);
    // Offset so that negative times (never written, but representable) sort first.
    let shift = |t: i64| (t as i128 - i64::MIN as i128) as u128;
    format!("{:020}{:020}", shift(started), shift(updated))
}

impl RedisStore {
    /// Connects (and checks the connection works) to the configured Redis.
    pub fn connect(config: &RedisConfig) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(connection_info(config)?).map_err(StoreError::other)?;
        let store = RedisStore {
            prefix: config.prefix.clone(),
            node: format!("{:016x}", rand::random::<u64>()),
            commands: Lane::new(&client, &config.address),
            leases: Lane::new(&client, &config.address),
            client,
            tokens: Mutex::default(),
            scripts: Scripts {
                put: redis::Script::new(PUT),
                delete: redis::Script::new(DELETE),
                put_options: redis::Script::new(PUT_OPTIONS),
                put_state: redis::Script::new(PUT_STATE),
                swap_state: redis::Script::new(SWAP_STATE),
                renew: redis::Script::new(RENEW),
                release: redis::Script::new(RELEASE),
            },
        };
        store.ping()?;
        store.move_from_single_hash()?;
        Ok(store)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn ingress_key(&self, id: &str) -> String {
        format!("{}:ingress:{id}", self.prefix)
    }

    fn state_key(&self, id: &str) -> String {
        format!("{}:state:{id}", self.prefix)
    }

    fn lease_key(&self, id: &str) -> String {
        format!("{}:lease:{id}", self.prefix)
    }

    fn stops_key(&self, node: &str) -> String {
        format!("{}:stops:{node}", self.prefix)
    }

    /// Earlier versions kept every ingress, state inside, in one hash
    /// `{p}:ingress`: move each into its own records, once.
    fn move_from_single_hash(&self) -> Result<(), StoreError> {
        let old = self.key("ingress");
        let kind: String = self
            .commands
            .run(|c| redis::cmd("TYPE").arg(&old).query(c))?;
        if kind != "hash" {
            return Ok(());
        }
        let blobs: HashMap<String, Vec<u8>> = self.commands.run(|c| c.hgetall(&old))?;
        for (id, blob) in blobs {
            let info = proto::IngressInfo::decode(blob.as_slice()).map_err(StoreError::corrupt)?;
            self.put(&info)?;
            self.commands.run(|c| c.hdel::<_, _, ()>(&old, &id))?;
        }
        tracing::info!("Redis store moved to one record per ingress");
        Ok(())
    }

    /// Ingresses with their states, in id order.
    fn load(&self, ids: Vec<String>) -> Result<Vec<proto::IngressInfo>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(self.ingress_key(id), "info");
            pipe.hget(self.state_key(id), "state");
        }
        let blobs: Vec<Option<Vec<u8>>> = self.commands.run(|c| pipe.query(c))?;
        let mut items = Vec::with_capacity(ids.len());
        for pair in blobs.chunks(2) {
            let [Some(info), state] = pair else { continue };
            let mut info =
                proto::IngressInfo::decode(info.as_slice()).map_err(StoreError::corrupt)?;
            info.state = state
                .as_ref()
                .map(|s| proto::IngressState::decode(s.as_slice()).map_err(StoreError::corrupt))
                .transpose()?;
            items.push(info);
        }
        items.sort_by(|a, b| a.ingress_id.cmp(&b.ingress_id));
        Ok(items)
    }
}

impl Store for RedisStore {
    fn put(&self, info: &proto::IngressInfo) -> Result<(), StoreError> {
        let stripped = proto::IngressInfo {
            state: None,
            ..info.clone()
        };
        let state = info.state.clone().unwrap_or_default();
        self.commands.run(|c| {
            self.scripts
                .put
                .arg(&self.prefix)
                .arg(&info.ingress_id)
                .arg(stripped.encode_to_vec())
                .arg(&info.stream_key)
                .arg(&info.room_name)
                .arg(state.encode_to_vec())
                .arg(order_string(&state))
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn get(&self, ingress_id: &str) -> Result<Option<proto::IngressInfo>, StoreError> {
        Ok(self.load(vec![ingress_id.to_string()])?.pop())
    }

    fn by_stream_key(&self, stream_key: &str) -> Result<Option<proto::IngressInfo>, StoreError> {
        if stream_key.is_empty() {
            return Ok(None);
        }
        let id: Option<String> = self
            .commands
            .run(|c| c.hget(self.key("stream_key"), stream_key))?;
        match id {
            Some(id) => self.get(&id),
            None => Ok(None),
        }
    }

    fn list(&self, room: &str, ingress_id: &str) -> Result<Vec<proto::IngressInfo>, StoreError> {
        let ids: Vec<String> = if !ingress_id.is_empty() {
            vec![ingress_id.to_string()]
        } else if !room.is_empty() {
            self.commands
                .run(|c| c.smembers(self.key(&format!("room:{room}"))))?
        } else {
            self.commands.run(|c| c.smembers(self.key("ingresses")))?
        };
        Ok(self
            .load(ids)?
            .into_iter()
            .filter(|i| room.is_empty() || i.room_name == room)
            .collect())
    }

    fn delete(&self, ingress_id: &str) -> Result<(), StoreError> {
        self.commands.run(|c| {
            self.scripts
                .delete
                .arg(&self.prefix)
                .arg(ingress_id)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn options(&self, ingress_id: &str) -> Result<Option<IngressOptions>, StoreError> {
        // `room` is in every ingress's hash: without it there is no ingress.
        let (room, json): (Option<String>, Option<String>) = self.commands.run(|c| {
            redis::cmd("HMGET")
                .arg(self.ingress_key(ingress_id))
                .arg("room")
                .arg("options")
                .query(c)
        })?;
        room.map(|_| stored_options(json.as_deref())).transpose()
    }

    fn put_options(&self, ingress_id: &str, options: &IngressOptions) -> Result<bool, StoreError> {
        let json = if options.is_empty() {
            String::new()
        } else {
            options.to_json()
        };
        let written: i64 = self.commands.run(|c| {
            self.scripts
                .put_options
                .key(self.ingress_key(ingress_id))
                .arg(json)
                .invoke(c)
        })?;
        Ok(written == 1)
    }

    fn claim(&self, ingress_id: &str) -> Result<bool, StoreError> {
        let value = format!("{}:{:032x}", self.node, rand::random::<u128>());
        let set: Option<String> = self.leases.run(|c| {
            redis::cmd("SET")
                .arg(self.lease_key(ingress_id))
                .arg(&value)
                .arg("NX")
                .arg("PX")
                .arg(LEASE.as_millis() as u64)
                .query(c)
        })?;
        if set.is_some() {
            lock(&self.tokens).insert(ingress_id.to_string(), value);
        }
        Ok(set.is_some())
    }

    fn renew(&self, ingress_id: &str) -> Result<bool, StoreError> {
        let Some(value) = lock(&self.tokens).get(ingress_id).cloned() else {
            return Ok(false);
        };
        let renewed: i64 = self.leases.run(|c| {
            self.scripts
                .renew
                .key(self.lease_key(ingress_id))
                .arg(&value)
                .arg(LEASE.as_millis() as u64)
                .invoke(c)
        })?;
        Ok(renewed == 1)
    }

    fn release(&self, ingress_id: &str) {
        let Some(value) = lock(&self.tokens).remove(ingress_id) else {
            return;
        };
        let released = self.leases.run(|c| {
            self.scripts
                .release
                .key(self.lease_key(ingress_id))
                .arg(&value)
                .invoke::<i64>(c)
        });
        if let Err(e) = released {
            tracing::warn!(ingress = %ingress_id, "claim not released (it lapses by itself): {e}");
        }
    }

    fn is_claimed(&self, ingress_id: &str) -> Result<bool, StoreError> {
        self.leases.run(|c| c.exists(self.lease_key(ingress_id)))
    }

    fn put_state(&self, ingress_id: &str, state: &proto::IngressState) -> Result<bool, StoreError> {
        let Some(value) = lock(&self.tokens).get(ingress_id).cloned() else {
            return Ok(false);
        };
        let written: i64 = self.leases.run(|c| {
            self.scripts
                .put_state
                .key(self.lease_key(ingress_id))
                .key(self.ingress_key(ingress_id))
                .key(self.state_key(ingress_id))
                .arg(&value)
                .arg(state.encode_to_vec())
                .arg(order_string(state))
                .invoke(c)
        })?;
        Ok(written == 1)
    }

    fn swap_state(
        &self,
        ingress_id: &str,
        expected: &proto::IngressState,
        state: &proto::IngressState,
    ) -> Result<bool, StoreError> {
        let swapped: i64 = self.commands.run(|c| {
            self.scripts
                .swap_state
                .key(self.state_key(ingress_id))
                .arg(expected.encode_to_vec())
                .arg(state.encode_to_vec())
                .arg(order_string(state))
                .invoke(c)
        })?;
        Ok(swapped == 1)
    }

    fn request_stop(&self, ingress_id: &str) -> Result<(), StoreError> {
        let holder: Option<String> = self.commands.run(|c| c.get(self.lease_key(ingress_id)))?;
        let Some((node, _)) = holder.as_deref().and_then(|h| h.split_once(':')) else {
            return Ok(());
        };
        let queue = self.stops_key(node);
        self.commands.run(|c| {
            redis::pipe()
                .rpush(&queue, ingress_id)
                .ignore()
                .pexpire(&queue, STOP_TTL.as_millis() as i64)
                .ignore()
                .exec(c)
        })
    }

    fn watch_stops(
        &self,
        handler: StopHandler,
        alive: Box<dyn Fn() -> bool + Send>,
    ) -> Result<(), StoreError> {
        let client = self.client.clone();
        let queue = self.stops_key(&self.node);
        std::thread::Builder::new()
            .name("redis-stops".into())
            .spawn(move || {
                while alive() {
                    if let Err(e) = take_stops(&client, &queue, &handler, &alive) {
                        tracing::warn!("Redis stop queue lost, reconnecting: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
            .map(|_| ())
            .map_err(|e| StoreError::Other(format!("cannot watch stop requests: {e}")))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.commands
            .run(|c| redis::cmd("PING").query::<String>(c))
            .map(|_| ())
    }
}

/// Takes this node's stop requests off its queue and hands each id to
/// `handler`, until the connection fails or the owner is gone. Requests
/// pushed while the connection is down wait in the queue.
fn take_stops(
    client: &redis::Client,
    queue: &str,
    handler: &StopHandler,
    alive: &dyn Fn() -> bool,
) -> redis::RedisResult<()> {
    let mut connection = open_connection(client)?;
    while alive() {
        // A one-second wait lets the loop notice when the service is gone.
        let taken: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(queue)
            .arg(1)
            .query(&mut connection)?;
        if let Some((_, ingress_id)) = taken {
            handler(&ingress_id);
        }
    }
    Ok(())
}
