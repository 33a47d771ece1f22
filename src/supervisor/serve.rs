//! The HTTP server under the API: one hyper HTTP/1.1 connection per task, with
//! the deadlines `axum::serve` lacks, so a slow or silent client cannot hold a
//! connection (and its memory) for long.
//!
//! - Headers: a client has [`HEADER_TIMEOUT`] from the moment the server waits
//!   for a request (a new connection, or the previous answer on a kept-alive
//!   one) to send the whole head; then hyper closes the connection. This also
//!   closes idle kept-alive connections.
//! - Body: read by the API handler itself under its own deadline and size
//!   limit (see `api::read_body`), so the limit comes before any token work.
//! - Connections: at most [`MAX_CONNECTIONS`] at once; further ones wait in
//!   the kernel's accept queue rather than cost memory here.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's body, once its head is in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body: an API request is a few hundred bytes; metadata
/// and encoding options fit many times over.
pub const MAX_BODY: usize = 256 * 1024;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serves `router` on `listener` until the task is aborted; aborting it also
/// closes every connection it opened (they live in its [`JoinSet`]).
pub async fn serve(listener: TcpListener, router: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        // Finished connections are reaped here so the set stays as large as
        // the connections that are open.
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Who is asking and where it arrived (WHIP answers from that address).
        let local = stream.local_addr().unwrap_or(peer);
        let connection = crate::whip::listener::Connection { peer, local };
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(connection)));
        connections.spawn(async move {
            let _slot = slot;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, "API connection closed: {e}");
            }
        });
    }
}
