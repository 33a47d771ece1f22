//! An H.264 sequence parameter set (ITU-T H.264, 7.3.2.1.1 and annex E), read
//! only as far as pass-through needs it: profile, constraint flags and level,
//! the picture size after cropping, and from the VUI whether pictures may be
//! reordered (`max_num_reorder_frames`, B-frames). Also the SPS inside an
//! `avcC` record (the `codec_data` of `stream-format=avc` caps) and in an
//! Annex B access unit.
//!
//! Every read is bounds-checked and every count bounded: malformed input is
//! an error, never a panic or an endless loop (fuzzed: `fuzz/fuzz_targets/h264_sps.rs`).

/// What an SPS says that decides pass-through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    /// constraint_set0..5 flags and the two reserved bits, as in the NAL.
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    /// The displayed picture, after the frame cropping.
    pub width: u32,
    pub height: u32,
    /// Progressive frames only (no field or MBAFF coding).
    pub frame_mbs_only: bool,
    /// The VUI's `max_num_reorder_frames`; `None` when the SPS has no
    /// bitstream restriction (it then says nothing about B-frames).
    pub max_num_reorder_frames: Option<u32>,
}

/// Why bytes are not a readable SPS.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpsError {
    #[error("the SPS ends early")]
    Truncated,
    #[error("not an SPS NAL unit (type {0})")]
    NotSps(u8),
    #[error("SPS field {0} out of range")]
    OutOfRange(&'static str),
    #[error("no SPS in the codec data")]
    NoSps,
}

/// The RBSP of a NAL unit: its bytes with the emulation prevention bytes
/// (the 3 in 00 00 03) removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// A big-endian bit reader with Exp-Golomb codes.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, SpsError> {
        let byte = self.data.get(self.pos / 8).ok_or(SpsError::Truncated)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    fn flag(&mut self) -> Result<bool, SpsError> {
        Ok(self.bit()? == 1)
    }

    fn bits(&mut self, n: u32) -> Result<u32, SpsError> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    /// ue(v); values beyond 32 bits are out of range for every field here.
    fn ue(&mut self) -> Result<u32, SpsError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(SpsError::OutOfRange("exp-golomb code"));
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Result<i64, SpsError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// ue(v) no larger than `max`.
    fn ue_max(&mut self, max: u32, field: &'static str) -> Result<u32, SpsError> {
        let v = self.ue()?;
        if v > max {
            return Err(SpsError::OutOfRange(field));
        }
        Ok(v)
    }
}

/// Skips a scaling list of `size` coefficients (7.3.2.1.1.1).
fn skip_scaling_list(r: &mut Bits, size: u32) -> Result<(), SpsError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(SpsError::OutOfRange("delta_scale"));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// Skips HRD parameters (E.1.2).
fn skip_hrd(r: &mut Bits) -> Result<(), SpsError> {
    let count = r.ue_max(31, "cpb_cnt_minus1")? + 1;
    r.bits(8)?; // bit_rate_scale, cpb_size_scale
    for _ in 0..count {
        r.ue()?;
        r.ue()?;
        r.bit()?;
    }
    r.bits(20)?; // four 5-bit lengths
    Ok(())
}

/// Reads the VUI (E.1.1) up to the bitstream restriction: the
/// max_num_reorder_frames it gives, if any.
fn vui_reorder_frames(r: &mut Bits) -> Result<Option<u32>, SpsError> {
    if r.flag()? {
        // aspect_ratio_info: Extended_SAR carries its own size.
        if r.bits(8)? == 255 {
            r.bits(32)?;
        }
    }
    if r.flag()? {
        r.bit()?; // overscan_appropriate_flag
    }
    if r.flag()? {
        r.bits(4)?; // video_format, video_full_range_flag
        if r.flag()? {
            r.bits(24)?; // colour description
        }
    }
    if r.flag()? {
        r.ue()?;
        r.ue()?;
    }
    if r.flag()? {
        r.bits(32)?; // num_units_in_tick
        r.bits(32)?; // time_scale
        r.bit()?; // fixed_frame_rate_flag
    }
    let nal_hrd = r.flag()?;
    if nal_hrd {
        skip_hrd(r)?;
    }
    let vcl_hrd = r.flag()?;
    if vcl_hrd {
        skip_hrd(r)?;
    }
    if nal_hrd || vcl_hrd {
        r.bit()?; // low_delay_hrd_flag
    }
    r.bit()?; // pic_struct_present_flag
    if !r.flag()? {
        return Ok(None);
    }
    r.bit()?; // motion_vectors_over_pic_boundaries_flag
    r.ue()?; // max_bytes_per_pic_denom
    r.ue()?; // max_bits_per_mb_denom
    r.ue()?; // log2_max_mv_length_horizontal
    r.ue()?; // log2_max_mv_length_vertical
    let reorder = r.ue_max(16, "max_num_reorder_frames")?;
    Ok(Some(reorder))
}

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices.
fn has_chroma_info(profile_idc: u8) -> bool {
    matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    )
}

