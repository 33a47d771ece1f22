//! The SRT listener: one per address and port in a process, shared by every
//! `srtingresssrc` on that port, dispatching each caller by the stream key in
//! its `streamid`.
//!
//! srt-tokio hands over each caller as a connection request, with its
//! `streamid`, before the handshake completes: the key is read
//! ([`super::streamid`]), decided on (the same [`Claims`] as RTMP: a key
//! publishing already, the application's [`Authorizer`], the element's claim)
//! and only then is the caller accepted, so no media flows for a refused key.
//! A refusal is an SRT rejection code the caller sees (libsrt: "connection
//! rejected" with the code, see [`Rejection`]). Callers waiting for a decision
//! are bounded per listener and per remote address (RTMP's [`Admission`]);
//! beyond a bound they are refused with 1402 (overload).

use super::streamid::{rejection_for, stream_key, Rejection};
use crate::claims::{Claimed, Claims, Publish};
pub use crate::input::{Authorizer, Decision, PublishRequest};
use crate::input::{InputKind, Refusal};
use crate::rtmp::admission::{Admission, Limits, Slot};
use crate::rtmp::redact::redact_key;
use crate::sync::lock;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::{ByteCount, SocketOptions};
use srt_tokio::{ConnectionRequest, SrtIncoming, SrtListener, SrtSocket};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Events buffered per publish (an SRT message is at most 1456 bytes, about
/// 7 TS packets): 2 s at 5 Mbit/s. Beyond this the socket is read no faster.
const EVENT_QUEUE: usize = 1024;
/// The UDP receive buffer asked for (the kernel may give less).
const UDP_RECEIVE_BUFFER: u64 = 2 * 1024 * 1024;

/// What a claimed publish delivers to its element.
#[derive(Debug, Clone)]
pub enum SrtEvent {
    Started {
        key: String,
        peer: SocketAddr,
    },
    /// One SRT message: MPEG-TS bytes, in order.
    Data(Bytes),
    /// The publish is over; `reason` says why.
    Ended {
        reason: String,
    },
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: String,
    pub port: u16,
    /// Longest time from a caller's request to the decision on it.
    pub decision_timeout: Duration,
    /// Longest silence from a publisher once accepted.
    pub idle_timeout: Duration,
}

/// Why a listener could not be set up or a key claimed.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen for SRT on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    KeyClaimed(#[from] crate::claims::KeyClaimed),
}

/// A listening SRT socket and its claims.
pub struct Listener {
    local_addr: SocketAddr,
    /// Tells the accept loop to close the socket when the last holder is gone.
    shutdown: Arc<Notify>,
    claims: Arc<Claims<SrtEvent>>,
    admission: Arc<Admission>,
    config: ListenerConfig,
}

type Registry = Mutex<HashMap<(String, u16), Weak<Listener>>>;
static LISTENERS: LazyLock<Registry> = LazyLock::new(Default::default);

/// The listener for `config`'s address and port, bound on first use and kept
/// while someone holds it.
pub fn listener(config: &ListenerConfig) -> Result<Arc<Listener>, ListenerError> {
    let mut registry = lock(&LISTENERS);
    let id = (config.address.clone(), config.port);
    if let Some(existing) = registry.get(&id).and_then(Weak::upgrade) {
        return Ok(existing);
    }
    let addr = format!("{}:{}", config.address, config.port);
    let bind_error = |source| ListenerError::Bind {
        addr: addr.clone(),
        source,
    };
    let local: SocketAddr = addr.parse().map_err(|e| {
        bind_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not an IP address and port: {e}"),
        ))
    })?;
    let mut options = SocketOptions::default();
    options.connect.local = local;
    options.connect.udp_recv_buffer_size = ByteCount(UDP_RECEIVE_BUFFER);
    let runtime = crate::runtime::handle();
    let socket = {
        // bind_socket does its work at once; it needs the runtime's reactor.
        let _guard = runtime.enter();
        crate::rtmp::listener::retry_in_use(|| {
            futures::executor::block_on(srt_tokio::bind_socket(&options))
        })
        .map_err(bind_error)?
    };
    let local_addr = socket.local_addr().map_err(bind_error)?;
    let shutdown = Arc::new(Notify::new());
    let listener = Arc::new(Listener {
        local_addr,
        shutdown: shutdown.clone(),
        claims: Arc::new(Claims::new(EVENT_QUEUE)),
        admission: Arc::default(),
        config: config.clone(),
    });
    let weak = Arc::downgrade(&listener);
    runtime.spawn(async move {
        let bound = SrtListener::builder()
            .socket(socket)
            .set(|o| o.connect.udp_recv_buffer_size = ByteCount(UDP_RECEIVE_BUFFER))
            .bind(local_addr)
            .await;
        let (srt, incoming) = match bound {
            Ok(bound) => bound,
            Err(e) => {
                tracing::warn!("SRT listener on {local_addr} failed to start: {e}");
                return;
            }
        };
        tokio::select! {
            _ = accept_loop(incoming, weak) => {}
            _ = shutdown.notified() => {}
        }
        // Dropping the listener closes its socket task.
        drop(srt);
    });
    registry.insert(id, Arc::downgrade(&listener));
    Ok(listener)
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.notify_one();
    }
}

