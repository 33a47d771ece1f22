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
//! followed by a closed socket; nothing else is disturbed.

use super::session::{Output, Session};
use crate::sync::lock;
use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// Status code of a refused publish.
pub const BAD_NAME: &str = "NetStream.Publish.BadName";
/// How long an accepted publish waits for its element.
const CLAIM_WAIT: Duration = Duration::from_secs(5);
/// Media events buffered per publish; beyond this the socket is read no faster.
const EVENT_QUEUE: usize = 256;

/// A publish waiting for a decision.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub app: String,
    pub key: String,
    pub peer: SocketAddr,
}

/// An application's answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Refused; the text goes to the publisher in the error status.
    Reject(String),
}

pub type Authorizer =
    Arc<dyn Fn(PublishRequest) -> Pin<Box<dyn Future<Output = Decision> + Send>> + Send + Sync>;

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
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Default)]
struct Claims {
    /// Stream key -> the element's channel and the application it is limited to.
    by_key: HashMap<String, (mpsc::Sender<StreamEvent>, Option<String>)>,
    /// Keys being published right now (a second publisher is refused).
    active: HashSet<String>,
}

/// A listening socket and its claims.
pub struct Listener {
    local_addr: SocketAddr,
    /// Tells the accept loop to close the socket when the last holder is gone.
    shutdown: Arc<Notify>,
    claims: Mutex<Claims>,
    claimed: Notify,
    authorizer: Mutex<Option<Authorizer>>,
    config: ListenerConfig,
}

type Registry = Mutex<HashMap<(String, u16), Weak<Listener>>>;
static LISTENERS: LazyLock<Registry> = LazyLock::new(Default::default);

/// The listener for `config`'s address and port, bound on first use and kept
/// while someone holds it.
pub fn listener(config: &ListenerConfig) -> Result<Arc<Listener>, String> {
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
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local_addr = std_listener.local_addr().map_err(|e| e.to_string())?;
    let shutdown = Arc::new(Notify::new());
    let listener = Arc::new(Listener {
        local_addr,
        shutdown: shutdown.clone(),
        claims: Mutex::default(),
        claimed: Notify::new(),
        authorizer: Mutex::default(),
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
fn bind_retrying(addr: &str) -> Result<std::net::TcpListener, String> {
    let mut attempts = 0;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown.notify_one();
    }
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_native_tls::TlsAcceptor, String> {
    let cert = std::fs::read(&files.certificate)
        .map_err(|e| format!("cannot read TLS certificate {}: {e}", files.certificate))?;
    let key =
        std::fs::read(&files.key).map_err(|e| format!("cannot read TLS key {}: {e}", files.key))?;
    let identity = native_tls::Identity::from_pkcs8(&cert, &key)
        .map_err(|e| format!("unusable TLS certificate or key (PEM, PKCS#8): {e}"))?;
    let acceptor =
        native_tls::TlsAcceptor::new(identity).map_err(|e| format!("TLS setup failed: {e}"))?;
    Ok(tokio_native_tls::TlsAcceptor::from(acceptor))
}

async fn accept_loop(
    socket: TcpListener,
    listener: Weak<Listener>,
    tls: Option<tokio_native_tls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, peer)) = socket.accept().await else {
            continue;
        };
        // The listener closes once no element or application holds it.
        let Some(l) = listener.upgrade() else { return };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let handshake_timeout = l.config.handshake_timeout;
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => l.serve(stream, peer).await,
                        _ => tracing::debug!("RTMPS handshake with {peer} failed"),
                    }
                }
                None => l.serve(stream, peer).await,
            }
        });
    }
}

