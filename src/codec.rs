//! The codecs this project encodes and publishes, in one table: what users
//! call them, their GStreamer caps, encoder and its settings, and how they are
//! offered over WebRTC (MIME, RTP clock, payload types, H.264 profile-level-id).
//!
//! Presets, `simulcastenc` (encoder and output caps), `livekitsink` (pad caps
//! to codec) and the publisher's offer all read their codec facts from here:
//! adding a codec or an H.264 profile is one row in [`VIDEO_CODECS`] plus its
//! tests.
//!
//! What RTMP carries *in* (HEVC, AV1, VP9 besides H.264) is another question,
//! answered by `rtmp::flv::InputVideoCodec`: those are decoded, never published.

use gst::glib;
use gst::prelude::*;
use livekit_protocol as proto;

/// A video codec (and for H.264, the profile) an ingress encodes and publishes.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstSimulcastEncCodec")]
pub enum VideoCodec {
    /// H.264 constrained baseline (LiveKit's default and H264_BASELINE).
    #[default]
    #[enum_value(name = "H.264 constrained baseline", nick = "h264")]
    H264Baseline = 0,
    #[enum_value(name = "H.264 main", nick = "h264-main")]
    H264Main = 1,
    #[enum_value(name = "H.264 high", nick = "h264-high")]
    H264High = 2,
    #[enum_value(name = "VP8", nick = "vp8")]
    Vp8 = 3,
}

/// An H.264 profile as caps and SDP name it.
#[derive(Debug, PartialEq, Eq)]
pub struct H264Profile {
    /// The `profile` field of `video/x-h264` caps.
    pub caps_profile: &'static str,
    /// profile_idc and the constraint-flag byte (profile-iop) offered in SDP:
    /// the values LiveKit (pion matches these two bytes exactly) and browsers
    /// register, not necessarily the flags an encoder writes (x264 marks
    /// constrained baseline 0xc0 and main 0x40; see [`h264_profile_of`]).
    pub profile_idc: u8,
    pub profile_iop: u8,
    /// The level offered when the stream does not say (3.1: what x264 picks
    /// for 720p at 30 fps, LiveKit's default preset).
    pub default_level_idc: u8,
}

impl H264Profile {
    /// The SDP `profile-level-id` for this profile at `level_idc`.
    pub fn profile_level_id(&self, level_idc: u8) -> u32 {
        u32::from(self.profile_idc) << 16 | u32::from(self.profile_iop) << 8 | u32::from(level_idc)
    }
}

/// One row of the table: everything the project needs to know about a video codec.
#[derive(Debug)]
pub struct VideoCodecInfo {
    pub codec: VideoCodec,
    /// What users write (`simulcastenc codec=…`, the service's pipeline).
    pub name: &'static str,
    /// The MIME type LiveKit and SDP use.
    pub mime: &'static str,
    pub clock_rate: u32,
    /// Payload type and its RTX payload type when we choose them; `None`: str0m's.
    pub payload_types: Option<(u8, u8)>,
    /// The caps structure name.
    pub caps_name: &'static str,
    /// `Some` for H.264.
    pub h264: Option<H264Profile>,
    pub encoder: &'static str,
    /// Sets up an `encoder` for live WebRTC at a bitrate (bits per second)
    /// and keyframe distance (frames).
    pub configure_encoder: fn(&gst::Element, u32, u32),
}

/// The video codecs this project encodes and publishes.
pub const VIDEO_CODECS: [VideoCodecInfo; 4] = [
    h264_row(
        VideoCodec::H264Baseline,
        "h264",
        "constrained-baseline",
        0x42,
        0xe0,
    ),
    h264_row(VideoCodec::H264Main, "h264-main", "main", 0x4d, 0x00),
    h264_row(VideoCodec::H264High, "h264-high", "high", 0x64, 0x00),
    VideoCodecInfo {
        codec: VideoCodec::Vp8,
        name: "vp8",
        mime: "video/VP8",
        clock_rate: 90_000,
        payload_types: None,
        caps_name: "video/x-vp8",
        h264: None,
        encoder: "vp8enc",
        configure_encoder: configure_vp8enc,
    },
];

