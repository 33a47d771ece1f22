//! Whether an H.264 stream may go to the room as it came: checked from its
//! SPS at the start ([`check`]) and on every access unit after
//! ([`Watch::frame`]), never assumed.
//!
//! The rules, and why:
//! - H.264 only: the room's codecs are H.264 and VP8, and only H.264 comes
//!   in over RTMP; anything else is transcoded.
//! - Constrained baseline, main or high (8-bit 4:2:0), progressive: the
//!   profiles livekitsink offers (one profile-level-id per track) and
//!   WebRTC decoders take.
//! - Level at most [`MAX_LEVEL_IDC`] (5.1: 4K at 30 fps), what browser and
//!   libwebrtc decoders are built for.
//! - No B-frames: WebRTC decoders output frames in the order they arrive.
//!   The SPS must say so (constrained baseline has none; main and high must
//!   carry the VUI bitstream restriction with `max_num_reorder_frames` 0,
//!   which x264, OBS and ffmpeg write); then every frame is watched for
//!   timestamps out of order or a composition offset that changes (an
//!   encoder restarted with B-frames whose SPS did not tell).
//! - Keyframes at most [`MAX_KEYFRAME_INTERVAL`] apart: a viewer switching
//!   up to the top layer, or joining, waits for the source's next keyframe
//!   (the room's keyframe requests cannot reach an RTMP publisher).
//! - Same profile and picture size as at the start: the track was announced
//!   with them.

use super::sps::{Sps, SpsError};
use crate::codec::{h264_profile_of, VideoCodec};
use std::time::Duration;

/// The highest level passed through (5.1).
pub const MAX_LEVEL_IDC: u8 = 51;
/// The longest wait for the source's next keyframe.
pub const MAX_KEYFRAME_INTERVAL: Duration = Duration::from_secs(5);

/// A stream that qualifies: what the room is told about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// Its profile, as the track's codec (constrained baseline, main, high).
    pub codec: VideoCodec,
    pub level_idc: u8,
    pub width: u32,
    pub height: u32,
}

/// Why a stream is transcoded instead; the text is for logs and the
/// ingress's state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("pass-through is off")]
    Off,
    #[error("not H.264 ({0})")]
    NotH264(String),
    #[error("no readable SPS at the start ({0})")]
    NoSps(String),
    #[error("H.264 profile_idc {profile_idc} with constraint flags {flags:#04x} is not constrained-baseline, main or high")]
    Profile { profile_idc: u8, flags: u8 },
    #[error("not 8-bit 4:2:0 (chroma_format_idc {chroma}, {depth}-bit)")]
    Format { chroma: u32, depth: u32 },
    #[error("interlaced")]
    Interlaced,
    #[error("level {}.{} is above {}.{}", .0 / 10, .0 % 10, MAX_LEVEL_IDC / 10, MAX_LEVEL_IDC % 10)]
    Level(u8),
    #[error("B-frames (the SPS allows {0} reordered frames)")]
    Reordered(u32),
    #[error("the SPS does not rule out B-frames (no bitstream restriction in its VUI)")]
    ReorderUnknown,
    #[error("B-frames (timestamps out of order)")]
    OutOfOrder,
    #[error("B-frames (the composition offset changed)")]
    OffsetChanged,
    #[error("keyframes more than {}s apart", MAX_KEYFRAME_INTERVAL.as_secs())]
    KeyframeInterval,
    #[error("the stream changed from {from} to {to}")]
    Changed { from: String, to: String },
}

