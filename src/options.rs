//! An IngressInfo resolved once, with LiveKit's defaults, into typed options:
//! what the service's pipeline gives its elements (see [`crate::pipeline`]).
//!
//! Nothing downstream re-reads the protocol message or parses a setting again:
//! the video is a [`VideoEncoding`] (with the preset it came from, if any), the
//! audio an [`AudioEncoding`], each track has its name and one [`TrackSource`].

use crate::presets::{AudioEncoding, PresetError, VideoEncoding, VideoPreset};
use gst::glib;
use livekit_protocol as proto;
use proto::ingress_video_options::EncodingOptions as ProtoVideoOptions;

/// What a track is announced as in the room: LiveKit's track sources, with the
/// protocol's numbers. `livekitsink`'s `video-track-source` takes the first
/// two, `audio-track-source` the last two.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstLiveKitTrackSource")]
pub enum TrackSource {
    #[enum_value(name = "Camera", nick = "camera")]
    Camera = 1,
    #[enum_value(name = "Screen share", nick = "screen-share")]
    ScreenShare = 3,
    #[enum_value(name = "Microphone", nick = "microphone")]
    Microphone = 2,
    #[enum_value(name = "Screen share audio", nick = "screen-share-audio")]
    ScreenShareAudio = 4,
}

impl TrackSource {
    /// Whether a video track may be announced as this source.
    pub fn is_video(self) -> bool {
        matches!(self, TrackSource::Camera | TrackSource::ScreenShare)
    }

    /// The protocol's value.
    pub fn to_proto(self) -> proto::TrackSource {
        match self {
            TrackSource::Camera => proto::TrackSource::Camera,
            TrackSource::ScreenShare => proto::TrackSource::ScreenShare,
            TrackSource::Microphone => proto::TrackSource::Microphone,
            TrackSource::ScreenShareAudio => proto::TrackSource::ScreenShareAudio,
        }
    }

    /// A video track's source from the protocol: screen share, else camera
    /// (LiveKit's default, also for UNKNOWN).
    pub fn video_from_proto(value: i32) -> TrackSource {
        if value == proto::TrackSource::ScreenShare as i32 {
            TrackSource::ScreenShare
        } else {
            TrackSource::Camera
        }
    }

    /// An audio track's source from the protocol: screen-share audio, else
    /// microphone (LiveKit's default, also for UNKNOWN).
    pub fn audio_from_proto(value: i32) -> TrackSource {
        if value == proto::TrackSource::ScreenShareAudio as i32 {
            TrackSource::ScreenShareAudio
        } else {
            TrackSource::Microphone
        }
    }
}

/// A published track's name and source.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackOptions {
    pub name: String,
    pub source: TrackSource,
}

/// The video track: its encoding, and the preset it came from (`None` for
/// custom settings).
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    pub preset: Option<VideoPreset>,
    pub encoding: VideoEncoding,
    pub track: TrackOptions,
}

/// The audio track: Opus settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioOptions {
    pub encoding: AudioEncoding,
    pub track: TrackOptions,
}

/// Who the ingress joins as.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Participant {
    pub identity: String,
    pub name: String,
    pub metadata: String,
}

/// Everything an IngressInfo decides about its stream, typed and defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressOptions {
    pub room_name: String,
    pub participant: Participant,
    pub video: VideoOptions,
    pub audio: AudioOptions,
}

/// LiveKit's track names when the ingress gives none.
pub const DEFAULT_VIDEO_TRACK_NAME: &str = "video";
pub const DEFAULT_AUDIO_TRACK_NAME: &str = "audio";

