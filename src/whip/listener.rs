//! The WHIP listener: one per address and port in a process, shared by every
//! `whipingresssrc` on it, dispatching each offer by its stream key.
//!
//! HTTP (RFC 9725):
//! - `POST /w/{key}` (or `POST /w` with `Authorization: Bearer {key}`, what
//!   OBS sends), `Content-Type: application/sdp`, the SDP offer as body:
//!   the key is decided on first (the [`Claims`] RTMP and SRT use: a key
//!   publishing already, the application's [`Authorizer`], the element's
//!   claim), before any ICE or DTLS; then `201 Created` with the SDP answer
//!   and `Location: /w/session/{id}`. Refusals (see [`refusal_status`]): 404
//!   unknown key, 409 busy, 503 this node cannot take it now (full, shutting
//!   down, store out of reach) or no decision in time, 403 a refusal of
//!   this ingress (disabled, no room, another input type), 500 a stream
//!   that could not be started, 415 not `application/sdp`, 400
//!   an SDP that cannot be answered, 406 an offer whose video or audio has no
//!   codec the room takes (the text names what was offered; decided before
//!   the key, so nothing starts).
//! - `DELETE /w/session/{id}` ends the session (200; 404 when unknown).
//! - `PATCH` (trickle ICE, ICE restart) answers 405: the server is ICE-lite
//!   with its one host candidate in the answer, and the client's candidates
//!   are learnt from its checks (peer-reflexive), so nothing needs trickling.
//!
//! WebRTC: str0m as an ICE-lite answerer on a UDP socket of its own per
//! session, bound on the address the client's HTTP request reached (see
//! [`super::session`]).

use super::offer::{self, Offered};
use super::session::Session;
use crate::claims::{Claimed, Claims};
pub use crate::input::{Authorizer, Decision, PublishRequest};
use crate::input::{InputKind, Refusal, RefusalKind};
use crate::media_socket::MediaSocket;
use crate::rtmp::redact::redact_key;
use crate::sync::lock;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Router};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};
use tokio::sync::{mpsc, oneshot};

/// Frames buffered per session (about 2 s of 30 fps video and 50 fps audio);
/// beyond this frames are dropped (it is UDP media).
const EVENT_QUEUE: usize = 256;
/// The largest SDP offer taken.
pub const MAX_OFFER: usize = 64 * 1024;
/// From the offer to the decision on its key.
pub const DECISION_TIMEOUT: Duration = Duration::from_secs(10);
/// Where sessions live under the listener's path.
const SESSION_PATH: &str = "/w/session";

/// The kind of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Video,
    Audio,
}

/// The video codecs taken as they are (Opus for audio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Vp8,
}

/// One depacketized frame (an H.264 access unit in Annex B, a VP8 frame, an
/// Opus packet).
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: MediaKind,
    /// `None` for audio.
    pub codec: Option<VideoCodec>,
    /// The simulcast layer's rid, if the client sends simulcast.
    pub rid: Option<String>,
    pub data: Arc<[u8]>,
    /// RTP time, unwrapped, at `clock_rate`.
    pub rtp_time: u64,
    pub clock_rate: u32,
    pub keyframe: bool,
    /// False after lost packets (a keyframe is worth asking for).
    pub contiguous: bool,
    pub arrival: Instant,
}

/// What the element asks of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A keyframe (PLI) on the layer `rid`, or the only one.
    RequestKeyframe { rid: Option<String> },
}

/// What a claimed publish delivers to its element.
#[derive(Debug)]
pub enum WhipEvent {
    Started {
        key: String,
        peer: SocketAddr,
        /// Keyframe requests to the client.
        control: mpsc::UnboundedSender<Control>,
        /// What the offer sends: video (with its simulcast rids) and audio.
        offered: Offered,
    },
    Frame(Frame),
    /// The session is over; `reason` says why.
    Ended {
        reason: String,
    },
}

/// Why a listener could not be set up or a key claimed.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot listen for WHIP on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    KeyClaimed(#[from] crate::claims::KeyClaimed),
}

