//! Webhooks in LiveKit's format: a `WebhookEvent` as JSON, POSTed with an
//! `Authorization` token signed by the API key whose `sha256` claim is the
//! body's digest, so LiveKit's webhook receivers verify it unchanged.
//!
//! Delivery never holds up whoever reports the event (a stream's session):
//! [`Webhooks::send`] puts the event in one bounded queue and returns; one
//! worker task sends the queue in order, each request with a deadline and a
//! bounded number of retries. A receiver that hangs or refuses makes the queue
//! fill; then the oldest event is dropped and counted ([`stats`]).

use crate::sync::lock;
use base64::Engine;
use livekit_api::access_token::AccessToken;
use livekit_protocol as proto;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Events waiting to be sent; one more drops the oldest.
pub const QUEUE_CAPACITY: usize = 256;
/// One request's deadline, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per event and receiver; between them 0.5 s, then 1 s.
pub const ATTEMPTS: u32 = 3;

/// Delivery counters for `/metrics`. Process-wide: a process runs one service.
#[derive(Default)]
pub struct WebhookStats {
    /// Deliveries a receiver accepted (2xx).
    pub sent: AtomicU64,
    /// Deliveries given up after [`ATTEMPTS`] tries.
    pub failed: AtomicU64,
    /// Events dropped unsent because the queue was full.
    pub dropped: AtomicU64,
}

static STATS: WebhookStats = WebhookStats {
    sent: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
};

/// The process's webhook counters.
pub fn stats() -> &'static WebhookStats {
    &STATS
}

/// An event as reported, signed only when it is sent.
struct Pending {
    event: proto::WebhookEvent,
}

#[derive(Default)]
struct Queue {
    events: Mutex<VecDeque<Pending>>,
    ready: Notify,
    /// The [`Webhooks`] is gone: the worker sends what is left and ends.
    closed: AtomicBool,
}

/// What signs and sends; the worker's own copy.
#[derive(Clone)]
struct Sender {
    urls: Arc<[String]>,
    api_key: String,
    api_secret: String,
    client: reqwest::Client,
}

pub struct Webhooks {
    sender: Sender,
    queue: Arc<Queue>,
}

impl Webhooks {
    /// Webhooks to `urls`; with any, starts the worker on the shared runtime.
    pub fn new(urls: Vec<String>, api_key: &str, api_secret: &str) -> Webhooks {
        let sender = Sender {
            urls: urls.into(),
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
        };
        let queue = Arc::new(Queue::default());
        if !sender.urls.is_empty() {
            crate::runtime::handle().spawn(worker(sender.clone(), queue.clone()));
        }
        Webhooks { sender, queue }
    }

    /// The signed body and token for an event about `info`, with a new id.
    pub fn sign(&self, event: &str, info: &proto::IngressInfo) -> Result<(String, String), String> {
        self.sender.sign(&new_event(event, info))
    }

    /// Queues `event` for every configured URL and returns at once.
    pub fn send(&self, event: &str, info: &proto::IngressInfo) {
        if self.sender.urls.is_empty() {
            return;
        }
        let dropped = {
            let mut events = lock(&self.queue.events);
            events.push_back(Pending {
                event: new_event(event, info),
            });
            (events.len() > QUEUE_CAPACITY).then(|| events.pop_front())
        };
        if let Some(Some(old)) = dropped {
            STATS.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                id = %old.event.id,
                "webhook queue full ({QUEUE_CAPACITY}): dropped the oldest event {}",
                old.event.event
            );
        }
        self.queue.ready.notify_one();
    }

    /// Events waiting to be sent.
    pub fn queued(&self) -> usize {
        lock(&self.queue.events).len()
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Relaxed);
        self.queue.ready.notify_one();
    }
}

/// Every event gets its own id (LiveKit's `EV_` and 12 characters), so a
/// receiver can tell started from ended and spot a retried delivery.
fn new_event(event: &str, info: &proto::IngressInfo) -> proto::WebhookEvent {
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    proto::WebhookEvent {
        event: event.to_string(),
        ingress_info: Some(info.clone()),
        id: format!("EV_{}", Alphanumeric.sample_string(&mut rand::rng(), 12)),
        created_at,
        ..Default::default()
    }
}

/// A URL as logs show it: no credentials, query or fragment, which may carry secrets.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(url) => {
            format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + url.path()
        }
        Err(_) => "<unparsable webhook URL>".into(),
    }
}

impl Sender {
    fn sign(&self, event: &proto::WebhookEvent) -> Result<(String, String), String> {
        let body = serde_json::to_string(event).map_err(|e| e.to_string())?;
        let digest =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body.as_bytes()));
        let token = AccessToken::with_api_key(&self.api_key, &self.api_secret)
            .with_sha256(&digest)
            .with_ttl(Duration::from_secs(600))
            .to_jwt()
            .map_err(|e| e.to_string())?;
        Ok((body, token))
    }

    /// One event to one receiver, retried; whether it was accepted.
    async fn deliver(&self, url: &str, name: &str, body: &str, token: &str) -> bool {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << (attempt - 1))).await;
            }
            let sent = self
                .client
                .post(url)
                .header("Content-Type", "application/webhook+json")
                .header("Authorization", token)
                .body(body.to_string())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => tracing::warn!("webhook {name} to {}: HTTP {}", shown(url), r.status()),
                // Without the URL: reqwest's message would print it whole.
                Err(e) => tracing::warn!("webhook {name} to {}: {}", shown(url), e.without_url()),
            }
        }
        false
    }
}

/// Sends the queue in order until the [`Webhooks`] is dropped and the queue is empty.
async fn worker(sender: Sender, queue: Arc<Queue>) {
    loop {
        let next = lock(&queue.events).pop_front();
        let Some(pending) = next else {
            if queue.closed.load(Ordering::Relaxed) {
                return;
            }
            queue.ready.notified().await;
            continue;
        };
        let name = &pending.event.event;
        let (body, token) = match sender.sign(&pending.event) {
            Ok(signed) => signed,
            Err(e) => {
                tracing::warn!("cannot sign webhook {name}: {e}");
                STATS.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        for url in sender.urls.iter() {
            let counter = if sender.deliver(url, name, &body, &token).await {
                &STATS.sent
            } else {
                &STATS.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}