fn name_or(name: Option<&String>, default: &str) -> String {
    name.filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Custom video options without their layers of quality OFF, which LiveKit
/// accepts and which ask for no layer.
fn without_off_layers(
    video: Option<&proto::IngressVideoOptions>,
) -> Option<proto::IngressVideoOptions> {
    let mut video = video.cloned()?;
    if let Some(ProtoVideoOptions::Options(o)) = &mut video.encoding_options {
        o.layers
            .retain(|l| l.quality != proto::VideoQuality::Off as i32);
    }
    Some(video)
}

/// Resolves an ingress's settings: the video preset (the default one when
/// none is given) or custom options, the audio preset or options, track names
/// and sources, and the participant. Refuses what LiveKit refuses.
pub fn resolve(info: &proto::IngressInfo) -> Result<IngressOptions, PresetError> {
    let video = info.video.as_ref();
    let audio = info.audio.as_ref();
    let preset = match video.and_then(|v| v.encoding_options.as_ref()) {
        None => Some(VideoPreset::default()),
        Some(ProtoVideoOptions::Preset(p)) => Some(VideoPreset::from_proto(*p)?),
        Some(ProtoVideoOptions::Options(_)) => None,
    };
    let encoding = match preset {
        Some(preset) => preset.encoding(),
        None => VideoEncoding::from_proto(without_off_layers(video).as_ref())?,
    };
    Ok(IngressOptions {
        room_name: info.room_name.clone(),
        participant: Participant {
            identity: info.participant_identity.clone(),
            name: info.participant_name.clone(),
            metadata: info.participant_metadata.clone(),
        },
        video: VideoOptions {
            preset,
            encoding,
            track: TrackOptions {
                name: name_or(video.map(|v| &v.name), DEFAULT_VIDEO_TRACK_NAME),
                source: TrackSource::video_from_proto(video.map_or(0, |v| v.source)),
            },
        },
        audio: AudioOptions {
            encoding: AudioEncoding::from_proto(audio)?,
            track: TrackOptions {
                name: name_or(audio.map(|a| &a.name), DEFAULT_AUDIO_TRACK_NAME),
                source: TrackSource::audio_from_proto(audio.map_or(0, |a| a.source)),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;
    use crate::presets::{Quality, VideoLayer};
    use proto::ingress_audio_options::EncodingOptions as ProtoAudioOptions;

    fn with_video(options: ProtoVideoOptions) -> proto::IngressInfo {
        proto::IngressInfo {
            video: Some(proto::IngressVideoOptions {
                encoding_options: Some(options),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn absent_video_and_audio_take_livekits_defaults() {
        let info = proto::IngressInfo {
            room_name: "room".into(),
            participant_identity: "id".into(),
            participant_name: "name".into(),
            participant_metadata: "{}".into(),
            ..Default::default()
        };
        let options = resolve(&info).expect("valid");
        assert_eq!(options.room_name, "room");
        assert_eq!(
            options.participant,
            Participant {
                identity: "id".into(),
                name: "name".into(),
                metadata: "{}".into()
            }
        );
        assert_eq!(
            options.video.preset,
            Some(VideoPreset::H264_720p30fps3Layers)
        );
        assert_eq!(options.video.encoding, VideoPreset::default().encoding());
        assert_eq!(
            options.video.track,
            TrackOptions {
                name: "video".into(),
                source: TrackSource::Camera
            }
        );
        assert_eq!(options.audio.encoding, AudioEncoding::STEREO_96KBPS);
        assert_eq!(
            options.audio.track,
            TrackOptions {
                name: "audio".into(),
                source: TrackSource::Microphone
            }
        );
    }

    #[test]
    fn every_preset_resolves_to_its_encoding() {
        for preset in VideoPreset::ALL {
            let options =
                resolve(&with_video(ProtoVideoOptions::Preset(preset as i32))).expect("valid");
            assert_eq!(options.video.preset, Some(preset));
            assert_eq!(options.video.encoding, preset.encoding(), "{preset:?}");
        }
        assert_eq!(
            resolve(&with_video(ProtoVideoOptions::Preset(42))),
            Err(PresetError::UnknownVideoPreset(42))
        );
    }

    #[test]
    fn custom_video_without_layers_takes_the_default_ladder() {
        let info = with_video(ProtoVideoOptions::Options(
            proto::IngressVideoEncodingOptions {
                video_codec: proto::VideoCodec::Vp8 as i32,
                ..Default::default()
            },
        ));
        let video = resolve(&info).expect("valid").video;
        assert_eq!(video.preset, None);
        assert_eq!(video.encoding.codec, VideoCodec::Vp8);
        assert_eq!(video.encoding.framerate, 30.0);
        assert_eq!(
            video.encoding,
            VideoEncoding::custom(VideoCodec::Vp8, None, &[]).expect("valid")
        );
    }

    #[test]
    fn custom_video_with_layers_keeps_their_qualities() {
        let layer = |quality: proto::VideoQuality, width, height, bitrate| proto::VideoLayer {
            quality: quality as i32,
            width,
            height,
            bitrate,
            ..Default::default()
        };
        let info = with_video(ProtoVideoOptions::Options(
            proto::IngressVideoEncodingOptions {
                video_codec: proto::VideoCodec::H264Main as i32,
                frame_rate: 25.0,
                layers: vec![
                    layer(proto::VideoQuality::Low, 640, 360, 500_000),
                    layer(proto::VideoQuality::High, 1920, 1080, 0),
                ],
            },
        ));
        let encoding = resolve(&info).expect("valid").video.encoding;
        assert_eq!(encoding.codec, VideoCodec::H264Main);
        assert_eq!(encoding.framerate, 25.0);
        assert_eq!(
            encoding.layers,
            vec![
                VideoLayer {
                    quality: Quality::High,
                    width: 1920,
                    height: 1080,
                    bitrate: crate::presets::bitrate_for(1920, 1080, 25.0),
                },
                VideoLayer {
                    quality: Quality::Low,
                    width: 640,
                    height: 360,
                    bitrate: 500_000,
                },
            ]
        );
        let odd = with_video(ProtoVideoOptions::Options(
            proto::IngressVideoEncodingOptions {
                layers: vec![layer(proto::VideoQuality::High, 641, 360, 0)],
                ..Default::default()
            },
        ));
        assert!(matches!(resolve(&odd), Err(PresetError::OddLayer { .. })));
    }

    #[test]
    fn audio_options_and_track_names_and_sources() {
        let mut info = proto::IngressInfo {
            video: Some(proto::IngressVideoOptions {
                name: "screen".into(),
                source: proto::TrackSource::ScreenShare as i32,
                ..Default::default()
            }),
            audio: Some(proto::IngressAudioOptions {
                name: "desktop".into(),
                source: proto::TrackSource::ScreenShareAudio as i32,
                encoding_options: Some(ProtoAudioOptions::Preset(
                    proto::IngressAudioEncodingPreset::OpusMono64kbs as i32,
                )),
            }),
            ..Default::default()
        };
        let options = resolve(&info).expect("valid");
        assert_eq!(
            options.video.track,
            TrackOptions {
                name: "screen".into(),
                source: TrackSource::ScreenShare
            }
        );
        assert_eq!(
            options.audio.track,
            TrackOptions {
                name: "desktop".into(),
                source: TrackSource::ScreenShareAudio
            }
        );
        assert_eq!(options.audio.encoding, AudioEncoding::MONO_64KBPS);

        // Camera and microphone, and what a track cannot be, fall back to them.
        for (video, audio, want_video, want_audio) in [
            (
                proto::TrackSource::Camera,
                proto::TrackSource::Microphone,
                TrackSource::Camera,
                TrackSource::Microphone,
            ),
            (
                proto::TrackSource::Microphone,
                proto::TrackSource::Camera,
                TrackSource::Camera,
                TrackSource::Microphone,
            ),
            (
                proto::TrackSource::Unknown,
                proto::TrackSource::Unknown,
                TrackSource::Camera,
                TrackSource::Microphone,
            ),
        ] {
            info.video.as_mut().expect("video").source = video as i32;
            info.audio.as_mut().expect("audio").source = audio as i32;
            let options = resolve(&info).expect("valid");
            assert_eq!(options.video.track.source, want_video);
            assert_eq!(options.audio.track.source, want_audio);
            assert!(want_video.is_video() && !want_audio.is_video());
        }
        let aac = proto::IngressInfo {
            audio: Some(proto::IngressAudioOptions {
                encoding_options: Some(ProtoAudioOptions::Options(
                    proto::IngressAudioEncodingOptions {
                        audio_codec: proto::AudioCodec::Aac as i32,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&aac),
            Err(PresetError::UnsupportedAudioCodec(_))
        ));
    }

    #[test]
    fn track_sources_have_the_protocols_numbers() {
        for source in [
            TrackSource::Camera,
            TrackSource::ScreenShare,
            TrackSource::Microphone,
            TrackSource::ScreenShareAudio,
        ] {
            assert_eq!(source as i32, source.to_proto() as i32);
        }
    }
}
