//! The ingress pipeline: the gst-launch composition of DESIGN.md built as code.
//!
//! ```text
//! rtmpingresssrc ─video─ queue ─ parse ─ decode ─ videoconvert ─ simulcastenc ─src_N─ queue ─┐
//!                └audio─ queue ─ parse ─ decode ─ audioconvert ─ audioresample              livekitsink
//!                                  ─ capsfilter(48 kHz, channels) ─ opusenc ───────────────────┘
//! ```
//!
//! Branches are built when `rtmpingresssrc` adds its pads, so audio-only and
//! video-only publishes work. What the pipeline reports on its bus is turned into
//! [`PipelineEvent`]s for whoever drives the session (the service, or a test).
//! Elements are created by factory name: this module depends on the element
//! contracts, not on their implementation.

use crate::codec::OPUS;
use crate::input::{self as input_contract, InputSource};
use crate::livekit::stats::SendStats;
use crate::messages::input::{self, InputAudio, InputVideo};
use crate::messages::livekit::{Connected, TrackPublished};
use crate::messages::passthrough::PassthroughState;
use crate::messages::publish::{LateDropped, PublishPaused, PublishResumed, PublishStopped, Stats};
use crate::messages::BusMessage;
use crate::options::IngressOptions;
use crate::presets::VideoLayer;
use gst::glib;
use gst::prelude::*;
use std::sync::Arc;

mod passthrough;

/// The LiveKit server the ingress joins (its room and participant are in
/// the [`IngressOptions`]).
#[derive(Clone, Debug, Default)]
pub struct LiveKitServer {
    pub ws_url: String,
    pub api_key: String,
    pub api_secret: String,
}

/// Everything one ingress pipeline needs: where its media comes from, where
/// to publish, and the ingress's resolved, typed options
/// ([`crate::options::resolve`]).
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The pipeline's name, in logs and debug graphs (never the stream key).
    pub name: String,
    pub source: InputSource,
    pub server: LiveKitServer,
    pub options: IngressOptions,
    /// Decode and encode the input (simulcastenc, opusenc); when false the
    /// source's encoded media goes to livekitsink as it is (WHIP bypass:
    /// H.264 or VP8 video, Opus audio).
    pub transcode: bool,
    /// With `transcode`: whether a qualifying H.264 source is passed
    /// through as the top layer (hybrid) or the only one (single); see
    /// [`crate::passthrough`].
    pub passthrough: crate::passthrough::Mode,
}

/// What the session learns from the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum PipelineEvent {
    /// The input's video as it arrived (before decoding).
    InputVideo {
        mime_type: String,
        width: u32,
        height: u32,
        framerate: f64,
    },
    /// The input's audio as it arrived.
    InputAudio {
        mime_type: String,
        channels: u32,
        sample_rate: u32,
    },
    /// Measured input bitrates, bits per second.
    InputBitrate { video: u32, audio: u32 },
    /// The participant joined the room.
    Connected { room_sid: String },
    /// A track is published in the room.
    TrackPublished {
        /// The server's TrackInfo (from livekitsink's `info` field).
        info: Box<livekit_protocol::TrackInfo>,
    },
    /// The source dropped frames that came too late to matter (its
    /// `ingress-input-late-dropped`), video and audio together.
    LateDropped { frames: u64 },
    /// What livekitsink sent so far (its `livekit-stats`).
    Sent(Box<crate::livekit::stats::SendStats>),
    /// Whether the source's H.264 is passed through, and if not, why (only
    /// with pass-through configured).
    Passthrough {
        active: bool,
        mode: crate::passthrough::Mode,
        reason: String,
    },
    /// The publisher left; the source waits for it within its grace period.
    Paused,
    /// The publisher is back within the grace period.
    Resumed,
    /// The source stopped publishing (or the pipeline reached EOS).
    Ended { reason: String },
    /// Something failed; the text is for the operator.
    Failed { message: String },
}

/// Milliseconds between livekitsink's reports of what it sent.
const SENT_STATS_INTERVAL_MS: u32 = 2000;

/// Errors while building the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("GStreamer element `{0}` is missing: is the plugin providing it installed?")]
    MissingElement(String),
    #[error("invalid setting for `{element}`: {message}")]
    InvalidSetting { element: String, message: String },
    #[error("cannot link the ingress pipeline: {0}")]
    Link(String),
}

pub(crate) fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, PipelineError> {
    let mut builder = gst::ElementFactory::make(factory);
    if let Some(name) = name {
        builder = builder.name(name);
    }
    builder
        .build()
        .map_err(|_| PipelineError::MissingElement(factory.to_string()))
}

