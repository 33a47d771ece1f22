//! The input contract: what every source of an ingress pipeline provides, and
//! how a push input asks the service whether a stream key may publish.
//!
//! A **source element** (rtmpingresssrc, srtingresssrc, urlingresssrc):
//! - adds sometimes pads named `video` and `audio`, at most one of each, with
//!   encoded, parsed caps (`video/x-h264` byte-stream or avc, `video/x-h265`,
//!   `video/x-vp8`, `audio/mpeg` AAC, `audio/x-opus`, ...) and timestamped
//!   buffers, keyframes without the delta-unit flag; then `no-more-pads`, or a
//!   pad that comes late is still taken;
//! - a source whose publisher sends its video as several encodings of one
//!   picture (WHIP simulcast) adds, instead of `video`, one sometimes pad
//!   `video_{rid}` per encoding ([`VIDEO_LAYER`], the client's rid: `video_q`,
//!   `video_h`, ...), each with its own caps and size: the layers of one
//!   video track, passed on as they came, never decoded or mixed; a client
//!   sending one encoding (with or without a rid) gets `video`;
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

use crate::pipeline::PipelineError;
use gst::glib;
use gst::prelude::*;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// The protocols a publish can come in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    Rtmp,
    Srt,
    Url,
    Whip,
}

impl InputKind {
    /// As `ingress-publish-started` names it.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Rtmp => "rtmp",
            InputKind::Srt => "srt",
            InputKind::Url => "url",
            InputKind::Whip => "whip",
        }
    }
}

/// The two kinds of media a source gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Video,
    Audio,
}

impl MediaKind {
    /// The kind of a demuxed stream, from its caps' media type; `None` for
    /// anything else (subtitles, private data).
    pub fn of_caps(caps: &gst::CapsRef) -> Option<MediaKind> {
        let media = caps.structure(0)?.name();
        if media.starts_with("video/") {
            Some(MediaKind::Video)
        } else if media.starts_with("audio/") {
            Some(MediaKind::Audio)
        } else {
            None
        }
    }

    /// The pad name a source gives this kind.
    pub fn name(self) -> &'static str {
        match self {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        }
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
    /// Refused; the refusal's text goes to the publisher.
    Reject(Refusal),
}

/// What a refused publisher can do about it, which is what its protocol's
/// answer has to tell: each listener turns a kind into its own code in one
/// place (WHIP's HTTP status, SRT's rejection code), so no answer depends on
/// the wording of a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No ingress has this stream key.
    UnknownKey,
    /// The key is publishing already (here or on another node).
    Busy,
    /// The ingress may not publish this way: disabled, no room yet, another
    /// input type, an input this node does not listen for.
    Forbidden,
    /// This node cannot take the stream now (at capacity, shutting down, its
    /// store out of reach), which says nothing about the stream: a later try,
    /// or another node behind the same address, may succeed.
    NodeUnavailable,
    /// No decision came in time.
    Timeout,
    /// Anything else: the stream could not be started.
    Internal,
}

/// A refused publish: its kind, and the reason in words for the publisher
/// (never the stream key). [`Display`](std::fmt::Display) is the text the
/// publisher sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub reason: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, reason: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            reason: reason.into(),
        }
    }

    /// No ingress has the key; every listener says it in these words.
    pub fn unknown_key() -> Refusal {
        Refusal::new(RefusalKind::UnknownKey, "unknown stream key")
    }

    pub fn busy(reason: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Busy, reason)
    }

    pub fn forbidden(reason: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Forbidden, reason)
    }

    /// A refusal for this node's reasons, not the stream's; `why` is what
    /// keeps the node from it ("at capacity ...", "shutting down").
    pub fn node_unavailable(why: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::NodeUnavailable, why)
    }

    /// A listener's own refusal when the decision takes too long.
    pub fn timeout() -> Refusal {
        Refusal::new(RefusalKind::Timeout, "no decision on the publish in time")
    }

    pub fn internal(reason: impl Into<String>) -> Refusal {
        Refusal::new(RefusalKind::Internal, reason)
    }
}

impl std::fmt::Display for Refusal {
    /// The reason; a node-unavailable one says first that it is about this
    /// node, not the stream (publishers and operators read this text).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == RefusalKind::NodeUnavailable {
            f.write_str("this node cannot take the stream now: ")?;
        }
        f.write_str(&self.reason)
    }
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
        /// Seconds the stream waits for its publisher to come back.
        reconnect_grace: u32,
    },
    /// A publish on this node's SRT listener, by stream key.
    Srt {
        address: String,
        port: u16,
        stream_key: String,
        /// Seconds the stream waits for its publisher to come back.
        reconnect_grace: u32,
    },
    /// A URL pulled at once (http(s) files and HLS, srt, rtsp, rtmp).
    Url { url: String },
    /// A WHIP publish on this node's WHIP listener (HTTP `address:port`), by
    /// stream key.
    Whip {
        address: String,
        port: u16,
        stream_key: String,
    },
}

impl InputSource {
    pub fn kind(&self) -> InputKind {
        match self {
            InputSource::Rtmp { .. } => InputKind::Rtmp,
            InputSource::Srt { .. } => InputKind::Srt,
            InputSource::Url { .. } => InputKind::Url,
            InputSource::Whip { .. } => InputKind::Whip,
        }
    }