/// Who sent an HTTP request and where it arrived; set per connection by the
/// HTTP server ([`crate::supervisor::serve`]).
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// A WHIP endpoint's claims and live sessions.
pub struct Listener {
    local_addr: SocketAddr,
    claims: Arc<Claims<WhipEvent>>,
    /// Session resource id -> how to end it.
    resources: Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// The listener's own HTTP server (none when mounted in another's).
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

type Registry = Mutex<HashMap<(String, u16), Weak<Listener>>>;
static LISTENERS: LazyLock<Registry> = LazyLock::new(Default::default);

/// The listener on `address:port`, with its own HTTP server bound on first
/// use, or the one an application mounted there ([`mount`]).
pub fn listener(address: &str, port: u16) -> Result<Arc<Listener>, ListenerError> {
    let mut registry = lock(&LISTENERS);
    let id = (address.to_string(), port);
    if let Some(existing) = registry.get(&id).and_then(Weak::upgrade) {
        return Ok(existing);
    }
    let addr = format!("{address}:{port}");
    let bind_error = |source| ListenerError::Bind {
        addr: addr.clone(),
        source,
    };
    let socket = crate::rtmp::listener::retry_in_use(|| std::net::TcpListener::bind(&addr))
        .map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = socket.local_addr().map_err(bind_error)?;
    let runtime = crate::runtime::handle();
    let tcp = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(socket).map_err(bind_error)?
    };
    let listener = Arc::new_cyclic(|weak: &Weak<Listener>| {
        let weak = weak.clone();
        // The router holds the listener only while a request runs.
        let server = runtime.spawn(crate::supervisor::serve::serve(tcp, routes(weak)));
        Listener {
            local_addr,
            claims: Arc::new(Claims::new(EVENT_QUEUE)),
            resources: Mutex::default(),
            server: Some(server),
        }
    });
    registry.insert(id, Arc::downgrade(&listener));
    Ok(listener)
}

/// A listener for `address:port` whose HTTP an application serves itself
/// (the service, on its API port, through [`router`]); elements on that
/// address and port find it.
pub fn mount(address: &str, local_addr: SocketAddr) -> Arc<Listener> {
    let listener = Arc::new(Listener {
        local_addr,
        claims: Arc::new(Claims::new(EVENT_QUEUE)),
        resources: Mutex::default(),
        server: None,
    });
    lock(&LISTENERS).insert(
        (address.to_string(), local_addr.port()),
        Arc::downgrade(&listener),
    );
    listener
}

/// The WHIP routes, for a listener's own server or an application's.
pub fn router(listener: &Arc<Listener>) -> Router {
    routes(Arc::downgrade(listener))
}

fn routes(state: Weak<Listener>) -> Router {
    Router::new()
        .route("/w", post(offer_bearer))
        .route("/w/{key}", post(offer_path))
        .route(
            "/w/session/{id}",
            delete(end_session).patch(not_allowed).post(not_allowed),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER))
        .with_state(state)
}

/// Removes a claim when the element lets go of it.
pub struct Claim {
    listener: Arc<Listener>,
    _claimed: Claimed<WhipEvent>,
    pub events: mpsc::Receiver<WhipEvent>,
}

impl Claim {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr
    }
}

type ListenerRef = State<Weak<Listener>>;

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn offer_path(
    State(listener): ListenerRef,
    Path(key): Path<String>,
    connection: Option<Extension<Connection>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    offer(listener, key, connection.map(|c| c.0), &headers, body).await
}

async fn offer_bearer(
    State(listener): ListenerRef,
    connection: Option<Extension<Connection>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    if key.is_empty() {
        return text(
            StatusCode::UNAUTHORIZED,
            "a stream key is needed: POST to /w/{stream_key}, or a Bearer token",
        );
    }
    offer(listener, key, connection.map(|c| c.0), &headers, body).await
}

async fn offer(
    listener: Weak<Listener>,
    key: String,
    connection: Option<Connection>,
    headers: &HeaderMap,
    body: String,
) -> Response {
    let Some(listener) = listener.upgrade() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the WHIP listener is closing",
        );
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/sdp") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be Content-Type: application/sdp",
        );
    }
    let offer = match SdpOffer::from_sdp_string(&body) {
        Ok(offer) => offer,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("not an SDP offer: {e}")),
    };
    let Some(connection) = connection else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "no connection details");
    };
    let (reply, answered) = oneshot::channel();
    tokio::spawn(
        listener
            .clone()
            .session(key, offer, body, connection, reply),
    );
    match answered.await {
        Ok(Ok((answer, id))) => (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_string()),
                (header::LOCATION, format!("{SESSION_PATH}/{id}")),
            ],
            answer,
        )
            .into_response(),
        Ok(Err((status, reason))) => text(status, reason),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the session ended early"),
    }
}

async fn end_session(State(listener): ListenerRef, Path(id): Path<String>) -> Response {
    let Some(listener) = listener.upgrade() else {
        return text(StatusCode::NOT_FOUND, "no such session");
    };
    let ended = lock(&listener.resources).remove(&id);
    match ended {
        Some(end) => {
            let _ = end.send(());
            StatusCode::OK.into_response()
        }
        None => text(StatusCode::NOT_FOUND, "no such session"),
    }
}

