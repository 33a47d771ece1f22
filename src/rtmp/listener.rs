//! The RTMP(S) listener: one per address and port in a process, shared by every
//! `rtmpingresssrc` on that port, dispatching each publish by stream key.
//!
//! An element *claims* a stream key ([`Listener::claim`]) and receives the
//! publish on that key as a stream of [`StreamEvent`]s. An application (the
//! service) can install an [`Authorizer`] that decides per publish; an accepted
//! connection then waits a few seconds for the element that the application
//! creates at that moment to claim its key.
//!
//! Refusals are RTMP error statuses the publisher sees (`NetStream.Publish.BadName`)
//! followed by a closed socket; nothing else is disturbed. A connection that
//! has not started publishing is bounded in time (one deadline), in replies it
//! leaves unread (a write budget) and in number (per listener and per remote
//! address, see [`Limits`]); beyond a bound it is closed.

use super::admission::{AcceptBackoff, Admission, Limits, Slot};
use super::redact::{redact_key, MAX_STREAM_KEY_LEN};
use super::session::{Output, Session};
use crate::claims::{Claimed, Claims, Publish};
pub use crate::input::{Authorizer, Decision, PublishRequest};
use crate::input::{InputKind, Refusal};
use crate::sync::lock;
use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Status code of a refused publish.
pub const BAD_NAME: &str = "NetStream.Publish.BadName";

/// The status and description a refused publish is answered with. Publishers
/// act on no RTMP status finer than BadName, so every kind gets it; the
/// description, which ffmpeg prints, says why.
pub fn refusal_status(refusal: &Refusal) -> (&'static str, String) {
    (BAD_NAME, refusal.to_string())
}

/// Media events buffered per publish; beyond this the socket is read no faster.
const EVENT_QUEUE: usize = 256;

/// What a claimed publish delivers to its element.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    Started {
        app: String,
        key: String,
        peer: SocketAddr,
    },
    Metadata(StreamMetadata),
    Video {
        timestamp: u32,
        data: Bytes,
    },
    Audio {
        timestamp: u32,
        data: Bytes,
    },
    /// The publish is over; `reason` says why (publisher stopped, connection lost, …).
    Ended {
        reason: String,
    },
}

/// TLS certificate and key (PEM files) for RTMPS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsFiles {
    pub certificate: String,
    pub key: String,
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: String,
    pub port: u16,
    pub tls: Option<TlsFiles>,
    /// Deadline for everything before an accepted publish, counted from the
    /// accepted connection: TLS and RTMP handshakes, commands, the decision.
    pub handshake_timeout: Duration,
    /// Longest silence from a publisher once its publish is accepted.
    pub idle_timeout: Duration,
}

/// A listening socket and its claims.
pub struct Listener {
    local_addr: SocketAddr,
    /// Tells the accept loop to close the socket when the last holder is gone.
    shutdown: Arc<Notify>,
    claims: Arc<Claims<StreamEvent>>,
    admission: Arc<Admission>,
    config: ListenerConfig,
}

/// Why a listener could not be set up or a key claimed.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate or key file could not be read.
    #[error("cannot read TLS {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS files were read but make no usable identity.
    #[error("{0}")]
    Tls(String),
    /// Another element holds the stream key on this port.
    #[error("stream key {key} is already claimed on port {port}")]
    KeyClaimed {
        /// Redacted as in logs.
        key: String,
        port: u16,
    },
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
    let tls = match &config.tls {
        Some(files) => Some(tls_acceptor(files)?),
        None => None,
    };
    let addr = format!("{}:{}", config.address, config.port);
    let runtime = crate::runtime::handle();
    let std_listener = bind_retrying(&addr)?;
    let bind_error = |source| ListenerError::Bind {
        addr: addr.clone(),
        source,
    };
    std_listener.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = std_listener.local_addr().map_err(bind_error)?;
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
        let Ok(socket) = ({
            let _guard = crate::runtime::handle().enter();
            TcpListener::from_std(std_listener)
        }) else {
            return;
        };
        tokio::select! {
            _ = accept_loop(socket, weak, tls) => {}
            _ = shutdown.notified() => {}
        }
    });
    registry.insert(id, Arc::downgrade(&listener));
    Ok(listener)
}

