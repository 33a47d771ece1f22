//! Access tokens for the API tests: LiveKit's builder, and hand-made HS256
//! JWTs of exact claims (without `iss`, expired, without a grant).

use base64::Engine;
use livekit_api::access_token::{AccessToken, VideoGrants};
use sha2::{Digest, Sha256};
use std::time::Duration;

pub fn admin_token(key: &str, secret: &str) -> String {
    AccessToken::with_api_key(key, secret)
        .with_grants(VideoGrants {
            ingress_admin: true,
            ..Default::default()
        })
        .with_ttl(Duration::from_secs(600))
        .to_jwt()
        .expect("token")
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key); // keys here are shorter than a block
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// An HS256 JWT of exactly `claims`, signed with `secret` (LiveKit's token
/// builder always writes `iss`, so tokens without one are made by hand).
pub fn jwt(claims: serde_json::Value, secret: &str) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signed = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let signature = hmac_sha256(secret.as_bytes(), signed.as_bytes());
    format!("{signed}.{}", b64(&signature))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}
