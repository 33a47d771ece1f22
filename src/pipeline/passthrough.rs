//! The video branch with H.264 pass-through (the service's
//! `video_passthrough`): decided from the source pad's caps before anything
//! is built, then
//!
//! ```text
//! hybrid: video ─ queue ─ h264passthrough ─src──────────────────────────────────────────────────── livekitsink.video_0
//!                                          └raw─ queue ─ videoscale ─ simulcastenc ─src_N─ queue ─ livekitsink.video_N+1
//! single: video ─ queue ─ h264passthrough(mode=single) ─src─ livekitsink.video_0
//! ```
//!
//! A stream that does not qualify at its start gets the full transcode
//! ([`super::add_video_branch`]); one that stops qualifying later is
//! h264passthrough's to handle (it transcodes the top layer itself). Either
//! way `h264passthrough-state` tells the session why.

use super::{
    add_chain, link_encoded_layers, make, report_input_format, set, sink_video_pad, PipelineConfig,
    PipelineError,
};
use crate::messages::input::InputVideo;
use crate::messages::passthrough::PassthroughState;
use crate::messages::BusMessage;
use crate::passthrough::eligibility::{self, Ineligible, Source};
use crate::passthrough::ladder::lower_layers;
use crate::passthrough::sps::{Sps, SpsError};
use crate::passthrough::Mode;
use crate::presets::VideoLayer;
use gst::prelude::*;

/// Whether the stream a source pad's caps describe may be passed through:
/// H.264 whose `codec_data` (avcC) holds an SPS that qualifies. A
/// byte-stream without `codec_data` (SRT's parsed H.264) is not known to
/// qualify before its first keyframe, so it is transcoded.
pub fn check_caps(caps: &gst::CapsRef) -> Result<Source, Ineligible> {
    let s = caps
        .structure(0)
        .ok_or_else(|| Ineligible::NotH264("no caps".into()))?;
    if s.name() != "video/x-h264" {
        return Err(Ineligible::NotH264(s.name().to_string()));
    }
    let sps = match s.get::<gst::Buffer>("codec_data") {
        Ok(record) => match record.map_readable() {
            Ok(map) => Sps::from_avcc(map.as_slice()),
            Err(_) => Err(SpsError::NoSps),
        },
        Err(_) => Err(SpsError::NoSps),
    };
    eligibility::check_parsed(sps)
}

/// The video branch for `src_pad` in `config.passthrough`'s mode; its head queue.
pub(super) fn add_video_branch(
    pipeline: &gst::Pipeline,
    src_pad: &gst::Pad,
    config: &PipelineConfig,
) -> Result<gst::Element, PipelineError> {
    let checked = match config.passthrough {
        Mode::Off => return super::add_video_branch(pipeline, src_pad, config),
        _ => match src_pad.current_caps() {
            Some(caps) => check_caps(&caps),
            None => Err(Ineligible::NoSps("no caps".into())),
        },
    };
    let source = match checked {
        Ok(source) => source,
        Err(reason) => {
            let _ = pipeline.post_message(
                PassthroughState {
                    active: false,
                    mode: config.passthrough,
                    reason: reason.to_string(),
                    ..Default::default()
                }
                .to_message(pipeline),
            );
            return super::add_video_branch(pipeline, src_pad, config);
        }
    };
    let lower = match config.passthrough {
        Mode::Hybrid => lower_layers(&config.options.video.encoding, &source),
        _ => Vec::new(),
    };
    let head = make("queue", None)?;
    let pass = make("h264passthrough", Some("passthrough"))?;
    // With no lower layer to encode, nothing needs decoding.
    let mode = if lower.is_empty() {
        Mode::Single
    } else {
        Mode::Hybrid
    };
    set(&pass, "mode", mode)?;
    let (head, pass) = add_chain(pipeline, &[head, pass])?;
    // The source's access units go straight in, on the head queue's thread:
    // nothing on their way blocks, and a queue would only add a hand-off
    // per access unit.
    let top = pad_of(&pass, "src")?;
    top.link(&sink_video_pad(pipeline, 0)?)
        .map_err(|e| PipelineError::Link(format!("h264passthrough to livekitsink: {e}")))?;
    if !lower.is_empty() {
        let layers = add_lower_layers(pipeline, &pass, config, &source, &lower)?;
        link_encoded_layers(pipeline, &layers, 1)?;
    }
    report_input_format(&top, src_pad, InputVideo::from_caps);
    super::link_to(src_pad, &head)?;
    Ok(head)
}

