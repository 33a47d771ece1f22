//! LiveKit Ingress as a GStreamer plugin.
//!
//! The plugin `livekitingress` registers the elements that carry a stream from a
//! non-WebRTC source into a LiveKit room. The protocol cores beneath the elements
//! carry no GStreamer types so they can be tested and fuzzed on their own.

pub mod codec;
pub mod decode;
pub mod fdlimit;
pub mod livekit;
pub mod livekitsink;
pub mod pipeline;
pub mod presets;
pub mod rtmp;
pub mod rtmpingresssrc;
pub mod runtime;
pub mod simulcastenc;
pub mod supervisor;
mod sync;

use gst::glib;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtmpingresssrc::register(plugin)?;
    simulcastenc::register(plugin)?;
    livekitsink::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    livekitingress,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "https://livekit.io",
    env!("BUILD_REL_DATE")
);