async fn accept_loop(mut incoming: SrtIncoming, listener: Weak<Listener>) {
    // Requests are taken at once, whatever is decided: srt-tokio's listener
    // waits for the application's hand while its queue of requests is full.
    while let Some(request) = incoming.incoming().next().await {
        let Some(l) = listener.upgrade() else { return };
        let peer = request.remote();
        match l.admission.admit(peer.ip()) {
            Ok(slot) => {
                tokio::spawn(async move { l.serve(request, slot).await });
            }
            Err(why) => {
                tracing::debug!("refused an SRT caller from {peer}: {why}");
                tokio::spawn(reject(request, Rejection::Overload));
            }
        }
    }
}

/// Refuses a caller with `rejection`'s code.
async fn reject(request: ConnectionRequest, rejection: Rejection) {
    let reason = match rejection {
        Rejection::BadRequest => ServerRejectReason::BadRequest,
        Rejection::Unauthorized => ServerRejectReason::Unauthorized,
        Rejection::Overload => ServerRejectReason::Overload,
        Rejection::Forbidden => ServerRejectReason::Forbidden,
        Rejection::BadMode => ServerRejectReason::BadMode,
        Rejection::Conflict => ServerRejectReason::Conflict,
        Rejection::InternalServerError => ServerRejectReason::InternalServerError,
    };
    let _ = request.reject(RejectReason::Server(reason)).await;
}

/// Removes a claim when the element lets go of it.
pub struct Claim {
    listener: Arc<Listener>,
    _claimed: Claimed<SrtEvent>,
    pub events: mpsc::Receiver<SrtEvent>,
}

impl Claim {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr
    }
}

impl Listener {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Bounds on callers waiting for a decision (defaults: [`Limits::default`]).
    pub fn set_limits(&self, limits: Limits) {
        self.admission.set_limits(limits);
    }

    /// Lets an application decide on every publish on this port.
    pub fn set_authorizer(&self, authorizer: Option<Authorizer>) {
        self.claims.set_authorizer(authorizer);
    }

    /// Claims publishes on `key` (an empty key takes any key no one else claimed).
    pub fn claim(self: &Arc<Self>, key: &str) -> Result<Claim, ListenerError> {
        let (claimed, events) = self.claims.claim(key, None, self.local_addr.port())?;
        Ok(Claim {
            listener: self.clone(),
            _claimed: claimed,
            events,
        })
    }

    /// One caller, from its request to the end of its publish.
    async fn serve(&self, request: ConnectionRequest, slot: Slot) {
        let peer = request.remote();
        let stream_id = request
            .stream_id()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let key = match stream_key(&stream_id) {
            Ok(key) => key,
            Err(e) => {
                tracing::info!("refused SRT caller {peer}: {e}");
                return reject(request, Rejection::from(&e)).await;
            }
        };
        let publish_request = PublishRequest {
            input: InputKind::Srt,
            key: key.clone(),
            peer,
            app: String::new(),
        };
        let decision = tokio::time::timeout(
            self.config.decision_timeout,
            self.claims.decide(&publish_request),
        )
        .await
        .unwrap_or_else(|_| Err(Refusal::timeout()));
        let publish = match decision {
            Ok(publish) => publish,
            Err(refusal) => {
                let rejection = rejection_for(refusal.kind);
                tracing::info!(
                    "refused SRT publish of {} from {peer}: {refusal} (code {})",
                    redact_key(&key),
                    rejection.code()
                );
                return reject(request, rejection).await;
            }
        };
        let reason =
            match tokio::time::timeout(self.config.decision_timeout, request.accept(None)).await {
                Ok(Ok(socket)) => {
                    // A publisher no longer counts against the bounds on waiting callers.
                    drop(slot);
                    tracing::info!("SRT publish of {} from {peer} accepted", redact_key(&key));
                    self.receive(socket, &publish, key, peer).await
                }
                Ok(Err(e)) => format!("the caller {peer} left while being accepted: {e}"),
                Err(_) => format!("the caller {peer} did not complete the handshake"),
            };
        tracing::info!("SRT connection from {peer} ended: {reason}");
        // Every publish handed to an element ends with Ended, also one that
        // failed before its Started. Bounded, as the element may be stuck.
        let ended = publish.sender.send(SrtEvent::Ended { reason });
        let _ = tokio::time::timeout(self.config.idle_timeout, ended).await;
        // Dropping `publish` frees the key for the next publisher.
    }

