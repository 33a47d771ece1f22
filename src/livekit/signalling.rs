//! The signal connection's life: join, resume, leave, and the rule for what
//! follows a lost session (`Rejoin`, sans-IO). The token of each join comes
//! from `token::Tokens`; resumes use the server's refreshed token, which
//! livekit-signaling keeps.

use super::publisher::PublisherError;
use livekit_protocol as proto;
use livekit_signaling::{SignalClient, SignalError, SignalEvent, SignalOptions};
use proto::signal_request::Message as Request;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long joining or resuming may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a publisher that lost its server keeps trying to rejoin.
pub const REJOIN_FOR: Duration = Duration::from_secs(60);

const FIRST_PAUSE: Duration = Duration::from_millis(250);
const LONGEST_PAUSE: Duration = Duration::from_secs(4);

pub type SignalEvents = mpsc::UnboundedReceiver<SignalEvent>;

/// Opens the signal connection with `token`.
pub async fn join(
    url: &str,
    token: &str,
) -> Result<(SignalClient, proto::JoinResponse, SignalEvents), PublisherError> {
    let mut options = SignalOptions::default();
    options.auto_subscribe = false;
    options.region_failover = false;
    let connect = SignalClient::connect(url, token, options, None);
    tokio::time::timeout(STEP_TIMEOUT, connect)
        .await
        .map_err(|_| {
            PublisherError::Unreachable(format!("the LiveKit server at {url} did not answer"))
        })?
        .map_err(|e| describe_signal_error(url, &e))
}

/// Reopens a dropped signal connection as the same participant and tells the
/// server what it already has (`state`), so subscribers notice nothing.
pub async fn resume(
    signal: &SignalClient,
    reason: &str,
    state: proto::SyncState,
) -> Result<(), PublisherError> {
    let restart = signal.restart(proto::ReconnectReason::RrSignalDisconnected);
    match tokio::time::timeout(STEP_TIMEOUT, restart).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(PublisherError::MediaLost(format!(
                "the signal connection closed ({reason}) and could not be resumed: {e}"
            )))
        }
        Err(_) => {
            return Err(PublisherError::MediaLost(format!(
                "the signal connection closed ({reason}) and resuming it timed out"
            )))
        }
    }
    signal.send(Request::SyncState(state)).await;
    signal.set_reconnected().await;
    Ok(())
}

/// Unpublishes and leaves: the participant is gone from the room at once.
pub async fn leave(signal: &SignalClient) {
    signal
        .send(Request::Leave(proto::LeaveRequest {
            can_reconnect: false,
            reason: proto::DisconnectReason::ClientInitiated as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            regions: None,
        }))
        .await;
    signal.close().await;
}

/// A signal error in words a user can act on, and of the kind it is.
fn describe_signal_error(url: &str, err: &SignalError) -> PublisherError {
    match err {
        SignalError::Client(status, body) if status.as_u16() == 401 || status.as_u16() == 403 => {
            PublisherError::NotAuthorized(format!(
                "the LiveKit server at {url} refused the credentials ({status}): {body}"
            ))
        }
        SignalError::Client(status, body) => PublisherError::Refused(format!(
            "the LiveKit server at {url} refused to join ({status}): {body}"
        )),
        other => PublisherError::Unreachable(format!(
            "cannot join the room on the LiveKit server at {url}: {other}"
        )),
    }
}

/// What follows the end of a session.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// It ended as asked (end of stream, the server's leave).
    Done(String),
    /// Give up; the message is for the user.
    Fail(PublisherError),
    /// Join again after `after`, with a fresh token.
    Rejoin { reason: String, after: Duration },
}

/// Decides between rejoining and giving up. A session that was up (media
/// flowed) and was lost rejoins with growing pauses for up to [`REJOIN_FOR`]
/// from its loss; one that never got in fails at once, with the reason,
/// unless it is itself a rejoin.
#[derive(Debug)]
pub struct Rejoin {
    lost_since: Option<Instant>,
    pause: Duration,
}

impl Default for Rejoin {
    fn default() -> Self {
        Self {
            lost_since: None,
            pause: FIRST_PAUSE,
        }
    }
}