/// Binds `addr`; a listener that was just released may still be closing its
/// socket on the IO runtime, so an address in use is retried for a moment.
fn bind_retrying(addr: &str) -> Result<std::net::TcpListener, ListenerError> {
    retry_in_use(|| std::net::TcpListener::bind(addr)).map_err(|source| ListenerError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// `bind()`, retried for up to a second while its address is in use (a
/// listener on it that was just released closes its socket on the IO runtime).
pub(crate) fn retry_in_use<T>(mut bind: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut attempts = 0;
    loop {
        match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.notify_one();
    }
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_native_tls::TlsAcceptor, ListenerError> {
    let read = |what, path: &String| {
        std::fs::read(path).map_err(|source| ListenerError::TlsFile {
            what,
            path: path.clone(),
            source,
        })
    };
    let cert = read("certificate", &files.certificate)?;
    let key = read("key", &files.key)?;
    let identity = native_tls::Identity::from_pkcs8(&cert, &key).map_err(|e| {
        ListenerError::Tls(format!(
            "unusable TLS certificate or key (PEM, PKCS#8): {e}"
        ))
    })?;
    let acceptor = native_tls::TlsAcceptor::new(identity)
        .map_err(|e| ListenerError::Tls(format!("TLS setup failed: {e}")))?;
    Ok(tokio_native_tls::TlsAcceptor::from(acceptor))
}

async fn accept_loop(
    socket: TcpListener,
    listener: Weak<Listener>,
    tls: Option<tokio_native_tls::TlsAcceptor>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => {
                if let Some(failures) = backoff.succeeded() {
                    tracing::warn!("accepting RTMP connections again after {failures} failures");
                }
                accepted
            }
            Err(e) => {
                // Out of file descriptors (or any other failure): the next
                // accept fails the same way until something closes, so wait.
                let (delay, first) = backoff.failed();
                if first {
                    tracing::warn!("cannot accept RTMP connections: {e}; retrying with backoff");
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        // The listener closes once no element or application holds it.
        let Some(l) = listener.upgrade() else { return };
        let slot = match l.admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!("closed a new connection from {peer}: {why}");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        // One deadline for everything before an accepted publish (TLS, RTMP
        // handshake, commands, the decision): a client trickling a byte now
        // and then never gets under a per-read timeout, but gets under this.
        let deadline = Instant::now() + l.config.handshake_timeout;
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => l.serve(stream, peer, slot, deadline).await,
                        _ => tracing::debug!("RTMPS handshake with {peer} failed"),
                    }
                }
                None => l.serve(stream, peer, slot, deadline).await,
            }
        });
    }
}

/// Removes a claim when the element lets go of it.
pub struct Claim {
    listener: Arc<Listener>,
    _claimed: Claimed<StreamEvent>,
    pub events: mpsc::Receiver<StreamEvent>,
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

    /// Bounds on connections that have not started publishing (defaults:
    /// [`Limits::default`]); they apply to connections accepted from now on.
    pub fn set_limits(&self, limits: Limits) {
        self.admission.set_limits(limits);
    }

    pub fn limits(&self) -> Limits {
        self.admission.limits()
    }

    /// Lets an application decide on every publish on this port.
    pub fn set_authorizer(&self, authorizer: Option<Authorizer>) {
        self.claims.set_authorizer(authorizer);
    }