impl Sps {
    /// Parses an SPS NAL unit (its header byte first, emulation prevention
    /// bytes still in).
    pub fn parse(nal: &[u8]) -> Result<Sps, SpsError> {
        let header = *nal.first().ok_or(SpsError::Truncated)?;
        if header & 0x1f != 7 {
            return Err(SpsError::NotSps(header & 0x1f));
        }
        let data = rbsp(&nal[1..]);
        let mut r = Bits::new(&data);
        let profile_idc = r.bits(8)? as u8;
        let constraint_flags = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        r.ue_max(31, "seq_parameter_set_id")?;
        let (mut chroma_format_idc, mut bit_depth_luma) = (1, 8);
        if has_chroma_info(profile_idc) {
            chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
            if chroma_format_idc == 3 {
                r.bit()?; // separate_colour_plane_flag
            }
            bit_depth_luma = r.ue_max(6, "bit_depth_luma_minus8")? + 8;
            r.ue_max(6, "bit_depth_chroma_minus8")?;
            r.bit()?; // qpprime_y_zero_transform_bypass_flag
            if r.flag()? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        r.ue_max(12, "log2_max_frame_num_minus4")?;
        match r.ue_max(2, "pic_order_cnt_type")? {
            0 => {
                r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
            }
            1 => {
                r.bit()?;
                r.se()?;
                r.se()?;
                let cycle = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            _ => {}
        }
        r.ue_max(16, "max_num_ref_frames")?;
        r.bit()?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = r.ue_max(1023, "pic_width_in_mbs_minus1")? + 1;
        let height_units = r.ue_max(1023, "pic_height_in_map_units_minus1")? + 1;
        let frame_mbs_only = r.flag()?;
        if !frame_mbs_only {
            r.bit()?; // mb_adaptive_frame_field_flag
        }
        r.bit()?; // direct_8x8_inference_flag
        let mut width = width_mbs * 16;
        let mut height = height_units * 16 * if frame_mbs_only { 1 } else { 2 };
        if r.flag()? {
            let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
            // Crop units (table 6-1 and 7.4.2.1.1).
            let (sub_w, sub_h) = match chroma_format_idc {
                1 => (2, 2),
                2 => (2, 1),
                _ => (1, 1),
            };
            let unit_x = if chroma_format_idc == 0 { 1 } else { sub_w };
            let unit_y = (if chroma_format_idc == 0 { 1 } else { sub_h })
                * if frame_mbs_only { 1 } else { 2 };
            let crop_w = u64::from(left) + u64::from(right);
            let crop_h = u64::from(top) + u64::from(bottom);
            let crop_w = crop_w.saturating_mul(unit_x);
            let crop_h = crop_h.saturating_mul(unit_y);
            if crop_w >= u64::from(width) || crop_h >= u64::from(height) {
                return Err(SpsError::OutOfRange("frame cropping"));
            }
            width -= crop_w as u32;
            height -= crop_h as u32;
        }
        let max_num_reorder_frames = if r.flag()? {
            vui_reorder_frames(&mut r)?
        } else {
            None
        };
        Ok(Sps {
            profile_idc,
            constraint_flags,
            level_idc,
            chroma_format_idc,
            bit_depth_luma,
            width,
            height,
            frame_mbs_only,
            max_num_reorder_frames,
        })
    }

    /// The first SPS of an `avcC` record (ISO/IEC 14496-15, 5.3.3.1).
    pub fn from_avcc(record: &[u8]) -> Result<Sps, SpsError> {
        // version, profile, compat, level, length size; then the SPS count.
        let count = record.get(5).ok_or(SpsError::Truncated)? & 0x1f;
        if record[0] != 1 || count == 0 {
            return Err(SpsError::NoSps);
        }
        let len = usize::from(u16::from_be_bytes([
            *record.get(6).ok_or(SpsError::Truncated)?,
            *record.get(7).ok_or(SpsError::Truncated)?,
        ]));
        Sps::parse(record.get(8..8 + len).ok_or(SpsError::Truncated)?)
    }

    /// The first SPS in an Annex B (byte-stream) access unit, if there is one.
    pub fn find_in_annex_b(data: &[u8]) -> Option<Result<Sps, SpsError>> {
        annex_b_nals(data)
            .find(|nal| nal.first().is_some_and(|h| h & 0x1f == 7))
            .map(Sps::parse)
    }
}

/// The NAL units of an Annex B byte stream (start codes removed).
pub fn annex_b_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // The next start code, and a leading zero of a 4-byte one.
            let mut end = s - 3;
            while end > 0 && data[end - 1] == 0 {
                end -= 1;
            }
            end
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(s, e)| data.get(s..e.max(s)).unwrap_or_default())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SPSs x264 wrote (ffmpeg 5.1, `testsrc2`): 1280x720 high profile with
    /// `-bf 0` and with `-bf 3`, 1920x1080 `-profile:v baseline`.
    pub(crate) const X264_720P_HIGH_BF0: &str = "6764001facb200a00b760220000003002000000781e30649";
    pub(crate) const X264_720P_HIGH_BF3: &str =
        "6764001facd9405005bb0110000003001000000303c0f1831960";
    const X264_1080P_BASELINE: &str = "6742c028d900780227e5c044000003000400000300f03c60c920";

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn reads_what_x264_writes() {
        let no_b = Sps::parse(&hex(X264_720P_HIGH_BF0)).expect("sps");
        assert_eq!(
            no_b,
            Sps {
                profile_idc: 100,
                constraint_flags: 0,
                level_idc: 31,
                chroma_format_idc: 1,
                bit_depth_luma: 8,
                width: 1280,
                height: 720,
                frame_mbs_only: true,
                max_num_reorder_frames: Some(0),
            }
        );
        let with_b = Sps::parse(&hex(X264_720P_HIGH_BF3)).expect("sps");
        assert_eq!(with_b.max_num_reorder_frames, Some(2));
        // Cropped from 1088 coded lines.
        let base = Sps::parse(&hex(X264_1080P_BASELINE)).expect("sps");
        assert_eq!((base.width, base.height), (1920, 1080));
        assert_eq!((base.profile_idc, base.constraint_flags), (66, 0xc0));
        assert_eq!(base.max_num_reorder_frames, Some(0));
    }

