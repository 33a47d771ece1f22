//! Arbitrary bytes into the RTMP server session, split into reads where the
//! input says, with the publish accepted when it is asked for: the session must
//! answer or fail with an error, never panic, hang or grow without bound.
//!
//! rml_rtmp 0.8 has known arithmetic panics on malformed chunk headers (see the
//! README's known gaps); the session contains them (`guarded`), as it does in
//! production. So that fuzzing goes on past them, a panic raised inside
//! rml_rtmp is let unwind to that guard; any other panic aborts, and libFuzzer
//! reports it as the crash it is.
#![no_main]

use gstlivekitingress::rtmp::session::{Output, Session};
use libfuzzer_sys::fuzz_target;

fn contain_upstream_panics() {
    std::panic::set_hook(Box::new(|info| {
        let upstream = info
            .location()
            .is_some_and(|l| l.file().contains("rml_rtmp"));
        if !upstream {
            eprintln!("{info}");
            std::process::abort();
        }
    }));
}

fuzz_target!(init: contain_upstream_panics(), |data: &[u8]| {
    let mut session = Session::new();
    // A valid C0+C1 first half of the time, so the fuzzer reaches the chunk stream.
    let mut input = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        input.push(3u8);
        input.extend(std::iter::repeat_n(0u8, 1536));
    }
    input.extend_from_slice(data);
    for piece in input.chunks(1 + usize::from(data.get(1).copied().unwrap_or(0))) {
        match session.feed(piece) {
            Ok(outputs) => {
                for output in outputs {
                    if let Output::PublishRequested { .. } = output {
                        let _ = session.accept_publish();
                    }
                }
            }
            Err(_) => break,
        }
    }
});
