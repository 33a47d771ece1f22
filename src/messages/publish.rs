//! The messages every source element of the input contract posts (see
//! [`crate::input`]), whatever its protocol: a publish started and stopped,
//! and what arrives, measured.
//!
//! `key` is in `ingress-publish-started` / `-stopped` only when the element
//! takes any key (its `stream-key` empty): the application needs to learn which
//! key came, while one that set the key knows it, and GStreamer's debug log
//! prints every message posted.

use super::{count, text, BusMessage};

/// `ingress-publish-started`: a publish was accepted (or a pull connected).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishStarted {
    /// The input protocol: `rtmp`, `srt`, `url`.
    pub input: String,
    /// The publisher's address (the URL's host for a pull).
    pub peer: String,
    pub key: Option<String>,
    /// The RTMP application the publisher named; `None` for other inputs.
    pub app: Option<String>,
}

impl BusMessage for PublishStarted {
    const NAME: &'static str = "ingress-publish-started";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("input", self.input.as_str())
            .field("peer", self.peer.as_str())
            .field_if_some("key", self.key.as_deref())
            .field_if_some("app", self.app.as_deref())
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| PublishStarted {
            input: text(s, "input"),
            peer: text(s, "peer"),
            key: s.get::<String>("key").ok(),
            app: s.get::<String>("app").ok(),
        })
    }
}

/// `ingress-publish-stopped`: the publisher left (or the pull ended), however it ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishStopped {
    pub reason: String,
    pub key: Option<String>,
}

impl BusMessage for PublishStopped {
    const NAME: &'static str = "ingress-publish-stopped";

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

/// `ingress-publish-paused`: the publisher left, and the source waits for
/// the same key to publish again within its grace period (the pads stay, no
/// EOS); `ingress-publish-stopped` follows if no one comes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishPaused {
    pub reason: String,
    /// Seconds the source waits.
    pub grace: u32,
}

impl BusMessage for PublishPaused {
    const NAME: &'static str = "ingress-publish-paused";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("reason", self.reason.as_str())
            .field("grace", self.grace)
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| PublishPaused {
            reason: text(s, "reason"),
            grace: count(s, "grace").min(u64::from(u32::MAX)) as u32,
        })
    }
}

/// `ingress-publish-resumed`: the key published again within the grace
/// period; its media goes on through the same pads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishResumed {
    pub peer: String,
}

impl BusMessage for PublishResumed {
    const NAME: &'static str = "ingress-publish-resumed";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("peer", self.peer.as_str())
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| PublishResumed {
            peer: text(s, "peer"),
        })
    }
}

/// `ingress-input-stats`: what arrived, every few seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Media bytes since the publish started.
    pub bytes: u64,
    /// bit/s over the last interval.
    pub video_bitrate: u64,
    pub audio_bitrate: u64,
}

impl BusMessage for Stats {
    const NAME: &'static str = "ingress-input-stats";

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

/// `ingress-input-late-dropped`: a source dropped frames that came too late
/// to matter (a backlog after a stall, see [`crate::lateness`]), posted when
/// it is on time again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LateDropped {
    pub video_frames: u64,
    pub audio_frames: u64,
    /// How late the frame that started the drop was, in ms.
    pub lateness_ms: u64,
}

impl BusMessage for LateDropped {
    const NAME: &'static str = "ingress-input-late-dropped";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("video-frames", self.video_frames)
            .field("audio-frames", self.audio_frames)
            .field("lateness-ms", self.lateness_ms)
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| LateDropped {
            video_frames: count(s, "video-frames"),
            audio_frames: count(s, "audio-frames"),
            lateness_ms: count(s, "lateness-ms"),
        })
    }
}

/// How often a source posts `ingress-input-stats`.
pub const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Turns a source's running byte counts into `ingress-input-stats` once per
/// [`STATS_INTERVAL`].
#[derive(Debug)]
pub struct StatsMeter {
    last: std::time::Instant,
    before: (u64, u64),
}

impl Default for StatsMeter {
    fn default() -> Self {
        StatsMeter {
            last: std::time::Instant::now(),
            before: (0, 0),
        }
    }
}

impl StatsMeter {
    /// The stats to post now, given the video and audio bytes so far, when
    /// an interval has passed since the last ones.
    pub fn due(&mut self, video_bytes: u64, audio_bytes: u64) -> Option<Stats> {
        let elapsed = self.last.elapsed();
        if elapsed < STATS_INTERVAL {
            return None;
        }
        let rate = |now: u64, before: u64| {
            (now.saturating_sub(before) as f64 * 8.0 / elapsed.as_secs_f64()) as u64
        };
        let stats = Stats {
            bytes: video_bytes + audio_bytes,
            video_bitrate: rate(video_bytes, self.before.0),
            audio_bitrate: rate(audio_bytes, self.before.1),
        };
        self.before = (video_bytes, audio_bytes);
        self.last = std::time::Instant::now();
        Some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::round_trip;
    use super::*;

    #[test]
    fn publish_messages_survive_the_bus() {
        gst::init().expect("gstreamer");
        round_trip(PublishStarted {
            input: "rtmp".into(),
            peer: "127.0.0.1:5000".into(),
            key: Some("k".into()),
            app: Some("live".into()),
        });
        round_trip(PublishStarted {
            input: "srt".into(),
            peer: "127.0.0.1:5000".into(),
            key: None,
            app: None,
        });
        round_trip(PublishStopped {
            reason: "connection reset".into(),
            key: None,
        });
        round_trip(PublishPaused {
            reason: "connection reset".into(),
            grace: 5,
        });
        round_trip(PublishResumed {
            peer: "127.0.0.1:5000".into(),
        });
        round_trip(LateDropped {
            video_frames: 110,
            audio_frames: 140,
            lateness_ms: 3000,
        });
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
        let stats = Stats::from_structure(&s).expect("ingress-input-stats");
        assert_eq!((stats.video_bitrate, stats.audio_bitrate), (0, 64_000));
    }
}