    /// The source element, configured; named `src` in the pipeline.
    pub fn element(&self) -> Result<gst::Element, PipelineError> {
        let (factory, properties): (&str, Vec<(&str, glib::Value)>) = match self {
            InputSource::Rtmp {
                address,
                port,
                stream_key,
                reconnect_grace,
            } => (
                "rtmpingresssrc",
                vec![
                    ("address", address.to_value()),
                    ("port", u32::from(*port).to_value()),
                    ("stream-key", stream_key.to_value()),
                    ("reconnect-grace", reconnect_grace.to_value()),
                ],
            ),
            InputSource::Srt {
                address,
                port,
                stream_key,
                reconnect_grace,
            } => (
                "srtingresssrc",
                vec![
                    ("address", address.to_value()),
                    ("port", u32::from(*port).to_value()),
                    ("stream-key", stream_key.to_value()),
                    ("reconnect-grace", reconnect_grace.to_value()),
                ],
            ),
            InputSource::Url { url } => ("urlingresssrc", vec![("url", url.to_value())]),
            InputSource::Whip {
                address,
                port,
                stream_key,
            } => (
                "whipingresssrc",
                vec![
                    ("address", address.to_value()),
                    ("port", u32::from(*port).to_value()),
                    ("stream-key", stream_key.to_value()),
                ],
            ),
        };
        let element = crate::pipeline::make(factory, Some("src"))?;
        for (property, value) in properties {
            crate::pipeline::set(&element, property, value)?;
        }
        Ok(element)
    }
}

/// The sometimes pads `video` and `audio` of a source element (see the module
/// documentation), carrying `video` and `audio` caps.
pub fn pad_templates(video: &gst::Caps, audio: &gst::Caps) -> Vec<gst::PadTemplate> {
    [("video", video), ("audio", audio)]
        .into_iter()
        .filter_map(|(name, caps)| {
            gst::PadTemplate::new(
                name,
                gst::PadDirection::Src,
                gst::PadPresence::Sometimes,
                caps,
            )
            .ok()
        })
        .collect()
}

/// The name template of the pads of a simulcast video's encodings.
pub const VIDEO_LAYER: &str = "video_%s";

/// The sometimes pads `video_{rid}` of a source that gives simulcast
/// encodings (see the module documentation), carrying `video` caps.
pub fn layer_pad_template(video: &gst::Caps) -> Option<gst::PadTemplate> {
    gst::PadTemplate::new(
        VIDEO_LAYER,
        gst::PadDirection::Src,
        gst::PadPresence::Sometimes,
        video,
    )
    .ok()
}

/// Whether a source pad carries one simulcast encoding of the video.
pub fn is_video_layer(pad_name: &str) -> bool {
    pad_name.starts_with("video_")
}

/// Caps that are any of the media types `names`.
pub fn any_of(names: &[&str]) -> gst::Caps {
    names
        .iter()
        .map(|name| gst::Caps::builder(*name).build())
        .collect()
}

/// A ghost pad of `element` named `name` (its template's name, or
/// `video_{rid}` of [`VIDEO_LAYER`]) for `target`,
/// activated, with the sticky events before the caps that `stream` carries
/// (`target` itself, or the stream's pad upstream of a queue the events have
/// not passed yet) and `caps` stored, so the application's `pad-added` sees
/// the caps; not yet added.
pub fn ghost_with_caps(
    element: &impl IsA<gst::Element>,
    name: &str,
    target: &gst::Pad,
    stream: &gst::Pad,
    caps: &gst::Event,
) -> Option<gst::GhostPad> {
    let templ = element.pad_template(name).or_else(|| {
        is_video_layer(name)
            .then(|| element.pad_template(VIDEO_LAYER))
            .flatten()
    })?;
    let ghost = gst::GhostPad::builder_from_template(&templ)
        .name(name)
        .build();
    ghost.set_target(Some(target)).ok()?;
    let _ = ghost.set_active(true);
    stream.sticky_events_foreach(|event| {
        if event.type_() < gst::EventType::Caps {
            let _ = ghost.store_sticky_event(event);
        }
        std::ops::ControlFlow::Continue(gst::EventForeachAction::Keep)
    });
    let _ = ghost.store_sticky_event(caps);
    Some(ghost)
}

/// Whether a frame with `verdict` (see [`crate::lateness`]) goes on; where a
/// drop starts and ends, `element` logs it in its category `cat` and posts
/// `ingress-input-late-dropped` when the stream is on time again.
pub fn on_time(
    element: &impl IsA<gst::Element>,
    cat: gst::DebugCategory,
    verdict: crate::lateness::Verdict,
) -> bool {
    use crate::lateness::Verdict;
    use crate::messages::BusMessage;
    match verdict {
        Verdict::StartDrop { late_ns } => {
            gst::warning!(
                cat,
                obj = element,
                "frames {} ms behind the live edge: dropping to the next keyframe on time",
                late_ns / 1_000_000
            );
        }
        Verdict::Resume { dropped, late_ns } => {
            gst::warning!(
                cat,
                obj = element,
                "on time again: dropped {} video and {} audio frames",
                dropped.video,
                dropped.audio
            );
            let message = crate::messages::publish::LateDropped {
                video_frames: dropped.video,
                audio_frames: dropped.audio,
                lateness_ms: late_ns / 1_000_000,
            };
            let _ = element.post_message(message.to_message(element.upcast_ref::<gst::Element>()));
        }
        Verdict::Pass | Verdict::Drop => {}
    }
    verdict.passes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_the_publisher_sees_it() {
        assert_eq!(Refusal::unknown_key().to_string(), "unknown stream key");
        assert_eq!(
            Refusal::forbidden("this ingress is disabled").to_string(),
            "this ingress is disabled"
        );
        // Only the node's own reasons say that they are about this node.
        let full = Refusal::node_unavailable("shutting down");
        assert_eq!(full.reason, "shutting down");
        assert_eq!(
            full.to_string(),
            "this node cannot take the stream now: shutting down"
        );
    }
}