/// Sets a property with a typed value, or says why the element has no such
/// property or takes another type (where `set_property` would panic).
pub(crate) fn set<V: ToValue>(
    element: &gst::Element,
    property: &str,
    value: V,
) -> Result<(), PipelineError> {
    let invalid = |message: String| PipelineError::InvalidSetting {
        element: element.name().to_string(),
        message,
    };
    let pspec = element
        .find_property(property)
        .ok_or_else(|| invalid(format!("no property `{property}`")))?;
    let value = value.to_value();
    if !pspec.flags().contains(glib::ParamFlags::WRITABLE) {
        return Err(invalid(format!("`{property}` cannot be set")));
    }
    if !value.type_().is_a(pspec.value_type()) {
        return Err(invalid(format!(
            "`{property}` takes {}, not {}",
            pspec.value_type(),
            value.type_()
        )));
    }
    if !in_range(&pspec, &value) {
        return Err(invalid(format!("{value:?} is out of `{property}`'s range")));
    }
    element.set_property_from_value(property, &value);
    Ok(())
}

/// Whether a number is within its property's bounds (GLib refuses, and
/// `set_property` panics, otherwise).
fn in_range(pspec: &glib::ParamSpec, value: &glib::Value) -> bool {
    fn within<T: PartialOrd + for<'a> glib::value::FromValue<'a>>(
        value: &glib::Value,
        min: T,
        max: T,
    ) -> bool {
        value.get::<T>().is_ok_and(|v| min <= v && v <= max)
    }
    if let Some(p) = pspec.downcast_ref::<glib::ParamSpecInt>() {
        within(value, p.minimum(), p.maximum())
    } else if let Some(p) = pspec.downcast_ref::<glib::ParamSpecUInt>() {
        within(value, p.minimum(), p.maximum())
    } else if let Some(p) = pspec.downcast_ref::<glib::ParamSpecInt64>() {
        within(value, p.minimum(), p.maximum())
    } else if let Some(p) = pspec.downcast_ref::<glib::ParamSpecUInt64>() {
        within(value, p.minimum(), p.maximum())
    } else if let Some(p) = pspec.downcast_ref::<glib::ParamSpecDouble>() {
        within(value, p.minimum(), p.maximum())
    } else {
        true
    }
}

/// A built ingress pipeline.
pub struct IngressPipeline {
    pipeline: gst::Pipeline,
}

impl IngressPipeline {
    /// Builds the pipeline; the branches are completed when the source's pads appear.
    pub fn build(config: &PipelineConfig) -> Result<Self, PipelineError> {
        let pipeline = gst::Pipeline::with_name(&config.name);
        let src = config.source.element()?;

        let sink = make("livekitsink", Some("sink"))?;
        configure_sink(&sink, config)?;
        // Fresh enough for a metrics scrape, cheap enough to ignore.
        set(&sink, "stats-interval", SENT_STATS_INTERVAL_MS)?;

        pipeline
            .add_many([&src, &sink])
            .map_err(|e| PipelineError::Link(e.to_string()))?;

        let config = Arc::new(config.clone());
        let gate = Arc::new(BranchGate::default());
        let pipeline_weak = pipeline.downgrade();
        let branch_gate = gate.clone();
        let layers = Arc::new(std::sync::Mutex::new(Layers::default()));
        src.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline_weak.upgrade() else {
                return;
            };
            // Simulcast encodings' pads come from their own threads: one
            // branch is built at a time (livekitsink names its pads from
            // the ones it has).
            let mut layers = crate::sync::lock(&layers);
            let name = pad.name();
            let result = match (name.as_str(), config.transcode) {
                ("video", true) => passthrough::add_video_branch(&pipeline, pad, &config),
                ("audio", true) => add_audio_branch(&pipeline, pad, &config),
                (layer, true) if input_contract::is_video_layer(layer) => {
                    // One picture is transcoded: the first encoding to
                    // come (see README, Known gaps).
                    if std::mem::replace(&mut layers.transcoded, true) {
                        add_discard_branch(&pipeline, pad)
                    } else {
                        add_video_branch(&pipeline, pad, &config)
                    }
                }
                ("video", false) => {
                    add_bypass_branch(&pipeline, pad, "video_0", InputVideo::from_caps)
                }
                (layer, false) if input_contract::is_video_layer(layer) => {
                    add_layer_branch(&pipeline, pad, &mut layers)
                }
                ("audio", false) => {
                    add_bypass_branch(&pipeline, pad, "audio_0", InputAudio::from_caps)
                }
                (other, _) => Err(PipelineError::Link(format!(
                    "unexpected source pad {other}"
                ))),
            };
            drop(layers);
            match result {
                Ok(head) => branch_gate.hold(&head),
                Err(err) => gst::element_error!(
                    pipeline,
                    gst::StreamError::Failed,
                    ("cannot build the ingress pipeline: {err}")
                ),
            }
        });
        src.connect_no_more_pads(move |_| gate.open());

        Ok(IngressPipeline { pipeline })
    }

    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }
}

