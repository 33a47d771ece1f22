//! LiveKit's ingress encoding presets and custom options, resolved to concrete
//! layers and encoder settings. Pure functions: the `simulcastenc` element, the
//! gst-launch examples and the service all take their numbers from here.
//!
//! Facts (LiveKit's preset table): the main layer of each video preset has the
//! size, frame rate and bitrate below; lower layers halve width and height and
//! take the bitrate rule, bitrate ~ (pixels x fps)^0.75, which for a layer
//! without a bitrate starts from 1920x1080 at 30 fps = 3.5 Mbps.

use crate::codec::VideoCodec;
use gst::glib;
use livekit_protocol as proto;
use proto::ingress_audio_options::EncodingOptions as AudioOptions;
use proto::ingress_video_options::EncodingOptions as VideoOptions;

/// The bitrate rule's reference: 1920x1080 at 30 fps takes 3.5 Mbps.
const REFERENCE_PIXEL_RATE: f64 = 1920.0 * 1080.0 * 30.0;
const REFERENCE_BITRATE: f64 = 3_500_000.0;

/// LiveKit's video presets, by their protocol names.
#[derive(Debug, Eq, PartialEq, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstSimulcastEncPreset")]
pub enum VideoPreset {
    #[default]
    #[enum_value(name = "H264_720P_30FPS_3_LAYERS", nick = "h264-720p-30fps-3-layers")]
    H264_720p30fps3Layers = 0,
    #[enum_value(name = "H264_1080P_30FPS_3_LAYERS", nick = "h264-1080p-30fps-3-layers")]
    H264_1080p30fps3Layers = 1,
    #[enum_value(name = "H264_540P_25FPS_2_LAYERS", nick = "h264-540p-25fps-2-layers")]
    H264_540p25fps2Layers = 2,
    #[enum_value(name = "H264_720P_30FPS_1_LAYER", nick = "h264-720p-30fps-1-layer")]
    H264_720p30fps1Layer = 3,
    #[enum_value(name = "H264_1080P_30FPS_1_LAYER", nick = "h264-1080p-30fps-1-layer")]
    H264_1080p30fps1Layer = 4,
    #[enum_value(
        name = "H264_720P_30FPS_3_LAYERS_HIGH_MOTION",
        nick = "h264-720p-30fps-3-layers-high-motion"
    )]
    H264_720p30fps3LayersHighMotion = 5,
    #[enum_value(
        name = "H264_1080P_30FPS_3_LAYERS_HIGH_MOTION",
        nick = "h264-1080p-30fps-3-layers-high-motion"
    )]
    H264_1080p30fps3LayersHighMotion = 6,
    #[enum_value(
        name = "H264_540P_25FPS_2_LAYERS_HIGH_MOTION",
        nick = "h264-540p-25fps-2-layers-high-motion"
    )]
    H264_540p25fps2LayersHighMotion = 7,
    #[enum_value(
        name = "H264_720P_30FPS_1_LAYER_HIGH_MOTION",
        nick = "h264-720p-30fps-1-layer-high-motion"
    )]
    H264_720p30fps1LayerHighMotion = 8,
    #[enum_value(
        name = "H264_1080P_30FPS_1_LAYER_HIGH_MOTION",
        nick = "h264-1080p-30fps-1-layer-high-motion"
    )]
    H264_1080p30fps1LayerHighMotion = 9,
}

/// LiveKit's layer qualities (the protocol's numbers).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstSimulcastEncQuality")]
pub enum Quality {
    #[enum_value(name = "LOW", nick = "low")]
    Low = 0,
    #[enum_value(name = "MEDIUM", nick = "medium")]
    Medium = 1,
    #[enum_value(name = "HIGH", nick = "high")]
    High = 2,
}

/// One simulcast layer: the box the picture is fitted into, and its bitrate.
#[derive(Debug, Eq, PartialEq, Clone, Copy)]
pub struct VideoLayer {
    pub quality: Quality,
    pub width: u32,
    pub height: u32,
    /// Bits per second.
    pub bitrate: u32,
}

/// A complete video encoding: codec, frame-rate cap and layers, the main
/// (highest quality) layer first.
#[derive(Debug, PartialEq, Clone)]
pub struct VideoEncoding {
    pub codec: VideoCodec,
    pub framerate: f64,
    pub layers: Vec<VideoLayer>,
}

