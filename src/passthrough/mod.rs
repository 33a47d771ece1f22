//! H.264 pass-through: the source's own access units as the top simulcast
//! layer (hybrid) or as the only one (single), instead of decoding and
//! encoding them again. No GStreamer types here: the SPS reader ([`sps`]),
//! whether a stream qualifies at its start ([`eligibility::check`]) and
//! while it runs ([`eligibility::Watch`]). The element that applies them is
//! `h264passthrough`; the service chooses the mode (`video_passthrough`).

pub mod eligibility;
pub mod ladder;
pub mod sps;

use gst::glib;

/// How the video's top layer is made.
#[derive(
    Debug,
    Eq,
    PartialEq,
    Hash,
    Clone,
    Copy,
    glib::Enum,
    Default,
    serde::Deserialize,
    serde::Serialize,
)]
#[repr(u32)]
#[enum_type(name = "GstH264PassthroughMode")]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every layer decoded and encoded (the transcode LiveKit's ingress does).
    #[default]
    #[enum_value(name = "Off: every layer transcoded", nick = "off")]
    Off = 0,
    /// The source's stream as the top layer, the lower layers transcoded.
    #[enum_value(
        name = "Hybrid: source as top layer, lower layers transcoded",
        nick = "hybrid"
    )]
    Hybrid = 1,
    /// The source's stream as the only layer, nothing decoded.
    #[enum_value(name = "Single: source as the only layer", nick = "single")]
    Single = 2,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Off, Mode::Hybrid, Mode::Single];

    /// The mode a setting names (`off`, `hybrid` or `single`).
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Hybrid => "hybrid",
            Mode::Single => "single",
        }
    }
}
