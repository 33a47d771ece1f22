//! The one tokio runtime the elements share for network IO. Media threads never
//! block on it: they hand work over through bounded channels.

use std::sync::LazyLock;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("livekit-ingress-io")
        .enable_all()
        .build()
        .expect("the IO runtime can be created")
});

/// The shared IO runtime.
pub fn handle() -> tokio::runtime::Handle {
    RUNTIME.handle().clone()
}