/// How long branches wait for the source's no-more-pads before they flow
/// all the same (a source that never says it).
const BRANCHES_KNOWN_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Holds each branch's media at its head queue until the source has added
/// all its pads (`no-more-pads`), so livekitsink joins the room with every
/// track: a source may add its audio pad first (an RTSP camera, a file),
/// and livekitsink can add an audio track after the join but not a video
/// one. The source keeps pushing into the queues meanwhile: a demuxer that
/// feeds both pads from one thread is never blocked.
#[derive(Default)]
struct BranchGate {
    held: std::sync::Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    timer_started: bool,
    probes: Vec<(gst::Pad, gst::PadProbeId)>,
}

impl BranchGate {
    /// Holds what leaves `head` (a branch's first queue) until the gate opens.
    fn hold(self: &Arc<Self>, head: &gst::Element) {
        let Some(pad) = head.static_pad("src") else {
            return;
        };
        let mut held = crate::sync::lock(&self.held);
        if held.open {
            return;
        }
        let probe = pad.add_probe(gst::PadProbeType::BLOCK_DOWNSTREAM, |_, _| {
            gst::PadProbeReturn::Ok
        });
        if let Some(probe) = probe {
            held.probes.push((pad, probe));
        }
        if !held.timer_started {
            held.timer_started = true;
            let gate = Arc::downgrade(self);
            let _ = std::thread::Builder::new()
                .name("branch-gate".into())
                .spawn(move || {
                    std::thread::sleep(BRANCHES_KNOWN_AFTER);
                    if let Some(gate) = gate.upgrade() {
                        gate.open();
                    }
                });
        }
    }

    /// Lets every held branch flow, and the ones built from now on.
    fn open(&self) {
        let probes = {
            let mut held = crate::sync::lock(&self.held);
            held.open = true;
            std::mem::take(&mut held.probes)
        };
        for (pad, probe) in probes {
            pad.remove_probe(probe);
        }
    }
}

/// livekitsink's properties from the server and the options.
fn configure_sink(sink: &gst::Element, config: &PipelineConfig) -> Result<(), PipelineError> {
    let (server, options) = (&config.server, &config.options);
    let participant = &options.participant;
    for (property, value) in [
        ("url", &server.ws_url),
        ("api-key", &server.api_key),
        ("api-secret", &server.api_secret),
        ("room-name", &options.room_name),
        ("participant-identity", &participant.identity),
        ("participant-name", &participant.name),
        ("participant-metadata", &participant.metadata),
        ("video-track-name", &options.video.track.name),
        ("audio-track-name", &options.audio.track.name),
    ] {
        if !value.is_empty() {
            set(sink, property, value)?;
        }
    }
    set(sink, "video-track-source", options.video.track.source)?;
    set(sink, "audio-track-source", options.audio.track.source)
}

/// simulcastenc's properties from the video options: the preset, or the
/// custom codec, frame rate and layers (as `layer-specs` structures).
fn configure_encoder(enc: &gst::Element, config: &PipelineConfig) -> Result<(), PipelineError> {
    let video = &config.options.video;
    if let Some(preset) = video.preset {
        return set(enc, "preset", preset);
    }
    let encoding = &video.encoding;
    set(enc, "codec", encoding.codec)?;
    set(enc, "framerate", encoding.framerate)?;
    set(
        enc,
        "layer-specs",
        gst::Array::new(encoding.layers.iter().map(VideoLayer::to_structure)),
    )
}

impl Drop for IngressPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Adds `elements` to the pipeline, links them in order and brings them to the
/// pipeline's state; returns the first and the last.
fn add_chain(
    pipeline: &gst::Pipeline,
    elements: &[gst::Element],
) -> Result<(gst::Element, gst::Element), PipelineError> {
    pipeline
        .add_many(elements)
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    gst::Element::link_many(elements).map_err(|e| PipelineError::Link(e.to_string()))?;
    for element in elements {
        element
            .sync_state_with_parent()
            .map_err(|e| PipelineError::Link(e.to_string()))?;
    }
    match (elements.first(), elements.last()) {
        (Some(first), Some(last)) => Ok((first.clone(), last.clone())),
        _ => Err(PipelineError::Link("empty chain".into())),
    }
}