impl Rejoin {
    /// A session ended with `outcome`; `joined` if media had flowed in it.
    pub fn session_ended(
        &mut self,
        outcome: Result<String, PublisherError>,
        joined: bool,
        now: Instant,
    ) -> Next {
        let message = match outcome {
            Ok(reason) => return Next::Done(reason),
            Err(error) => error,
        };
        if joined {
            // A new loss: its own minute, from short pauses again.
            self.lost_since = Some(now);
            self.pause = FIRST_PAUSE;
        }
        let Some(since) = self.lost_since else {
            return Next::Fail(message);
        };
        if now.duration_since(since) > REJOIN_FOR {
            return Next::Fail(
                message.map_message(|m| format!("{m}; rejoining failed for {REJOIN_FOR:?}")),
            );
        }
        let after = self.pause;
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        Next::Rejoin {
            reason: message.to_string(),
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livekit::token::{Credentials, Identity, Tokens};
    use livekit_api::access_token::TokenVerifier;

    fn lost() -> Result<String, PublisherError> {
        Err(PublisherError::MediaLost(
            "the media connection to the LiveKit server was lost".into(),
        ))
    }

    #[test]
    fn signal_errors_have_their_kind() {
        use axum::http::StatusCode;
        let url = "ws://server";
        let err = |e| describe_signal_error(url, &e);
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            let e = err(SignalError::Client(status, "no".into()));
            assert!(matches!(e, PublisherError::NotAuthorized(_)), "{e:?}");
            assert!(e.to_string().contains("refused the credentials"), "{e}");
        }
        let e = err(SignalError::Client(StatusCode::NOT_FOUND, "no room".into()));
        assert!(matches!(e, PublisherError::Refused(_)), "{e:?}");
        let e = err(SignalError::Server(StatusCode::BAD_GATEWAY, "down".into()));
        assert!(matches!(e, PublisherError::Unreachable(_)), "{e:?}");
    }

    #[test]
    fn a_session_that_never_got_in_fails_at_once() {
        let mut rejoin = Rejoin::default();
        let refused = PublisherError::NotAuthorized("refused".into());
        let next = rejoin.session_ended(Err(refused.clone()), false, Instant::now());
        assert_eq!(next, Next::Fail(refused), "the kind is kept");
        let next = rejoin.session_ended(Ok("end of stream".into()), false, Instant::now());
        assert_eq!(next, Next::Done("end of stream".into()));
    }

    #[test]
    fn a_lost_session_rejoins_with_growing_pauses_for_a_minute() {
        let t0 = Instant::now();
        let mut rejoin = Rejoin::default();
        let mut pauses = Vec::new();
        let mut now = t0;
        let mut joined = true;
        while let Next::Rejoin { after, .. } = rejoin.session_ended(lost(), joined, now) {
            pauses.push(after.as_millis());
            now += after;
            joined = false;
        }
        assert_eq!(pauses[..6], [250, 500, 1000, 2000, 4000, 4000]);
        assert!(now.duration_since(t0) > REJOIN_FOR);
        assert!(now.duration_since(t0) < REJOIN_FOR + LONGEST_PAUSE);
    }

    /// A second loss, long after a rejoin that worked, gets its own minute.
    #[test]
    fn each_loss_gets_its_own_minute() {
        let t0 = Instant::now();
        let mut rejoin = Rejoin::default();
        assert!(matches!(
            rejoin.session_ended(lost(), true, t0),
            Next::Rejoin { .. }
        ));
        let hour_later = t0 + Duration::from_secs(3600);
        let next = rejoin.session_ended(lost(), true, hour_later);
        assert_eq!(
            next,
            Next::Rejoin {
                reason: lost().unwrap_err().to_string(),
                after: FIRST_PAUSE
            }
        );
    }

    /// Seconds since the epoch, as a token's `exp` counts them.
    fn now_secs() -> usize {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as usize
    }

    /// The bug this guards: a rejoin reused the token minted at the start,
    /// so a stream that outlived it (a day) could never rejoin.
    #[test]
    fn a_rejoin_after_the_first_token_expired_joins_with_a_valid_one() {
        let (key, secret) = ("APIkey", "a-secret-long-enough-for-hs256-keys");
        let verifier = TokenVerifier::with_api_key(key, secret);
        let tokens = Tokens::new(Credentials::ApiKey {
            key: key.into(),
            secret: secret.into(),
            who: Identity {
                room: "room".into(),
                identity: "ingress".into(),
                ..Default::default()
            },
            ttl: Duration::from_secs(1),
        });
        let mut rejoin = Rejoin::default();

        let first = tokens.for_join().unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        // The server went away after the first token expired.
        let Next::Rejoin { .. } = rejoin.session_ended(lost(), true, Instant::now()) else {
            panic!("a lost session rejoins");
        };
        let second = tokens.for_join().unwrap();

        // TokenVerifier, like the server, allows a minute of clock skew, so
        // expiry is read from the claims rather than from a refusal.
        let first = verifier.verify(&first).expect("the first token verifies");
        assert!(first.exp <= now_secs(), "the first token has expired");
        let second = verifier.verify(&second).expect("the rejoin token verifies");
        assert!(second.exp > now_secs(), "the rejoin token is still valid");
        assert_eq!(second.sub, "ingress");
        assert!(second.video.room_join && second.video.room == "room");
        assert!(second.video.can_publish == Some(true));
    }
}
