//! Arbitrary bytes into the RTMP server session, split into reads where the
//! input says, with the publish accepted when it is asked for: the session must
//! answer or fail with an error, never panic, hang or grow without bound.
//!
//! rml_rtmp 0.8 has known panics on malformed input (see the README's known
//! gaps); the session contains them (`guarded`), as it does in production. So
//! that fuzzing goes on past them, a panic raised while the guard runs rml_rtmp
//! is let unwind to it (set FUZZ_SHOW_CONTAINED=1 to print them); any other
//! panic aborts, and libFuzzer reports it as the crash it is.
#![no_main]

use gstlivekitingress::rtmp::session::{in_guarded_parser, replay_fuzz_input};
use libfuzzer_sys::fuzz_target;

fn contain_upstream_panics() {
    let show = std::env::var_os("FUZZ_SHOW_CONTAINED").is_some();
    std::panic::set_hook(Box::new(move |info| {
        if !in_guarded_parser() {
            eprintln!("{info}\n{}", std::backtrace::Backtrace::force_capture());
            std::process::abort();
        }
        if show {
            eprintln!("contained: {info}\n{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

fuzz_target!(init: contain_upstream_panics(), |data: &[u8]| {
    // Errors are the expected outcome of most inputs; panics and hangs are not.
    let _ = replay_fuzz_input(data);
});