/// Parser and decoder for what a source pad carries (see [`crate::decode`]).
fn decoders_for(pad: &gst::Pad) -> Result<Vec<gst::Element>, PipelineError> {
    let caps = pad
        .current_caps()
        .ok_or_else(|| PipelineError::Link(format!("{} has no caps", pad.name())))?;
    crate::decode::decoder_chain(&caps).map_err(|e| PipelineError::InvalidSetting {
        element: "decoder".into(),
        message: e,
    })
}

/// The video branch for `src_pad`, linked from it; its head queue.
fn add_video_branch(
    pipeline: &gst::Pipeline,
    src_pad: &gst::Pad,
    config: &PipelineConfig,
) -> Result<gst::Element, PipelineError> {
    let mut chain = vec![make("queue", None)?];
    chain.extend(decoders_for(src_pad)?);
    let convert = make("videoconvert", None)?;
    chain.push(convert.clone());
    let enc = make("simulcastenc", Some("enc"))?;
    configure_encoder(&enc, config)?;
    chain.push(enc);
    let (queue, enc) = add_chain(pipeline, &chain)?;
    if let Some(decoded) = convert.static_pad("sink") {
        report_input_format(&decoded, src_pad, InputVideo::from_caps);
    }

    link_encoded_layers(pipeline, &enc.src_pads(), 0)?;
    link_to(src_pad, &queue)?;
    Ok(queue)
}

/// livekitsink's video pad `video_{index}`.
fn sink_video_pad(pipeline: &gst::Pipeline, index: usize) -> Result<gst::Pad, PipelineError> {
    pipeline
        .by_name("sink")
        .ok_or_else(|| PipelineError::Link("livekitsink missing".into()))?
        .request_pad_simple(&format!("video_{index}"))
        .ok_or_else(|| PipelineError::Link("livekitsink refused a video pad".into()))
}

/// Links simulcastenc's layer pads to livekitsink's video pads from
/// `video_{first}` on, each through a queue of its own: every layer's encoder
/// runs on its own thread, and one slow layer holds up no other.
fn link_encoded_layers(
    pipeline: &gst::Pipeline,
    layers: &[gst::Pad],
    first: usize,
) -> Result<(), PipelineError> {
    for (index, layer) in layers.iter().enumerate() {
        let queue = make("queue", None)?;
        pipeline
            .add(&queue)
            .map_err(|e| PipelineError::Link(e.to_string()))?;
        link_pads(layer, &queue, &sink_video_pad(pipeline, first + index)?)?;
        queue
            .sync_state_with_parent()
            .map_err(|e| PipelineError::Link(e.to_string()))?;
    }
    Ok(())
}

/// What opusenc is fed: 48 kHz, and at most `channels` channels. A source
/// with fewer keeps its own count: a mono source upmixed to stereo would cost
/// the encoder twice as much to send the same sound twice.
fn opus_input_caps(channels: u32) -> gst::Caps {
    let caps = gst::Caps::builder("audio/x-raw").field("rate", OPUS.clock_rate as i32);
    match channels {
        0 | 1 => caps.field("channels", 1i32),
        n => caps.field("channels", gst::IntRange::new(1, n as i32)),
    }
    .build()
}

/// The audio branch for `src_pad`, linked from it; its head queue.
fn add_audio_branch(
    pipeline: &gst::Pipeline,
    src_pad: &gst::Pad,
    config: &PipelineConfig,
) -> Result<gst::Element, PipelineError> {
    let audio = &config.options.audio.encoding;
    let mut chain = vec![make("queue", None)?];
    chain.extend(decoders_for(src_pad)?);
    let convert = make("audioconvert", None)?;
    chain.push(convert.clone());
    chain.push(make("audioresample", None)?);
    let capsfilter = make("capsfilter", None)?;
    set(&capsfilter, "caps", opus_input_caps(audio.channels))?;
    chain.push(capsfilter);
    let opusenc = make(OPUS.encoder, None)?;
    set(&opusenc, "bitrate", audio.bitrate as i32)?;
    set(&opusenc, "dtx", audio.dtx)?;

    chain.push(opusenc);
    let (queue, opusenc) = add_chain(pipeline, &chain)?;
    if let Some(decoded) = convert.static_pad("sink") {
        report_input_format(&decoded, src_pad, InputAudio::from_caps);
    }

    let sink = pipeline
        .by_name("sink")
        .ok_or_else(|| PipelineError::Link("livekitsink missing".into()))?;
    let sink_pad = sink
        .request_pad_simple("audio_0")
        .ok_or_else(|| PipelineError::Link("livekitsink refused an audio pad".into()))?;
    let enc_src = opusenc
        .static_pad("src")
        .ok_or_else(|| PipelineError::Link("opusenc has no src pad".into()))?;
    enc_src
        .link(&sink_pad)
        .map_err(|e| PipelineError::Link(format!("opusenc to livekitsink: {e}")))?;
    link_to(src_pad, &queue)?;
    Ok(queue)
}

