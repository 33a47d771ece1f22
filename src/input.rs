//! The input contract: what every source of an ingress pipeline provides, and
//! how a push input asks the service whether a stream key may publish.
//!
//! A **source element** (rtmpingresssrc, srtingresssrc, urlingresssrc):
//! - adds sometimes pads named `video` and `audio`, at most one of each, with
//!   encoded, parsed caps (`video/x-h264` byte-stream or avc, `video/x-h265`,
//!   `video/x-vp8`, `audio/mpeg` AAC, `audio/x-opus`, ...) and timestamped
//!   buffers, keyframes without the delta-unit flag; then `no-more-pads`, or a
//!   pad that comes late is still taken;
//! - sends EOS on every pad when the publisher leaves or the pull ends, and
//!   posts an element error when the input fails;
//! - posts the element messages of [`crate::messages::publish`]:
//!   `ingress-publish-started` (input, peer), `ingress-input-stats` (what
//!   arrives, measured) and `ingress-publish-stopped` (reason).
//!
//! A **push input** (RTMP, SRT) has a listener shared per port by the elements
//! on it: each element claims its stream key, and the service installs an
//! [`Authorizer`] that answers every [`PublishRequest`] before any media is
//! read; a refusal reaches the publisher in its protocol's own words.
//!
//! The pipeline is built from an [`InputSource`]: adding an input is a module
//! with its element plus one arm in [`InputSource::element`].

use crate::messages::publish::Stats;
use crate::pipeline::PipelineError;
use gst::prelude::*;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The protocols a publish can come in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    Rtmp,
    Srt,
    Url,
}

impl InputKind {
    /// As `ingress-publish-started` names it.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Rtmp => "rtmp",
            InputKind::Srt => "srt",
            InputKind::Url => "url",
        }
    }
}

/// The two kinds of media a source gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Video,
    Audio,
}

/// Counts what a source receives and, every interval, gives the
/// `ingress-input-stats` to post: bytes so far, bit rates since the last.
#[derive(Debug)]
pub struct InputMeter {
    interval: Duration,
    video: u64,
    audio: u64,
    at_last: (u64, u64),
    last: Instant,
}

impl InputMeter {
    pub fn new(interval: Duration) -> InputMeter {
        InputMeter {
            interval,
            video: 0,
            audio: 0,
            at_last: (0, 0),
            last: Instant::now(),
        }
    }

    /// Counts `bytes` of `kind`; the stats to post when an interval is over.
    pub fn add(&mut self, kind: MediaKind, bytes: usize) -> Option<Stats> {
        let bytes = bytes as u64;
        match kind {
            MediaKind::Video => self.video += bytes,
            MediaKind::Audio => self.audio += bytes,
        }
        self.due(Instant::now())
    }

    fn due(&mut self, now: Instant) -> Option<Stats> {
        let elapsed = now.duration_since(self.last);
        if elapsed < self.interval {
            return None;
        }
        let rate = |now: u64, before: u64| {
            (now.saturating_sub(before) as f64 * 8.0 / elapsed.as_secs_f64()) as u64
        };
        let stats = Stats {
            bytes: self.video + self.audio,
            video_bitrate: rate(self.video, self.at_last.0),
            audio_bitrate: rate(self.audio, self.at_last.1),
        };
        self.at_last = (self.video, self.audio);
        self.last = now;
        Some(stats)
    }
}

/// A push publish waiting for a decision.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub input: InputKind,
    pub key: String,
    pub peer: SocketAddr,
    /// The RTMP application the publisher named (empty for other inputs).
    pub app: String,
}

/// An application's answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Refused; the text goes to the publisher.
    Reject(String),
}

/// Decides on every publish on a listener's port.
pub type Authorizer =
    Arc<dyn Fn(PublishRequest) -> Pin<Box<dyn Future<Output = Decision> + Send>> + Send + Sync>;

/// Where one ingress pipeline's media comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// A publish on this node's RTMP listener, by stream key.
    Rtmp {
        address: String,
        port: u16,
        stream_key: String,
    },
    /// A publish on this node's SRT listener, by stream key.
    Srt {
        address: String,
        port: u16,
        stream_key: String,
    },
    /// A URL pulled at once (http(s) files and HLS, srt, rtsp, rtmp).
    Url { url: String },
}

impl InputSource {
    pub fn kind(&self) -> InputKind {
        match self {
            InputSource::Rtmp { .. } => InputKind::Rtmp,
            InputSource::Srt { .. } => InputKind::Srt,
            InputSource::Url { .. } => InputKind::Url,
        }
    }

    /// The source element, configured; named `src` in the pipeline.
    pub fn element(&self) -> Result<gst::Element, PipelineError> {
        let (factory, properties): (&str, Vec<(&str, glib::Value)>) = match self {
            InputSource::Rtmp {
                address,
                port,
                stream_key,
            } => (
                "rtmpingresssrc",
                vec![
                    ("address", address.to_value()),
                    ("port", u32::from(*port).to_value()),
                    ("stream-key", stream_key.to_value()),
                ],
            ),
            InputSource::Srt {
                address,
                port,
                stream_key,
            } => (
                "srtingresssrc",
                vec![
                    ("address", address.to_value()),
                    ("port", u32::from(*port).to_value()),
                    ("stream-key", stream_key.to_value()),
                ],
            ),
            InputSource::Url { url } => ("urlingresssrc", vec![("url", url.to_value())]),
        };
        let element = crate::pipeline::make(factory, Some("src"))?;
        for (property, value) in properties {
            crate::pipeline::set(&element, property, value)?;
        }
        Ok(element)
    }
}

use gst::glib;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_reports_each_interval_what_arrived() {
        let mut meter = InputMeter::new(Duration::from_secs(2));
        let start = meter.last;
        assert_eq!(meter.add(MediaKind::Video, 250_000), None);
        meter.add(MediaKind::Audio, 12_000);
        let stats = meter.due(start + Duration::from_secs(2)).expect("due");
        assert_eq!(stats.bytes, 262_000);
        assert_eq!(
            (stats.video_bitrate, stats.audio_bitrate),
            (1_000_000, 48_000)
        );
        // The next interval counts only what came since.
        meter.add(MediaKind::Video, 500_000);
        let stats = meter.due(start + Duration::from_secs(4)).expect("due");
        assert_eq!((stats.video_bitrate, stats.audio_bitrate), (2_000_000, 0));
        assert_eq!(meter.due(start + Duration::from_secs(5)), None);
    }
}