    /// Hands the caller's messages to the element until either side ends;
    /// returns why it ended.
    async fn receive(
        &self,
        mut socket: SrtSocket,
        publish: &Publish<'_, SrtEvent>,
        key: String,
        peer: SocketAddr,
    ) -> String {
        let sender = &publish.sender;
        if sender.send(SrtEvent::Started { key, peer }).await.is_err() {
            return "the pipeline stopped".into();
        }
        let idle = self.config.idle_timeout;
        let reason = loop {
            let next = tokio::select! {
                next = tokio::time::timeout(idle, socket.next()) => next,
                () = sender.closed() => break "the pipeline stopped taking the stream".to_string(),
            };
            let data = match next {
                Err(_) => break format!("no data from {peer} for {idle:?}"),
                Ok(None) => break "the publisher closed the connection".to_string(),
                Ok(Some(Err(e))) => break format!("connection from {peer} failed: {e}"),
                Ok(Some(Ok((_, data)))) => data,
            };
            // Waiting here leaves messages in SRT's buffer: the socket is read
            // no faster than the pipeline takes them.
            if sender.send(SrtEvent::Data(data)).await.is_err() {
                break "the pipeline stopped".to_string();
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh port each: listeners on port 0 share one in the registry, and
    /// tests running at once must not share an authorizer.
    fn config() -> ListenerConfig {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free port");
        ListenerConfig {
            address: "127.0.0.1".into(),
            port,
            decision_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn setup_errors_say_their_kind() {
        let any = listener(&ListenerConfig {
            port: 0,
            ..config()
        })
        .expect("listener on port 0");
        assert_ne!(any.local_addr().port(), 0, "port 0 picks a free one");
        drop(any);
        let l = listener(&config()).expect("listener");
        let _claim = l.claim("secret-key").expect("first claim");
        match l.claim("secret-key") {
            Err(ListenerError::KeyClaimed(e)) => {
                assert_eq!(e.port, l.local_addr().port());
                assert!(!e.key.contains("secret"), "{e}");
            }
            other => panic!("{:?}", other.err()),
        }
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let busy = ListenerConfig { port, ..config() };
        match listener(&busy) {
            Err(e @ ListenerError::Bind { .. }) => {
                assert!(
                    e.to_string()
                        .starts_with("cannot listen for SRT on 127.0.0.1:"),
                    "{e}"
                )
            }
            other => panic!("{:?}", other.err().map(|e| e.to_string())),
        }
        let nowhere = ListenerConfig {
            address: "not an address".into(),
            port: 0,
            ..config()
        };
        assert!(matches!(
            listener(&nowhere),
            Err(ListenerError::Bind { .. })
        ));
    }

    /// Callers waiting for their decision are bounded per address: one over
    /// the bound is rejected at once while the first still waits.
    #[test]
    fn waiting_callers_are_bounded() {
        let l = listener(&config()).expect("listener");
        let addr = l.local_addr();
        l.set_limits(Limits {
            max_pending: 8,
            max_pending_per_ip: 1,
            ..Limits::default()
        });
        // An application slow to decide.
        l.set_authorizer(Some(Arc::new(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Decision::Reject(Refusal::unknown_key())
            })
        })));
        let runtime = crate::runtime::handle();
        runtime.block_on(async {
            let first = tokio::spawn(SrtSocket::builder().call(addr, Some("slow-key")));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = std::time::Instant::now();
            let second = SrtSocket::builder().call(addr, Some("slow-key")).await;
            assert!(second.is_err(), "a second waiting caller from one address");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "refused at once"
            );
            let first = first.await.expect("task");
            assert!(first.is_err(), "the slow decision refused the first");
        });
    }

    /// srt-tokio's own caller against the listener: a refused key gets its
    /// code before any data, an accepted one delivers Started, the bytes in
    /// order, and Ended when the caller leaves.
    #[test]
    fn callers_are_refused_or_delivered() {
        let l = listener(&config()).expect("listener");
        let addr = l.local_addr();
        let mut claim = l.claim("good-key").expect("claim");
        let runtime = crate::runtime::handle();
        runtime.block_on(async {
            for stream_id in ["bad-key", "#!::r=good-key,m=request", ""] {
                let refused = SrtSocket::builder().call(addr, Some(stream_id)).await;
                assert!(refused.is_err(), "{stream_id:?} was accepted");
            }
            let mut caller = SrtSocket::builder()
                .call(addr, Some("#!::u=me,r=good-key"))
                .await
                .expect("accepted");
            match claim.events.recv().await {
                Some(SrtEvent::Started { key, peer }) => {
                    assert_eq!(key, "good-key");
                    assert_eq!(peer.ip(), addr.ip());
                }
                other => panic!("{other:?}"),
            }
            for i in 0..3u8 {
                caller
                    .send((std::time::Instant::now(), Bytes::from(vec![i; 188])))
                    .await
                    .expect("send");
            }
            for i in 0..3u8 {
                match claim.events.recv().await {
                    Some(SrtEvent::Data(data)) => assert_eq!(data, vec![i; 188]),
                    other => panic!("{other:?}"),
                }
            }
            caller.close().await.expect("close");
            match tokio::time::timeout(Duration::from_secs(10), claim.events.recv()).await {
                Ok(Some(SrtEvent::Ended { reason })) => {
                    assert!(reason.contains("closed"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        });
    }
}