/// What the pipeline knows of a source's simulcast encodings.
#[derive(Debug, Default)]
struct Layers {
    /// Transcoding: one encoding went into the video branch.
    transcoded: bool,
    /// Bypass: the largest picture of an encoding so far (width x height).
    largest: Arc<std::sync::atomic::AtomicU64>,
}

/// Bypass of one simulcast encoding (`video_{rid}`): a layer of
/// livekitsink's video track (it orders layers by picture size); its head
/// queue. The input's video is reported from the largest encoding.
fn add_layer_branch(
    pipeline: &gst::Pipeline,
    src_pad: &gst::Pad,
    layers: &mut Layers,
) -> Result<gst::Element, PipelineError> {
    let largest = layers.largest.clone();
    // The largest picture so far, and the same size again: a frame rate
    // learnt later still reaches the state.
    let keep = move |caps: &gst::StructureRef| {
        let side = |field| u64::try_from(caps.get::<i32>(field).unwrap_or(0)).unwrap_or(0);
        let area = side("width") * side("height");
        area >= largest.fetch_max(area, std::sync::atomic::Ordering::Relaxed)
    };
    bypass(pipeline, src_pad, "video_%u", InputVideo::from_caps, keep)
}

/// An encoding nobody takes (a simulcast layer beside the transcoded one):
/// dropped in a fakesink.
fn add_discard_branch(
    pipeline: &gst::Pipeline,
    src_pad: &gst::Pad,
) -> Result<gst::Element, PipelineError> {
    let sink = make("fakesink", None)?;
    set(&sink, "sync", false)?;
    set(&sink, "async", false)?;
    pipeline
        .add(&sink)
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    link_to(src_pad, &sink)?;
    sink.sync_state_with_parent()
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    Ok(sink)
}

/// A branch without transcoding: the source's encoded media through a
/// queue into livekitsink's pad `sink_pad` (WHIP bypass); its head queue.
fn add_bypass_branch(
    pipeline: &gst::Pipeline,
    src_pad: &gst::Pad,
    sink_pad: &str,
    report: fn(&gst::StructureRef, &str) -> gst::Structure,
) -> Result<gst::Element, PipelineError> {
    bypass(pipeline, src_pad, sink_pad, report, |_| true)
}

fn bypass(
    pipeline: &gst::Pipeline,
    src_pad: &gst::Pad,
    sink_pad: &str,
    report: fn(&gst::StructureRef, &str) -> gst::Structure,
    keep: impl Fn(&gst::StructureRef) -> bool + Send + Sync + 'static,
) -> Result<gst::Element, PipelineError> {
    let queue = make("queue", None)?;
    pipeline
        .add(&queue)
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    let sink = pipeline
        .by_name("sink")
        .ok_or_else(|| PipelineError::Link("livekitsink missing".into()))?;
    let to = sink
        .request_pad_simple(sink_pad)
        .ok_or_else(|| PipelineError::Link(format!("livekitsink refused {sink_pad}")))?;
    if let Some(out) = queue.static_pad("src") {
        report_input_format_if(&out, src_pad, report, keep);
    }
    link_pads(src_pad, &queue, &to)?;
    queue
        .sync_state_with_parent()
        .map_err(|e| PipelineError::Link(e.to_string()))?;
    Ok(queue)
}

fn link_pads(from: &gst::Pad, via: &gst::Element, to: &gst::Pad) -> Result<(), PipelineError> {
    link_to(from, via)?;
    let via_src = via
        .static_pad("src")
        .ok_or_else(|| PipelineError::Link(format!("{} has no src pad", via.name())))?;
    via_src
        .link(to)
        .map(|_| ())
        .map_err(|e| PipelineError::Link(format!("{} to {}: {e}", via.name(), to.name())))
}

fn link_to(from: &gst::Pad, element: &gst::Element) -> Result<(), PipelineError> {
    let sink = element
        .static_pad("sink")
        .ok_or_else(|| PipelineError::Link(format!("{} has no sink pad", element.name())))?;
    from.link(&sink)
        .map(|_| ())
        .map_err(|e| PipelineError::Link(format!("{} to {}: {e}", from.name(), element.name())))
}

/// Posts the decoded format of a branch as an application message on the bus
/// (`ingress-input-video` / `-audio`, written by `message`), with the mime type
/// the source sent, so the session can report the input's format.
fn report_input_format(
    decoded: &gst::Pad,
    source: &gst::Pad,
    message: fn(&gst::StructureRef, &str) -> gst::Structure,
) {
    report_input_format_if(decoded, source, message, |_| true)
}

