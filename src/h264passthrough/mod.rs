//! `h264passthrough`: parsed H.264 in; out the source's own access units as a
//! simulcast top layer (`src`), and the decoded pictures (`raw`) for the
//! lower layers, with a downstream force-key-unit event before each picture
//! that was a source keyframe, so that encoders behind it (simulcastenc) put
//! their keyframes on the same frames.
//!
//! A bin:
//!
//! ```text
//! sink ─ h264parse ─ tee ─ [watch, bitrate] ──────────────────────────── input-selector ─ src
//!                     └─ valve ─ [keyframe marks] ─ queue ─ decoder ─ videoconvert ─ tee ─ raw
//!                                                                                  └─ queue ─ valve ─ videoscale ─ x264enc ─┘
//! ```
//!
//! The source's access units leave on the thread that brings them (no queue:
//! nothing on their way blocks); the decode's valve is ahead of its queue, so
//! while it is closed (`mode=single`) no thread wakes for them.
//!
//! Whether the stream may be passed through is checked at its first access
//! unit and on every one after ([`crate::passthrough::eligibility`]); when it
//! does not (or no longer) qualify, the top layer becomes the source decoded
//! and encoded again at its own size and profile, through the same `src`
//! pad (the room's track and participant stay). The element then posts
//! `h264passthrough-state` with the reason. `mode=single` decodes nothing
//! until such a fallback (from the source's next keyframe on).

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct H264Passthrough(ObjectSubclass<imp::H264Passthrough>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "h264passthrough",
        gst::Rank::NONE,
        H264Passthrough::static_type(),
    )
}
