//! The `livekit.Ingress` Twirp API, plus health and Prometheus metrics.
//!
//! Twirp: `POST /twirp/livekit.Ingress/<Method>` with a protobuf
//! (`application/protobuf`) or proto3-JSON (`application/json`) body, answered in
//! the same encoding; errors as Twirp's JSON (`{"code": …, "msg": …}`). Callers
//! authenticate with a LiveKit access token whose video grant has `ingressAdmin`.
//! The service's own per-ingress options are beside it (`super::options_api`).

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
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Api {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<Sessions>,
    /// The API key a caller's token must be issued by (its `iss`).
    pub api_key: String,
    pub verifier: TokenVerifier,
    /// What CreateIngress answers as `url` (RTMP and WHIP).
    pub base_urls: ingress::BaseUrls,
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
            base_urls: ingress::BaseUrls {
                rtmp: config.rtmp_base_url.clone(),
                whip: config.whip_base_url.clone(),
            },
        }
    }
}

/// Twirp and health; `/metrics` too unless it has a port of its own
/// ([`metrics_router`]).
pub fn router(api: Arc<Api>, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/twirp/livekit.Ingress/{method}", post(twirp))
        .route("/ingress/{ingress_id}/options", super::options_api::route())
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
    /// As Twirp reads the Content-Type: its media type (parameters dropped,
    /// case ignored) must be `application/json` or `application/protobuf`.
    pub fn from_content_type(content_type: &str) -> Result<Encoding, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json" => Ok(Encoding::Json),
            "application/protobuf" => Ok(Encoding::Protobuf),
            _ => Err(ApiError::BadRoute(format!(
                "unexpected Content-Type: {content_type:?}"
            ))),
        }
    }
}

/// A message of the API, by its full protobuf name (for its JSON).
pub trait Named: Message + Default {
    const NAME: &'static str;
}

macro_rules! named {
    ($($t:ident),*) => {
        $(impl Named for proto::$t {
            const NAME: &'static str = concat!("livekit.", stringify!($t));
        })*
    };
}

named!(
    IngressInfo,
    ListIngressResponse,
    CreateIngressRequest,
    UpdateIngressRequest,
    ListIngressRequest,
    DeleteIngressRequest
);

fn descriptor<T: Named>() -> Result<prost_reflect::MessageDescriptor, String> {
    let pool = DESCRIPTORS.as_ref().map_err(Clone::clone)?;
    pool.get_message_by_name(T::NAME)
        .ok_or_else(|| format!("no descriptor for {}", T::NAME))
}

/// A request in protojson (either field spelling, enums by name or number,
/// unknown fields ignored: Twirp's reading), through LiveKit's descriptors.
pub fn from_twirp_json<T: Named>(body: &[u8]) -> Result<T, String> {
    let descriptor = descriptor::<T>()?;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(false);
    let message = prost_reflect::DynamicMessage::deserialize_with_options(
        descriptor,
        &mut deserializer,
        &options,
    )
    .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    T::decode(&message.encode_to_vec()[..]).map_err(|e| e.to_string())
}

/// The descriptors of LiveKit's ingress messages as the pinned livekit-server
/// compiles them (`scripts/livekit-descriptor/gen.sh`).
static DESCRIPTORS: std::sync::LazyLock<Result<prost_reflect::DescriptorPool, String>> =
    std::sync::LazyLock::new(|| {
        prost_reflect::DescriptorPool::decode(&include_bytes!("livekit_ingress.desc")[..])
            .map_err(|e| format!("LiveKit descriptors: {e}"))
    });

/// `value` in LiveKit's Twirp JSON (protojson with proto field names and
/// unpopulated fields emitted, 64-bit integers as strings, enums by name).
pub fn twirp_json<T: Named>(value: &T) -> Result<Vec<u8>, String> {
    let descriptor = descriptor::<T>()?;
    let message = prost_reflect::DynamicMessage::decode(descriptor, &value.encode_to_vec()[..])
        .map_err(|e| e.to_string())?;
    let options = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut json = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| e.to_string())?;
    unset_messages_as_null(
        &prost_reflect::ReflectMessage::descriptor(&message),
        &mut json,
    );
    whole_floats_as_integers(&mut json);
    serde_json::to_vec(&json).map_err(|e| e.to_string())
}

