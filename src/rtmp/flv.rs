//! FLV audio and video tag bodies as RTMP carries them: legacy AVC and AAC, and
//! Enhanced RTMP's FourCC video (HEVC, AV1, VP9). Parsing never panics; a tag
//! it cannot read is an error naming why.

use bytes::Bytes;

/// Video codecs RTMP can carry in. Not `crate::codec::VideoCodec`: what a
/// streamer sends (HEVC, AV1, VP9 too, any H.264 profile) is decoded and
/// re-encoded, so it shares no rows with what we encode and publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputVideoCodec {
    H264,
    H265,
    Av1,
    Vp9,
}

impl InputVideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            InputVideoCodec::H264 => "H.264",
            InputVideoCodec::H265 => "H.265",
            InputVideoCodec::Av1 => "AV1",
            InputVideoCodec::Vp9 => "VP9",
        }
    }
}

/// What one video message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// Decoder configuration (AVCDecoderConfigurationRecord, HEVC/AV1/VP9 config record).
    SequenceHeader {
        codec: InputVideoCodec,
        config: Bytes,
    },
    /// One coded frame; `cts` is the composition time offset in milliseconds.
    Frame {
        codec: InputVideoCodec,
        keyframe: bool,
        cts: i32,
        data: Bytes,
    },
    /// End of sequence, or a message with nothing to decode (metadata, info frames).
    Other,
}

