//! The `livekit.Ingress` Twirp API, plus health and Prometheus metrics.
//!
//! Twirp: `POST /twirp/livekit.Ingress/<Method>` with a protobuf
//! (`application/protobuf`) or proto3-JSON (`application/json`) body, answered in
//! the same encoding; errors as Twirp's JSON (`{"code": …, "msg": …}`). Callers
//! authenticate with a LiveKit access token whose video grant has `ingressAdmin`.

use super::ingress::{self, ApiError};
use super::serve::{BODY_TIMEOUT, MAX_BODY};
use super::sessions::Sessions;
use super::store::{self, Store, StoreError};
use super::webhooks;
use crate::livekit::stats::{SendStats, StreamStats};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use livekit_api::access_token::{AccessTokenError, TokenVerifier};
use livekit_protocol as proto;
use prost::Message;
use proto::ingress_state::Status;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Api {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<Sessions>,
    /// The API key a caller's token must be issued by (its `iss`).
    pub api_key: String,
    pub verifier: TokenVerifier,
    pub rtmp_base_url: String,
}

impl Api {
    pub fn new(
        store: Arc<dyn Store>,
        sessions: Arc<Sessions>,
        config: &super::config::Config,
    ) -> Api {
        Api {
            store,
            sessions,
            api_key: config.api_key.clone(),
            verifier: TokenVerifier::with_api_key(&config.api_key, &config.api_secret),
            rtmp_base_url: config.rtmp_base_url.clone(),
        }
    }
}

/// Twirp and health; `/metrics` too unless it has a port of its own
/// ([`metrics_router`]).
pub fn router(api: Arc<Api>, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/twirp/livekit.Ingress/{method}", post(twirp))
        .route("/health", get(health));
    let router = if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router.with_state(api)
}

/// `/metrics` alone, for its own port (`prometheus_port`).
pub fn metrics_router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(api)
}

/// How a request's body (and so its answer) is encoded.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn from_content_type(content_type: &str) -> Result<Encoding, ApiError> {
        if content_type.starts_with("application/json") {
            Ok(Encoding::Json)
        } else if content_type.starts_with("application/protobuf")
            || content_type.starts_with("application/x-protobuf")
        {
            Ok(Encoding::Protobuf)
        } else {
            Err(ApiError::InvalidArgument(format!(
                "unsupported content type {content_type:?} (use application/protobuf or application/json)"
            )))
        }
    }
}

/// A Twirp error body with `status`; `close` ends the connection after it
/// (the request's body was not read to its end).
fn twirp_error(status: StatusCode, code: &str, msg: &str, close: bool) -> Response {
    let body = serde_json::json!({ "code": code, "msg": msg });
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if close {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

fn error_response(err: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    twirp_error(status, err.code(), &err.to_string(), false)
}

fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<T, ApiError> {
    match encoding {
        Encoding::Protobuf => T::decode(body)
            .map_err(|e| ApiError::InvalidArgument(format!("malformed protobuf request: {e}"))),
        Encoding::Json if body.is_empty() => Ok(T::default()),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidArgument(format!("malformed JSON request: {e}"))),
    }
}

/// An answer's body in the request's encoding.
pub fn encode_body<T: Message + Serialize>(
    encoding: Encoding,
    value: &T,
) -> Result<Vec<u8>, ApiError> {
    match encoding {
        Encoding::Protobuf => Ok(value.encode_to_vec()),
        Encoding::Json => serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string())),
    }
}

fn encode<T: Message + Serialize>(encoding: Encoding, value: &T) -> Response {
    let content_type = match encoding {
        Encoding::Protobuf => "application/protobuf",
        Encoding::Json => "application/json",
    };
    match encode_body(encoding, value) {
        Ok(body) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(e) => error_response(&e),
    }
}

/// A request of one of the API's methods, decoded from its body.
#[derive(Debug)]
pub enum Call {
    Create(proto::CreateIngressRequest),
    Update(proto::UpdateIngressRequest),
    List(proto::ListIngressRequest),
    Delete(proto::DeleteIngressRequest),
}

