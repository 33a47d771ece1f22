//! Access tokens for the publisher: minted from an API key and secret, or
//! given, and replaced by the ones the server refreshes.
//!
//! A token is checked when a signal connection opens, so every join, rejoin
//! and resume needs one that is valid then, not when the element started: a
//! stream may run for longer than any token lives.

use livekit_api::access_token::{AccessToken, VideoGrants};
use std::time::Duration;

/// Who joins, and where.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
}

/// How long a minted token is valid. Each join mints its own, so this need
/// only cover the join and the resumes of one session.
pub const MINTED_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the publisher joins with.
#[derive(Clone)]
pub enum Credentials {
    /// A token made by someone else; it can only be replaced by the server's.
    Token(String),
    /// Key and secret to mint a token for `who`, valid for `ttl`, at each join.
    ApiKey {
        key: String,
        secret: String,
        who: Identity,
        ttl: Duration,
    },
}

// Never print a token or a secret (the debug log is shared).
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(..)"),
            Credentials::ApiKey { key, who, ttl, .. } => f
                .debug_struct("ApiKey")
                .field("key", key)
                .field("who", who)
                .field("ttl", ttl)
                .finish_non_exhaustive(),
        }
    }
}

/// Picks the token for each join: a fresh one when we can mint, else the
/// latest the server sent (`RefreshToken`), else the one we were given.
#[derive(Debug)]
pub struct Tokens {
    credentials: Credentials,
    refreshed: Option<String>,
}

impl Tokens {
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            refreshed: None,
        }
    }

    /// The token to open the next signal connection with.
    pub fn for_join(&self) -> Result<String, String> {
        match (&self.credentials, &self.refreshed) {
            (
                Credentials::ApiKey {
                    key,
                    secret,
                    who,
                    ttl,
                },
                _,
            ) => publisher_token_for(key, secret, who, *ttl),
            (Credentials::Token(_), Some(refreshed)) => Ok(refreshed.clone()),
            (Credentials::Token(given), None) => Ok(given.clone()),
        }
    }

    /// The server sent a fresh token for this participant (it does so
    /// periodically while connected).
    pub fn refreshed(&mut self, token: String) {
        if !token.is_empty() {
            self.refreshed = Some(token);
        }
    }
}

/// A token that lets `who` join its room and publish, valid for a day.
pub fn publisher_token(api_key: &str, api_secret: &str, who: &Identity) -> Result<String, String> {
    publisher_token_for(api_key, api_secret, who, MINTED_TTL)
}

/// A token that lets `who` join its room and publish, valid for `ttl`.
pub fn publisher_token_for(
    api_key: &str,
    api_secret: &str,
    who: &Identity,
    ttl: Duration,
) -> Result<String, String> {
    AccessToken::with_api_key(api_key, api_secret)
        .with_identity(&who.identity)
        .with_name(&who.name)
        .with_metadata(&who.metadata)
        .with_ttl(ttl)
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "APIkey";
    const SECRET: &str = "a-secret-long-enough-for-hs256-keys";

    fn who() -> Identity {
        Identity {
            room: "room".into(),
            identity: "ingress".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_given_token_is_replaced_by_the_servers_refreshed_one() {
        let mut tokens = Tokens::new(Credentials::Token("given".into()));
        assert_eq!(tokens.for_join().unwrap(), "given");
        tokens.refreshed(String::new());
        assert_eq!(tokens.for_join().unwrap(), "given");
        tokens.refreshed("from-the-server".into());
        assert_eq!(tokens.for_join().unwrap(), "from-the-server");
    }

    #[test]
    fn minted_tokens_are_not_printed() {
        let credentials = Credentials::ApiKey {
            key: KEY.into(),
            secret: SECRET.into(),
            who: who(),
            ttl: MINTED_TTL,
        };
        let printed = format!("{credentials:?} {:?}", Credentials::Token("t0k".into()));
        assert!(
            !printed.contains(SECRET) && !printed.contains("t0k"),
            "{printed}"
        );
    }
}
