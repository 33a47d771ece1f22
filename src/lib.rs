//! LiveKit Ingress as a GStreamer plugin.
//!
//! The plugin `livekitingress` registers the elements that carry a stream from a
//! non-WebRTC source into a LiveKit room. The protocol cores beneath the elements
//! carry no GStreamer types so they can be tested and fuzzed on their own.

pub mod claims;
pub mod codec;
pub mod decode;
pub mod fdlimit;
pub mod h264passthrough;
pub mod heap;
pub mod input;
pub mod lateness;
pub mod livekit;
pub mod livekitsink;
pub mod media_socket;
pub mod messages;
pub mod options;
pub mod passthrough;
pub mod pipeline;
pub mod presets;
pub mod rtmp;
pub mod rtmpingresssrc;
pub mod runtime;
pub mod scaling;
pub mod simulcastenc;
pub mod srt;
pub mod srtingresssrc;
pub mod supervisor;
mod sync;
pub mod urlingresssrc;
pub mod whip;
pub mod whipingresssrc;

use gst::glib;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    rtmpingresssrc::register(plugin)?;
    simulcastenc::register(plugin)?;
    livekitsink::register(plugin)?;
    srtingresssrc::register(plugin)?;
    urlingresssrc::register(plugin)?;
    whipingresssrc::register(plugin)?;
    h264passthrough::register(plugin)?;
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

#[cfg(test)]
mod tests {
    use gst::glib;
    use gst::prelude::*;

    /// What `gst-inspect-1.0` shows as a property's default is what a new
    /// element has (each default is one `DEFAULT_*` constant in the element).
    #[test]
    fn property_defaults_are_what_a_new_element_has() {
        gst::init().expect("gstreamer");
        for element in [
            glib::Object::new::<crate::rtmpingresssrc::RtmpIngressSrc>().upcast::<gst::Element>(),
            glib::Object::new::<crate::simulcastenc::SimulcastEnc>().upcast(),
            glib::Object::new::<crate::livekitsink::LiveKitSink>().upcast(),
            glib::Object::new::<crate::srtingresssrc::SrtIngressSrc>().upcast(),
            glib::Object::new::<crate::h264passthrough::H264Passthrough>().upcast(),
        ] {
            for pspec in element.list_properties().iter() {
                if pspec.owner_type() != element.type_() {
                    continue;
                }
                let value = element.property_value(pspec.name());
                let default = pspec.default_value();
                // An unset string property reads as empty.
                let text = |v: &glib::Value| v.get::<Option<String>>().ok().flatten();
                let same = match default.type_() {
                    glib::Type::STRING => {
                        text(default).unwrap_or_default() == text(&value).unwrap_or_default()
                    }
                    _ => default.compare(&value) == Some(std::cmp::Ordering::Equal),
                };
                assert!(
                    same,
                    "{}::{}: default {:?}, new element {:?}",
                    element.type_().name(),
                    pspec.name(),
                    pspec.default_value(),
                    value
                );
            }
        }
    }
}
