//! rtmpingresssrc's element messages.
//!
//! `key` is in `rtmp-publish-started` / `-stopped` only when the element takes
//! any key (its `stream-key` empty): the application needs to learn which key
//! came, while one that set the key knows it, and GStreamer's debug log prints
//! every message posted.

use super::{count, text, BusMessage};

/// `rtmp-publish-started`: a publish was accepted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishStarted {
    pub app: String,
    /// The publisher's address.
    pub peer: String,
    pub key: Option<String>,
}

impl BusMessage for PublishStarted {
    const NAME: &'static str = "rtmp-publish-started";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("app", self.app.as_str())
            .field("peer", self.peer.as_str())
            .field_if_some("key", self.key.as_deref())
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| PublishStarted {
            app: text(s, "app"),
            peer: text(s, "peer"),
            key: s.get::<String>("key").ok(),
        })
    }
}

/// `rtmp-publish-stopped`: the publisher left, however it left.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishStopped {
    pub reason: String,
    pub key: Option<String>,
}

impl BusMessage for PublishStopped {
    const NAME: &'static str = "rtmp-publish-stopped";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("reason", self.reason.as_str())
            .field_if_some("key", self.key.as_deref())
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| PublishStopped {
            reason: text(s, "reason"),
            key: s.get::<String>("key").ok(),
        })
    }
}

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

/// `rtmp-stats`: what arrived, every few seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Media bytes since the publish started.
    pub bytes: u64,
    /// bit/s over the last interval.
    pub video_bitrate: u64,
    pub audio_bitrate: u64,
}

impl BusMessage for Stats {
    const NAME: &'static str = "rtmp-stats";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("bytes", self.bytes)
            .field("video-bitrate", self.video_bitrate)
            .field("audio-bitrate", self.audio_bitrate)
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| Stats {
            bytes: count(s, "bytes"),
            video_bitrate: count(s, "video-bitrate"),
            audio_bitrate: count(s, "audio-bitrate"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: BusMessage + PartialEq + std::fmt::Debug>(value: M) {
        let s = value.to_structure();
        assert_eq!(s.name(), M::NAME);
        assert_eq!(M::from_structure(&s), Some(value));
        assert_eq!(M::from_structure(&gst::Structure::new_empty("other")), None);
    }

    #[test]
    fn rtmp_messages_survive_the_bus() {
        gst::init().expect("gstreamer");
        round_trip(PublishStarted {
            app: "live".into(),
            peer: "127.0.0.1:5000".into(),
            key: Some("k".into()),
        });
        round_trip(PublishStarted {
            app: "live".into(),
            peer: "127.0.0.1:5000".into(),
            key: None,
        });
        round_trip(PublishStopped {
            reason: "connection reset".into(),
            key: None,
        });
        round_trip(Metadata {
            width: Some(640),
            height: Some(360),
            framerate: Some(30.0),
            videocodecid: Some(7),
            encoder: Some("Lavf".into()),
            ..Default::default()
        });
        round_trip(Metadata::default());
        round_trip(Stats {
            bytes: 1 << 40,
            video_bitrate: 2_500_000,
            audio_bitrate: 128_000,
        });
    }

    #[test]
    fn no_key_field_without_a_key() {
        gst::init().expect("gstreamer");
        let s = PublishStopped {
            reason: "gone".into(),
            key: None,
        }
        .to_structure();
        assert!(!s.has_field("key"));
        assert_eq!(s.get::<String>("reason").as_deref(), Ok("gone"));
    }

    #[test]
    fn missing_fields_read_as_today() {
        gst::init().expect("gstreamer");
        let empty = |name| gst::Structure::new_empty(name);
        assert_eq!(
            PublishStopped::from_structure(&empty(PublishStopped::NAME)),
            Some(PublishStopped::default())
        );
        assert_eq!(
            Stats::from_structure(&empty(Stats::NAME)),
            Some(Stats::default())
        );
        // Other integer types are read too, clamped at 0.
        let s = gst::Structure::builder(Stats::NAME)
            .field("video-bitrate", -5i32)
            .field("audio-bitrate", 64_000u32)
            .build();
        let stats = Stats::from_structure(&s).expect("rtmp-stats");
        assert_eq!((stats.video_bitrate, stats.audio_bitrate), (0, 64_000));
    }
}