/// simulcastenc for the lower layers, fed the decoded pictures (and the
/// source's keyframes as force-key-unit events) from `pass`; its src pads.
fn add_lower_layers(
    pipeline: &gst::Pipeline,
    pass: &gst::Element,
    config: &PipelineConfig,
    source: &Source,
    lower: &[VideoLayer],
) -> Result<Vec<gst::Pad>, PipelineError> {
    let queue = make("queue", None)?;
    // Scaled once to the largest lower layer, from which simulcastenc
    // scales the others: scaling the decoded source to each layer costs
    // about as much as decoding it (videoscale, 1080p to 360p: 0.07 core).
    let scale = make("videoscale", None)?;
    let largest = make("capsfilter", None)?;
    if let Some(top) = lower.first() {
        let (width, height) = (top.width, top.height);
        let filter = largest.clone();
        // Sized when the decoded pictures' caps come, in their colorimetry.
        pad_of(&scale, "sink")?.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data {
                if let gst::EventView::Caps(caps) = event.view() {
                    let caps = crate::scaling::scaled_caps(caps.caps(), width, height);
                    filter.set_property("caps", caps);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    let enc = make("simulcastenc", Some("enc"))?;
    // One track, one profile: the lower layers take the source's.
    set(&enc, "codec", source.codec)?;
    set(&enc, "framerate", config.options.video.encoding.framerate)?;
    set(
        &enc,
        "layer-specs",
        gst::Array::new(lower.iter().map(VideoLayer::to_structure)),
    )?;
    let (queue, enc) = add_chain(pipeline, &[queue, scale, largest, enc])?;
    let raw = pad_of(pass, "raw")?;
    super::link_to(&raw, &queue)?;
    Ok(enc.src_pads())
}

fn pad_of(element: &gst::Element, name: &str) -> Result<gst::Pad, PipelineError> {
    element
        .static_pad(name)
        .ok_or_else(|| PipelineError::Link(format!("{} has no {name} pad", element.name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;
    use crate::passthrough::sps::tests::{hex, X264_720P_HIGH_BF0, X264_720P_HIGH_BF3};

    fn avc_caps(sps: &str) -> gst::Caps {
        let sps = hex(sps);
        let mut avcc = vec![1, 0x64, 0, 0x1f, 0xff, 0xe1];
        avcc.extend((sps.len() as u16).to_be_bytes());
        avcc.extend(&sps);
        avcc.extend([1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb]);
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("codec_data", gst::Buffer::from_slice(avcc))
            .build()
    }

    #[test]
    fn caps_decide_before_anything_is_built() {
        gst::init().expect("gstreamer");
        let source = check_caps(&avc_caps(X264_720P_HIGH_BF0)).expect("qualifies");
        assert_eq!(source.codec, VideoCodec::H264High);
        assert_eq!((source.width, source.height), (1280, 720));
        assert_eq!(
            check_caps(&avc_caps(X264_720P_HIGH_BF3)),
            Err(Ineligible::Reordered(2))
        );
        let hevc = gst::Caps::new_empty_simple("video/x-h265");
        assert!(matches!(check_caps(&hevc), Err(Ineligible::NotH264(_))));
        let bytes = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .build();
        assert!(matches!(check_caps(&bytes), Err(Ineligible::NoSps(_))));
    }
}
