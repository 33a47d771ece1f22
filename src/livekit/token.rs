//! Access tokens for the publisher, minted from an API key and secret.

use livekit_api::access_token::{AccessToken, VideoGrants};

/// Who joins, and where.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
}

/// A token that lets `who` join its room and publish, valid for a day.
pub fn publisher_token(api_key: &str, api_secret: &str, who: &Identity) -> Result<String, String> {
    AccessToken::with_api_key(api_key, api_secret)
        .with_identity(&who.identity)
        .with_name(&who.name)
        .with_metadata(&who.metadata)
        .with_ttl(std::time::Duration::from_secs(24 * 3600))
        .with_grants(VideoGrants {
            room_join: true,
            room: who.room.clone(),
            can_publish: Some(true),
            can_subscribe: Some(false),
            can_publish_data: Some(false),
            ..Default::default()
        })
        .to_jwt()
        .map_err(|e| format!("cannot make an access token: {e}"))
}
