//! The `livekit.Ingress` Twirp API, plus health and Prometheus metrics.
//!
//! Twirp: `POST /twirp/livekit.Ingress/<Method>` with a protobuf
//! (`application/protobuf`) or proto3-JSON (`application/json`) body, answered in
//! the same encoding; errors as Twirp's JSON (`{"code": …, "msg": …}`). Callers
//! authenticate with a LiveKit access token whose video grant has `ingressAdmin`.

use super::ingress::{self, ApiError};
use super::sessions::Sessions;
use super::store::{self, Store};
use crate::livekit::stats::{SendStats, StreamStats};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use livekit_api::access_token::TokenVerifier;
use livekit_protocol as proto;
use prost::Message;
use proto::ingress_state::Status;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct Api {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<Sessions>,
    pub verifier: TokenVerifier,
    pub rtmp_base_url: String,
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/twirp/livekit.Ingress/{method}", post(twirp))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(api)
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn error_response(err: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "code": err.code(), "msg": err.to_string() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
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

fn encode<T: Message + Serialize>(encoding: Encoding, value: &T) -> Response {
    match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/protobuf")],
            value.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => match serde_json::to_vec(value) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => error_response(&ApiError::Internal(e.to_string())),
        },
    }
}

impl Api {
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
            .map_err(|e| ApiError::Unauthenticated(format!("invalid access token: {e}")))?;
        if !claims.video.ingress_admin {
            return Err(ApiError::PermissionDenied(
                "the access token lacks the ingressAdmin grant".into(),
            ));
        }
        Ok(())
    }

    fn store_err(e: String) -> ApiError {
        ApiError::Internal(e)
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
        if ingress_id.is_empty() {
            return Err(ApiError::InvalidArgument("ingress_id is required".into()));
        }
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
}

async fn twirp(
    State(api): State<Arc<Api>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = if content_type.starts_with("application/json") {
        Encoding::Json
    } else if content_type.starts_with("application/protobuf")
        || content_type.starts_with("application/x-protobuf")
    {
        Encoding::Protobuf
    } else {
        return error_response(&ApiError::InvalidArgument(format!(
            "unsupported content type {content_type:?} (use application/protobuf or application/json)"
        )));
    };
    if let Err(e) = api.authorize(&headers) {
        return error_response(&e);
    }
    // Store calls and session stops block: keep them off the async workers.
    let result = tokio::task::spawn_blocking(move || -> Result<Response, ApiError> {
        Ok(match method.as_str() {
            "CreateIngress" => encode(encoding, &api.create(decode(encoding, &body)?)?),
            "UpdateIngress" => encode(encoding, &api.update(decode(encoding, &body)?)?),
            "ListIngress" => encode(encoding, &api.list(decode(encoding, &body)?)?),
            "DeleteIngress" => encode(encoding, &api.delete(decode(encoding, &body)?)?),
            other => {
                return Err(ApiError::NotFound(format!(
                    "no method livekit.Ingress/{other}"
                )))
            }
        })
    })
    .await;
    match result {
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
