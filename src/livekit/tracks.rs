//! What the publisher announces: one simulcast video track and one audio track,
//! their LiveKit `AddTrackRequest`s, and the mapping between simulcast layers,
//! RTP stream ids (rids) and LiveKit's video qualities.

use crate::codec::VideoCodec;
use livekit_protocol as proto;

/// One encoded layer of the video track.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    pub width: u32,
    pub height: u32,
    /// Target bitrate in bits per second (0 when unknown).
    pub bitrate: u32,
}

/// The video track: its layers ordered from the smallest to the largest.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoTrackSpec {
    pub name: String,
    pub source: proto::TrackSource,
    pub codec: VideoCodec,
    /// H.264: the level_idc of the stream (its largest layer); `None` when
    /// unknown, then the codec table's default level is offered.
    pub h264_level: Option<u8>,
    pub layers: Vec<LayerSpec>,
}

/// The audio track (Opus).
#[derive(Clone, Debug, PartialEq)]
pub struct AudioTrackSpec {
    pub name: String,
    pub source: proto::TrackSource,
    pub stereo: bool,
    pub dtx: bool,
}

/// Rids of simulcast layers from the smallest up, as LiveKit clients name them.
const RIDS: [&str; 3] = ["q", "h", "f"];

/// At most this many simulcast layers (one per LiveKit quality).
pub const MAX_LAYERS: usize = RIDS.len();

impl VideoTrackSpec {
    /// The SDP profile-level-id to offer: the track's profile from the codec
    /// table at the stream's level; `None` for a codec without one (VP8).
    pub fn profile_level_id(&self) -> Option<u32> {
        let h264 = self.codec.info().h264.as_ref()?;
        Some(h264.profile_level_id(self.h264_level.unwrap_or(h264.default_level_idc)))
    }

