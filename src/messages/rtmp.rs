//! rtmpingresssrc's own element message, beyond the input contract's
//! ([`super::publish`]): the publisher's `onMetaData`.

use super::BusMessage;

/// `rtmp-metadata`: the publisher's `onMetaData`, only the fields it sent
/// (field names as in FLV: `videocodecid`, `videodatarate`, ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub framerate: Option<f64>,
    pub videocodecid: Option<u32>,
    /// kbit/s.
    pub videodatarate: Option<u32>,
    pub audiocodecid: Option<u32>,
    pub audiosamplerate: Option<u32>,
    pub audiochannels: Option<u32>,
    pub encoder: Option<String>,
}

impl From<&rml_rtmp::sessions::StreamMetadata> for Metadata {
    fn from(m: &rml_rtmp::sessions::StreamMetadata) -> Self {
        Metadata {
            width: m.video_width,
            height: m.video_height,
            framerate: m.video_frame_rate.map(f64::from),
            videocodecid: m.video_codec_id,
            videodatarate: m.video_bitrate_kbps,
            audiocodecid: m.audio_codec_id,
            audiosamplerate: m.audio_sample_rate,
            audiochannels: m.audio_channels,
            encoder: m.encoder.clone(),
        }
    }
}

impl BusMessage for Metadata {
    const NAME: &'static str = "rtmp-metadata";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field_if_some("width", self.width)
            .field_if_some("height", self.height)
            .field_if_some("framerate", self.framerate)
            .field_if_some("videocodecid", self.videocodecid)
            .field_if_some("videodatarate", self.videodatarate)
            .field_if_some("audiocodecid", self.audiocodecid)
            .field_if_some("audiosamplerate", self.audiosamplerate)
            .field_if_some("audiochannels", self.audiochannels)
            .field_if_some("encoder", self.encoder.as_deref())
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        if s.name() != Self::NAME {
            return None;
        }
        let number = |field: &str| s.get::<u32>(field).ok();
        Some(Metadata {
            width: number("width"),
            height: number("height"),
            framerate: s.get::<f64>("framerate").ok(),
            videocodecid: number("videocodecid"),
            videodatarate: number("videodatarate"),
            audiocodecid: number("audiocodecid"),
            audiosamplerate: number("audiosamplerate"),
            audiochannels: number("audiochannels"),
            encoder: s.get::<String>("encoder").ok(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::round_trip;
    use super::*;

    #[test]
    fn metadata_survives_the_bus() {
        gst::init().expect("gstreamer");
        round_trip(Metadata {
            width: Some(640),
            height: Some(360),
            framerate: Some(30.0),
            videocodecid: Some(7),
            encoder: Some("Lavf".into()),
            ..Default::default()
        });
        round_trip(Metadata::default());
    }
}