const fn h264_row(
    codec: VideoCodec,
    name: &'static str,
    caps_profile: &'static str,
    profile_idc: u8,
    profile_iop: u8,
) -> VideoCodecInfo {
    VideoCodecInfo {
        codec,
        name,
        mime: "video/H264",
        clock_rate: 90_000,
        // One H.264 variant per offer, so one fixed pair serves every profile.
        payload_types: Some((108, 109)),
        caps_name: "video/x-h264",
        h264: Some(H264Profile {
            caps_profile,
            profile_idc,
            profile_iop,
            default_level_idc: 0x1f,
        }),
        encoder: "x264enc",
        configure_encoder: configure_x264enc,
    }
}

/// x264 for WebRTC: no B-frames, zero-latency. The profile is not a property:
/// x264enc takes it from the caps downstream ([`VideoCodec::encoded_caps`]).
fn configure_x264enc(enc: &gst::Element, bitrate: u32, keyframe_distance: u32) {
    enc.set_property("bitrate", (bitrate / 1000).max(1));
    enc.set_property_from_str("tune", "zerolatency");
    enc.set_property_from_str("speed-preset", "veryfast");
    enc.set_property("bframes", 0u32);
    enc.set_property("key-int-max", keyframe_distance);
    // Scene-cut keyframes would land on different frames in each layer;
    // keyframes come from the interval and from requests only.
    enc.set_property("option-string", "scenecut=0");
}

fn configure_vp8enc(enc: &gst::Element, bitrate: u32, keyframe_distance: u32) {
    enc.set_property("target-bitrate", bitrate as i32);
    enc.set_property("deadline", 1i64);
    enc.set_property("cpu-used", 8i32);
    enc.set_property_from_str("end-usage", "cbr");
    enc.set_property("lag-in-frames", 0i32);
    enc.set_property("keyframe-max-dist", keyframe_distance as i32);
}

/// The one audio codec: Opus.
#[derive(Debug)]
pub struct AudioCodecInfo {
    pub mime: &'static str,
    pub clock_rate: u32,
    pub caps_name: &'static str,
    pub encoder: &'static str,
}

pub const OPUS: AudioCodecInfo = AudioCodecInfo {
    mime: "audio/opus",
    clock_rate: 48_000,
    caps_name: "audio/x-opus",
    encoder: "opusenc",
};

/// Why caps or a stream name no codec we publish.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("unsupported video caps {0}")]
    UnsupportedCaps(String),
    #[error("unsupported H.264 profile {0:?} (use constrained-baseline, main or high)")]
    UnsupportedProfile(String),
}

impl VideoCodec {
    pub const ALL: [VideoCodec; 4] = [
        VideoCodec::H264Baseline,
        VideoCodec::H264Main,
        VideoCodec::H264High,
        VideoCodec::Vp8,
    ];

    /// This codec's row of the table.
    pub fn info(self) -> &'static VideoCodecInfo {
        VIDEO_CODECS
            .iter()
            .find(|row| row.codec == self)
            .expect("every codec has a row")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn mime(self) -> &'static str {
        self.info().mime
    }

    pub fn is_h264(self) -> bool {
        self.info().h264.is_some()
    }

    /// The codec LiveKit's protocol names (its default is constrained baseline).
    pub fn from_proto(codec: proto::VideoCodec) -> VideoCodec {
        match codec {
            proto::VideoCodec::DefaultVc | proto::VideoCodec::H264Baseline => {
                VideoCodec::H264Baseline
            }
            proto::VideoCodec::H264Main => VideoCodec::H264Main,
            proto::VideoCodec::H264High => VideoCodec::H264High,
            proto::VideoCodec::Vp8 => VideoCodec::Vp8,
        }
    }

    /// The caps the encoder must produce (what `simulcastenc` puts on its pads).
    pub fn encoded_caps(self) -> gst::Caps {
        let info = self.info();
        let mut caps = gst::Caps::builder(info.caps_name);
        if let Some(h264) = &info.h264 {
            caps = caps
                .field("profile", h264.caps_profile)
                .field("stream-format", "byte-stream")
                .field("alignment", "au");
        }
        caps.build()
    }

    /// The codec of encoded caps. `Ok(None)`: H.264 caps without a profile, so
    /// only the stream's SPS can tell (see [`h264_profile_of`]).
    pub fn from_caps(s: &gst::StructureRef) -> Result<Option<VideoCodec>, CodecError> {
        let rows: Vec<&VideoCodecInfo> = VIDEO_CODECS
            .iter()
            .filter(|r| r.caps_name == s.name())
            .collect();
        match rows[..] {
            [] => Err(CodecError::UnsupportedCaps(s.name().to_string())),
            // VP8: one row, whatever its caps' `profile` (vp8enc writes "0").
            [only] => Ok(Some(only.codec)),
            _ => match s.get::<&str>("profile") {
                Err(_) => Ok(None),
                Ok(profile) => rows
                    .iter()
                    .find(|r| r.h264.as_ref().is_some_and(|h| h.caps_profile == profile))
                    .map(|r| Some(r.codec))
                    .ok_or_else(|| CodecError::UnsupportedProfile(profile.to_string())),
            },
        }
    }

    /// The payload types to offer (str0m's defaults where `None`).
    pub fn payload_types(self) -> Option<(u8, u8)> {
        self.info().payload_types
    }
}

