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

/// Runs `task` on a thread of its own, with a single-threaded runtime: a
/// session's media then wakes exactly one thread, instead of the shared
/// workers waking each other to steal it.
pub fn spawn_dedicated<F>(name: &str, task: F) -> std::io::Result<()>
where
    F: std::future::Future + Send + 'static,
{
    let runtime = Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            runtime.block_on(task);
        })?;
    Ok(())
}