/// Why settings were refused.
#[derive(Debug, thiserror::Error, PartialEq, Clone)]
pub enum PresetError {
    #[error("unknown video preset {0}")]
    UnknownVideoPreset(i32),
    #[error("unknown audio preset {0}")]
    UnknownAudioPreset(i32),
    #[error("video codec {0} is not supported (use H264_BASELINE, H264_MAIN, H264_HIGH or VP8)")]
    UnsupportedVideoCodec(String),
    #[error("audio codec {0} is not supported (use OPUS)")]
    UnsupportedAudioCodec(String),
    #[error("frame rate must be positive, got {0}")]
    BadFramerate(f64),
    #[error("layer {width}x{height}: width and height must be even and non-zero")]
    OddLayer { width: u32, height: u32 },
    #[error("two layers have quality {0:?}: one layer per quality")]
    DuplicateQuality(Quality),
    #[error("layer sizes must grow with quality: {lower} is not smaller than {higher}")]
    LayersDoNotGrow { lower: String, higher: String },
    #[error("invalid layer list {0:?}: expected WIDTHxHEIGHT[:BITRATE],… from the largest")]
    BadLayerList(String),
    #[error("audio channels must be 1 or 2, got {0}")]
    BadChannels(u32),
}

/// The bitrate rule: bits per second for `width`x`height` at `fps`.
pub fn bitrate_for(width: u32, height: u32, fps: f64) -> u32 {
    let pixel_rate = f64::from(width) * f64::from(height) * fps.max(1.0);
    (REFERENCE_BITRATE * (pixel_rate / REFERENCE_PIXEL_RATE).powf(0.75)).round() as u32
}

fn quality_from_top(index: usize) -> Quality {
    match index {
        0 => Quality::High,
        1 => Quality::Medium,
        _ => Quality::Low,
    }
}

/// The main layer and the layers below it, each halving width and height, with
/// bitrates scaled from the main layer's by the bitrate rule.
fn ladder(width: u32, height: u32, bitrate: u32, count: usize) -> Vec<VideoLayer> {
    (0..count)
        .map(|i| {
            let div = 1u32 << i;
            let (w, h) = (even(width / div), even(height / div));
            let pixel_ratio = f64::from(w * h) / f64::from(width * height);
            VideoLayer {
                quality: quality_from_top(i),
                width: w,
                height: h,
                bitrate: (f64::from(bitrate) * pixel_ratio.powf(0.75)).round() as u32,
            }
        })
        .collect()
}

fn even(v: u32) -> u32 {
    (v & !1).max(2)
}

impl VideoPreset {
    pub const ALL: [VideoPreset; 10] = [
        VideoPreset::H264_720p30fps3Layers,
        VideoPreset::H264_1080p30fps3Layers,
        VideoPreset::H264_540p25fps2Layers,
        VideoPreset::H264_720p30fps1Layer,
        VideoPreset::H264_1080p30fps1Layer,
        VideoPreset::H264_720p30fps3LayersHighMotion,
        VideoPreset::H264_1080p30fps3LayersHighMotion,
        VideoPreset::H264_540p25fps2LayersHighMotion,
        VideoPreset::H264_720p30fps1LayerHighMotion,
        VideoPreset::H264_1080p30fps1LayerHighMotion,
    ];

    /// The preset a protocol enum value names.
    pub fn from_proto(value: i32) -> Result<VideoPreset, PresetError> {
        u32::try_from(value)
            .ok()
            .and_then(|v| VideoPreset::ALL.get(v as usize).copied())
            .ok_or(PresetError::UnknownVideoPreset(value))
    }

    /// The preset's protocol name, e.g. `H264_720P_30FPS_3_LAYERS`.
    pub fn name(self) -> &'static str {
        proto::IngressVideoEncodingPreset::try_from(self as i32)
            .map(|p| p.as_str_name())
            .unwrap_or("H264_720P_30FPS_3_LAYERS")
    }

    /// The preset's layers, frame rate and codec.
    pub fn encoding(self) -> VideoEncoding {
        use VideoPreset::*;
        let (w, h, fps, kbps, layers) = match self {
            H264_720p30fps3Layers => (1280, 720, 30.0, 1_900, 3),
            H264_1080p30fps3Layers => (1920, 1080, 30.0, 3_500, 3),
            H264_540p25fps2Layers => (960, 540, 25.0, 1_000, 2),
            H264_720p30fps1Layer => (1280, 720, 30.0, 1_900, 1),
            H264_1080p30fps1Layer => (1920, 1080, 30.0, 3_500, 1),
            H264_720p30fps3LayersHighMotion => (1280, 720, 30.0, 2_500, 3),
            H264_1080p30fps3LayersHighMotion => (1920, 1080, 30.0, 4_500, 3),
            H264_540p25fps2LayersHighMotion => (960, 540, 25.0, 1_300, 2),
            H264_720p30fps1LayerHighMotion => (1280, 720, 30.0, 2_500, 1),
            H264_1080p30fps1LayerHighMotion => (1920, 1080, 30.0, 4_500, 1),
        };
        VideoEncoding {
            codec: VideoCodec::H264Baseline,
            framerate: fps,
            layers: ladder(w, h, kbps * 1000, layers),
        }
    }
}