    /// Whether the track is sent as simulcast (more than one layer).
    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// The rid of layer `index`, `None` for a single-layer track.
    pub fn rid(&self, index: usize) -> Option<&'static str> {
        if self.is_simulcast() {
            RIDS.get(index).copied()
        } else {
            None
        }
    }

    /// The layer a rid names; a single-layer track has only layer 0.
    pub fn layer_of_rid(&self, rid: Option<&str>) -> Option<usize> {
        match rid {
            None if !self.is_simulcast() => Some(0),
            Some(rid) if self.is_simulcast() => RIDS
                .iter()
                .position(|r| *r == rid)
                .filter(|i| *i < self.layers.len()),
            _ => None,
        }
    }

    /// LiveKit's quality of layer `index`: the largest layer is HIGH.
    pub fn quality(&self, index: usize) -> proto::VideoQuality {
        let from_top = self.layers.len().saturating_sub(index + 1);
        match from_top {
            0 => proto::VideoQuality::High,
            1 => proto::VideoQuality::Medium,
            _ => proto::VideoQuality::Low,
        }
    }

    /// The layer carrying LiveKit quality `quality`, if the track has it.
    pub fn layer_of_quality(&self, quality: proto::VideoQuality) -> Option<usize> {
        (0..self.layers.len()).find(|i| self.quality(*i) == quality)
    }

    fn video_layers(&self) -> Vec<proto::VideoLayer> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| proto::VideoLayer {
                quality: self.quality(i) as i32,
                width: l.width,
                height: l.height,
                bitrate: l.bitrate,
                rid: self.rid(i).unwrap_or_default().to_string(),
                ..Default::default()
            })
            .collect()
    }

    /// The request that announces this track with client id `cid`.
    pub fn add_track_request(&self, cid: &str) -> proto::AddTrackRequest {
        let largest = self.layers.last().copied().unwrap_or(LayerSpec {
            width: 0,
            height: 0,
            bitrate: 0,
        });
        let layers = self.video_layers();
        proto::AddTrackRequest {
            cid: cid.to_string(),
            name: self.name.clone(),
            r#type: proto::TrackType::Video as i32,
            source: self.source as i32,
            width: largest.width,
            height: largest.height,
            layers: layers.clone(),
            simulcast_codecs: vec![proto::SimulcastCodec {
                codec: self.codec.mime().to_string(),
                cid: cid.to_string(),
                layers,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

impl AudioTrackSpec {
    /// The request that announces this track with client id `cid`.
    pub fn add_track_request(&self, cid: &str) -> proto::AddTrackRequest {
        let mut features = Vec::new();
        if self.stereo {
            features.push(proto::AudioTrackFeature::TfStereo as i32);
        }
        if !self.dtx {
            features.push(proto::AudioTrackFeature::TfNoDtx as i32);
        }
        // `stereo` and `disable_dtx` are deprecated in favour of `audio_features`;
        // both are set so older servers understand the request too.
        #[allow(deprecated)]
        proto::AddTrackRequest {
            cid: cid.to_string(),
            name: self.name.clone(),
            r#type: proto::TrackType::Audio as i32,
            source: self.source as i32,
            stereo: self.stereo,
            disable_dtx: !self.dtx,
            audio_features: features,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_layers() -> VideoTrackSpec {
        VideoTrackSpec {
            name: "video".into(),
            source: proto::TrackSource::Camera,
            codec: VideoCodec::H264Baseline,
            h264_level: None,
            layers: vec![
                LayerSpec {
                    width: 320,
                    height: 180,
                    bitrate: 190_000,
                },
                LayerSpec {
                    width: 640,
                    height: 360,
                    bitrate: 500_000,
                },
                LayerSpec {
                    width: 1280,
                    height: 720,
                    bitrate: 1_900_000,
                },
            ],
        }
    }

    #[test]
    fn simulcast_layers_get_rids_and_qualities_from_the_smallest_up() {
        let spec = three_layers();
        assert_eq!(spec.rid(0), Some("q"));
        assert_eq!(spec.rid(2), Some("f"));
        assert_eq!(spec.quality(0), proto::VideoQuality::Low);
        assert_eq!(spec.quality(2), proto::VideoQuality::High);
        assert_eq!(spec.layer_of_rid(Some("h")), Some(1));
        assert_eq!(spec.layer_of_rid(None), None);
        assert_eq!(spec.layer_of_quality(proto::VideoQuality::Medium), Some(1));
    }

    #[test]
    fn a_single_layer_is_high_quality_without_rid() {
        let mut spec = three_layers();
        spec.layers.truncate(1);
        assert_eq!(spec.rid(0), None);
        assert_eq!(spec.layer_of_rid(None), Some(0));
        assert_eq!(spec.quality(0), proto::VideoQuality::High);
    }

    #[test]
    fn two_layers_are_medium_and_high() {
        let mut spec = three_layers();
        spec.layers.remove(0);
        assert_eq!(spec.quality(0), proto::VideoQuality::Medium);
        assert_eq!(spec.quality(1), proto::VideoQuality::High);
    }

    #[test]
    fn add_track_announces_every_layer_with_the_largest_size() {
        let req = three_layers().add_track_request("cid-1");
        assert_eq!(req.r#type, proto::TrackType::Video as i32);
        assert_eq!((req.width, req.height), (1280, 720));
        assert_eq!(req.layers.len(), 3);
        assert_eq!(req.layers[0].bitrate, 190_000);
        assert_eq!(req.simulcast_codecs[0].codec, "video/H264");
    }

    #[test]
    fn the_offered_profile_level_id_is_the_tracks_profile_at_its_level() {
        let mut spec = three_layers();
        assert_eq!(spec.profile_level_id(), Some(0x42e01f));
        spec.codec = VideoCodec::H264High;
        spec.h264_level = Some(40);
        assert_eq!(spec.profile_level_id(), Some(0x640028));
        spec.codec = VideoCodec::Vp8;
        assert_eq!(spec.profile_level_id(), None);
    }
}
