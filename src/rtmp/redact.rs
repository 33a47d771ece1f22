//! Stream keys are secrets: whoever knows one can publish into a room. Logs
//! name a key only by this redaction, which is enough to tell two keys apart
//! (or match a key one already knows) and gives nothing away.

use sha2::{Digest, Sha256};

/// The longest stream key a publish may use. LiveKit's keys are about a dozen
/// characters; anything much longer is not a key, and refusing it early keeps
/// it out of every lookup, log and reply.
pub const MAX_STREAM_KEY_LEN: usize = 256;

/// `key#1a2b3c4d/12`: the first 8 hex digits of the key's SHA-256 and its length.
pub fn redact_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("key#{hex}/{}", key.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_the_key_and_tells_keys_apart() {
        let a = redact_key("secret-key-1");
        let b = redact_key("secret-key-2");
        assert!(!a.contains("secret"), "{a}");
        assert_ne!(a, b);
        assert!(a.starts_with("key#") && a.ends_with("/12"), "{a}");
        assert_eq!(a, redact_key("secret-key-1"), "stable across calls");
        // SHA-256("") starts with e3b0c442.
        assert_eq!(redact_key(""), "key#e3b0c442/0");
    }
}
