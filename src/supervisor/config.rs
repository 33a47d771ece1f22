//! The service's configuration: a YAML file (or the `LIVEKIT_INGRESS_CONFIG`
//! body), then environment variables, named like LiveKit's own. With nothing
//! given, it runs next to a LiveKit server in dev mode on this machine.

use serde::Deserialize;
use std::path::PathBuf;

/// LiveKit's dev-mode credentials (`livekit-server --dev`), the defaults here.
pub const DEV_API_KEY: &str = "devkey";
/// Public knowledge: anyone can sign an API token with it.
pub const DEV_API_SECRET: &str = "secret";

/// Stands for a secret wherever a configuration is printed.
const REDACTED: &str = "<redacted>";

// Debug is written by hand (below): a logged configuration must not show secrets.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// LiveKit API key: signs the ingress's room tokens and authenticates API calls.
    pub api_key: String,
    pub api_secret: String,
    /// WebSocket URL of the LiveKit server the ingresses publish to.
    pub ws_url: String,
    /// The RTMP port every ingress shares.
    pub rtmp_port: u16,
    /// When set, an SRT listener on this UDP port takes the stream keys of
    /// RTMP ingresses as SRT stream ids (an extension LiveKit's ingress lacks).
    pub srt_port: Option<u16>,
    /// Address the RTMP and HTTP servers listen on. Unset: loopback with the
    /// dev credentials, every interface with real ones (see [`Config::checked_exposure`]).
    pub bind_address: String,
    /// The Twirp API, health and metrics port.
    pub http_port: u16,
    /// When set, `/metrics` is served on this port (on `bind_address`) and not
    /// on `http_port`, as LiveKit's servers do.
    pub prometheus_port: Option<u16>,
    /// The URL streamers are given (without the stream key).
    pub rtmp_base_url: String,
    /// The URL WHIP publishers are given (without the stream key): WHIP is
    /// served on `http_port` under `/w` (see `crate::whip`). Default
    /// `http://127.0.0.1:<http_port>/w`; set it to the address they reach
    /// (a reverse proxy may add TLS in front).
    pub whip_base_url: String,
    /// Where ingresses are kept.
    pub store: StoreConfig,
    /// Webhook receivers for ingress_started / ingress_ended.
    pub webhook: WebhookConfig,
    /// What a connection may do before its publish is accepted.
    pub rtmp_limits: RtmpLimits,
    /// What the node can carry, and what each stream costs (admission).
    pub capacity: CapacityConfig,
    /// Seconds live streams may go on after SIGTERM (no new publish is taken
    /// meanwhile) before they are ended; a second SIGTERM or SIGINT ends them
    /// at once. Below Kubernetes' default grace period of 30 s.
    pub drain_timeout: u32,
    /// H.264 pass-through for every transcoded ingress (`off`, `hybrid`,
    /// `single`; see `crate::passthrough`): the service's default, which an
    /// ingress's own options (`super::ingress_options`) may replace.
    pub video_passthrough: crate::passthrough::Mode,
    /// Seconds an RTMP or SRT stream whose publisher dropped keeps its
    /// participant and tracks in the room, waiting for the same key to
    /// publish again (over the same protocol).
    pub reconnect_grace: u32,
}

/// Admission by capacity (`super::capacity`): costs in cores per stream, as
/// measured on this project's benchmarks (README, Performance).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CapacityConfig {
    /// Cores the node has for streams; 0: the cores this process may use.
    pub cores: f64,
    /// The share of `cores` streams may take together; the rest is headroom
    /// (the service itself, encoders' peaks at keyframes, the OS).
    pub max_load: f64,
    /// Cores one transcoded stream takes (a 1080p30 source, default preset:
    /// 0.40 to 0.67 measured).
    pub transcode_cost: f64,
    /// Cores one stream takes once its source's H.264 is passed through as
    /// the top layer, its lower layers encoded (hybrid: 0.17 to 0.28
    /// measured for 1080p30, 0.38x of a transcode).
    pub hybrid_cost: f64,
    /// Cores one stream forwarded without transcoding takes (WHIP bypass:
    /// 0.03 to 0.04 measured; single pass-through 0.03 to 0.04 with its
    /// audio transcode).
    pub bypass_cost: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        CapacityConfig {
            cores: 0.0,
            max_load: 0.9,
            transcode_cost: 0.6,
            hybrid_cost: 0.3,
            bypass_cost: 0.05,
        }
    }
}