impl Call {
    /// Decodes `body` as `method`'s request. Pure, so the fuzz target
    /// (`fuzz/fuzz_targets/api_requests.rs`) runs exactly what the API runs.
    pub fn decode(method: &str, encoding: Encoding, body: &[u8]) -> Result<Call, ApiError> {
        Ok(match method {
            "CreateIngress" => Call::Create(decode(encoding, body)?),
            "UpdateIngress" => Call::Update(decode(encoding, body)?),
            "ListIngress" => Call::List(decode(encoding, body)?),
            "DeleteIngress" => Call::Delete(decode(encoding, body)?),
            other => {
                return Err(ApiError::NotFound(format!(
                    "no method livekit.Ingress/{other}"
                )))
            }
        })
    }
}

/// What the API checks of a request before it touches the store, and the
/// answer body it would then encode; `current` stands for the stored ingress
/// an update applies to. Pure: the fuzz target's whole path after [`Call::decode`].
pub fn check(
    call: Call,
    encoding: Encoding,
    current: &proto::IngressInfo,
    rtmp_base_url: &str,
) -> Result<Vec<u8>, ApiError> {
    match call {
        Call::Create(req) => encode_body(encoding, &ingress::create(req, rtmp_base_url)?),
        Call::Update(req) => {
            required_id(&req.ingress_id)?;
            encode_body(encoding, &ingress::update(current.clone(), req)?)
        }
        Call::List(_) => encode_body(encoding, &proto::ListIngressResponse::default()),
        Call::Delete(req) => {
            required_id(&req.ingress_id)?;
            encode_body(encoding, current)
        }
    }
}

/// The ingress a request names: it must name one.
pub fn required_id(ingress_id: &str) -> Result<&str, ApiError> {
    if ingress_id.is_empty() {
        return Err(ApiError::InvalidArgument("ingress_id is required".into()));
    }
    Ok(ingress_id)
}

/// Why a token was refused, in words that never repeat the token or its claims.
fn token_refusal(e: &AccessTokenError) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e {
        AccessTokenError::Encoding(e) => match e.kind() {
            ErrorKind::ExpiredSignature => "the access token has expired",
            ErrorKind::ImmatureSignature => "the access token is not valid yet",
            ErrorKind::InvalidSignature => "the access token's signature does not match",
            ErrorKind::InvalidIssuer => "the access token was issued for another API key",
            ErrorKind::InvalidAlgorithm => "the access token is not signed with HS256",
            _ => "the access token is malformed",
        },
        _ => "the access token is malformed",
    }
}

