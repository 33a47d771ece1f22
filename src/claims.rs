//! The stream-key claims of a push listener (RTMP, SRT): which element takes
//! the publishes on which key, which keys are publishing right now, and the
//! one decision on a publish (already publishing? the application's
//! [`Authorizer`], then the element's claim). Each listener keeps one
//! [`Claims`] over the events it hands its elements.

use crate::input::{Authorizer, Decision, PublishRequest, Refusal};
use crate::rtmp::redact::redact_key;
use crate::sync::lock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// How long an accepted publish waits for its element.
pub const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// Another element holds the stream key on this listener.
#[derive(Debug, thiserror::Error)]
#[error("stream key {key} is already claimed on port {port}")]
pub struct KeyClaimed {
    /// Redacted as in logs.
    pub key: String,
    pub port: u16,
}

struct Inner<E> {
    /// Stream key -> the element's channel and the application it is limited to.
    by_key: HashMap<String, (mpsc::Sender<E>, Option<String>)>,
    /// Keys being published right now (a second publisher is refused).
    active: HashSet<String>,
}

/// The claims on one listener, carrying events of type `E` to the elements.
pub struct Claims<E> {
    inner: Mutex<Inner<E>>,
    claimed: Notify,
    authorizer: Mutex<Option<Authorizer>>,
    /// Events buffered per publish; beyond this the publisher is read no faster.
    queue: usize,
}

/// An element's hold on a key; given back when dropped.
pub struct Claimed<E> {
    claims: Arc<Claims<E>>,
    key: String,
}

impl<E> Drop for Claimed<E> {
    fn drop(&mut self) {
        lock(&self.claims.inner).by_key.remove(&self.key);
    }
}

/// A stream key marked as publishing; unmarked when dropped, whichever way the
/// connection ends (also when accepting the publish fails half-way).
struct ActiveKey<'a, E> {
    claims: &'a Claims<E>,
    key: String,
}

impl<E> Drop for ActiveKey<'_, E> {
    fn drop(&mut self) {
        lock(&self.claims.inner).active.remove(&self.key);
    }
}

/// An accepted publish: its key held active, its element's channel.
pub struct Publish<'a, E> {
    _active: ActiveKey<'a, E>,
    pub sender: mpsc::Sender<E>,
}

impl<E> Claims<E> {
    pub fn new(queue: usize) -> Self {
        Claims {
            inner: Mutex::new(Inner {
                by_key: HashMap::new(),
                active: HashSet::new(),
            }),
            claimed: Notify::new(),
            authorizer: Mutex::default(),
            queue,
        }
    }

    /// Lets an application decide on every publish on this listener.
    pub fn set_authorizer(&self, authorizer: Option<Authorizer>) {
        *lock(&self.authorizer) = authorizer;
    }

    /// Claims publishes on `key` (an empty key takes any key no one else
    /// claimed), optionally only on application `app`; `port` names the
    /// listener in the error.
    pub fn claim(
        self: &Arc<Self>,
        key: &str,
        app: Option<&str>,
        port: u16,
    ) -> Result<(Claimed<E>, mpsc::Receiver<E>), KeyClaimed> {
        let mut inner = lock(&self.inner);
        if inner.by_key.contains_key(key) {
            return Err(KeyClaimed {
                key: redact_key(key),
                port,
            });
        }
        let (tx, rx) = mpsc::channel(self.queue);
        inner
            .by_key
            .insert(key.to_string(), (tx, app.map(str::to_string)));
        drop(inner);
        self.claimed.notify_waiters();
        let claimed = Claimed {
            claims: self.clone(),
            key: key.to_string(),
        };
        Ok((claimed, rx))
    }

