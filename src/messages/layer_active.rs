//! `livekit-layer-active`: the custom upstream event with which livekitsink
//! (dynacast) pauses a simulcast layer no one subscribes to, or resumes it,
//! and which simulcastenc obeys on any src pad. Field `active` (boolean).

/// Whether the layer whose pad the event travels up should be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerActive {
    pub active: bool,
}

impl LayerActive {
    pub const NAME: &'static str = "livekit-layer-active";

    pub fn to_structure(self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("active", self.active)
            .build()
    }

    /// `None` for a structure of another name or without `active`.
    pub fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        if s.name() != Self::NAME {
            return None;
        }
        s.get::<bool>("active")
            .ok()
            .map(|active| LayerActive { active })
    }

    pub fn to_event(self) -> gst::Event {
        gst::event::CustomUpstream::new(self.to_structure())
    }

    /// Whether `event` is this event at all (with or without a usable
    /// `active`): such an event is for the element that knows the name and is
    /// not passed further.
    pub fn is(event: &gst::EventRef) -> bool {
        event.structure().is_some_and(|s| s.name() == Self::NAME)
    }

    pub fn parse(event: &gst::EventRef) -> Option<Self> {
        match event.view() {
            gst::EventView::CustomUpstream(_) => Self::from_structure(event.structure()?),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_active_survives_the_event() {
        gst::init().expect("gstreamer");
        for active in [true, false] {
            let event = LayerActive { active }.to_event();
            assert!(LayerActive::is(&event));
            assert_eq!(LayerActive::parse(&event), Some(LayerActive { active }));
        }
        let without = gst::event::CustomUpstream::new(gst::Structure::new_empty(LayerActive::NAME));
        assert!(LayerActive::is(&without));
        assert_eq!(LayerActive::parse(&without), None);
        let other = gst::event::CustomUpstream::new(
            gst::Structure::builder("other")
                .field("active", true)
                .build(),
        );
        assert!(!LayerActive::is(&other));
        assert_eq!(LayerActive::parse(&other), None);
    }
}
