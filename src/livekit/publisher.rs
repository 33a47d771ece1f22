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
    /// The session failed; the text is meant for the user.
    Failed { message: String },
    /// What was sent so far and what the room asked for, once per stats interval.
    Stats(Box<SendStats>),
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
            Next::Fail(message) => {
                events(PublisherEvent::Failed { message });
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
