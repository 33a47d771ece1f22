//! The process heap's growth across sessions.
//!
//! glibc serves a large allocation with its own mapping until the first such
//! mapping is freed; from then on it raises its threshold to that size (up to
//! 32 MiB) and serves decoded frames, encoder lookahead and parser buffers from
//! the arenas instead. Every session then leaves those arenas fragmented a
//! little differently, and the service's RSS grew by about 6 MiB per
//! transcoded session without levelling off. A fixed threshold keeps large
//! buffers in mappings that go back to the system when freed; the buffer pools
//! of GStreamer's video elements reuse their frames, so this costs no mapping
//! per frame.

/// The size from which an allocation gets its own mapping: glibc's initial
/// threshold, kept fixed.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold unless the operator tuned malloc already
/// (`GLIBC_TUNABLES` or `MALLOC_MMAP_THRESHOLD_`). Returns whether it did.
pub fn bound_heap_growth() -> bool {
    let tuned = std::env::var_os("GLIBC_TUNABLES").is_some()
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some();
    !tuned && fix_mmap_threshold()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() -> bool {
    // SAFETY: mallopt only changes the allocator's parameters; it takes the
    // arena locks it needs itself.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() -> bool {
    false
}