impl VideoEncoding {
    /// Custom settings with LiveKit's defaulting and validation: 30 fps when no
    /// frame rate is given; 1280x720 at 1.7 Mbps and its two lower layers when no
    /// layer is given; the bitrate rule for a layer without a bitrate.
    pub fn custom(
        codec: VideoCodec,
        framerate: Option<f64>,
        layers: &[VideoLayer],
    ) -> Result<VideoEncoding, PresetError> {
        let framerate = framerate.unwrap_or(30.0);
        if !(framerate > 0.0 && framerate.is_finite()) {
            return Err(PresetError::BadFramerate(framerate));
        }
        let layers = if layers.is_empty() {
            ladder(1280, 720, 1_700_000, 3)
        } else {
            layers
                .iter()
                .map(|l| VideoLayer {
                    bitrate: if l.bitrate == 0 {
                        bitrate_for(l.width, l.height, framerate)
                    } else {
                        l.bitrate
                    },
                    ..*l
                })
                .collect()
        };
        let encoding = VideoEncoding {
            codec,
            framerate,
            layers,
        };
        encoding.validate()?;
        Ok(encoding.sorted())
    }

    fn sorted(mut self) -> Self {
        self.layers.sort_by_key(|l| std::cmp::Reverse(l.quality));
        self
    }

    /// LiveKit's rules: even sizes, one layer per quality, sizes grow with quality.
    pub fn validate(&self) -> Result<(), PresetError> {
        for l in &self.layers {
            if l.width == 0 || l.height == 0 || l.width % 2 != 0 || l.height % 2 != 0 {
                return Err(PresetError::OddLayer {
                    width: l.width,
                    height: l.height,
                });
            }
        }
        let mut by_quality = self.layers.clone();
        by_quality.sort_by_key(|l| l.quality);
        for pair in by_quality.windows(2) {
            let [lower, higher] = pair else { continue };
            if lower.quality == higher.quality {
                return Err(PresetError::DuplicateQuality(lower.quality));
            }
            if lower.width > higher.width || lower.height > higher.height {
                return Err(PresetError::LayersDoNotGrow {
                    lower: format!("{:?} {}x{}", lower.quality, lower.width, lower.height),
                    higher: format!("{:?} {}x{}", higher.quality, higher.width, higher.height),
                });
            }
        }
        Ok(())
    }

    /// From the protocol's video options (preset or custom); `None` is the default preset.
    pub fn from_proto(
        options: Option<&proto::IngressVideoOptions>,
    ) -> Result<VideoEncoding, PresetError> {
        match options.and_then(|o| o.encoding_options.as_ref()) {
            None => Ok(VideoPreset::default().encoding()),
            Some(VideoOptions::Preset(p)) => Ok(VideoPreset::from_proto(*p)?.encoding()),
            Some(VideoOptions::Options(o)) => {
                let codec = proto::VideoCodec::try_from(o.video_codec)
                    .map(VideoCodec::from_proto)
                    .map_err(|_| PresetError::UnsupportedVideoCodec(o.video_codec.to_string()))?;
                let layers: Vec<VideoLayer> = o
                    .layers
                    .iter()
                    .map(|l| VideoLayer {
                        quality: match proto::VideoQuality::try_from(l.quality) {
                            Ok(proto::VideoQuality::Low) => Quality::Low,
                            Ok(proto::VideoQuality::Medium) => Quality::Medium,
                            _ => Quality::High,
                        },
                        width: l.width,
                        height: l.height,
                        bitrate: l.bitrate,
                    })
                    .collect();
                let framerate = (o.frame_rate > 0.0).then_some(o.frame_rate);
                if o.frame_rate < 0.0 {
                    return Err(PresetError::BadFramerate(o.frame_rate));
                }
                VideoEncoding::custom(codec, framerate, &layers)
            }
        }
    }