/// What one audio message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AAC AudioSpecificConfig.
    AacConfig(Bytes),
    /// One raw AAC frame.
    AacFrame(Bytes),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagError {
    #[error("empty tag")]
    Empty,
    #[error("truncated {0} tag")]
    Truncated(&'static str),
    #[error("unsupported video codec id {0} (only H.264, and HEVC, AV1, VP9 over Enhanced RTMP)")]
    UnsupportedVideoCodec(u8),
    #[error("unsupported Enhanced RTMP video FourCC {0:?}")]
    UnsupportedFourCc(String),
    #[error("unsupported audio format {0} (only AAC)")]
    UnsupportedAudioFormat(u8),
}

const AVC_CODEC_ID: u8 = 7;
const AAC_SOUND_FORMAT: u8 = 10;
const KEYFRAME: u8 = 1;

fn si24(b: &[u8]) -> i32 {
    let v = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    // Sign-extend from 24 bits.
    (v << 8) >> 8
}

/// Parses a video message body.
pub fn parse_video(data: &Bytes) -> Result<VideoTag, TagError> {
    let first = *data.first().ok_or(TagError::Empty)?;
    if first & 0x80 != 0 {
        return parse_enhanced_video(data, first);
    }
    let frame_type = (first >> 4) & 0x07;
    let codec_id = first & 0x0f;
    if codec_id != AVC_CODEC_ID {
        return Err(TagError::UnsupportedVideoCodec(codec_id));
    }
    if frame_type == 5 {
        // Video info / command frame: nothing to decode.
        return Ok(VideoTag::Other);
    }
    let header = data.get(1..5).ok_or(TagError::Truncated("AVC"))?;
    let payload = data.slice(5..);
    match header[0] {
        0 => Ok(VideoTag::SequenceHeader {
            codec: InputVideoCodec::H264,
            config: payload,
        }),
        1 => Ok(VideoTag::Frame {
            codec: InputVideoCodec::H264,
            keyframe: frame_type == KEYFRAME,
            cts: si24(&header[1..4]),
            data: payload,
        }),
        _ => Ok(VideoTag::Other),
    }
}

fn parse_enhanced_video(data: &Bytes, first: u8) -> Result<VideoTag, TagError> {
    let frame_type = (first >> 4) & 0x07;
    let packet_type = first & 0x0f;
    let fourcc = data
        .get(1..5)
        .ok_or(TagError::Truncated("Enhanced RTMP video"))?;
    let codec = match fourcc {
        b"avc1" => InputVideoCodec::H264,
        b"hvc1" => InputVideoCodec::H265,
        b"av01" => InputVideoCodec::Av1,
        b"vp09" => InputVideoCodec::Vp9,
        other => {
            return Err(TagError::UnsupportedFourCc(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    match packet_type {
        // SequenceStart
        0 => Ok(VideoTag::SequenceHeader {
            codec,
            config: data.slice(5..),
        }),
        // CodedFrames: H.264 and HEVC carry a composition time offset.
        1 => {
            let (cts, start) = if matches!(codec, InputVideoCodec::H264 | InputVideoCodec::H265) {
                let cts = data
                    .get(5..8)
                    .ok_or(TagError::Truncated("Enhanced RTMP video"))?;
                (si24(cts), 8)
            } else {
                (0, 5)
            };
            Ok(VideoTag::Frame {
                codec,
                keyframe: frame_type == KEYFRAME,
                cts,
                data: data.slice(start..),
            })
        }
        // CodedFramesX: no composition time.
        3 => Ok(VideoTag::Frame {
            codec,
            keyframe: frame_type == KEYFRAME,
            cts: 0,
            data: data.slice(5..),
        }),
        _ => Ok(VideoTag::Other),
    }
}

/// Parses an audio message body.
pub fn parse_audio(data: &Bytes) -> Result<AudioTag, TagError> {
    let first = *data.first().ok_or(TagError::Empty)?;
    let format = first >> 4;
    if format != AAC_SOUND_FORMAT {
        return Err(TagError::UnsupportedAudioFormat(format));
    }
    match data.get(1) {
        Some(0) => Ok(AudioTag::AacConfig(data.slice(2..))),
        Some(_) => Ok(AudioTag::AacFrame(data.slice(2..))),
        None => Err(TagError::Truncated("AAC")),
    }
}

/// Sample rate and channels from an AAC AudioSpecificConfig.
pub fn aac_config_rate_channels(config: &[u8]) -> Option<(u32, u32)> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let b0 = *config.first()?;
    let b1 = *config.get(1)?;
    let rate_index = ((b0 & 0x07) << 1) | (b1 >> 7);
    let channels = (b1 >> 3) & 0x0f;
    let rate = if rate_index == 15 {
        // Explicit 24-bit rate follows.
        let b2 = u32::from(*config.get(2)?);
        let b3 = u32::from(*config.get(3)?);
        let b4 = u32::from(*config.get(4)?);
        ((u32::from(b1) & 0x7f) << 17) | (b2 << 9) | (b3 << 1) | (b4 >> 7)
    } else {
        *RATES.get(rate_index as usize)?
    };
    Some((rate, u32::from(channels)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_sequence_header_and_frames() {
        let header = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            parse_video(&header),
            Ok(VideoTag::SequenceHeader {
                codec: InputVideoCodec::H264,
                config: Bytes::from_static(&[1, 2, 3])
            })
        );
        let inter = Bytes::from_static(&[0x27, 1, 0, 0, 0x42, 9]);
        assert_eq!(
            parse_video(&inter),
            Ok(VideoTag::Frame {
                codec: InputVideoCodec::H264,
                keyframe: false,
                cts: 66,
                data: Bytes::from_static(&[9])
            })
        );
    }

    #[test]
    fn negative_composition_time() {
        let frame = Bytes::from_static(&[0x17, 1, 0xff, 0xff, 0xdf, 9]);
        match parse_video(&frame) {
            Ok(VideoTag::Frame { cts, keyframe, .. }) => {
                assert_eq!(cts, -33);
                assert!(keyframe);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn enhanced_rtmp_fourcc() {
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 7, 7]);
        assert!(matches!(
            parse_video(&hevc),
            Ok(VideoTag::SequenceHeader {
                codec: InputVideoCodec::H265,
                ..
            })
        ));
        let av1 = Bytes::from_static(&[0x93, b'a', b'v', b'0', b'1', 5]);
        assert!(matches!(
            parse_video(&av1),
            Ok(VideoTag::Frame {
                codec: InputVideoCodec::Av1,
                keyframe: true,
                cts: 0,
                ..
            })
        ));
        let other = Bytes::from_static(&[0x90, b'x', b'y', b'z', b'w']);
        assert!(matches!(
            parse_video(&other),
            Err(TagError::UnsupportedFourCc(_))
        ));
    }

    #[test]
    fn truncated_and_unknown_input_is_an_error() {
        assert_eq!(parse_video(&Bytes::new()), Err(TagError::Empty));
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x17, 1])),
            Err(TagError::Truncated("AVC"))
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x12])),
            Err(TagError::UnsupportedVideoCodec(2))
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x91, b'h'])),
            Err(TagError::Truncated("Enhanced RTMP video"))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0x2f, 0])),
            Err(TagError::UnsupportedAudioFormat(2))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xaf])),
            Err(TagError::Truncated("AAC"))
        );
    }

    #[test]
    fn aac_config() {
        // AAC-LC, 44.1 kHz, stereo.
        assert_eq!(aac_config_rate_channels(&[0x12, 0x10]), Some((44100, 2)));
        // 48 kHz mono.
        assert_eq!(aac_config_rate_channels(&[0x11, 0x88]), Some((48000, 1)));
        assert_eq!(aac_config_rate_channels(&[0x12]), None);
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xaf, 0, 0x12, 0x10])),
            Ok(AudioTag::AacConfig(Bytes::from_static(&[0x12, 0x10])))
        );
    }
}