impl Api {
    /// Checks the caller's token as LiveKit does: signed with the secret, in
    /// its validity window, issued by the configured API key (`iss`, which
    /// LiveKit requires), with the ingressAdmin grant.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated("missing Authorization: Bearer <access token>".into())
            })?;
        let claims = self
            .verifier
            .verify(token)
            .map_err(|e| ApiError::Unauthenticated(token_refusal(&e).into()))?;
        // The verifier checks `iss` only when the token has one.
        if claims.iss != self.api_key {
            return Err(ApiError::Unauthenticated(
                "the access token does not name the API key it was issued by (iss)".into(),
            ));
        }
        if !claims.video.ingress_admin {
            return Err(ApiError::PermissionDenied(
                "the access token lacks the ingressAdmin grant".into(),
            ));
        }
        Ok(())
    }

    /// A store that does not answer is `unavailable` (retry later); a record
    /// it cannot read, or any other failure, is `internal`.
    fn store_err(e: StoreError) -> ApiError {
        match e {
            StoreError::Unreachable(m) => ApiError::Unavailable(m),
            StoreError::Corrupt(m) | StoreError::Other(m) => ApiError::Internal(m),
        }
    }

    /// Ends an ingress's session, here or on the node that runs it.
    fn stop_session(&self, ingress_id: &str) {
        self.sessions.stop_everywhere(ingress_id);
    }

    /// An ingress as stored, its state repaired first if it says live while
    /// no node runs it any more.
    fn settled(&self, mut info: proto::IngressInfo) -> Result<proto::IngressInfo, ApiError> {
        store::settle_orphan(self.store.as_ref(), &mut info).map_err(Self::store_err)?;
        Ok(info)
    }

    fn create(&self, req: proto::CreateIngressRequest) -> Result<proto::IngressInfo, ApiError> {
        let info = ingress::create(req, &self.rtmp_base_url)?;
        self.store.put(&info).map_err(Self::store_err)?;
        tracing::info!(ingress = %info.ingress_id, room = %info.room_name, "ingress created");
        Ok(info)
    }

    fn existing(&self, ingress_id: &str) -> Result<proto::IngressInfo, ApiError> {
        let ingress_id = required_id(ingress_id)?;
        let info = self
            .store
            .get(ingress_id)
            .map_err(Self::store_err)?
            .ok_or_else(|| ApiError::NotFound(format!("ingress {ingress_id} does not exist")))?;
        self.settled(info)
    }

    fn update(&self, req: proto::UpdateIngressRequest) -> Result<proto::IngressInfo, ApiError> {
        let current = self.existing(&req.ingress_id)?;
        let updated = ingress::update(current.clone(), req)?;
        // The info only: the state belongs to the sessions.
        self.store.put(&updated).map_err(Self::store_err)?;
        if let (Some(was), Some(reset)) = (&current.state, &updated.state) {
            if was.status == Status::EndpointError as i32 {
                // Compare and set: a stream that started meanwhile keeps its state.
                self.store
                    .swap_state(&updated.ingress_id, was, reset)
                    .map_err(Self::store_err)?;
            }
        }
        // A change of where or as whom a live session publishes, or disabling,
        // ends it so the next stream uses the update; its participant's name and
        // metadata change in the room; encoding changes apply to the next stream.
        let live = store::is_live(current.state.as_ref());
        let moved = updated.room_name != current.room_name
            || updated.participant_identity != current.participant_identity
            || updated.enabled == Some(false);
        if live && moved {
            self.stop_session(&updated.ingress_id);
        } else if live
            && (updated.participant_name != current.participant_name
                || updated.participant_metadata != current.participant_metadata)
        {
            // What the room can change in place, it does.
            self.sessions.update_live_participant(&updated);
        }
        self.existing(&updated.ingress_id)
    }

    fn list(&self, req: proto::ListIngressRequest) -> Result<proto::ListIngressResponse, ApiError> {
        let items = self
            .store
            .list(&req.room_name, &req.ingress_id)
            .map_err(Self::store_err)?
            .into_iter()
            .map(|info| self.settled(info))
            .collect::<Result<_, _>>()?;
        Ok(proto::ListIngressResponse {
            items,
            next_page_token: None,
        })
    }

    fn delete(&self, req: proto::DeleteIngressRequest) -> Result<proto::IngressInfo, ApiError> {
        let mut info = self.existing(&req.ingress_id)?;
        self.store
            .delete(&info.ingress_id)
            .map_err(Self::store_err)?;
        self.stop_session(&info.ingress_id);
        let state = info.state.get_or_insert_with(Default::default);
        state.status = Status::EndpointInactive as i32;
        tracing::info!(ingress = %info.ingress_id, "ingress deleted");
        Ok(info)
    }

    fn call(&self, encoding: Encoding, call: Call) -> Result<Response, ApiError> {
        Ok(match call {
            Call::Create(req) => encode(encoding, &self.create(req)?),
            Call::Update(req) => encode(encoding, &self.update(req)?),
            Call::List(req) => encode(encoding, &self.list(req)?),
            Call::Delete(req) => encode(encoding, &self.delete(req)?),
        })
    }
}

/// Reads a request body within [`MAX_BODY`] and [`BODY_TIMEOUT`]; on failure,
/// the answer to send (the connection then closes: the rest is not read).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || {
        twirp_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_argument",
            &format!("request body over {MAX_BODY} bytes"),
            true,
        )
    };
    // A declared length over the limit is refused before a byte is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(twirp_error(
            StatusCode::BAD_REQUEST,
            "malformed",
            &format!("request body not read: {e}"),
            true,
        )),
        Err(_) => Err(twirp_error(
            StatusCode::REQUEST_TIMEOUT,
            "deadline_exceeded",
            &format!("request body not received within {BODY_TIMEOUT:?}"),
            true,
        )),
    }
}

/// One Twirp call. The order is what keeps a bad request cheap: the body's
/// size and deadline first, then the token, then decoding.
async fn twirp(
    State(api): State<Arc<Api>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = match Encoding::from_content_type(content_type) {
        Ok(encoding) => encoding,
        Err(e) => return error_response(&e),
    };
    if let Err(e) = api.authorize(&headers) {
        // The reason only: it never holds the token (see token_refusal).
        tracing::debug!(%method, "API call refused: {e}");
        return error_response(&e);
    }
    let call = match Call::decode(&method, encoding, &body) {
        Ok(call) => call,
        Err(e) => return error_response(&e),
    };
    // Store calls and session stops block: keep them off the async workers.
    match tokio::task::spawn_blocking(move || api.call(encoding, call)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&ApiError::Internal(e.to_string())),
    }
}