    /// The layer list in `simulcastenc`'s `layers` property syntax.
    pub fn layers_string(&self) -> String {
        layers_to_string(&self.layers)
    }
}

/// Layers in `simulcastenc`'s `layers` property syntax (qualities follow the
/// order: a list without a MEDIUM layer does not say so).
pub fn layers_to_string(layers: &[VideoLayer]) -> String {
    layers
        .iter()
        .map(|l| format!("{}x{}:{}", l.width, l.height, l.bitrate))
        .collect::<Vec<_>>()
        .join(",")
}

/// The name of the structures in `simulcastenc`'s `layer-specs` property.
pub const LAYER_STRUCTURE: &str = "layer";

impl VideoLayer {
    /// `layer, quality=(GstSimulcastEncQuality)high, width=(uint)1280,
    /// height=(uint)720, bitrate=(uint)1900000`: one item of `layer-specs`.
    pub fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(LAYER_STRUCTURE)
            .field("quality", self.quality)
            .field("width", self.width)
            .field("height", self.height)
            .field("bitrate", self.bitrate)
            .build()
    }

    /// The layer a `layer-specs` item describes; `quality` may be left out
    /// (then it follows the order, as in `layers`), `bitrate` too (0: the
    /// bitrate rule). Sizes may be given as int or uint.
    pub fn from_structure(s: &gst::StructureRef, index: usize) -> Result<VideoLayer, PresetError> {
        let bad = || PresetError::BadLayerList(s.to_string());
        if s.name() != LAYER_STRUCTURE {
            return Err(bad());
        }
        let number = |field: &str, required: bool| -> Result<u32, PresetError> {
            if !s.has_field(field) {
                return if required { Err(bad()) } else { Ok(0) };
            }
            s.get::<u32>(field)
                .ok()
                .or_else(|| s.get::<i32>(field).ok().and_then(|v| u32::try_from(v).ok()))
                .ok_or_else(bad)
        };
        let quality = if s.has_field("quality") {
            s.get::<Quality>("quality").map_err(|_| bad())?
        } else {
            quality_from_top(index)
        };
        Ok(VideoLayer {
            quality,
            width: number("width", true)?,
            height: number("height", true)?,
            bitrate: number("bitrate", false)?,
        })
    }
}