/// `level_idc` from the `level` field of H.264 caps (`"3.1"` -> 31); `None`
/// for `1b` and anything else not of the form `N` or `N.N`.
pub fn h264_level_from_caps(s: &gst::StructureRef) -> Option<u8> {
    let level = s.get::<&str>("level").ok()?;
    let (major, minor) = level.split_once('.').unwrap_or((level, "0"));
    let (major, minor): (u8, u8) = (major.parse().ok()?, minor.parse().ok()?);
    (minor < 10).then(|| major.checked_mul(10)?.checked_add(minor))?
}

/// What an H.264 SPS says: its profile among ours (`None`: one we do not
/// publish) and its level_idc.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct SpsProfile {
    pub codec: Option<VideoCodec>,
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
}

/// The profile of an SPS's `profile_idc` and constraint-flag byte, as RFC 6184
/// (table 5) classifies them: constrained baseline is baseline with
/// constraint_set1 (or main with constraint_set0), main is main without it.
pub fn h264_profile_of(profile_idc: u8, constraint_flags: u8) -> Option<VideoCodec> {
    // (profile_idc, mask, value) over the constraint-flag byte; the low four
    // bits (constraint_set4/5 and reserved) must be zero for all three.
    const PATTERNS: [(u8, u8, u8, VideoCodec); 4] = [
        (0x42, 0x4f, 0x40, VideoCodec::H264Baseline),
        (0x4d, 0x8f, 0x80, VideoCodec::H264Baseline),
        (0x4d, 0xaf, 0x00, VideoCodec::H264Main),
        (0x64, 0xff, 0x00, VideoCodec::H264High),
    ];
    PATTERNS
        .iter()
        .find(|(idc, mask, value, _)| *idc == profile_idc && constraint_flags & mask == *value)
        .map(|p| p.3)
}