/// Bounds on RTMP connections that have not published yet: they have shown
/// no valid key, so they may cost the node little.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpLimits {
    /// Seconds from connect to an accepted publish (TLS, handshake, commands).
    pub publish_deadline: u32,
    /// Connections waiting to publish, all addresses together.
    pub max_pending_connections: usize,
    /// Connections waiting to publish from one IP address.
    pub max_pending_per_address: usize,
}

impl Default for RtmpLimits {
    fn default() -> Self {
        let defaults = crate::rtmp::admission::Limits::default();
        RtmpLimits {
            publish_deadline: 10,
            max_pending_connections: defaults.max_pending,
            max_pending_per_address: defaults.max_pending_per_ip,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file (the embedded default, for one node).
    pub sqlite: PathBuf,
    /// Redis shared by several nodes; when set, the SQLite file is not used.
    pub redis: Option<RedisConfig>,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port` (port 6379 when omitted).
    pub address: String,
    pub username: String,
    pub password: String,
    pub db: i64,
    /// Prefix of every key and channel, so several deployments can share a Redis.
    pub prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &REDACTED)
            .field("db", &self.db)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &self.api_key)
            .field("api_secret", &REDACTED)
            .field("ws_url", &self.ws_url)
            .field("rtmp_port", &self.rtmp_port)
            .field("srt_port", &self.srt_port)
            .field("bind_address", &self.bind_address)
            .field("http_port", &self.http_port)
            .field("prometheus_port", &self.prometheus_port)
            .field("rtmp_base_url", &self.rtmp_base_url)
            .field("whip_base_url", &self.whip_base_url)
            .field("store", &self.store)
            .field("webhook", &self.webhook)
            .field("rtmp_limits", &self.rtmp_limits)
            .field("capacity", &self.capacity)
            .field("drain_timeout", &self.drain_timeout)
            .field("video_passthrough", &self.video_passthrough)
            .field("reconnect_grace", &self.reconnect_grace)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            address: "127.0.0.1:6379".into(),
            username: String::new(),
            password: String::new(),
            db: 0,
            prefix: "livekit-ingress".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    /// Key the webhooks are signed with (its secret must be `api_secret`'s pair; default `api_key`).
    pub api_key: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
        StoreConfig {
            sqlite: PathBuf::from(home).join(".local/share/livekit-ingress/ingress.db"),
            redis: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_key: DEV_API_KEY.into(),
            api_secret: DEV_API_SECRET.into(),
            ws_url: "ws://127.0.0.1:7880".into(),
            rtmp_port: 1935,
            srt_port: None,
            bind_address: String::new(),
            http_port: 7888,
            prometheus_port: None,
            rtmp_base_url: String::new(),
            whip_base_url: String::new(),
            store: StoreConfig::default(),
            webhook: WebhookConfig::default(),
            rtmp_limits: RtmpLimits::default(),
            capacity: CapacityConfig::default(),
            drain_timeout: 25,
            video_passthrough: crate::passthrough::Mode::Off,
            reconnect_grace: 5,
        }
    }
}

impl Config {
    /// Reads the file (if any), the `LIVEKIT_INGRESS_CONFIG` body (if set), then
    /// the environment, and checks the result.
    pub fn load(path: Option<&std::path::Path>) -> Result<Config, String> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
                Self::from_yaml(&text).map_err(|e| format!("config {}: {e}", path.display()))?
            }
            None => match std::env::var("LIVEKIT_INGRESS_CONFIG") {
                Ok(body) => {
                    Self::from_yaml(&body).map_err(|e| format!("LIVEKIT_INGRESS_CONFIG: {e}"))?
                }
                Err(_) => Config::default(),
            },
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.finish()
    }

    pub fn from_yaml(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_norway::from_str(text).map_err(|e| e.to_string())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        let port = |name: &str, value: String| {
            value
                .parse::<u16>()
                .map_err(|_| format!("{name}={value:?} is not a port number"))
        };
        if let Some(v) = env("LIVEKIT_API_KEY") {
            self.api_key = v;
        }
        if let Some(v) = env("LIVEKIT_API_SECRET") {
            self.api_secret = v;
        }
        if let Some(v) = env("LIVEKIT_WS_URL") {
            self.ws_url = v;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_RTMP_PORT") {
            self.rtmp_port = port("LIVEKIT_INGRESS_RTMP_PORT", v)?;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_SRT_PORT") {
            self.srt_port = Some(port("LIVEKIT_INGRESS_SRT_PORT", v)?);
        }
        if let Some(v) = env("LIVEKIT_INGRESS_HTTP_PORT") {
            self.http_port = port("LIVEKIT_INGRESS_HTTP_PORT", v)?;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_PROMETHEUS_PORT") {
            self.prometheus_port = Some(port("LIVEKIT_INGRESS_PROMETHEUS_PORT", v)?);
        }
        if let Some(v) = env("LIVEKIT_INGRESS_BIND_ADDRESS") {
            self.bind_address = v;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_RTMP_BASE_URL") {
            self.rtmp_base_url = v;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_WHIP_BASE_URL") {
            self.whip_base_url = v;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_VIDEO_PASSTHROUGH") {
            self.video_passthrough = crate::passthrough::Mode::from_name(&v).ok_or_else(|| {
                format!("LIVEKIT_INGRESS_VIDEO_PASSTHROUGH={v:?} is not off, hybrid or single")
            })?;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_SQLITE") {
            self.store.sqlite = PathBuf::from(v);
        }
        if let Some(v) = env("LIVEKIT_INGRESS_REDIS_ADDRESS") {
            self.store
                .redis
                .get_or_insert_with(Default::default)
                .address = v;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_REDIS_PASSWORD") {
            self.store
                .redis
                .get_or_insert_with(Default::default)
                .password = v;
        }
        Ok(())
    }

    /// Fills derived defaults and refuses what cannot work.
    fn finish(mut self) -> Result<Config, String> {
        if self.api_key.is_empty() || self.api_secret.is_empty() {
            return Err(
                "api_key and api_secret are required (or LIVEKIT_API_KEY / LIVEKIT_API_SECRET)"
                    .into(),
            );
        }
        if !(self.ws_url.starts_with("ws://") || self.ws_url.starts_with("wss://")) {
            return Err(format!(
                "ws_url must be a ws:// or wss:// URL, got {:?}",
                self.ws_url
            ));
        }
        if self.rtmp_base_url.is_empty() {
            self.rtmp_base_url = format!("rtmp://127.0.0.1:{}/live", self.rtmp_port);
        }
        if !(self.rtmp_base_url.starts_with("rtmp://")
            || self.rtmp_base_url.starts_with("rtmps://"))
        {
            return Err(format!(
                "rtmp_base_url must be an rtmp:// URL, got {:?}",
                self.rtmp_base_url
            ));
        }
        if self.whip_base_url.is_empty() {
            self.whip_base_url = format!("http://127.0.0.1:{}/w", self.http_port);
        }
        if !(self.whip_base_url.starts_with("http://")
            || self.whip_base_url.starts_with("https://"))
        {
            return Err(format!(
                "whip_base_url must be an http(s):// URL, got {:?}",
                self.whip_base_url
            ));
        }
        let limits = &self.rtmp_limits;
        if limits.publish_deadline == 0
            || limits.max_pending_connections == 0
            || limits.max_pending_per_address == 0
        {
            return Err("rtmp_limits: every limit must be above 0".into());
        }
        let capacity = &self.capacity;
        if !(capacity.cores >= 0.0
            && capacity.max_load > 0.0
            && capacity.max_load <= 1.0
            && capacity.transcode_cost > 0.0
            && capacity.hybrid_cost > 0.0
            && capacity.bypass_cost > 0.0)
        {
            return Err(
                "capacity: cores must be 0 or more, max_load in (0, 1], costs above 0".into(),
            );
        }
        if let Some(redis) = &self.store.redis {
            if redis.address.is_empty() || redis.prefix.is_empty() {
                return Err("store.redis needs an address and a prefix".into());
            }
        }
        if self.webhook.api_key.is_empty() {
            self.webhook.api_key = self.api_key.clone();
        }
        if self
            .prometheus_port
            .is_some_and(|p| p != 0 && p == self.http_port)
        {
            return Err(format!(
                "prometheus_port {} is http_port's: give /metrics another port, or unset it to serve it on http_port",
                self.http_port
            ));
        }
        self.checked_exposure()
    }

    /// Whether the API secret is the dev one, with which anyone can sign a
    /// token the API accepts.
    pub fn dev_credentials(&self) -> bool {
        self.api_secret == DEV_API_SECRET
    }

    /// The exposure rule: with the dev credentials the service is reachable
    /// from this machine only. An unset `bind_address` becomes loopback with
    /// them and every interface with real ones; a non-loopback `bind_address`
    /// with them is refused. [`super::Service::start`] applies it too.
    pub fn checked_exposure(mut self) -> Result<Config, String> {
        let dev = self.dev_credentials();
        if self.bind_address.is_empty() {
            self.bind_address = if dev { "127.0.0.1" } else { "0.0.0.0" }.into();
        } else if dev && !is_loopback(&self.bind_address) {
            return Err(format!(
                "bind_address {:?} is not a loopback address and api_secret is LiveKit's dev secret, \
                 with which anyone can sign API tokens: set api_key and api_secret \
                 (LIVEKIT_API_KEY, LIVEKIT_API_SECRET), or bind_address: 127.0.0.1",
                self.bind_address
            ));
        }
        Ok(self)
    }
}

/// Whether listening on `address` keeps a server to this machine.
pub fn is_loopback(address: &str) -> bool {
    let address = address.trim_start_matches('[').trim_end_matches(']');
    address.eq_ignore_ascii_case("localhost")
        || address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_next_to_a_dev_server() {
        let c = Config::default().finish().expect("valid");
        assert_eq!(c.ws_url, "ws://127.0.0.1:7880");
        assert_eq!(c.rtmp_base_url, "rtmp://127.0.0.1:1935/live");
        assert_eq!(c.whip_base_url, "http://127.0.0.1:7888/w");
    }

    #[test]
    fn yaml_then_environment() {
        let mut c = Config::from_yaml(
            "api_key: k\napi_secret: s\nrtmp_port: 1940\nstore:\n  sqlite: /tmp/x.db\n",
        )
        .expect("yaml");
        assert_eq!(c.rtmp_port, 1940);
        c.apply_env(|n| (n == "LIVEKIT_WS_URL").then(|| "wss://example.invalid".to_string()))
            .expect("env");
        let c = c.finish().expect("valid");
        assert_eq!(c.ws_url, "wss://example.invalid");
        assert_eq!(c.store.sqlite, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.store.redis, None);
    }

    #[test]
    fn the_sample_config_is_valid() {
        let c = Config::from_yaml(include_str!("../../config.sample.yaml"))
            .and_then(Config::finish)
            .expect("config.sample.yaml");
        assert_eq!(c.rtmp_base_url, "rtmp://ingress.example.com/live");
        assert_eq!(c.store.redis, None);
    }

    #[test]
    fn redis_from_yaml_or_environment() {
        let c =
            Config::from_yaml("store:\n  redis:\n    address: redis.internal:6380\n    db: 2\n")
                .expect("yaml");
        let redis = c.store.redis.expect("redis");
        assert_eq!(redis.address, "redis.internal:6380");
        assert_eq!(redis.db, 2);
        assert_eq!(redis.prefix, "livekit-ingress");
        let mut c = Config::default();
        c.apply_env(|n| (n == "LIVEKIT_INGRESS_REDIS_ADDRESS").then(|| "10.0.0.5".to_string()))
            .expect("env");
        assert_eq!(c.store.redis.expect("redis").address, "10.0.0.5");
    }

    #[test]
    fn dev_credentials_keep_the_service_on_loopback() {
        // Unset: loopback with the dev secret, every interface with a real one.
        let c = Config::default().finish().expect("valid");
        assert_eq!(c.bind_address, "127.0.0.1");
        let real = Config {
            api_key: "APIabc".into(),
            api_secret: "a-real-secret-of-some-length-0123456789".into(),
            ..Config::default()
        };
        assert_eq!(
            real.clone().finish().expect("valid").bind_address,
            "0.0.0.0"
        );
        // Explicit loopback is fine with the dev secret, in any spelling.
        for address in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"] {
            let c = Config {
                bind_address: address.into(),
                ..Config::default()
            };
            assert_eq!(c.finish().expect(address).bind_address, address);
        }
        // Anything else with the dev secret is refused, naming the settings.
        for address in ["0.0.0.0", "::", "192.0.2.7", "ingress.example.com"] {
            let c = Config {
                bind_address: address.into(),
                ..Config::default()
            };
            let err = c.finish().expect_err(address);
            assert!(
                err.contains("bind_address") && err.contains("api_secret"),
                "{err}"
            );
            assert!(err.contains("LIVEKIT_API_SECRET"), "{err}");
        }
        // ... also when it comes from the environment.
        let mut c = Config::default();
        c.apply_env(|n| (n == "LIVEKIT_INGRESS_BIND_ADDRESS").then(|| "0.0.0.0".into()))
            .expect("env");
        assert!(c.finish().is_err());
        // A real secret may listen anywhere.
        let c = Config {
            bind_address: "0.0.0.0".into(),
            ..real
        };
        assert_eq!(c.finish().expect("valid").bind_address, "0.0.0.0");
    }

    #[test]
    fn video_passthrough_from_yaml_or_environment() {
        use crate::passthrough::Mode;
        assert_eq!(Config::default().video_passthrough, Mode::Off);
        let c = Config::from_yaml("video_passthrough: hybrid\n").expect("yaml");
        assert_eq!(c.video_passthrough, Mode::Hybrid);
        assert!(Config::from_yaml("video_passthrough: always\n").is_err());
        let mut c = Config::default();
        c.apply_env(|n| (n == "LIVEKIT_INGRESS_VIDEO_PASSTHROUGH").then(|| "single".into()))
            .expect("env");
        assert_eq!(c.video_passthrough, Mode::Single);
        let err = c
            .apply_env(|n| (n == "LIVEKIT_INGRESS_VIDEO_PASSTHROUGH").then(|| "on".into()))
            .expect_err("not a mode");
        assert!(err.contains("LIVEKIT_INGRESS_VIDEO_PASSTHROUGH"), "{err}");
    }

    #[test]
    fn prometheus_port_from_yaml_or_environment() {
        assert_eq!(Config::default().prometheus_port, None);
        let c = Config::from_yaml("prometheus_port: 6789\n").expect("yaml");
        assert_eq!(c.finish().expect("valid").prometheus_port, Some(6789));
        let mut c = Config::default();
        c.apply_env(|n| (n == "LIVEKIT_INGRESS_PROMETHEUS_PORT").then(|| "6790".into()))
            .expect("env");
        assert_eq!(c.prometheus_port, Some(6790));
        let c = Config {
            prometheus_port: Some(7888),
            ..Config::default()
        };
        assert!(c
            .finish()
            .expect_err("same port")
            .contains("prometheus_port"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::from_yaml(
            "api_key: APIkey\napi_secret: s3cr3t-value\nstore:\n  redis:\n    password: r3d1s-pass\n",
        )
        .expect("yaml");
        let shown = format!("{c:?} {c:#?}");
        assert!(shown.contains("APIkey"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("r3d1s-pass"), "{shown}");
    }

    #[test]
    fn bad_config_says_what_is_wrong() {
        let err = Config::from_yaml("rtmp_prot: 1").expect_err("typo");
        assert!(err.contains("rtmp_prot"), "{err}");
        let mut c = Config::default();
        let err = c
            .apply_env(|n| (n == "LIVEKIT_INGRESS_RTMP_PORT").then(|| "many".into()))
            .expect_err("port");
        assert!(err.contains("not a port"), "{err}");
        let c = Config {
            ws_url: "http://x".into(),
            ..Config::default()
        };
        assert!(c.finish().expect_err("url").contains("ws_url"));
    }
}
