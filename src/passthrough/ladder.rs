//! The layers a hybrid stream encodes below the source's own: the ingress's
//! layers (its preset's or custom ones) below the top, each fitted to the
//! source's aspect ratio, and only those smaller than the source. So a
//! 1920x1080 source with the default preset goes out as 1920x1080 (the
//! source), 640x360 and 320x180; a 640x360 source as itself and 320x180.

use super::eligibility::Source;
use crate::presets::{fit_layer, VideoEncoding, VideoLayer};

/// The encoded layers under a passed-through `source`, largest first.
pub fn lower_layers(encoding: &VideoEncoding, source: &Source) -> Vec<VideoLayer> {
    let source_pixels = u64::from(source.width) * u64::from(source.height);
    let mut layers: Vec<VideoLayer> = Vec::new();
    for layer in encoding.layers.iter().skip(1) {
        let (width, height) = fit_layer(layer, source.width, source.height);
        let smaller = u64::from(width) * u64::from(height) < source_pixels;
        let repeated = layers
            .iter()
            .any(|l| (l.width, l.height) == (width, height));
        if smaller && !repeated && width > 0 && height > 0 {
            layers.push(VideoLayer {
                width,
                height,
                ..*layer
            });
        }
    }
    layers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;
    use crate::presets::VideoPreset;

    fn source(width: u32, height: u32) -> Source {
        Source {
            codec: VideoCodec::H264High,
            level_idc: 40,
            width,
            height,
        }
    }

    fn sizes(layers: &[VideoLayer]) -> Vec<(u32, u32)> {
        layers.iter().map(|l| (l.width, l.height)).collect()
    }

    #[test]
    fn the_presets_lower_layers_under_the_source() {
        let preset = VideoPreset::default().encoding();
        assert_eq!(
            sizes(&lower_layers(&preset, &source(1920, 1080))),
            vec![(640, 360), (320, 180)]
        );
        assert_eq!(
            sizes(&lower_layers(&preset, &source(640, 360))),
            vec![(320, 180)]
        );
        assert_eq!(sizes(&lower_layers(&preset, &source(320, 180))), vec![]);
        // 4:3 keeps its shape; bitrates and qualities are the preset's.
        let fitted = lower_layers(&preset, &source(1024, 768));
        assert_eq!(sizes(&fitted), vec![(480, 360), (240, 180)]);
        assert_eq!(fitted[0].bitrate, preset.layers[1].bitrate);
        assert_eq!(fitted[0].quality, preset.layers[1].quality);
        let one = VideoPreset::H264_720p30fps1Layer.encoding();
        assert!(lower_layers(&one, &source(1280, 720)).is_empty());
    }
}
