//! livekitsink's request pad: it carries its kind (a video layer or the
//! audio track), set when the pad is requested, so no code reads a pad's
//! name to know what it takes.

use gst::glib;
use gst::subclass::prelude::*;
use std::sync::OnceLock;

/// What a pad takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadKind {
    /// One encoded layer of the simulcast video track (its layer index is
    /// decided at the join, by size).
    Video,
    /// The Opus audio track.
    Audio,
}

impl PadKind {
    /// The kind of pads made from the template named `template` (`video_%u`, `audio_%u`).
    pub fn of_template(template: &str) -> Option<PadKind> {
        match template {
            "video_%u" => Some(PadKind::Video),
            "audio_%u" => Some(PadKind::Audio),
            _ => None,
        }
    }
}

glib::wrapper! {
    pub struct LiveKitSinkPad(ObjectSubclass<imp::LiveKitSinkPad>) @extends gst::Pad, gst::Object;
}

impl LiveKitSinkPad {
    /// The pad's kind; video for a pad made without one (never, by livekitsink).
    pub fn kind(&self) -> PadKind {
        self.imp().kind.get().copied().unwrap_or(PadKind::Video)
    }

    /// Sets the kind, once, right after the pad is built.
    pub fn set_kind(&self, kind: PadKind) {
        let _ = self.imp().kind.set(kind);
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct LiveKitSinkPad {
        pub(super) kind: OnceLock<PadKind>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for LiveKitSinkPad {
        const NAME: &'static str = "GstLiveKitSinkPad";
        type Type = super::LiveKitSinkPad;
        type ParentType = gst::Pad;
    }

    impl ObjectImpl for LiveKitSinkPad {}
    impl GstObjectImpl for LiveKitSinkPad {}
    impl PadImpl for LiveKitSinkPad {}
}
