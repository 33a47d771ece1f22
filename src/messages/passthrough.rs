//! `h264passthrough-state`: posted by `h264passthrough` when it knows how the
//! top layer is made (at the stream's first access unit) and whenever that
//! changes (a fallback to transcoding mid-stream).

use super::{count_u32, text, BusMessage};
use crate::passthrough::Mode;

/// Whether the source's own stream is the top layer, and if not, why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassthroughState {
    /// The source's access units go out as they came.
    pub active: bool,
    /// How, while they do: as the top layer (hybrid) or alone (single).
    pub mode: Mode,
    /// Why they do not (empty while active).
    pub reason: String,
    /// The source's picture (0 when no SPS was read).
    pub width: u32,
    pub height: u32,
}

impl BusMessage for PassthroughState {
    const NAME: &'static str = "h264passthrough-state";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("active", self.active)
            .field("mode", self.mode)
            .field("reason", self.reason.as_str())
            .field("width", self.width)
            .field("height", self.height)
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        if s.name() != Self::NAME {
            return None;
        }
        Some(PassthroughState {
            active: s.get::<bool>("active").ok()?,
            mode: s.get::<Mode>("mode").unwrap_or_default(),
            reason: text(s, "reason"),
            width: count_u32(s, "width"),
            height: count_u32(s, "height"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        gst::init().expect("gstreamer");
        crate::messages::tests::round_trip(PassthroughState {
            active: false,
            mode: Mode::Hybrid,
            reason: "B-frames (timestamps out of order)".into(),
            width: 1280,
            height: 720,
        });
    }
}