/// Whether the stream an SPS describes may be passed through.
pub fn check(sps: &Sps) -> Result<Source, Ineligible> {
    let codec =
        h264_profile_of(sps.profile_idc, sps.constraint_flags).ok_or(Ineligible::Profile {
            profile_idc: sps.profile_idc,
            flags: sps.constraint_flags,
        })?;
    if sps.chroma_format_idc != 1 || sps.bit_depth_luma != 8 {
        return Err(Ineligible::Format {
            chroma: sps.chroma_format_idc,
            depth: sps.bit_depth_luma,
        });
    }
    if !sps.frame_mbs_only {
        return Err(Ineligible::Interlaced);
    }
    if sps.level_idc > MAX_LEVEL_IDC {
        return Err(Ineligible::Level(sps.level_idc));
    }
    match (codec, sps.max_num_reorder_frames) {
        // Constrained baseline has no B slices at all.
        (VideoCodec::H264Baseline, _) | (_, Some(0)) => {}
        (_, Some(n)) => return Err(Ineligible::Reordered(n)),
        (_, None) => return Err(Ineligible::ReorderUnknown),
    }
    Ok(Source {
        codec,
        level_idc: sps.level_idc,
        width: sps.width,
        height: sps.height,
    })
}

/// The checks at the start from an SPS that may not have been readable.
pub fn check_parsed(sps: Result<Sps, SpsError>) -> Result<Source, Ineligible> {
    check(&sps.map_err(|e| Ineligible::NoSps(e.to_string()))?)
}

/// One access unit as the watch sees it (times in nanoseconds).
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub keyframe: bool,
}

/// Follows a passed-through stream: the first reason it stops qualifying.
#[derive(Debug)]
pub struct Watch {
    source: Source,
    last_pts: Option<u64>,
    last_keyframe: Option<u64>,
    /// PTS - DTS of the first frame that had both.
    offset: Option<i128>,
}

