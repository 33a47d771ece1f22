//! One publishing session as its owner sees it: the configuration, the
//! frames in, the events out, and `run`, which joins, and rejoins after a
//! lost server as `signalling::Rejoin` decides.
//!
//! Beneath it: `session` (one join: the IO loop around str0m's `Rtc`),
//! `negotiation` (tracks, offers and answers, sans-IO), `signalling` (join,
//! resume, leave, the rejoin rule) and `token` (which token each join uses).

use super::session;
use super::signalling::{Next, Rejoin};
use super::stats::SendStats;
use super::token::{Credentials, Tokens};
use super::tracks::{AudioTrackSpec, VideoTrackSpec};
use livekit_protocol as proto;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub use super::signalling::REJOIN_FOR;

/// Where and as whom to publish, and what.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// `ws://` or `wss://` URL of the LiveKit server.
    pub url: String,
    /// What each join's access token comes from (see `token::Tokens`).
    pub credentials: Credentials,
    pub video: Option<VideoTrackSpec>,
    pub audio: Option<AudioTrackSpec>,
    /// How often to report what was sent (`PublisherEvent::Stats`); never if `None`.
    pub stats_interval: Option<Duration>,
}

/// Encoded media for the room, timestamped by the caller.
#[derive(Debug)]
pub enum MediaInput {
    /// One encoded frame (H.264 Annex B access unit or VP8 frame) of layer `layer`.
    Video {
        layer: usize,
        wallclock: Instant,
        /// 90 kHz RTP time.
        rtp_time: u64,
        data: Vec<u8>,
    },
    /// One Opus packet.
    Audio {
        wallclock: Instant,
        /// 48 kHz RTP time.
        rtp_time: u64,
        data: Vec<u8>,
    },
    /// An audio track to publish now, in a session that started without one.
    AddAudio(AudioTrackSpec),
    /// The source ended: unpublish and leave.
    Finish,
}

/// What the session tells its owner.
#[derive(Clone, Debug, PartialEq)]
pub enum PublisherEvent {
    Connected {
        room_sid: String,
        room_name: String,
        participant_sid: String,
    },
    TrackPublished {
        kind: &'static str,
        layers: u32,
        /// The track as the server published it (sid, name, source, ...).
        info: Box<proto::TrackInfo>,
    },
    /// ICE and DTLS are up: media flows from now on.
    MediaConnected,
    /// The room wants a keyframe on video layer `layer` (all layers when `None`).
    KeyframeRequest { layer: Option<usize> },
    /// Dynacast: whether anyone subscribes to video layer `layer`.
    LayerActive { layer: usize, active: bool },
    /// The signal connection was lost and resumed; media never stopped.
    Resumed { reason: String },
    /// The connection was lost; the publisher is rejoining the room.
    Rejoining { reason: String },
    /// The session ended normally.
    Disconnected { reason: String },
    /// The session failed; its message is meant for the user.
    Failed { error: PublisherError },
    /// What was sent so far and what the room asked for, once per stats interval.
    Stats(Box<SendStats>),
}

/// Why a publishing session failed, by what its owner can do about it; the
/// message is meant for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublisherError {
    /// The server refused the credentials (HTTP 401/403), or no token could be made.
    #[error("{0}")]
    NotAuthorized(String),
    /// The server could not be reached, or did not answer in time (signal
    /// connection, address lookup, ICE/DTLS).
    #[error("{0}")]
    Unreachable(String),
    /// The server refused to join, to publish a track, or ended the session
    /// before the tracks were published.
    #[error("{0}")]
    Refused(String),
    /// The server does not accept the track's codec in this room.
    #[error("{0}")]
    CodecRefused(String),
    /// The connection (signal or media) was lost and could not be restored.
    #[error("{0}")]
    MediaLost(String),
    /// Anything else (WebRTC, local sockets, an unreadable answer).
    #[error("{0}")]
    Other(String),
}

impl PublisherError {
    /// The same kind with its message rewritten.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> PublisherError {
        use PublisherError::*;
        match self {
            NotAuthorized(m) => NotAuthorized(f(m)),
            Unreachable(m) => Unreachable(f(m)),
            Refused(m) => Refused(f(m)),
            CodecRefused(m) => CodecRefused(f(m)),
            MediaLost(m) => MediaLost(f(m)),
            Other(m) => Other(f(m)),
        }
    }
}

pub type EventSink = Arc<dyn Fn(PublisherEvent) + Send + Sync>;

/// Runs a session to its end, reporting through `events`. A session that was
/// up and lost its server (signal closed, media connection gone, server
/// restarted) rejoins and republishes with growing pauses for up to
/// [`REJOIN_FOR`]; a session that never got in fails at once, with the reason.
pub async fn run(
    mut config: PublisherConfig,
    mut media: mpsc::Receiver<MediaInput>,
    events: EventSink,
) {
    let mut tokens = Tokens::new(config.credentials.clone());
    let mut rejoin = Rejoin::default();
    loop {
        let mut joined = false;
        let outcome = session::run(
            &mut config,
            &mut tokens,
            &mut media,
            events.clone(),
            &mut joined,
        )
        .await;
        let (reason, pause) = match rejoin.session_ended(outcome, joined, Instant::now()) {
            Next::Done(reason) => {
                events(PublisherEvent::Disconnected { reason });
                return;
            }
            Next::Fail(error) => {
                events(PublisherEvent::Failed { error });
                return;
            }
            Next::Rejoin { reason, after } => (reason, after),
        };
        events(PublisherEvent::Rejoining { reason });
        // Media that arrives meanwhile is of no use later: drop it.
        let wait = tokio::time::sleep(pause);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                frame = media.recv() => match frame {
                    Some(MediaInput::Finish) | None => {
                        events(PublisherEvent::Disconnected { reason: "end of stream".into() });
                        return;
                    }
                    // The rejoin publishes it with the rest.
                    Some(MediaInput::AddAudio(spec)) => config.audio = Some(spec),
                    Some(_) => {}
                },
            }
        }
    }
}