/// Parses `simulcastenc`'s `layers` property: `WIDTHxHEIGHT[:BITRATE],…`, the
/// main layer first; qualities follow the order (HIGH, MEDIUM, LOW).
pub fn parse_layers(text: &str) -> Result<Vec<VideoLayer>, PresetError> {
    let bad = || PresetError::BadLayerList(text.to_string());
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() || items.len() > 3 {
        return Err(bad());
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let (size, bitrate) = item.split_once(':').unwrap_or((item, "0"));
            let (w, h) = size.split_once('x').ok_or_else(bad)?;
            Ok(VideoLayer {
                quality: quality_from_top(i),
                width: w.trim().parse().map_err(|_| bad())?,
                height: h.trim().parse().map_err(|_| bad())?,
                bitrate: bitrate.trim().parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// The size a layer gets for a source: the source's aspect ratio kept, fitted in
/// the layer's box (turned upright for a portrait source), never upscaled, even.
pub fn fit_layer(layer: &VideoLayer, source_width: u32, source_height: u32) -> (u32, u32) {
    if source_width == 0 || source_height == 0 {
        return (layer.width, layer.height);
    }
    let (box_w, box_h) = if source_height > source_width {
        (layer.width.min(layer.height), layer.width.max(layer.height))
    } else {
        (layer.width.max(layer.height), layer.width.min(layer.height))
    };
    let scale = (f64::from(box_w) / f64::from(source_width))
        .min(f64::from(box_h) / f64::from(source_height))
        .min(1.0);
    (
        even((f64::from(source_width) * scale).round() as u32),
        even((f64::from(source_height) * scale).round() as u32),
    )
}

/// Opus settings for the audio track.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct AudioEncoding {
    pub bitrate: u32,
    pub channels: u32,
    pub dtx: bool,
}

impl AudioEncoding {
    /// OPUS_STEREO_96KBPS: LiveKit's default.
    pub const STEREO_96KBPS: AudioEncoding = AudioEncoding {
        bitrate: 96_000,
        channels: 2,
        dtx: true,
    };
    /// OPUS_MONO_64KBS.
    pub const MONO_64KBPS: AudioEncoding = AudioEncoding {
        bitrate: 64_000,
        channels: 1,
        dtx: true,
    };

    /// From the protocol's audio options (preset or custom); `None` is the default.
    /// Custom defaults: Opus, 2 channels, 96 kbps (64 kbps for mono), DTX on.
    pub fn from_proto(
        options: Option<&proto::IngressAudioOptions>,
    ) -> Result<AudioEncoding, PresetError> {
        match options.and_then(|o| o.encoding_options.as_ref()) {
            None => Ok(Self::STEREO_96KBPS),
            Some(AudioOptions::Preset(p)) => {
                match proto::IngressAudioEncodingPreset::try_from(*p) {
                    Ok(proto::IngressAudioEncodingPreset::OpusStereo96kbps) => {
                        Ok(Self::STEREO_96KBPS)
                    }
                    Ok(proto::IngressAudioEncodingPreset::OpusMono64kbs) => Ok(Self::MONO_64KBPS),
                    Err(_) => Err(PresetError::UnknownAudioPreset(*p)),
                }
            }
            Some(AudioOptions::Options(o)) => {
                match proto::AudioCodec::try_from(o.audio_codec) {
                    Ok(proto::AudioCodec::DefaultAc | proto::AudioCodec::Opus) => {}
                    Ok(other) => {
                        return Err(PresetError::UnsupportedAudioCodec(
                            other.as_str_name().into(),
                        ))
                    }
                    Err(_) => {
                        return Err(PresetError::UnsupportedAudioCodec(
                            o.audio_codec.to_string(),
                        ))
                    }
                }
                let channels = match o.channels {
                    0 => 2,
                    c @ (1 | 2) => c,
                    c => return Err(PresetError::BadChannels(c)),
                };
                let bitrate = match (o.bitrate, channels) {
                    (0, 1) => 64_000,
                    (0, _) => 96_000,
                    (b, _) => b,
                };
                Ok(AudioEncoding {
                    bitrate,
                    channels,
                    dtx: !o.disable_dtx,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A custom layer without a bitrate.
    fn layer(quality: Quality, width: u32, height: u32) -> VideoLayer {
        VideoLayer {
            quality,
            width,
            height,
            bitrate: 0,
        }
    }

    fn sizes(e: &VideoEncoding) -> Vec<(u32, u32, u32)> {
        e.layers
            .iter()
            .map(|l| (l.width, l.height, l.bitrate))
            .collect()
    }

    #[test]
    fn default_preset_is_720p_three_layers() {
        let e = VideoPreset::default().encoding();
        assert_eq!(e.framerate, 30.0);
        assert_eq!(e.codec, VideoCodec::H264Baseline);
        let s = sizes(&e);
        assert_eq!(s[0], (1280, 720, 1_900_000));
        assert_eq!((s[1].0, s[1].1), (640, 360));
        assert_eq!((s[2].0, s[2].1), (320, 180));
        // (1/4)^0.75 and (1/16)^0.75 of the main layer.
        assert_eq!(s[1].2, 671_751);
        assert_eq!(s[2].2, 237_500);
    }

    #[test]
    fn every_preset_matches_livekits_table() {
        let table = [
            (1280, 720, 30.0, 1_900_000, 3),
            (1920, 1080, 30.0, 3_500_000, 3),
            (960, 540, 25.0, 1_000_000, 2),
            (1280, 720, 30.0, 1_900_000, 1),
            (1920, 1080, 30.0, 3_500_000, 1),
            (1280, 720, 30.0, 2_500_000, 3),
            (1920, 1080, 30.0, 4_500_000, 3),
            (960, 540, 25.0, 1_300_000, 2),
            (1280, 720, 30.0, 2_500_000, 1),
            (1920, 1080, 30.0, 4_500_000, 1),
        ];
        for (preset, (w, h, fps, bps, n)) in VideoPreset::ALL.iter().zip(table) {
            let e = preset.encoding();
            assert_eq!(e.layers.len(), n, "{preset:?}");
            assert_eq!(
                (e.layers[0].width, e.layers[0].height),
                (w, h),
                "{preset:?}"
            );
            assert_eq!(e.layers[0].bitrate, bps, "{preset:?}");
            assert_eq!(e.framerate, fps, "{preset:?}");
            assert_eq!(VideoPreset::from_proto(*preset as i32), Ok(*preset));
            for pair in e.layers.windows(2) {
                assert_eq!(pair[1].width * 2, pair[0].width, "{preset:?} halves");
                assert!(pair[1].bitrate < pair[0].bitrate);
            }
        }
        assert_eq!(
            VideoPreset::H264_1080p30fps1LayerHighMotion.name(),
            "H264_1080P_30FPS_1_LAYER_HIGH_MOTION"
        );
    }

    #[test]
    fn bitrate_rule_starts_from_1080p30_at_3_5_mbps() {
        assert_eq!(bitrate_for(1920, 1080, 30.0), 3_500_000);
        assert_eq!(bitrate_for(960, 540, 30.0), 1_237_437);
    }

    #[test]
    fn custom_defaults_to_720p_at_1_7_mbps_with_two_lower_layers() {
        let e = VideoEncoding::custom(VideoCodec::Vp8, None, &[]).expect("valid");
        assert_eq!(e.framerate, 30.0);
        assert_eq!(e.layers.len(), 3);
        assert_eq!(sizes(&e)[0], (1280, 720, 1_700_000));
        assert_eq!(e.layers[2].quality, Quality::Low);
    }

    #[test]
    fn custom_layer_without_bitrate_takes_the_rule() {
        let layers = parse_layers("1920x1080,960x540:900000").expect("parse");
        let e =
            VideoEncoding::custom(VideoCodec::H264Baseline, Some(30.0), &layers).expect("valid");
        assert_eq!(e.layers[0].bitrate, 3_500_000);
        assert_eq!(e.layers[1].bitrate, 900_000);
    }

    #[test]
    fn invalid_custom_settings_are_refused() {
        let odd = [layer(Quality::High, 1281, 720)];
        assert!(matches!(
            VideoEncoding::custom(VideoCodec::H264Baseline, None, &odd),
            Err(PresetError::OddLayer { .. })
        ));
        let shrinking = [
            layer(Quality::High, 640, 360),
            layer(Quality::Low, 1280, 720),
        ];
        assert!(matches!(
            VideoEncoding::custom(VideoCodec::H264Baseline, None, &shrinking),
            Err(PresetError::LayersDoNotGrow { .. })
        ));
        let twice = [
            layer(Quality::High, 640, 360),
            layer(Quality::High, 1280, 720),
        ];
        assert_eq!(
            VideoEncoding::custom(VideoCodec::H264Baseline, None, &twice),
            Err(PresetError::DuplicateQuality(Quality::High))
        );
        assert!(VideoEncoding::custom(VideoCodec::H264Baseline, Some(-1.0), &[]).is_err());
        assert!(parse_layers("big").is_err());
        assert!(parse_layers("1x1,2x2,4x4,8x8").is_err());
    }

    #[test]
    fn fitting_keeps_aspect_and_never_upscales() {
        let hd = layer(Quality::High, 1280, 720);
        assert_eq!(fit_layer(&hd, 1920, 1080), (1280, 720));
        assert_eq!(fit_layer(&hd, 640, 480), (640, 480), "no upscale");
        assert_eq!(
            fit_layer(&hd, 1440, 1080),
            (960, 720),
            "4:3 keeps its shape"
        );
        assert_eq!(fit_layer(&hd, 1080, 1920), (720, 1280), "portrait");
        assert_eq!(fit_layer(&hd, 101, 57), (100, 56), "even");
    }

    #[test]
    fn audio_presets_and_custom_defaults() {
        assert_eq!(
            AudioEncoding::from_proto(None),
            Ok(AudioEncoding::STEREO_96KBPS)
        );
        let mono = proto::IngressAudioOptions {
            encoding_options: Some(AudioOptions::Options(proto::IngressAudioEncodingOptions {
                channels: 1,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            AudioEncoding::from_proto(Some(&mono)),
            Ok(AudioEncoding {
                bitrate: 64_000,
                channels: 1,
                dtx: true
            })
        );
        let aac = proto::IngressAudioOptions {
            encoding_options: Some(AudioOptions::Options(proto::IngressAudioEncodingOptions {
                audio_codec: proto::AudioCodec::Aac as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(AudioEncoding::from_proto(Some(&aac)).is_err());
        let preset = proto::IngressAudioOptions {
            encoding_options: Some(AudioOptions::Preset(1)),
            ..Default::default()
        };
        assert_eq!(
            AudioEncoding::from_proto(Some(&preset)),
            Ok(AudioEncoding::MONO_64KBPS)
        );
    }
}