/// protojson writes a whole double as an integer (`30`, not `30.0`).
fn whole_floats_as_integers(json: &mut Value) {
    match json {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *json = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

/// protojson writes an unset message field (outside a oneof) as `null`;
/// prost-reflect leaves it out.
fn unset_messages_as_null(descriptor: &prost_reflect::MessageDescriptor, json: &mut Value) {
    let Value::Object(map) = json else { return };
    for field in descriptor.fields() {
        let prost_reflect::Kind::Message(inner) = field.kind() else {
            continue;
        };
        if field.containing_oneof().is_some() || field.is_map() {
            continue;
        }
        match map.get_mut(field.name()) {
            None if !field.is_list() => {
                map.insert(field.name().to_string(), Value::Null);
            }
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    unset_messages_as_null(&inner, item);
                }
            }
            Some(value) => unset_messages_as_null(&inner, value),
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

pub(super) fn error_response(err: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    twirp_error(status, err.code(), &err.to_string(), false)
}

fn decode<T: Named>(encoding: Encoding, body: &[u8]) -> Result<T, ApiError> {
    // Twirp's messages; the parser's reason follows.
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| {
            ApiError::Malformed(format!("the protobuf request could not be decoded: {e}"))
        }),
        Encoding::Json if body.is_empty() => Ok(T::default()),
        Encoding::Json => from_twirp_json(body).map_err(|e| {
            ApiError::Malformed(format!("the json request could not be decoded: {e}"))
        }),
    }
}

/// An answer's body in the request's encoding.
pub fn encode_body<T: Named>(encoding: Encoding, value: &T) -> Result<Vec<u8>, ApiError> {
    match encoding {
        Encoding::Protobuf => Ok(value.encode_to_vec()),
        Encoding::Json => twirp_json(value).map_err(ApiError::Internal),
    }
}

fn encode<T: Named>(encoding: Encoding, value: &T) -> Response {
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
            other => return Err(no_method(other)),
        })
    }
}

/// Twirp's answer to a method the service does not have.
pub fn no_method(method: &str) -> ApiError {
    ApiError::BadRoute(format!(
        "no handler for path \"/twirp/livekit.Ingress/{method}\""
    ))
}

const METHODS: [&str; 4] = [
    "CreateIngress",
    "UpdateIngress",
    "ListIngress",
    "DeleteIngress",
];

