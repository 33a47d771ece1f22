//! `/ingress/{ingress_id}/options`: an ingress's own options for this service
//! (`super::ingress_options`), next to LiveKit's Twirp API and authorized as
//! it is (a token whose video grant has `ingressAdmin`).
//!
//! - `GET` answers `{"ingress_id", "options", "in_effect"}`: what the ingress
//!   set, and what its next stream uses (the service's defaults filled in).
//! - `PUT` with an options object (`{"video_passthrough": "hybrid"}`) replaces
//!   them: what it leaves out is the service's again. It answers as `GET`.
//! - `DELETE` gives the ingress the service's defaults again, answering as `GET`.
//!
//! Errors are Twirp's JSON: `not_found` (no such ingress), `invalid_argument`
//! (an unknown setting or value, named), `unauthenticated`, `unavailable` (the
//! store). A live stream keeps what it started with; the next one uses the new
//! options.

use super::api::{error_response, read_body, Api};
use super::ingress::{self, ApiError};
use super::ingress_options::IngressOptions;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use std::sync::Arc;

/// The route's methods, for `/ingress/{ingress_id}/options`.
pub fn route() -> MethodRouter<Arc<Api>> {
    get(read).put(replace).delete(clear)
}

async fn read(State(api): State<Arc<Api>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(e) = api.authorize(&headers) {
        return error_response(&e);
    }
    answer(api, move |api| {
        let own = api.store.options(&id).map_err(Api::store_err)?;
        Ok((id, own.ok_or_else(ingress::not_found)?))
    })
    .await
}

async fn replace(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // As for Twirp: the body's size and deadline, then the token, then parsing.
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(e) = api.authorize(&headers) {
        return error_response(&e);
    }
    let own = match IngressOptions::from_json(&body) {
        Ok(own) => own,
        Err(e) => return error_response(&ApiError::InvalidArgument(e)),
    };
    answer(api, move |api| put(api, id, own)).await
}

async fn clear(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = api.authorize(&headers) {
        return error_response(&e);
    }
    answer(api, move |api| put(api, id, IngressOptions::default())).await
}

fn put(api: &Api, id: String, own: IngressOptions) -> Result<(String, IngressOptions), ApiError> {
    if !api.store.put_options(&id, &own).map_err(Api::store_err)? {
        return Err(ingress::not_found());
    }
    tracing::info!(ingress = %id, options = %own.to_json(), "ingress options set");
    Ok((id, own))
}

/// Runs `call` (store calls block) off the async workers and answers with
/// the ingress's options and what they put in effect, or with the error.
async fn answer(
    api: Arc<Api>,
    call: impl FnOnce(&Api) -> Result<(String, IngressOptions), ApiError> + Send + 'static,
) -> Response {
    let defaults = api.sessions.default_options();
    match tokio::task::spawn_blocking(move || call(&api)).await {
        Ok(Ok((id, own))) => {
            let body = serde_json::json!({
                "ingress_id": id,
                "in_effect": own.in_effect(&defaults),
                "options": own,
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&ApiError::Internal(e.to_string())),
    }
}
