//! `livekit-ingress`, the managed service: the `livekit.Ingress` API over a store
//! of IngressInfo, one RTMP port for every ingress, and a pipeline of the
//! plugin's elements for each accepted stream.
//!
//! - [`config`]: YAML and environment.
//! - [`ingress`]: LiveKit's semantics (validation, create, update, may a stream start).
//! - [`store`]: the embedded SQLite store, or Redis shared by several nodes.
//! - [`sessions`]: publish decisions and live sessions, keeping IngressState true.
//! - [`api`]: Twirp, health, metrics.
//! - [`webhooks`]: ingress_started / ingress_ended, signed as LiveKit signs them.

pub mod api;
pub mod config;
pub mod ingress;
pub mod sessions;
pub mod store;
pub mod webhooks;

use crate::rtmp::listener::{self, Decision, Listener, ListenerConfig};
use livekit_api::access_token::TokenVerifier;
use std::sync::Arc;
use std::time::Duration;

/// A running service: dropping it does not stop it, [`Service::shutdown`] does.
pub struct Service {
    pub config: config::Config,
    pub sessions: Arc<sessions::Sessions>,
    pub store: Arc<dyn store::Store>,
    pub http_addr: std::net::SocketAddr,
    pub rtmp_addr: std::net::SocketAddr,
    listener: Arc<Listener>,
    http: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Opens the store, listens for RTMP and serves the API. Call from a tokio runtime.
    pub async fn start(config: config::Config) -> Result<Service, String> {
        gst::init().map_err(|e| format!("GStreamer: {e}"))?;
        let _ = crate::plugin_register_static();
        let store = store::open(&config.store)?;
        store::settle_orphans(store.as_ref())?;
        let sessions = sessions::Sessions::new(config.clone(), store.clone())?;

        let listener = listener::listener(&ListenerConfig {
            address: config.bind_address.clone(),
            port: config.rtmp_port,
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        })?;
        let decider = sessions.clone();
        listener.set_authorizer(Some(Arc::new(move |request| {
            let sessions = decider.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || sessions.authorize(request))
                    .await
                    .unwrap_or_else(|e| Decision::Reject(format!("internal error: {e}")))
            })
        })));

        let api = Arc::new(api::Api {
            store: store.clone(),
            sessions: sessions.clone(),
            verifier: TokenVerifier::with_api_key(&config.api_key, &config.api_secret),
            rtmp_base_url: config.rtmp_base_url.clone(),
        });
        let http_listener =
            tokio::net::TcpListener::bind((config.bind_address.as_str(), config.http_port))
                .await
                .map_err(|e| {
                    format!(
                        "cannot listen on {}:{}: {e}",
                        config.bind_address, config.http_port
                    )
                })?;
        let http_addr = http_listener.local_addr().map_err(|e| e.to_string())?;
        let http = tokio::spawn(async move {
            if let Err(e) = axum::serve(http_listener, api::router(api)).await {
                tracing::error!("API server stopped: {e}");
            }
        });
        let rtmp_addr = listener.local_addr();
        tracing::info!(%http_addr, %rtmp_addr, ws_url = %config.ws_url, "livekit-ingress ready");
        Ok(Service {
            config,
            sessions,
            store,
            http_addr,
            rtmp_addr,
            listener,
            http,
        })
    }

    /// Ends live streams cleanly (participants leave, ingresses inactive) and stops serving.
    pub async fn shutdown(self) {
        self.listener.set_authorizer(None);
        let sessions = self.sessions.clone();
        let _ = tokio::task::spawn_blocking(move || sessions.stop_all()).await;
        let _ = store::settle_orphans(self.store.as_ref());
        self.http.abort();
    }
}
