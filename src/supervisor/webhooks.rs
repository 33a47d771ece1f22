//! Webhooks in LiveKit's format: a `WebhookEvent` as JSON, POSTed with an
//! `Authorization` token signed by the API key whose `sha256` claim is the
//! body's digest, so LiveKit's webhook receivers verify it unchanged.

use base64::Engine;
use livekit_api::access_token::AccessToken;
use livekit_protocol as proto;
use sha2::{Digest, Sha256};
use std::time::Duration;

pub struct Webhooks {
    urls: Vec<String>,
    api_key: String,
    api_secret: String,
    client: reqwest::Client,
}

impl Webhooks {
    pub fn new(urls: Vec<String>, api_key: &str, api_secret: &str) -> Webhooks {
        Webhooks {
            urls,
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// The signed body and token for an event about `info`.
    pub fn sign(&self, event: &str, info: &proto::IngressInfo) -> Result<(String, String), String> {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let body = serde_json::to_string(&proto::WebhookEvent {
            event: event.to_string(),
            ingress_info: Some(info.clone()),
            id: format!("EV_{}", &info.ingress_id.trim_start_matches("IN_")),
            created_at,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        let digest =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()));
        let token = AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_sha256(&digest)
            .with_ttl(Duration::from_secs(600))
            .to_jwt()
            .map_err(|e| e.to_string())?;
        Ok((body, token))
    }

    /// Sends `event` to every configured URL in the background, retrying a few times.
    pub fn send(&self, event: &str, info: &proto::IngressInfo) {
        if self.urls.is_empty() {
            return;
        }
        let (body, token) = match self.sign(event, info) {
            Ok(signed) => signed,
            Err(e) => {
                tracing::warn!("cannot sign webhook {event}: {e}");
                return;
            }
        };
        for url in self.urls.clone() {
            let (client, body, token, event) = (
                self.client.clone(),
                body.clone(),
                token.clone(),
                event.to_string(),
            );
            crate::runtime::handle().spawn(async move {
                for attempt in 0..3u32 {
                    let sent = client
                        .post(&url)
                        .header("Content-Type", "application/webhook+json")
                        .header("Authorization", &token)
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => return,
                        Ok(r) => tracing::warn!("webhook {event} to {url}: HTTP {}", r.status()),
                        Err(e) => tracing::warn!("webhook {event} to {url}: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            });
        }
    }
}
