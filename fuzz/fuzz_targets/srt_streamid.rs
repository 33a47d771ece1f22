//! Arbitrary SRT streamids (what a caller sends before it is accepted): each
//! names a key or is refused with a reason and its rejection code, never a
//! panic; an accepted key is never empty nor longer than a stream key may be.
#![no_main]

use gstlivekitingress::rtmp::redact::MAX_STREAM_KEY_LEN;
use gstlivekitingress::srt::streamid::{stream_key, Rejection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // srt-tokio hands over streamids as UTF-8 of at most 512 bytes.
    let Ok(stream_id) = std::str::from_utf8(data) else {
        return;
    };
    match stream_key(stream_id) {
        Ok(key) => assert!(!key.is_empty() && key.len() <= MAX_STREAM_KEY_LEN),
        Err(e) => {
            let _ = (e.to_string(), Rejection::from(&e).code());
        }
    }
});
