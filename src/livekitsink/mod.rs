//! `livekitsink`: publishes encoded simulcast video and Opus audio into a LiveKit room.
//!
//! Request pads `video_%u` take the encoded layers of one simulcast track (H.264
//! byte-stream access units or VP8); they are ordered by size to become the
//! LiveKit layers q, h and f, and each layer's bitrate is read from its
//! `nominal-bitrate` tag. `audio_%u` takes Opus. The element joins the room when
//! every requested pad has its caps and every video pad its bitrate tag or its
//! first buffer (the tag, when there is one, comes before it), so the track
//! announces each layer's bitrate; it leaves at EOS.
//!
//! Upstream it sends force-key-unit events when the room asks for a keyframe and,
//! with `dynacast`, `livekit-layer-active` custom events (field `active`) when no
//! one subscribes to a layer any more, or someone does again.
//!
//! Bus messages (element messages): `livekit-connected` (room-sid, room-name,
//! participant-sid), `livekit-track-published` (kind, sid, name, layers, and
//! info: the server's TrackInfo as protobuf bytes),
//! `livekit-resumed` (reason) when the signal connection dropped and was
//! resumed while media kept flowing, `livekit-reconnecting` (reason) when the
//! server was lost and the element rejoins and republishes,
//! `livekit-disconnected` (reason), and every `stats-interval` ms
//! `livekit-stats`; all written and read through [`crate::messages`].

use gst::glib;
use gst::prelude::*;

mod imp;
mod pad;
mod wallclock;

glib::wrapper! {
    pub struct LiveKitSink(ObjectSubclass<imp::LiveKitSink>) @extends gst::Element, gst::Object;
}

/// Which source a track is announced as (`video-track-source`: camera or
/// screen-share; `audio-track-source`: microphone or screen-share-audio).
pub use crate::options::TrackSource;

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "livekitsink",
        gst::Rank::NONE,
        LiveKitSink::static_type(),
    )
}