/// The first SPS in an Annex B (byte-stream) access unit.
pub fn find_sps(data: &[u8]) -> Option<SpsProfile> {
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            let nal = &data[i + 3..];
            // nal_unit_type 7: the SPS; its first three payload bytes are
            // profile_idc, the constraint flags and level_idc.
            if nal.first().is_some_and(|h| h & 0x1f == 7) && nal.len() >= 4 {
                return Some(SpsProfile {
                    codec: h264_profile_of(nal[1], nal[2]),
                    profile_idc: nal[1],
                    constraint_flags: nal[2],
                    level_idc: nal[3],
                });
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_reachable_and_named_like_its_enum_nick() {
        gst::init().expect("gstreamer");
        for codec in VideoCodec::ALL {
            let info = codec.info();
            assert_eq!(info.codec, codec);
            let nick = glib::EnumValue::from_value(&codec.to_value())
                .expect("enum value")
                .1
                .nick();
            assert_eq!(info.name, nick, "{codec:?}");
        }
        assert_eq!(VIDEO_CODECS.len(), VideoCodec::ALL.len());
    }

    #[test]
    fn every_rows_caps_parse_back_to_the_row() {
        gst::init().expect("gstreamer");
        for codec in VideoCodec::ALL {
            let caps = codec.encoded_caps();
            let text = caps.to_string();
            let parsed: gst::Caps = text.parse().expect("caps parse");
            assert!(parsed.is_fixed(), "{text}");
            let s = parsed.structure(0).expect("a structure");
            assert_eq!(VideoCodec::from_caps(s), Ok(Some(codec)), "{text}");
        }
        let no_profile: gst::Caps = "video/x-h264, stream-format=byte-stream".parse().unwrap();
        assert_eq!(
            VideoCodec::from_caps(no_profile.structure(0).unwrap()),
            Ok(None)
        );
        let x264: gst::Caps = "video/x-h264, stream-format=(string)byte-stream, alignment=(string)au, level=(string)3, profile=(string)constrained-baseline, width=(int)640".parse().unwrap();
        assert_eq!(
            VideoCodec::from_caps(x264.structure(0).unwrap()),
            Ok(Some(VideoCodec::H264Baseline))
        );
        let vp8: gst::Caps = "video/x-vp8, profile=(string)0".parse().unwrap();
        assert_eq!(
            VideoCodec::from_caps(vp8.structure(0).unwrap()),
            Ok(Some(VideoCodec::Vp8))
        );
        let hi10: gst::Caps = "video/x-h264, profile=high-10".parse().unwrap();
        assert!(VideoCodec::from_caps(hi10.structure(0).unwrap()).is_err());
        let vp9: gst::Caps = "video/x-vp9".parse().unwrap();
        assert!(VideoCodec::from_caps(vp9.structure(0).unwrap()).is_err());
    }

    #[test]
    fn offered_profile_level_ids_classify_as_their_own_profile() {
        let expected = [
            (VideoCodec::H264Baseline, 0x42e01f),
            (VideoCodec::H264Main, 0x4d001f),
            (VideoCodec::H264High, 0x64001f),
        ];
        for (codec, plid) in expected {
            let h264 = codec.info().h264.as_ref().expect("H.264 row");
            assert_eq!(h264.profile_level_id(h264.default_level_idc), plid);
            assert_eq!(
                h264_profile_of(h264.profile_idc, h264.profile_iop),
                Some(codec),
                "{plid:06x}"
            );
        }
        assert!(VideoCodec::Vp8.info().h264.is_none());
    }

    #[test]
    fn x264_constraint_flags_classify_as_the_profile_asked() {
        // What x264 writes: baseline 42c0, main 4d40, high 6400.
        assert_eq!(h264_profile_of(0x42, 0xc0), Some(VideoCodec::H264Baseline));
        assert_eq!(h264_profile_of(0x4d, 0x40), Some(VideoCodec::H264Main));
        assert_eq!(h264_profile_of(0x64, 0x00), Some(VideoCodec::H264High));
        // Plain baseline (no constraint_set1) may use FMO/ASO: not ours.
        assert_eq!(h264_profile_of(0x42, 0x00), None);
        // Constrained high is not a row.
        assert_eq!(h264_profile_of(0x64, 0x0c), None);
    }

    #[test]
    fn the_sps_is_found_in_a_byte_stream() {
        let au = [
            0, 0, 0, 1, 0x09, 0xf0, // AUD
            0, 0, 0, 1, 0x67, 0x4d, 0x40, 0x28, 0xac, // SPS
            0, 0, 1, 0x68, 0xee, // PPS
        ];
        assert_eq!(
            find_sps(&au),
            Some(SpsProfile {
                codec: Some(VideoCodec::H264Main),
                profile_idc: 0x4d,
                constraint_flags: 0x40,
                level_idc: 40,
            })
        );
        assert_eq!(find_sps(&[0, 0, 1, 0x65, 0x88]), None);
    }

    #[test]
    fn caps_levels_parse() {
        gst::init().expect("gstreamer");
        let level = |l: &str| {
            let caps = gst::Caps::builder("video/x-h264").field("level", l).build();
            h264_level_from_caps(caps.structure(0).unwrap())
        };
        assert_eq!(level("3.1"), Some(31));
        assert_eq!(level("4"), Some(40));
        assert_eq!(level("1b"), None);
    }

    #[test]
    fn proto_codecs_map_to_rows() {
        assert_eq!(
            VideoCodec::from_proto(proto::VideoCodec::DefaultVc),
            VideoCodec::H264Baseline
        );
        assert_eq!(
            VideoCodec::from_proto(proto::VideoCodec::H264High),
            VideoCodec::H264High
        );
        assert_eq!(
            VideoCodec::from_proto(proto::VideoCodec::Vp8),
            VideoCodec::Vp8
        );
    }
}
