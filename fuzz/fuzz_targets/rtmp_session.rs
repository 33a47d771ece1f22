//! Arbitrary bytes into the RTMP server session, split into reads where the
//! input says, with the publish accepted when it is asked for: the session must
//! answer or fail with an error, never panic, hang or grow without bound.
#![no_main]

use gstlivekitingress::rtmp::session::{Output, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