impl Watch {
    pub fn new(source: Source) -> Watch {
        Watch {
            source,
            last_pts: None,
            last_keyframe: None,
            offset: None,
        }
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// An access unit, with the SPS it carries if any: `Err` once the
    /// stream no longer qualifies.
    pub fn frame(
        &mut self,
        frame: Frame,
        sps: Option<Result<Sps, SpsError>>,
    ) -> Result<(), Ineligible> {
        if let Some(sps) = sps {
            let now = check_parsed(sps)?;
            let was = self.source;
            if (now.codec, now.width, now.height) != (was.codec, was.width, was.height) {
                return Err(Ineligible::Changed {
                    from: format!("{} {}x{}", was.codec.name(), was.width, was.height),
                    to: format!("{} {}x{}", now.codec.name(), now.width, now.height),
                });
            }
        }
        let Some(pts) = frame.pts else {
            return Ok(());
        };
        if self.last_pts.is_some_and(|last| pts < last) {
            return Err(Ineligible::OutOfOrder);
        }
        self.last_pts = Some(pts);
        if let Some(dts) = frame.dts {
            let offset = i128::from(pts) - i128::from(dts);
            match self.offset {
                None => self.offset = Some(offset),
                // A millisecond of rounding (RTMP's clock) is no reordering.
                Some(first) if (offset - first).abs() > 1_000_000 => {
                    return Err(Ineligible::OffsetChanged)
                }
                Some(_) => {}
            }
        }
        let since = pts.saturating_sub(*self.last_keyframe.get_or_insert(pts));
        if since > MAX_KEYFRAME_INTERVAL.as_nanos() as u64 {
            return Err(Ineligible::KeyframeInterval);
        }
        if frame.keyframe {
            self.last_keyframe = Some(pts);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passthrough::sps::tests::{hex, X264_720P_HIGH_BF0, X264_720P_HIGH_BF3};

    const MS: u64 = 1_000_000;

    fn high_720p() -> Source {
        check(&Sps::parse(&hex(X264_720P_HIGH_BF0)).unwrap()).expect("eligible")
    }

    fn frame(pts_ms: u64, dts_ms: u64, keyframe: bool) -> Frame {
        Frame {
            pts: Some(pts_ms * MS),
            dts: Some(dts_ms * MS),
            keyframe,
        }
    }

    #[test]
    fn x264_without_b_frames_qualifies_and_with_them_not() {
        assert_eq!(
            high_720p(),
            Source {
                codec: VideoCodec::H264High,
                level_idc: 31,
                width: 1280,
                height: 720
            }
        );
        let with_b = Sps::parse(&hex(X264_720P_HIGH_BF3)).unwrap();
        assert_eq!(check(&with_b), Err(Ineligible::Reordered(2)));
    }

    #[test]
    fn each_rule_has_its_reason() {
        let ok = Sps::parse(&hex(X264_720P_HIGH_BF0)).unwrap();
        let with = |f: &dyn Fn(&mut Sps)| {
            let mut sps = ok;
            f(&mut sps);
            check(&sps)
        };
        assert_eq!(
            with(&|s| s.max_num_reorder_frames = None),
            Err(Ineligible::ReorderUnknown)
        );
        // Constrained baseline needs no VUI to rule out B-frames.
        assert!(with(&|s| {
            s.profile_idc = 66;
            s.constraint_flags = 0xc0;
            s.max_num_reorder_frames = None
        })
        .is_ok());
        assert!(matches!(
            with(&|s| s.profile_idc = 110),
            Err(Ineligible::Profile { .. })
        ));
        assert_eq!(with(&|s| s.level_idc = 52), Err(Ineligible::Level(52)));
        assert_eq!(
            with(&|s| s.level_idc = 52).unwrap_err().to_string(),
            "level 5.2 is above 5.1"
        );
        assert_eq!(
            with(&|s| s.frame_mbs_only = false),
            Err(Ineligible::Interlaced)
        );
        assert!(matches!(
            with(&|s| s.chroma_format_idc = 2),
            Err(Ineligible::Format { .. })
        ));
        assert!(matches!(
            check_parsed(Err(SpsError::Truncated)),
            Err(Ineligible::NoSps(_))
        ));
    }

    #[test]
    fn the_watch_sees_reordering_offsets_and_sparse_keyframes() {
        let mut watch = Watch::new(high_720p());
        assert_eq!(watch.frame(frame(0, 0, true), None), Ok(()));
        assert_eq!(watch.frame(frame(33, 33, false), None), Ok(()));
        // I P B: the B frame's PTS is before the P frame's.
        let mut watch = Watch::new(high_720p());
        watch.frame(frame(66, 0, true), None).unwrap();
        assert_eq!(
            watch.frame(frame(133, 33, false), None),
            Err(Ineligible::OffsetChanged)
        );
        let mut watch = Watch::new(high_720p());
        watch.frame(frame(100, 100, true), None).unwrap();
        assert_eq!(
            watch.frame(frame(90, 90, false), None),
            Err(Ineligible::OutOfOrder)
        );
        // A constant offset (some encoders delay every PTS) is no reordering.
        let mut watch = Watch::new(high_720p());
        for i in 0..10 {
            assert_eq!(
                watch.frame(frame(i * 33 + 66, i * 33, i == 0), None),
                Ok(())
            );
        }
        // Keyframes 2 s apart pass; none for over 5 s does not.
        let mut watch = Watch::new(high_720p());
        for i in 0..=180u64 {
            let t = i * 1000 / 30;
            assert_eq!(watch.frame(frame(t, t, i % 60 == 0), None), Ok(()));
        }
        let mut watch = Watch::new(high_720p());
        watch.frame(frame(0, 0, true), None).unwrap();
        assert_eq!(
            watch.frame(frame(5100, 5100, false), None),
            Err(Ineligible::KeyframeInterval)
        );
    }

    #[test]
    fn a_new_sps_must_still_qualify_and_match() {
        let mut watch = Watch::new(high_720p());
        let same = Sps::parse(&hex(X264_720P_HIGH_BF0));
        assert_eq!(watch.frame(frame(0, 0, true), Some(same)), Ok(()));
        let b = Sps::parse(&hex(X264_720P_HIGH_BF3));
        assert_eq!(
            watch.frame(frame(33, 33, true), Some(b)),
            Err(Ineligible::Reordered(2))
        );
        let mut smaller = Sps::parse(&hex(X264_720P_HIGH_BF0)).unwrap();
        smaller.width = 640;
        smaller.height = 360;
        assert!(matches!(
            watch.frame(frame(66, 66, true), Some(Ok(smaller))),
            Err(Ineligible::Changed { .. })
        ));
    }
}