    #[test]
    fn the_sps_is_found_in_avcc_and_annex_b() {
        let sps = hex(X264_720P_HIGH_BF0);
        let mut avcc = vec![1, 0x64, 0, 0x1f, 0xff, 0xe1];
        avcc.extend((sps.len() as u16).to_be_bytes());
        avcc.extend(&sps);
        avcc.extend([1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb]);
        assert_eq!(Sps::from_avcc(&avcc), Sps::parse(&sps));
        let mut au = vec![0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1];
        au.extend(&sps);
        au.extend([0, 0, 1, 0x65, 0x88]);
        assert_eq!(Sps::find_in_annex_b(&au), Some(Sps::parse(&sps)));
        assert_eq!(Sps::find_in_annex_b(&[0, 0, 1, 0x65, 0x88]), None);
    }

    #[test]
    fn truncated_and_garbage_input_is_an_error() {
        assert_eq!(Sps::parse(&[]), Err(SpsError::Truncated));
        assert_eq!(Sps::parse(&[0x68, 1, 2]), Err(SpsError::NotSps(8)));
        assert!(Sps::parse(&[0x67, 0x64, 0, 0x1f]).is_err());
        // A ue(v) of 32 zeros.
        assert!(Sps::parse(&[0x67, 0x64, 0, 0x1f, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(Sps::from_avcc(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 200, 0x67]).is_err());
        assert_eq!(
            Sps::from_avcc(&[1, 0x64, 0, 0x1f, 0xff, 0xe0]),
            Err(SpsError::NoSps)
        );
    }

    #[test]
    fn emulation_prevention_bytes_are_removed() {
        assert_eq!(
            rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 5]),
            vec![0, 0, 1, 0, 0, 0, 5]
        );
    }

    #[test]
    fn annex_b_nals_split_on_start_codes() {
        let au = [
            0, 0, 0, 1, 9, 0xf0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 7,
        ];
        let nals: Vec<&[u8]> = annex_b_nals(&au).collect();
        assert_eq!(
            nals,
            vec![&[9, 0xf0][..], &[0x67, 1, 2][..], &[0x65, 7][..]]
        );
    }
}