/// Removes a claim when the element lets go of it.
pub struct Claim {
    listener: Arc<Listener>,
    key: String,
    pub events: mpsc::Receiver<StreamEvent>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.listener.claims).by_key.remove(&self.key);
    }
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

    /// Lets an application decide on every publish on this port.
    pub fn set_authorizer(&self, authorizer: Option<Authorizer>) {
        *lock(&self.authorizer) = authorizer;
    }

    /// Claims publishes on `key` (an empty key takes any key no one else claimed),
    /// optionally only on application `app`.
    pub fn claim(self: &Arc<Self>, key: &str, app: Option<&str>) -> Result<Claim, String> {
        let mut claims = lock(&self.claims);
        if claims.by_key.contains_key(key) {
            return Err(format!(
                "stream key {key:?} is already claimed on port {}",
                self.local_addr.port()
            ));
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        claims
            .by_key
            .insert(key.to_string(), (tx, app.map(str::to_string)));
        drop(claims);
        self.claimed.notify_waiters();
        Ok(Claim {
            listener: self.clone(),
            key: key.to_string(),
            events: rx,
        })
    }

    /// The claim for `key`, waiting for one to appear when `wait` is set.
    async fn take_claim(
        &self,
        request: &PublishRequest,
        wait: bool,
    ) -> Option<mpsc::Sender<StreamEvent>> {
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let fits = |(sender, app): &(mpsc::Sender<StreamEvent>, Option<String>)| {
            !sender.is_closed() && app.as_ref().is_none_or(|a| *a == request.app)
        };
        loop {
            let notified = self.claimed.notified();
            {
                let claims = lock(&self.claims);
                let claim = claims
                    .by_key
                    .get(&request.key)
                    .filter(|c| fits(c))
                    .or_else(|| claims.by_key.get("").filter(|c| fits(c)));
                if let Some((sender, _)) = claim {
                    return Some(sender.clone());
                }
            }
            if !wait || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    async fn decide(&self, request: &PublishRequest) -> Result<mpsc::Sender<StreamEvent>, String> {
        if lock(&self.claims).active.contains(&request.key) {
            return Err("this stream key is already publishing".into());
        }
        let authorizer = lock(&self.authorizer).clone();
        let waits = authorizer.is_some();
        if let Some(authorizer) = authorizer {
            if let Decision::Reject(reason) = authorizer(request.clone()).await {
                return Err(reason);
            }
        }
        let sender = self
            .take_claim(request, waits)
            .await
            .ok_or_else(|| "unknown stream key".to_string())?;
        let mut claims = lock(&self.claims);
        if !claims.active.insert(request.key.clone()) {
            return Err("this stream key is already publishing".into());
        }
        Ok(sender)
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, peer: SocketAddr) {
        let mut session = Session::new();
        let mut publish: Option<(String, mpsc::Sender<StreamEvent>)> = None;
        let mut buf = vec![0u8; 64 * 1024];
        let reason = loop {
            let timeout = if session.is_publishing() {
                self.config.idle_timeout
            } else {
                self.config.handshake_timeout
            };
            let n = match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                Err(_) => break format!("no data from {peer} for {timeout:?}"),
                Ok(Err(e)) => break format!("connection from {peer} failed: {e}"),
                Ok(Ok(0)) => break "the publisher closed the connection".to_string(),
                Ok(Ok(n)) => n,
            };
            let outputs = match session.feed(buf.get(..n).unwrap_or_default()) {
                Ok(outputs) => outputs,
                Err(e) => break format!("{e} (from {peer})"),
            };
            match self
                .handle_outputs(&mut stream, &mut session, outputs, peer, &mut publish)
                .await
            {
                Ok(None) => {}
                Ok(Some(reason)) | Err(reason) => break reason,
            }
        };
        tracing::info!("RTMP connection from {peer} ended: {reason}");
        if let Some((key, sender)) = publish {
            lock(&self.claims).active.remove(&key);
            let _ = sender.send(StreamEvent::Ended { reason }).await;
        }
        let _ = stream.shutdown().await;
    }

    /// Acts on what the session reported; `Some(reason)` ends the connection.
    async fn handle_outputs<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        session: &mut Session,
        outputs: Vec<Output>,
        peer: SocketAddr,
        publish: &mut Option<(String, mpsc::Sender<StreamEvent>)>,
    ) -> Result<Option<String>, String> {
        for output in outputs {
            let event = match output {
                Output::Send(bytes) => {
                    stream
                        .write_all(&bytes)
                        .await
                        .map_err(|e| format!("cannot write to {peer}: {e}"))?;
                    continue;
                }
                Output::PublishRequested { app, key } => {
                    let request = PublishRequest {
                        app: app.clone(),
                        key: key.clone(),
                        peer,
                    };
                    match self.decide(&request).await {
                        Ok(sender) => {
                            for o in session.accept_publish().map_err(|e| e.to_string())? {
                                if let Output::Send(bytes) = o {
                                    stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
                                }
                            }
                            *publish = Some((key.clone(), sender));
                            StreamEvent::Started { app, key, peer }
                        }
                        Err(reason) => {
                            tracing::info!("refused publish of {key:?} from {peer}: {reason}");
                            for o in session
                                .reject_publish(BAD_NAME, &reason)
                                .map_err(|e| e.to_string())?
                            {
                                if let Output::Send(bytes) = o {
                                    let _ = stream.write_all(&bytes).await;
                                }
                            }
                            let _ = stream.flush().await;
                            return Ok(Some(format!("publish refused: {reason}")));
                        }
                    }
                }
                Output::Metadata(m) => StreamEvent::Metadata(m),
                Output::Video { timestamp, data } => StreamEvent::Video { timestamp, data },
                Output::Audio { timestamp, data } => StreamEvent::Audio { timestamp, data },
                Output::PublishFinished => {
                    return Ok(Some("the publisher stopped publishing".into()))
                }
            };
            let Some((_, sender)) = publish.as_ref() else {
                continue;
            };
            // Waiting here slows reading the socket: TCP pushes back on the publisher.
            if sender.send(event).await.is_err() {
                return Ok(Some("the pipeline stopped".into()));
            }
        }
        Ok(None)
    }
}
