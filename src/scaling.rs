//! The caps a scaled picture is asked for.
//!
//! Caps without `colorimetry` mean a default that depends on the picture's
//! height: BT.709 from 720 lines up, BT.601 below. A decoder that does not
//! know its stream's colorimetry (avdec_h264 on a stream without VUI colour
//! fields, most RTMP sources) leaves the field out, so a 1080p picture scaled
//! to 640x360 under caps that only give a size would also be converted from
//! BT.709 to BT.601: a matrix conversion of every pixel that costs videoscale
//! about four times the scaling itself (1080p30 to 360p: 0.07 core instead of
//! 0.016, more than decoding the source). A scaled picture keeps its
//! source's colorimetry and chroma siting, so videoscale only scales, and
//! every layer of a track says the same colours.

use gst_video::VideoInfo;

/// `video/x-raw` at `width`x`height` with square pixels, in the colorimetry
/// and chroma siting of `source` (its explicit ones, or the defaults its size
/// implies).
pub fn scaled_caps(source: &gst::CapsRef, width: u32, height: u32) -> gst::Caps {
    let mut caps = gst::Caps::builder("video/x-raw")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    if let Ok(info) = VideoInfo::from_caps(source) {
        caps = caps.field("colorimetry", info.colorimetry().to_string());
        if !info.chroma_site().is_empty() {
            caps = caps.field("chroma-site", info.chroma_site().to_str());
        }
    }
    caps.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fields: &str) -> gst::Caps {
        format!("video/x-raw, format=I420, framerate=30/1{fields}")
            .parse()
            .expect("caps")
    }

    fn field(caps: &gst::Caps, name: &str) -> String {
        caps.structure(0)
            .and_then(|s| s.get::<String>(name).ok())
            .unwrap_or_default()
    }

    #[test]
    fn an_hd_source_without_colorimetry_stays_bt709_when_scaled_to_sd() {
        gst::init().expect("gst");
        let source = raw(", width=1920, height=1080, chroma-site=mpeg2");
        let scaled = scaled_caps(&source, 640, 360);
        assert_eq!(field(&scaled, "colorimetry"), "bt709");
        assert_eq!(field(&scaled, "chroma-site"), "mpeg2");
        let s = scaled.structure(0).expect("structure");
        assert_eq!(s.get::<i32>("width"), Ok(640));
        assert_eq!(s.get::<i32>("height"), Ok(360));
        // What videoscale would assume for 640x360 without the field:
        let sd = VideoInfo::from_caps(&raw(", width=640, height=360")).expect("info");
        assert_ne!(sd.colorimetry().to_string(), "bt709");
    }

    #[test]
    fn a_source_s_own_colorimetry_is_kept() {
        gst::init().expect("gst");
        let source = raw(", width=1280, height=720, colorimetry=bt601");
        assert_eq!(
            field(&scaled_caps(&source, 320, 180), "colorimetry"),
            "bt601"
        );
    }

    #[test]
    fn caps_that_are_not_a_picture_give_the_size_alone() {
        gst::init().expect("gst");
        let scaled = scaled_caps(&gst::Caps::new_empty_simple("video/x-raw"), 320, 180);
        assert_eq!(field(&scaled, "colorimetry"), "");
        assert_eq!(
            scaled.structure(0).and_then(|s| s.get::<i32>("width").ok()),
            Some(320)
        );
    }
}
