//! The service's configuration: a YAML file (or the `LIVEKIT_INGRESS_CONFIG`
//! body), then environment variables, named like LiveKit's own. With nothing
//! given, it runs next to a LiveKit server in dev mode on this machine.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// LiveKit API key: signs the ingress's room tokens and authenticates API calls.
    pub api_key: String,
    pub api_secret: String,
    /// WebSocket URL of the LiveKit server the ingresses publish to.
    pub ws_url: String,
    /// The RTMP port every ingress shares.
    pub rtmp_port: u16,
    /// Address the RTMP and HTTP servers listen on.
    pub bind_address: String,
    /// The Twirp API, health and metrics port.
    pub http_port: u16,
    /// The URL streamers are given (without the stream key).
    pub rtmp_base_url: String,
    /// Where ingresses are kept.
    pub store: StoreConfig,
    /// Webhook receivers for ingress_started / ingress_ended.
    pub webhook: WebhookConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file (the embedded default, for one node).
    pub sqlite: PathBuf,
    /// Redis shared by several nodes; when set, the SQLite file is not used.
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
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
            api_key: "devkey".into(),
            api_secret: "secret".into(),
            ws_url: "ws://127.0.0.1:7880".into(),
            rtmp_port: 1935,
            bind_address: "0.0.0.0".into(),
            http_port: 7888,
            rtmp_base_url: String::new(),
            store: StoreConfig::default(),
            webhook: WebhookConfig::default(),
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
        if let Some(v) = env("LIVEKIT_INGRESS_HTTP_PORT") {
            self.http_port = port("LIVEKIT_INGRESS_HTTP_PORT", v)?;
        }
        if let Some(v) = env("LIVEKIT_INGRESS_RTMP_BASE_URL") {
            self.rtmp_base_url = v;
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
        if let Some(redis) = &self.store.redis {
            if redis.address.is_empty() || redis.prefix.is_empty() {
                return Err("store.redis needs an address and a prefix".into());
            }
        }
        if self.webhook.api_key.is_empty() {
            self.webhook.api_key = self.api_key.clone();
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_next_to_a_dev_server() {
        let c = Config::default().finish().expect("valid");
        assert_eq!(c.ws_url, "ws://127.0.0.1:7880");
        assert_eq!(c.rtmp_base_url, "rtmp://127.0.0.1:1935/live");
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