/// Ready when the store answers (a node that cannot reach it can neither
/// authorize a publish nor serve the API).
async fn health(State(api): State<Arc<Api>>) -> Response {
    let store = api.store.clone();
    match tokio::task::spawn_blocking(move || store.ping()).await {
        Ok(Ok(())) => "OK".into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unreachable: {e}"),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let mut by_status = std::collections::BTreeMap::new();
    for info in api.store.list("", "").unwrap_or_default() {
        let status = info
            .state
            .as_ref()
            .and_then(|s| Status::try_from(s.status).ok())
            .unwrap_or(Status::EndpointInactive);
        *by_status.entry(status.as_str_name()).or_insert(0u64) += 1;
    }
    let stats = &api.sessions.stats;
    let mut text = String::from("# HELP livekit_ingress_ingresses Ingresses by state.\n# TYPE livekit_ingress_ingresses gauge\n");
    for (status, n) in by_status {
        text.push_str(&format!(
            "livekit_ingress_ingresses{{state=\"{status}\"}} {n}\n"
        ));
    }
    for (name, help, value) in [
        (
            "livekit_ingress_sessions_live",
            "Streams being published now.",
            api.sessions.live_count() as u64,
        ),
        (
            "livekit_ingress_sessions_started_total",
            "Streams accepted.",
            stats.started.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_sessions_ended_total",
            "Streams that ended normally.",
            stats.ended.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_sessions_failed_total",
            "Streams that ended in error.",
            stats.failed.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_publishes_refused_total",
            "Publishes refused.",
            stats.refused.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_webhooks_sent_total",
            "Webhook deliveries a receiver accepted.",
            webhooks::stats().sent.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_webhooks_failed_total",
            "Webhook deliveries given up after their retries.",
            webhooks::stats().failed.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_webhooks_dropped_total",
            "Webhook events dropped unsent because the queue was full.",
            webhooks::stats().dropped.load(Ordering::Relaxed),
        ),
    ] {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    text.push_str(&sent_metrics(&api.sessions.sent()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// One counter of an RTP stream.
type StreamCounter = fn(&StreamStats) -> u64;

/// Per live stream and RTP stream (kind, rid): what was sent to the room and
/// what the room asked for; and the round-trip time to the LiveKit server.
fn sent_metrics(sent: &[(String, SendStats)]) -> String {
    let counters: [(&str, &str, StreamCounter); 4] = [
        (
            "livekit_ingress_sent_packets_total",
            "RTP packets sent to the room, retransmissions included.",
            |s| s.packets,
        ),
        (
            "livekit_ingress_sent_bytes_total",
            "RTP bytes sent to the room, retransmissions included.",
            |s| s.bytes,
        ),
        (
            "livekit_ingress_nacks_received_total",
            "Retransmission requests (NACK) received from the room.",
            |s| s.nacks,
        ),
        (
            "livekit_ingress_keyframe_requests_received_total",
            "Keyframe requests (PLI, FIR) received from the room.",
            |s| s.plis + s.firs,
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in counters {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (id, stats) in sent {
            for s in &stats.streams {
                let rid = s.rid.as_deref().unwrap_or("");
                text.push_str(&format!(
                    "{name}{{ingress=\"{id}\",kind=\"{}\",rid=\"{rid}\"}} {}\n",
                    s.kind,
                    value(s)
                ));
            }
        }
    }
    let name = "livekit_ingress_rtt_seconds";
    text.push_str(&format!(
        "# HELP {name} Round-trip time to the LiveKit server.\n# TYPE {name} gauge\n"
    ));
    for (id, stats) in sent {
        if let Some(rtt) = stats.rtt {
            text.push_str(&format!(
                "{name}{{ingress=\"{id}\"}} {}\n",
                rtt.as_secs_f64()
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_twirp_codes_by_kind() {
        let unreachable = Api::store_err(StoreError::unreachable("connection refused"));
        assert_eq!(unreachable.code(), "unavailable");
        assert_eq!(unreachable.http_status(), 503);
        assert_eq!(unreachable.to_string(), "ingress store: connection refused");
        let corrupt = Api::store_err(StoreError::corrupt("bad protobuf"));
        assert_eq!(corrupt.code(), "internal");
        assert_eq!(Api::store_err(StoreError::other("x")).code(), "internal");
    }
}