/// Trickle ICE and ICE restarts are not offered (RFC 9725 allows 405).
async fn not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "DELETE")],
        "trickle ICE and ICE restarts are not supported: the server is ICE-lite",
    )
        .into_response()
}

/// The HTTP status of a refusal. 503 tells a client to try again later or
/// elsewhere; 403 that this ingress will not take it; 500 that the server
/// failed to start a stream it had accepted, which says nothing against the
/// client's request.
pub fn refusal_status(kind: RefusalKind) -> StatusCode {
    match kind {
        RefusalKind::UnknownKey => StatusCode::NOT_FOUND,
        RefusalKind::Busy => StatusCode::CONFLICT,
        RefusalKind::NodeUnavailable | RefusalKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        RefusalKind::Forbidden => StatusCode::FORBIDDEN,
        RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

type Answered = Result<(String, String), (StatusCode, String)>;

impl Listener {
    /// The HTTP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Lets an application decide on every publish on this listener.
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

    /// One offer, from the decision to the session's end; the answer (or the
    /// refusal) goes to `reply` as soon as it is known.
    async fn session(
        self: Arc<Self>,
        key: String,
        offer: SdpOffer,
        offer_text: String,
        connection: Connection,
        reply: oneshot::Sender<Answered>,
    ) {
        let peer = connection.peer;
        // The offer is answered first: one the room cannot carry is refused
        // before the key is decided on, so no pipeline starts for it.
        let (rtc, socket, local, sdp) =
            match answer(offer, &offer_text, connection.local.ip()).await {
                Ok(answered) => answered,
                Err((status, reason)) => {
                    tracing::info!("WHIP offer from {peer} refused: {reason}");
                    let _ = reply.send(Err((status, reason)));
                    return;
                }
            };
        let offered = offer::offered(&offer_text);
        let request = PublishRequest {
            input: InputKind::Whip,
            key: key.clone(),
            peer,
            app: String::new(),
        };
        let decision = tokio::time::timeout(DECISION_TIMEOUT, self.claims.decide(&request))
            .await
            .unwrap_or_else(|_| Err(Refusal::timeout()));
        let publish = match decision {
            Ok(publish) => publish,
            Err(refusal) => {
                tracing::info!(
                    "refused WHIP publish of {} from {peer}: {refusal}",
                    redact_key(&key)
                );
                let status = refusal_status(refusal.kind);
                let _ = reply.send(Err((status, refusal.to_string())));
                return;
            }
        };
        let id = crate::supervisor::ingress::new_id("");
        let (delete, deleted) = oneshot::channel();
        lock(&self.resources).insert(id.clone(), delete);
        let (control, control_rx) = mpsc::unbounded_channel();
        let started = WhipEvent::Started {
            key: key.clone(),
            peer,
            control,
            offered,
        };
        let reason = if publish.sender.send(started).await.is_err() {
            let reason = "the element stopped".to_string();
            let _ = reply.send(Err((StatusCode::SERVICE_UNAVAILABLE, reason.clone())));
            reason
        } else {
            tracing::info!(
                "WHIP publish of {} from {peer} accepted, media on {local}",
                redact_key(&key)
            );
            let _ = reply.send(Ok((sdp, id.clone())));
            Session {
                rtc,
                socket,
                local,
                events: publish.sender.clone(),
                control: control_rx,
                deleted,
            }
            .run()
            .await
        };
        lock(&self.resources).remove(&id);
        tracing::info!("WHIP session from {peer} ended: {reason}");
        // Every publish handed to an element ends with Ended. Bounded, as the
        // element may be stuck.
        let ended = publish.sender.send(WhipEvent::Ended { reason });
        let _ = tokio::time::timeout(Duration::from_secs(5), ended).await;
        // Dropping `publish` frees the key for the next publisher.
    }
}

/// The H.264 profiles taken (profile-level-id at level 3.1; str0m matches
/// the profile and lets the level differ): what livekitsink publishes and
/// LiveKit forwards, constrained baseline, main and high. Plain baseline
/// (42 00, which may use FMO/ASO) is not among them. (payload type, its
/// retransmission's, packetization mode 1, profile-level-id)
const H264_PROFILES: [(u8, u8, bool, u32); 6] = [
    (108, 109, true, 0x42e01f),
    (124, 120, false, 0x42e01f),
    (123, 119, true, 0x4d001f),
    (35, 36, false, 0x4d001f),
    (114, 115, true, 0x64001f),
    (116, 117, false, 0x64001f),
];

/// str0m as an ICE-lite answerer on a fresh UDP socket on `ip`, with the
/// codecs a LiveKit room takes as they are (Opus, VP8, H.264 in the
/// profiles above). An offer whose video or audio finds none of them is
/// refused (406), naming what it offered.
async fn answer(
    offer: SdpOffer,
    offer_text: &str,
    ip: IpAddr,
) -> Result<(Rtc, MediaSocket, SocketAddr, String), (StatusCode, String)> {
    crate::livekit::session::install_crypto();
    let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    let socket = MediaSocket::bind(SocketAddr::new(ip, 0))
        .map_err(|e| failed(format!("cannot open a UDP socket on {ip}: {e}")))?;
    let local = socket
        .local_addr()
        .map_err(|e| failed(format!("UDP socket has no address: {e}")))?;
    let mut config = Rtc::builder()
        .set_ice_lite(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true);
    for (pt, rtx, mode1, plid) in H264_PROFILES {
        config
            .codec_config()
            .add_h264(pt.into(), Some(rtx.into()), mode1, plid);
    }
    let mut rtc = config.build(Instant::now());
    let candidate = Candidate::host(local, "udp")
        .map_err(|e| failed(format!("cannot use {local} as an ICE candidate: {e}")))?;
    rtc.add_local_candidate(candidate);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot answer the offer: {e}"),
            )
        })?
        .to_sdp_string();
    if let Some(reason) = offer::refused(offer_text, &answer) {
        return Err((StatusCode::NOT_ACCEPTABLE, reason));
    }
    Ok((rtc, socket, local, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_get_their_status() {
        let cases = [
            (RefusalKind::UnknownKey, StatusCode::NOT_FOUND),
            (RefusalKind::Busy, StatusCode::CONFLICT),
            (RefusalKind::Forbidden, StatusCode::FORBIDDEN),
            (
                RefusalKind::NodeUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (RefusalKind::Timeout, StatusCode::SERVICE_UNAVAILABLE),
            (RefusalKind::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (kind, status) in cases {
            assert_eq!(refusal_status(kind), status, "{kind:?}");
        }
    }

    /// An offer as pion writes it: one video m-line of `video` (rtpmap and
    /// fmtp lines) with simulcast rids q, h, f, and Opus.
    fn offer(video: &str) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             a=fingerprint:sha-256 68:85:B2:0C:F7:D3:89:ED:60:21:D7:66:93:F5:7F:DA:7B:B6:F7:5D:5D:92:ED:6A:3B:67:56:66:3A:AC:3E:57\r\n\
             a=group:BUNDLE 0 1\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\na=mid:0\r\n\
             a=ice-ufrag:RJBkKQLpjYvewGvL\r\na=ice-pwd:mgCrnCIKjXkLykXphghWhYDqNBzzvIdE\r\n\
             a=rtcp-mux\r\n{video}a=rtcp-fb:102 nack pli\r\n\
             a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n\
             a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\na=sendonly\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\na=mid:1\r\n\
             a=ice-ufrag:RJBkKQLpjYvewGvL\r\na=ice-pwd:mgCrnCIKjXkLykXphghWhYDqNBzzvIdE\r\n\
             a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=sendonly\r\n"
        )
    }

    fn answered(video: &str) -> Result<String, (StatusCode, String)> {
        let text = offer(video);
        let sdp = SdpOffer::from_sdp_string(&text).expect("an SDP offer");
        crate::runtime::handle()
            .block_on(answer(sdp, &text, "127.0.0.1".parse().unwrap()))
            .map(|(_, _, _, answer)| answer)
    }

    #[test]
    fn simulcast_h264_and_vp8_are_answered_with_their_rids() {
        for video in [
            "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n",
            "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=4d0032\r\n",
            "a=rtpmap:102 VP8/90000\r\n",
        ] {
            let answer = answered(video).unwrap_or_else(|e| panic!("{video}: {e:?}"));
            assert!(answer.contains("a=simulcast:recv q;h;f"), "{answer}");
            assert_eq!(offer::offered(&offer(video)).rids, ["q", "h", "f"]);
        }
    }

    #[test]
    fn video_the_room_cannot_carry_is_refused_naming_it() {
        for (video, named) in [
            ("a=rtpmap:102 H265/90000\r\n", "offered H265;"),
            ("a=rtpmap:102 AV1/90000\r\n", "offered AV1;"),
            (
                "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42001f\r\n",
                "offered H264 (profile-level-id 42001f);",
            ),
            (
                // Constrained high: livekitsink does not publish it either.
                "a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=640c1f\r\n",
                "offered H264 (profile-level-id 640c1f);",
            ),
        ] {
            let (status, reason) = answered(video).expect_err(video);
            assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{reason}");
            assert!(
                reason.starts_with("no video codec the room takes: ") && reason.contains(named),
                "{reason}"
            );
        }
    }
}