/// [`report_input_format`] for the caps `keep` says.
fn report_input_format_if(
    decoded: &gst::Pad,
    source: &gst::Pad,
    message: fn(&gst::StructureRef, &str) -> gst::Structure,
    keep: impl Fn(&gst::StructureRef) -> bool + Send + Sync + 'static,
) {
    let source = source.downgrade();
    decoded.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
        let Some(gst::PadProbeData::Event(ref event)) = info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(caps) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let mime = source
            .upgrade()
            .and_then(|p| p.current_caps())
            .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
            .unwrap_or_default();
        if let (Some(structure), Some(element)) = (caps.caps().structure(0), pad.parent_element()) {
            if !keep(structure) {
                return gst::PadProbeReturn::Ok;
            }
            let _ = element.post_message(input::application(message(structure, &mime), &element));
        }
        gst::PadProbeReturn::Ok
    });
}

impl PipelineEvent {
    /// The session event a bus message carries, if any.
    pub fn from_message(message: &gst::Message) -> Option<PipelineEvent> {
        use gst::MessageView;
        match message.view() {
            MessageView::Eos(_) => Some(PipelineEvent::Ended {
                reason: "end of stream".into(),
            }),
            MessageView::Error(err) => Some(PipelineEvent::Failed {
                message: err.error().to_string(),
            }),
            MessageView::Element(_) | MessageView::Application(_) => {
                let s = message.structure()?;
                // Each message's own parser decides; the name only picks it.
                match s.name().as_str() {
                    PublishStopped::NAME => {
                        PublishStopped::from_structure(s).map(|stopped| PipelineEvent::Ended {
                            reason: stopped.reason,
                        })
                    }
                    Stats::NAME => Stats::from_structure(s).map(|stats| {
                        let bitrate = |b: u64| b.min(u64::from(u32::MAX)) as u32;
                        PipelineEvent::InputBitrate {
                            video: bitrate(stats.video_bitrate),
                            audio: bitrate(stats.audio_bitrate),
                        }
                    }),
                    PassthroughState::NAME => {
                        PassthroughState::from_structure(s).map(|p| PipelineEvent::Passthrough {
                            active: p.active,
                            mode: p.mode,
                            reason: p.reason,
                        })
                    }
                    PublishPaused::NAME => {
                        PublishPaused::from_structure(s).map(|_| PipelineEvent::Paused)
                    }
                    PublishResumed::NAME => {
                        PublishResumed::from_structure(s).map(|_| PipelineEvent::Resumed)
                    }
                    LateDropped::NAME => {
                        LateDropped::from_structure(s).map(|late| PipelineEvent::LateDropped {
                            frames: late.video_frames.saturating_add(late.audio_frames),
                        })
                    }
                    SendStats::NAME => SendStats::from_structure(s)
                        .map(|stats| PipelineEvent::Sent(Box::new(stats))),
                    Connected::NAME => {
                        Connected::from_structure(s).map(|connected| PipelineEvent::Connected {
                            room_sid: connected.room_sid,
                        })
                    }
                    TrackPublished::NAME => TrackPublished::from_structure(s).map(|track| {
                        PipelineEvent::TrackPublished {
                            info: Box::new(track.info),
                        }
                    }),
                    InputVideo::NAME => {
                        InputVideo::from_structure(s).map(|video| PipelineEvent::InputVideo {
                            framerate: video.framerate_f64(),
                            mime_type: video.mime_type,
                            width: video.width,
                            height: video.height,
                        })
                    }
                    InputAudio::NAME => {
                        InputAudio::from_structure(s).map(|audio| PipelineEvent::InputAudio {
                            mime_type: audio.mime_type,
                            channels: audio.channels,
                            sample_rate: audio.rate,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;
    use crate::messages::livekit::Disconnected;
    use crate::options::{self, TrackSource};
    use crate::presets::{AudioEncoding, Quality, VideoPreset};
    use livekit_protocol as proto;
    use proto::ingress_video_options::EncodingOptions as ProtoVideoOptions;

    fn init() {
        gst::init().expect("gstreamer");
        let _ = crate::plugin_register_static();
    }

    fn config(info: &proto::IngressInfo) -> PipelineConfig {
        PipelineConfig {
            name: "test".into(),
            source: InputSource::Rtmp {
                address: "127.0.0.1".into(),
                port: 1935,
                stream_key: "key".into(),
                reconnect_grace: 5,
            },
            server: LiveKitServer {
                ws_url: "ws://livekit.invalid".into(),
                api_key: "key".into(),
                api_secret: "secret".into(),
            },
            options: options::resolve(info).expect("valid"),
            transcode: true,
            passthrough: Default::default(),
        }
    }

    fn custom_info() -> proto::IngressInfo {
        proto::IngressInfo {
            room_name: "room".into(),
            participant_identity: "who".into(),
            video: Some(proto::IngressVideoOptions {
                name: "screen".into(),
                source: proto::TrackSource::ScreenShare as i32,
                encoding_options: Some(ProtoVideoOptions::Options(
                    proto::IngressVideoEncodingOptions {
                        video_codec: proto::VideoCodec::H264Main as i32,
                        frame_rate: 25.0,
                        layers: vec![
                            proto::VideoLayer {
                                quality: proto::VideoQuality::High as i32,
                                width: 1280,
                                height: 720,
                                bitrate: 2_000_000,
                                ..Default::default()
                            },
                            proto::VideoLayer {
                                quality: proto::VideoQuality::Low as i32,
                                width: 320,
                                height: 180,
                                bitrate: 200_000,
                                ..Default::default()
                            },
                        ],
                    },
                )),
            }),
            audio: Some(proto::IngressAudioOptions {
                source: proto::TrackSource::ScreenShareAudio as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The channels opusenc is given for a source of `source` channels when
    /// the options ask for `asked`.
    fn opus_channels(source: u32, asked: u32) -> i32 {
        init();
        let filter = format!("{}", opus_input_caps(asked));
        let launch = format!(
            "audiotestsrc num-buffers=3 ! audio/x-raw,rate=44100,channels={source} \
             ! audioconvert ! audioresample ! {filter} ! opusenc name=enc ! fakesink"
        );
        let pipeline = gst::parse::launch(&launch).expect("pipeline");
        let pipeline = pipeline.downcast::<gst::Pipeline>().expect("a pipeline");
        pipeline.set_state(gst::State::Playing).expect("plays");
        let bus = pipeline.bus().expect("bus");
        let done = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        assert!(matches!(
            done.map(|m| m.type_()),
            Some(gst::MessageType::Eos)
        ));
        let enc = pipeline.by_name("enc").expect("opusenc");
        let caps = enc
            .static_pad("sink")
            .and_then(|p| p.current_caps())
            .expect("caps");
        pipeline.set_state(gst::State::Null).expect("stops");
        let s = caps.structure(0).expect("structure");
        assert_eq!(s.get::<i32>("rate"), Ok(48_000));
        s.get::<i32>("channels").expect("channels")
    }

    #[test]
    fn opus_gets_at_most_the_asked_channels_and_never_more_than_the_source() {
        assert_eq!(opus_channels(1, 2), 1);
        assert_eq!(opus_channels(2, 2), 2);
        assert_eq!(opus_channels(2, 1), 1);
        assert_eq!(opus_channels(1, 1), 1);
    }

    #[test]
    fn the_sink_gets_typed_track_sources_and_the_options() {
        init();
        let built = IngressPipeline::build(&config(&custom_info())).expect("built");
        let sink = built.pipeline().by_name("sink").expect("livekitsink");
        assert_eq!(
            sink.property::<TrackSource>("video-track-source"),
            TrackSource::ScreenShare
        );
        assert_eq!(
            sink.property::<TrackSource>("audio-track-source"),
            TrackSource::ScreenShareAudio
        );
        assert_eq!(sink.property::<String>("video-track-name"), "screen");
        assert_eq!(sink.property::<String>("audio-track-name"), "audio");
        assert_eq!(sink.property::<String>("room-name"), "room");
        assert_eq!(sink.property::<String>("participant-identity"), "who");
        assert_eq!(
            sink.property::<u32>("stats-interval"),
            SENT_STATS_INTERVAL_MS
        );
        let src = built.pipeline().by_name("src").expect("rtmpingresssrc");
        assert_eq!(src.property::<u32>("port"), 1935);
    }

    #[test]
    fn the_encoder_gets_the_preset_or_typed_custom_settings() {
        init();
        let enc = make("simulcastenc", None).expect("simulcastenc");
        let preset = proto::IngressInfo {
            video: Some(proto::IngressVideoOptions {
                encoding_options: Some(ProtoVideoOptions::Preset(
                    VideoPreset::H264_540p25fps2Layers as i32,
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        configure_encoder(&enc, &config(&preset)).expect("set");
        assert_eq!(
            enc.property::<VideoPreset>("preset"),
            VideoPreset::H264_540p25fps2Layers
        );
        assert_eq!(enc.property::<gst::Array>("layer-specs").len(), 0);

        let enc = make("simulcastenc", None).expect("simulcastenc");
        configure_encoder(&enc, &config(&custom_info())).expect("set");
        assert_eq!(enc.property::<VideoCodec>("codec"), VideoCodec::H264Main);
        assert_eq!(enc.property::<f64>("framerate"), 25.0);
        let layers: Vec<VideoLayer> = enc
            .property::<gst::Array>("layer-specs")
            .iter()
            .enumerate()
            .map(|(i, v)| {
                VideoLayer::from_structure(&v.get::<gst::Structure>().expect("structure"), i)
                    .expect("layer")
            })
            .collect();
        assert_eq!(
            layers,
            vec![
                VideoLayer {
                    quality: Quality::High,
                    width: 1280,
                    height: 720,
                    bitrate: 2_000_000
                },
                VideoLayer {
                    quality: Quality::Low,
                    width: 320,
                    height: 180,
                    bitrate: 200_000
                },
            ]
        );
        // The text form reads back too, for gst-launch users.
        assert_eq!(
            enc.property::<Option<String>>("layers").as_deref(),
            Some("1280x720:2000000,320x180:200000")
        );
        // Two layers built, one src pad each.
        assert_eq!(enc.src_pads().len(), 2);
    }

    #[test]
    fn the_audio_encoding_is_the_resolved_one() {
        let config = config(&proto::IngressInfo::default());
        assert_eq!(config.options.audio.encoding, AudioEncoding::STEREO_96KBPS);
    }

    #[test]
    fn layer_specs_have_a_gst_launch_spelling() {
        init();
        let enc = gst::parse::launch(
            r#"simulcastenc layer-specs="<\"layer, width=(uint)1280, height=(uint)720\", \"layer, quality=(GstSimulcastEncQuality)low, width=(uint)320, height=(uint)180, bitrate=(uint)150000\">""#,
        )
        .expect("parsed");
        assert_eq!(
            enc.property::<Option<String>>("layers").as_deref(),
            Some("1280x720:0,320x180:150000")
        );
        assert_eq!(enc.src_pads().len(), 2);
        let bad = gst::parse::launch(r#"simulcastenc layer-specs="<\"layer, width=(uint)1280\">""#)
            .expect("parsed");
        assert!(bad.set_state(gst::State::Ready).is_err(), "no height");
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        init();
        let enc = make("simulcastenc", None).expect("simulcastenc");
        assert!(matches!(
            set(&enc, "framerate", 1000.0f64),
            Err(PipelineError::InvalidSetting { .. })
        ));
        assert!(matches!(
            set(&enc, "codec", "vp8"),
            Err(PipelineError::InvalidSetting { .. })
        ));
        assert!(matches!(
            set(&enc, "no-such-property", 1u32),
            Err(PipelineError::InvalidSetting { .. })
        ));
        let sink = make("livekitsink", None).expect("livekitsink");
        assert!(set(&sink, "video-track-source", TrackSource::ScreenShare).is_ok());
        assert!(set(&sink, "stats-interval", -1i32).is_err());
    }

    #[test]
    fn bus_messages_become_session_events() {
        gst::init().expect("gstreamer");
        let src = gst::Bin::new();
        let event = |message: gst::Message| PipelineEvent::from_message(&message);
        assert_eq!(
            event(
                PublishStopped {
                    reason: "gone".into(),
                    key: None
                }
                .to_message(&src)
            ),
            Some(PipelineEvent::Ended {
                reason: "gone".into()
            })
        );
        assert_eq!(
            event(
                Stats {
                    bytes: 1,
                    video_bitrate: u64::MAX,
                    audio_bitrate: 96_000,
                }
                .to_message(&src)
            ),
            Some(PipelineEvent::InputBitrate {
                video: u32::MAX,
                audio: 96_000
            })
        );
        assert_eq!(
            event(
                LateDropped {
                    video_frames: 110,
                    audio_frames: 140,
                    lateness_ms: 3000,
                }
                .to_message(&src)
            ),
            Some(PipelineEvent::LateDropped { frames: 250 })
        );
        let video = InputVideo {
            mime_type: "video/x-h264".into(),
            width: 640,
            height: 360,
            framerate: Some(gst::Fraction::new(25, 1)),
        };
        assert_eq!(
            event(video.to_message(&src)),
            Some(PipelineEvent::InputVideo {
                mime_type: "video/x-h264".into(),
                width: 640,
                height: 360,
                framerate: 25.0,
            })
        );
        // Posted but not for the session; and a track without its info.
        assert_eq!(event(Disconnected::default().to_message(&src)), None);
        let bare = gst::Structure::new_empty(TrackPublished::NAME);
        assert_eq!(
            event(gst::message::Element::builder(bare).src(&src).build()),
            None
        );
    }
}
