//! Every bus message and custom event the elements and the service exchange,
//! one module per message (family): the name and the fields are spelled once,
//! here, and each message has a typed value that writes
//! ([`BusMessage::to_structure`], [`BusMessage::to_message`]) and reads
//! ([`BusMessage::from_structure`], [`BusMessage::parse`]) it.
//!
//! The names and fields on the bus are a contract with applications (gst-launch
//! scripts, the README): they do not change with the Rust types.
//!
//! - [`publish`]: `ingress-publish-started`, `ingress-publish-stopped`,
//!   `ingress-input-stats`, posted by every source element of the input
//!   contract ([`crate::input`]), and `ingress-input-late-dropped` (those
//!   that drop late frames); [`rtmp`]: `rtmp-metadata` (rtmpingresssrc);
//! - [`livekit`]: `livekit-connected`, `livekit-track-published`,
//!   `livekit-resumed`, `livekit-reconnecting`, `livekit-disconnected`;
//!   [`livekit_stats`]: `livekit-stats` (posted by livekitsink);
//! - [`layer_active`]: the `livekit-layer-active` upstream event (livekitsink
//!   to simulcastenc);
//! - [`passthrough`]: `h264passthrough-state` (how the top layer is made);
//! - [`input`]: `ingress-input-video` / `ingress-input-audio`, the application
//!   messages the service's pipeline posts about its input.

use gst::prelude::*;

pub mod input;
pub mod layer_active;
pub mod livekit;
pub mod livekit_stats;
pub mod passthrough;
pub mod publish;
pub mod rtmp;

/// One bus message: its structure name, how it is written and how it is read.
pub trait BusMessage: Sized {
    /// The structure name on the bus.
    const NAME: &'static str;

    fn to_structure(&self) -> gst::Structure;

    /// The value a structure named [`Self::NAME`] carries; `None` for any
    /// other name (and where a field the value cannot do without is missing).
    fn from_structure(s: &gst::StructureRef) -> Option<Self>;

    /// An element message from `src`.
    fn to_message(&self, src: &impl IsA<gst::Object>) -> gst::Message {
        gst::message::Element::builder(self.to_structure())
            .src(src)
            .build()
    }

    /// The value `message` carries, if it is this message.
    fn parse(message: &gst::MessageRef) -> Option<Self> {
        match message.view() {
            gst::MessageView::Element(_) | gst::MessageView::Application(_) => {
                Self::from_structure(message.structure()?)
            }
            _ => None,
        }
    }
}

/// A string field; absent reads as empty, as the service always read them.
pub(crate) fn text(s: &gst::StructureRef, field: &str) -> String {
    s.get::<String>(field).unwrap_or_default()
}

/// A non-negative count of any integer type (caps carry `i32`, the elements
/// write `u32` or `u64`); absent or negative reads as 0.
pub(crate) fn count(s: &gst::StructureRef, field: &str) -> u64 {
    s.get::<u64>(field)
        .or_else(|_| s.get::<u32>(field).map(u64::from))
        .or_else(|_| s.get::<i32>(field).map(|v| v.max(0) as u64))
        .or_else(|_| s.get::<i64>(field).map(|v| v.max(0) as u64))
        .unwrap_or(0)
}

/// [`count`] clamped to `u32`.
pub(crate) fn count_u32(s: &gst::StructureRef, field: &str) -> u32 {
    count(s, field).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::BusMessage;

    /// `value` written to a structure reads back the same, and a structure of
    /// another name reads as nothing.
    pub fn round_trip<M: BusMessage + PartialEq + std::fmt::Debug>(value: M) {
        let s = value.to_structure();
        assert_eq!(s.name(), M::NAME);
        assert_eq!(M::from_structure(&s), Some(value));
        assert_eq!(M::from_structure(&gst::Structure::new_empty("other")), None);
    }
}