    /// The claim for `key`, waiting for one to appear when `wait` is set.
    async fn take_claim(&self, request: &PublishRequest, wait: bool) -> Option<mpsc::Sender<E>> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let fits = |(sender, app): &(mpsc::Sender<E>, Option<String>)| {
            !sender.is_closed() && app.as_ref().is_none_or(|a| *a == request.app)
        };
        loop {
            let notified = self.claimed.notified();
            {
                let inner = lock(&self.inner);
                let claim = inner
                    .by_key
                    .get(&request.key)
                    .filter(|c| fits(c))
                    .or_else(|| inner.by_key.get("").filter(|c| fits(c)));
                if let Some((sender, _)) = claim {
                    return Some(sender.clone());
                }
            }
            if !wait || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Whether `request` may publish: not while its key publishes, not when
    /// the application refuses, not without an element to take it (with an
    /// application, the element it creates on accepting has a few seconds to
    /// claim the key). `Err` is the refusal for the publisher, without the key.
    pub async fn decide(&self, request: &PublishRequest) -> Result<Publish<'_, E>, Refusal> {
        let busy = || Refusal::busy("this stream key is already publishing");
        if lock(&self.inner).active.contains(&request.key) {
            return Err(busy());
        }
        let authorizer = lock(&self.authorizer).clone();
        let waits = authorizer.is_some();
        if let Some(authorizer) = authorizer {
            if let Decision::Reject(refusal) = authorizer(request.clone()).await {
                return Err(refusal);
            }
        }
        let sender = self
            .take_claim(request, waits)
            .await
            .ok_or_else(Refusal::unknown_key)?;
        let key = request.key.clone();
        if !lock(&self.inner).active.insert(key.clone()) {
            return Err(busy());
        }
        Ok(Publish {
            _active: ActiveKey { claims: self, key },
            sender,
        })
    }
}

/// What woke an element's thread waiting on its claim.
pub enum Next<E> {
    /// An event of the publish, or `None` when the listener let go.
    Event(Option<E>),
    /// The element is stopping.
    Stop,
    /// The deadline for the first media passed.
    NoMedia,
}

/// Waits on the element's side of a claim for the next event, the element's
/// stop, or `media_deadline` (when a publish waits for its first media).
pub fn next_event<E>(
    events: &mut mpsc::Receiver<E>,
    stop: &Notify,
    media_deadline: Option<std::time::Instant>,
) -> Next<E> {
    crate::runtime::handle().block_on(async {
        let no_media = async {
            match media_deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => Next::Event(event),
            _ = stop.notified() => Next::Stop,
            _ = no_media => Next::NoMedia,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{InputKind, RefusalKind};

    fn request(key: &str) -> PublishRequest {
        PublishRequest {
            input: InputKind::Srt,
            key: key.into(),
            peer: "127.0.0.1:9".parse().expect("addr"),
            app: String::new(),
        }
    }

    #[test]
    fn a_key_is_claimed_once_publishes_once_and_comes_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("rt");
        let claims = Arc::new(Claims::<u8>::new(4));
        let (held, mut events) = claims.claim("k", None, 1).expect("claim");
        let again = claims.claim("k", None, 1).err().expect("claimed twice");
        assert!(!again.key.contains('k') || again.key.starts_with("key#"));
        rt.block_on(async {
            assert_eq!(
                claims.decide(&request("other")).await.err(),
                Some(Refusal::unknown_key())
            );
            let publish = claims.decide(&request("k")).await.expect("accepted");
            let busy = claims.decide(&request("k")).await.err().expect("refused");
            assert_eq!(busy.kind, RefusalKind::Busy);
            assert_eq!(busy.to_string(), "this stream key is already publishing");
            publish.sender.send(7).await.expect("send");
            assert_eq!(events.recv().await, Some(7));
            drop(publish);
            assert!(claims.decide(&request("k")).await.is_ok(), "free again");
            // An application's refusal reaches the publisher as it was made.
            claims.set_authorizer(Some(Arc::new(|_| {
                Box::pin(async { Decision::Reject(Refusal::forbidden("disabled")) })
            })));
            assert_eq!(
                claims.decide(&request("k")).await.err(),
                Some(Refusal::forbidden("disabled"))
            );
        });
        drop(held);
        assert!(claims.claim("k", None, 1).is_ok(), "the claim came back");
    }
}