/// What the API checks of a request before it touches the store, and the
/// answer body it would then encode; `current` stands for the stored ingress
/// an update applies to. Pure: the fuzz target's whole path after [`Call::decode`].
pub fn check(
    call: Call,
    encoding: Encoding,
    current: &proto::IngressInfo,
    base_urls: &ingress::BaseUrls,
) -> Result<Vec<u8>, ApiError> {
    match call {
        Call::Create(req) => encode_body(encoding, &ingress::create(req, base_urls)?),
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

/// The ingress a request names: an empty id names none (LiveKit looks it
/// up like any other and answers `not_found`).
pub fn required_id(ingress_id: &str) -> Result<&str, ApiError> {
    if ingress_id.is_empty() {
        return Err(ingress::not_found());
    }
    Ok(ingress_id)
}

/// Why a token's check failed, in words that never repeat the token or its
/// claims (LiveKit's "invalid token: <the token>, error: …" does).
fn token_refusal(e: &AccessTokenError) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match e {
        AccessTokenError::Encoding(e) => match e.kind() {
            ErrorKind::ExpiredSignature => "the access token has expired",
            ErrorKind::ImmatureSignature => "the access token is not valid yet",
            ErrorKind::InvalidSignature => "the access token's signature does not match",
            ErrorKind::InvalidAlgorithm => "the access token is not signed with HS256",
            _ => "the access token is malformed",
        },
        _ => "the access token is malformed",
    }
}

/// The issuer a token names, read before its signature is checked (LiveKit's
/// `ParseAPIToken`), to pick the secret; `None` when it is no JWT.
fn token_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Issuer {
        #[serde(default)]
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode::<Issuer>(token)
        .ok()
        .map(|data| data.claims.iss)
}

impl Api {
    /// Checks the caller's token as LiveKit does, with its words (all 401
    /// `unauthenticated`): an Authorization header that is not `Bearer …`;
    /// no token ("permissions denied", as a token without the grant); a token
    /// that is no JWT; one issued by another API key (`iss`, named); one whose
    /// signature or times do not check out (why, without the token); one
    /// without the `ingressAdmin` grant.
    pub(super) fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let unauthenticated = |m: String| Err(ApiError::Unauthenticated(m));
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return unauthenticated("permissions denied".into());
        };
        let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return unauthenticated("invalid authorization header. Must start with Bearer ".into());
        };
        let Some(issuer) = token_issuer(token) else {
            return unauthenticated("invalid authorization token".into());
        };
        if issuer != self.api_key {
            return unauthenticated(format!("invalid API key: {issuer}"));
        }
        let claims = match self.verifier.verify(token) {
            Ok(claims) => claims,
            Err(e) => return unauthenticated(format!("invalid token: {}", token_refusal(&e))),
        };
        if !claims.video.ingress_admin {
            return unauthenticated("permissions denied".into());
        }
        Ok(())
    }

    /// A store that does not answer is `unavailable` (retry later); a record
    /// it cannot read, or any other failure, is `internal`.
    pub(super) fn store_err(e: StoreError) -> ApiError {
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
        let info = ingress::create(req, &self.base_urls)?;
        self.store.put(&info).map_err(Self::store_err)?;
        tracing::info!(ingress = %info.ingress_id, room = %info.room_name, "ingress created");
        if info.input_type == proto::IngressInput::UrlInput as i32 {
            // A URL is pulled at once; the answer carries the state it started in.
            return Ok(self.sessions.start_pull(info));
        }
        Ok(info)
    }

    fn existing(&self, ingress_id: &str) -> Result<proto::IngressInfo, ApiError> {
        let ingress_id = required_id(ingress_id)?;
        let info = self
            .store
            .get(ingress_id)
            .map_err(Self::store_err)?
            .ok_or_else(ingress::not_found)?;
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

    /// As LiveKit: an id names that ingress whatever the room filter says
    /// (`not_found` when there is none); else every ingress, or a room's.
    fn list(&self, req: proto::ListIngressRequest) -> Result<proto::ListIngressResponse, ApiError> {
        let items = if req.ingress_id.is_empty() {
            self.store
                .list(&req.room_name, "")
                .map_err(Self::store_err)?
                .into_iter()
                .map(|info| self.settled(info))
                .collect::<Result<_, _>>()?
        } else {
            vec![self.existing(&req.ingress_id)?]
        };
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
pub(super) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
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
    // Twirp's routing first (method, then content type), then the token,
    // then the body: a caller without a valid token gets nothing parsed.
    if !METHODS.contains(&method.as_str()) {
        return error_response(&no_method(&method));
    }
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
    if let Some(why) = api.sessions.unavailable() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response();
    }
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
            "livekit_ingress_publishes_refused_unavailable_total",
            "Publishes refused because the node was full, draining or without its store.",
            stats.refused_unavailable.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_draining",
            "1 while the node drains after SIGTERM (no new publish is taken).",
            u64::from(api.sessions.draining()),
        ),
        (
            "livekit_ingress_late_frames_dropped_total",
            "Input frames dropped because they came too late to matter (a backlog after a stall).",
            stats.late_dropped.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_claim_renewals_failed_total",
            "Claim renewals the store did not answer; the streams went on.",
            stats.renewals_failed.load(Ordering::Relaxed),
        ),
        (
            "livekit_ingress_claims_retaken_total",
            "Claims that lapsed while the store was out of reach, taken again when it answered.",
            stats.reclaimed.load(Ordering::Relaxed),
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
    for (name, help, value) in [
        (
            "livekit_ingress_capacity_cores",
            "Cores the node's streams may take together (capacity.cores x max_load).",
            api.sessions.capacity.limit,
        ),
        (
            "livekit_ingress_committed_cores",
            "Cores the live streams were admitted with.",
            api.sessions.committed(),
        ),
    ] {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    text.push_str(&sent_metrics(&api.sessions.sent()));
    if let Some(process) = super::process_stats::ProcessStats::read() {
        text.push_str(&process.render());
    }
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
