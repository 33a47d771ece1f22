//! `simulcastenc`: one decoded video in, LiveKit's simulcast layers out.
//!
//! A bin: `sink` takes raw video; `src_0` (the main layer), `src_1` (half) and
//! `src_2` (quarter) carry encoded frames with width, height and framerate in
//! their caps and a `nominal-bitrate` tag. The layers come from `preset` (one of
//! LiveKit's ten presets) or from the custom `codec`, `framerate` and `layers`.
//! Source aspect ratio is kept, nothing is upscaled, frames above the frame rate
//! are dropped.
//!
//! Control, upstream on any src pad:
//! - a force-key-unit event gives aligned keyframes on every active layer;
//! - a custom event `livekit-layer-active` with `active` (boolean) pauses the
//!   layer (nothing scaled or encoded) or resumes it with a keyframe; the action
//!   signal `set-layer-active(index, active)` does the same.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct SimulcastEnc(ObjectSubclass<imp::SimulcastEnc>) @extends gst::Bin, gst::Element, gst::Object, @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Named in `layer-specs` structures, so known before any is parsed.
    crate::presets::Quality::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "simulcastenc",
        gst::Rank::NONE,
        SimulcastEnc::static_type(),
    )
}