    /// Claims publishes on `key` (an empty key takes any key no one else claimed),
    /// optionally only on application `app`.
    pub fn claim(self: &Arc<Self>, key: &str, app: Option<&str>) -> Result<Claim, ListenerError> {
        let (claimed, events) = self
            .claims
            .claim(key, app, self.local_addr.port())
            .map_err(|e| ListenerError::KeyClaimed {
                key: e.key,
                port: e.port,
            })?;
        Ok(Claim {
            listener: self.clone(),
            _claimed: claimed,
            events,
        })
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        slot: Slot,
        deadline: Instant,
    ) {
        let mut conn = Connection {
            listener: self,
            peer,
            session: Session::new(),
            publish: None,
            slot: Some(slot),
            deadline,
            written_before_publish: 0,
            write_budget: self.admission.limits().write_budget,
        };
        let reason = match conn.run(&mut stream).await {
            Ok(never) => match never {},
            Err(reason) => reason,
        };
        tracing::info!("RTMP connection from {peer} ended: {reason}");
        if let Some(publish) = conn.publish.take() {
            // Every publish handed to an element ends with Ended, also one that
            // failed before its Started (peer gone while being accepted): the
            // element must not wait for media that will never come. Bounded,
            // as the element may be stuck downstream.
            let ended = publish.sender.send(StreamEvent::Ended { reason });
            let _ = tokio::time::timeout(self.config.idle_timeout, ended).await;
            // Dropping `publish` here frees the key for the next publisher.
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
}

/// Why a connection ended (the `Err` of every step; a connection never ends
/// with success, only with a reason).
type Ended = String;

/// One connection's IO around its sans-IO [`Session`].
struct Connection<'a> {
    listener: &'a Listener,
    peer: SocketAddr,
    session: Session,
    publish: Option<Publish<'a, StreamEvent>>,
    /// Held until the publish is accepted (see [`Admission`]).
    slot: Option<Slot>,
    /// When everything before an accepted publish must be done.
    deadline: Instant,
    written_before_publish: usize,
    write_budget: usize,
}

enum Never {}

impl Connection<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Never, Ended> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read(stream, &mut buf).await?;
            let outputs = self
                .session
                .feed(buf.get(..n).unwrap_or_default())
                .map_err(|e| format!("{e} (from {})", self.peer))?;
            for output in outputs {
                self.handle(stream, output).await?;
            }
        }
    }

    /// The read deadline: the overall one until a publish is accepted, then
    /// the idle timeout per read.
    fn limit(&self) -> Instant {
        if self.session.is_publishing() {
            Instant::now() + self.listener.config.idle_timeout
        } else {
            self.deadline
        }
    }

    async fn read<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        buf: &mut [u8],
    ) -> Result<usize, Ended> {
        let peer = self.peer;
        // An element that stops taking the stream (it gave up waiting for
        // media, or its pipeline stopped) ends the connection at once, also
        // when the publisher sends nothing that would find out.
        let element = self.publish.as_ref().map(|p| &p.sender);
        let element_gone = async {
            match element {
                Some(sender) => sender.closed().await,
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            read = tokio::time::timeout_at(self.limit(), stream.read(buf)) => read,
            () = element_gone => return Err("the pipeline stopped taking the stream".into()),
        };
        match read {
            Err(_) if self.session.is_publishing() => Err(format!(
                "no data from {peer} for {:?}",
                self.listener.config.idle_timeout
            )),
            Err(_) => Err(format!(
                "{peer} did not start publishing within {:?}",
                self.listener.config.handshake_timeout
            )),
            Ok(Err(e)) => Err(format!("connection from {peer} failed: {e}")),
            Ok(Ok(0)) => Err("the publisher closed the connection".to_string()),
            Ok(Ok(n)) => Ok(n),
        }
    }

    /// Writes `bytes` within the read deadline, counting them against the
    /// write budget until the publish is accepted.
    async fn write<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        bytes: &[u8],
    ) -> Result<(), Ended> {
        let peer = self.peer;
        if !self.session.is_publishing() {
            self.written_before_publish += bytes.len();
            if self.written_before_publish > self.write_budget {
                return Err(format!(
                    "{peer} left more than {} bytes of replies unread before publishing",
                    self.write_budget
                ));
            }
        }
        match tokio::time::timeout_at(self.limit(), stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot write to {peer}: {e}")),
            Err(_) => Err(format!("{peer} does not read what the server sends")),
        }
    }

    /// Acts on one thing the session reported.
    async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        output: Output,
    ) -> Result<(), Ended> {
        let event = match output {
            Output::Send(bytes) => return self.write(stream, &bytes).await,
            Output::PublishRequested { app, key } => return self.publish(stream, app, key).await,
            Output::Metadata(m) => StreamEvent::Metadata(m),
            Output::Video { timestamp, data } => StreamEvent::Video { timestamp, data },
            Output::Audio { timestamp, data } => StreamEvent::Audio { timestamp, data },
            Output::PublishFinished => return Err("the publisher stopped publishing".into()),
        };
        let Some(publish) = self.publish.as_ref() else {
            return Ok(());
        };
        // Waiting here slows reading the socket: TCP pushes back on the publisher.
        if publish.sender.send(event).await.is_err() {
            return Err("the pipeline stopped".into());
        }
        Ok(())
    }

    async fn publish<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        app: String,
        key: String,
    ) -> Result<(), Ended> {
        let peer = self.peer;
        let decision = if key.len() > MAX_STREAM_KEY_LEN {
            // No ingress can have it: refused for its form, before any lookup.
            Err(Refusal::forbidden("stream key too long"))
        } else {
            let request = PublishRequest {
                input: InputKind::Rtmp,
                key: key.clone(),
                peer,
                app: app.clone(),
            };
            tokio::time::timeout_at(self.deadline, self.listener.claims.decide(&request))
                .await
                .unwrap_or_else(|_| Err(Refusal::timeout()))
        };
        let publish = match decision {
            Ok(publish) => publish,
            Err(refusal) => {
                tracing::info!(
                    "refused publish of {} from {peer}: {refusal}",
                    redact_key(&key)
                );
                // The reason goes to the publisher; it never contains the key.
                let (status, description) = refusal_status(&refusal);
                let reply = self
                    .session
                    .reject_publish(status, &description)
                    .map_err(|e| e.to_string())?;
                for o in reply {
                    if let Output::Send(bytes) = o {
                        let write = stream.write_all(&bytes);
                        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.flush()).await;
                return Err(format!("publish refused: {refusal}"));
            }
        };
        // From here on the element is told how this publish ends (see serve).
        self.publish = Some(publish);
        for o in self.session.accept_publish().map_err(|e| e.to_string())? {
            if let Output::Send(bytes) = o {
                self.write(stream, &bytes).await?;
            }
        }
        // A publisher no longer counts against the bounds on waiting clients.
        self.slot = None;
        tracing::info!("publish of {} from {peer} accepted", redact_key(&key));
        let started = StreamEvent::Started { app, key, peer };
        if let Some(publish) = self.publish.as_ref() {
            if publish.sender.send(started).await.is_err() {
                return Err("the pipeline stopped".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16, tls: Option<TlsFiles>) -> ListenerConfig {
        ListenerConfig {
            address: "127.0.0.1".into(),
            port,
            tls,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn every_refusal_is_bad_name_with_its_reason() {
        use crate::input::RefusalKind;
        let kinds = [
            RefusalKind::UnknownKey,
            RefusalKind::Busy,
            RefusalKind::Forbidden,
            RefusalKind::Timeout,
            RefusalKind::Internal,
        ];
        for kind in kinds {
            let refusal = Refusal::new(kind, "why");
            assert_eq!(refusal_status(&refusal), (BAD_NAME, "why".to_string()));
        }
        let full = Refusal::node_unavailable("at capacity");
        assert_eq!(
            refusal_status(&full),
            (
                BAD_NAME,
                "this node cannot take the stream now: at capacity".to_string()
            )
        );
    }

    #[test]
    fn setup_errors_say_their_kind() {
        let l = listener(&config(0, None)).expect("listener");
        let _claim = l.claim("secret-key", None).expect("first claim");
        match l.claim("secret-key", None) {
            Err(ListenerError::KeyClaimed { key, port }) => {
                assert_eq!(port, l.local_addr().port());
                assert!(!key.contains("secret"), "{key}");
            }
            other => panic!("{:?}", other.err()),
        }
        // Port 0's listener is shared while held: let it go before asking for TLS.
        drop((_claim, l));

        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        // A foreign socket on the port: binding fails (after the short retry).
        match listener(&config(port, None)) {
            Err(e @ ListenerError::Bind { .. }) => {
                assert!(
                    e.to_string().starts_with("cannot listen on 127.0.0.1:"),
                    "{e}"
                )
            }
            other => panic!("{:?}", other.err()),
        }

        let missing = TlsFiles {
            certificate: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        match listener(&config(0, Some(missing))) {
            Err(e @ ListenerError::TlsFile { .. }) => assert!(
                e.to_string()
                    .starts_with("cannot read TLS certificate /nonexistent/cert.pem"),
                "{e}"
            ),
            other => panic!("{:?}", other.err()),
        }
    }
}
