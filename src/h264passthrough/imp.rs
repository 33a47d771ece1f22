use crate::codec::{h264_profile_of, VideoCodec};
use crate::messages::layer_active::LayerActive;
use crate::messages::passthrough::PassthroughState;
use crate::messages::BusMessage;
use crate::passthrough::eligibility::{self, Frame, Ineligible, Source, Watch};
use crate::passthrough::sps::Sps;
use crate::passthrough::Mode;
use crate::sync::lock;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "h264passthrough",
        gst::DebugColorFlags::empty(),
        Some("H.264 pass-through top layer"),
    )
});

const DEFAULT_MODE: Mode = Mode::Hybrid;
/// How much of the source is measured for the bitrate the top layer is
/// announced with (its access units are held back meanwhile: the room has
/// not been joined yet, so they would be dropped anyway).
const BITRATE_WINDOW: gst::ClockTime = gst::ClockTime::SECOND;
/// Frames between keyframes of the fallback encoder (at 30 fps, 2 s), besides
/// the ones that follow the source's keyframes.
const FALLBACK_KEYFRAME_DISTANCE: u32 = 60;
const FALLBACK_FRAMERATE: f64 = 30.0;

#[derive(Debug, Clone, Copy)]
struct Settings {
    mode: Mode,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { mode: DEFAULT_MODE }
    }
}

/// The elements touched after construction.
struct Parts {
    selector: gst::Element,
    /// Lets the pass-through's decode run (closed in single mode until a fallback).
    decode_gate: gst::Element,
    /// Lets the fallback encoder run (closed while passing through).
    top_gate: gst::Element,
    top_size: gst::Element,
    top_encoder: gst::Element,
    top_caps: gst::Element,
    top_tags: gst::Element,
    /// The selector's input pads: the source's stream, the fallback encoder's.
    passthrough_pad: gst::Pad,
    fallback_pad: gst::Pad,
}

/// What the measuring of the source's bitrate has seen.
#[derive(Default)]
struct Measure {
    bytes: u64,
    first: Option<gst::ClockTime>,
    /// The bitrate was announced (bits per second).
    bitrate: Option<u32>,
}

#[derive(Default)]
struct State {
    parts: Option<Parts>,
    error: Option<String>,
    /// Decided at the first access unit.
    decided: bool,
    /// Passing through: the watch over the stream.
    watch: Option<Watch>,
    reason: Option<String>,
    measure: Measure,
    /// Single mode after a fallback: open the decoder at the next keyframe.
    open_decoder_at_keyframe: bool,
}

pub struct H264Passthrough {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    sinkpad: gst::GhostPad,
    srcpad: gst::GhostPad,
    rawpad: gst::GhostPad,
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("element {factory} is missing (install the GStreamer plugin providing it)")
    })
}

fn static_pad(element: &gst::Element, name: &str) -> Result<gst::Pad, String> {
    element
        .static_pad(name)
        .ok_or_else(|| format!("{} has no {name} pad", element.name()))
}

fn request_pad(element: &gst::Element, name: &str) -> Result<gst::Pad, String> {
    element
        .request_pad_simple(name)
        .ok_or_else(|| format!("{} gave no {name} pad", element.name()))
}

/// The running time of a buffer on `pad` (its PTS, or DTS).
fn running_time(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<gst::ClockTime> {
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let segment = segment.segment().downcast_ref::<gst::ClockTime>()?;
    segment.to_running_time(buffer.pts().or(buffer.dts()))
}

#[glib::object_subclass]
impl ObjectSubclass for H264Passthrough {
    const NAME: &'static str = "GstH264Passthrough";
    type Type = super::H264Passthrough;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let pad = |name: &str| {
            let templ = klass.pad_template(name).expect("pad template");
            gst::GhostPad::builder_from_template(&templ)
                .name(name)
                .build()
        };
        H264Passthrough {
            settings: Mutex::default(),
            state: Mutex::default(),
            sinkpad: pad("sink"),
            srcpad: pad("src"),
            rawpad: pad("raw"),
        }
    }
}

impl H264Passthrough {
    fn build(&self) -> Result<Parts, String> {
        let obj = self.obj();
        let parse = make("h264parse")?;
        // SPS and PPS before every keyframe: a viewer joining, or switching
        // to this layer, needs them in-band.
        parse.set_property("config-interval", -1i32);
        let byte_stream = make("capsfilter")?;
        byte_stream.set_property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        );
        let split = make("tee")?;
        split.set_property("allow-not-linked", true);
        let selector = make("input-selector")?;
        // An inactive input is dropped at once, never held for the active one.
        selector.set_property("sync-streams", false);

        let dec_queue = make("queue")?;
        let decode_gate = make("valve")?;
        decode_gate.set_property_from_str("drop-mode", "forward-sticky-events");
        let decoder =
            crate::decode::decoder_factories(&gst::Caps::new_empty_simple("video/x-h264"))?
                .pop()
                .ok_or("no H.264 decoder is installed")?
                .create()
                .build()
                .map_err(|e| e.to_string())?;
        let convert = make("videoconvert")?;
        let raw_split = make("tee")?;
        raw_split.set_property("allow-not-linked", true);

        let top_queue = make("queue")?;
        top_queue.set_property("max-size-buffers", 3u32);
        top_queue.set_property("max-size-bytes", 0u32);
        top_queue.set_property("max-size-time", 0u64);
        let top_gate = make("valve")?;
        top_gate.set_property_from_str("drop-mode", "forward-sticky-events");
        top_gate.set_property("drop", true);
        let top_scale = make("videoscale")?;
        let top_size = make("capsfilter")?;
        let top_encoder = make("x264enc")?;
        // x264enc takes its settings only before it starts; the bitrate,
        // the one that depends on the stream, may change while it plays.
        (VideoCodec::H264Baseline.info().configure_encoder)(
            &top_encoder,
            crate::presets::bitrate_for(1280, 720, FALLBACK_FRAMERATE),
            FALLBACK_KEYFRAME_DISTANCE,
        );
        let top_caps = make("capsfilter")?;
        let top_tags = make("taginject")?;

        let all = [
            &parse,
            &byte_stream,
            &split,
            &selector,
            &dec_queue,
            &decode_gate,
            &decoder,
            &convert,
            &raw_split,
            &top_queue,
            &top_gate,
            &top_scale,
            &top_size,
            &top_encoder,
            &top_caps,
            &top_tags,
        ];
        obj.add_many(all).map_err(|e| e.to_string())?;
        let link = |chain: &[&gst::Element]| {
            gst::Element::link_many(chain.iter().copied()).map_err(|e| e.to_string())
        };
        link(&[&parse, &byte_stream, &split])?;
        // The gate before the queue: while it is closed (single mode) the
        // source's access units stop at the tee, and the decode thread
        // sleeps instead of waking for every one of them.
        link(&[
            &split,
            &decode_gate,
            &dec_queue,
            &decoder,
            &convert,
            &raw_split,
        ])?;
        link(&[
            &raw_split,
            &top_queue,
            &top_gate,
            &top_scale,
            &top_size,
            &top_encoder,
            &top_caps,
            &top_tags,
        ])?;
        // The source's access units go out on the thread that brings them:
        // nothing on their way blocks, and the decode has its own queue.
        let passthrough_pad = request_pad(&selector, "sink_%u")?;
        let passing = request_pad(&split, "src_%u")?;
        passing.link(&passthrough_pad).map_err(|e| e.to_string())?;
        let fallback_pad = request_pad(&selector, "sink_%u")?;
        static_pad(&top_tags, "src")?
            .link(&fallback_pad)
            .map_err(|e| e.to_string())?;
        selector.set_property("active-pad", &passthrough_pad);

        self.sinkpad
            .set_target(Some(&static_pad(&parse, "sink")?))
            .map_err(|e| e.to_string())?;
        let selector_src = static_pad(&selector, "src")?;
        self.srcpad
            .set_target(Some(&selector_src))
            .map_err(|e| e.to_string())?;
        self.rawpad
            .set_target(Some(&request_pad(&raw_split, "src_%u")?))
            .map_err(|e| e.to_string())?;

        self.watch_passthrough(&passing);
        self.mark_keyframes(&static_pad(&decode_gate, "src")?);
        self.open_decoder_at_keyframe(&static_pad(&decode_gate, "sink")?);
        self.watch_top_layer_control(&selector_src);
        Ok(Parts {
            selector,
            decode_gate,
            top_gate,
            top_size,
            top_encoder,
            top_caps,
            top_tags,
            passthrough_pad,
            fallback_pad,
        })
    }

    /// Every access unit on its way out as the source's own: decided on at
    /// the first, watched after, held back while its bitrate is measured.
    fn watch_passthrough(&self, pad: &gst::Pad) {
        let this = self.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(imp), Some(buffer)) = (this.upgrade(), info.buffer()) else {
                return gst::PadProbeReturn::Ok;
            };
            match imp.on_access_unit(pad, buffer) {
                Some(tag) => {
                    // Before this buffer, after the held ones.
                    pad.push_event(tag);
                    gst::PadProbeReturn::Ok
                }
                None if imp.passing() && imp.measured() => gst::PadProbeReturn::Ok,
                None => gst::PadProbeReturn::Drop,
            }
        });
    }

    fn passing(&self) -> bool {
        lock(&self.state).watch.is_some()
    }

    fn measured(&self) -> bool {
        lock(&self.state).measure.bitrate.is_some()
    }

    /// Applies the checks to one access unit; a tag event to send before it
    /// once the bitrate is measured.
    fn on_access_unit(&self, pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<gst::Event> {
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let sps = if keyframe {
            buffer
                .map_readable()
                .ok()
                .and_then(|m| Sps::find_in_annex_b(m.as_slice()))
        } else {
            None
        };
        let mode = lock(&self.settings).mode;
        let mut state = lock(&self.state);
        if !state.decided {
            if !keyframe {
                // Decided at the first keyframe, which carries the SPS.
                return None;
            }
            state.decided = true;
            let decision = match mode {
                Mode::Off => Err(Ineligible::Off),
                _ => eligibility::check_parsed(
                    sps.clone()
                        .unwrap_or(Err(crate::passthrough::sps::SpsError::NoSps)),
                ),
            };
            let profile = sps.as_ref().and_then(|s| s.as_ref().ok()).map(|s| {
                (
                    h264_profile_of(s.profile_idc, s.constraint_flags),
                    s.width,
                    s.height,
                )
            });
            drop(state);
            match decision {
                Ok(source) => self.start_passing(source),
                Err(reason) => {
                    let (codec, width, height) = profile.unwrap_or((None, 0, 0));
                    self.configure_fallback(codec.unwrap_or_default(), width, height, None);
                    self.fall_back(&reason.to_string(), width, height);
                }
            }
            state = lock(&self.state);
        }
        let watch = state.watch.as_mut()?;
        let frame = Frame {
            pts: buffer.pts().map(|t| t.nseconds()),
            dts: buffer.dts().map(|t| t.nseconds()),
            keyframe,
        };
        if let Err(reason) = watch.frame(frame, sps) {
            let source = watch.source();
            let bitrate = state.measure.bitrate;
            state.watch = None;
            drop(state);
            self.configure_fallback(source.codec, source.width, source.height, bitrate);
            self.fall_back(&reason.to_string(), source.width, source.height);
            return None;
        }
        let measure = &mut state.measure;
        if measure.bitrate.is_some() {
            return None;
        }
        let now = running_time(pad, buffer)?;
        measure.bytes += buffer.size() as u64;
        let first = *measure.first.get_or_insert(now);
        let span = now.saturating_sub(first);
        if span < BITRATE_WINDOW {
            return None;
        }
        let bitrate = (measure.bytes * 8 * 1_000_000_000 / span.nseconds().max(1))
            .min(u64::from(u32::MAX)) as u32;
        measure.bitrate = Some(bitrate);
        gst::info!(CAT, imp = self, "source bitrate {bitrate} bit/s");
        let mut tags = gst::TagList::new();
        tags.make_mut()
            .add::<gst::tags::NominalBitrate>(&bitrate, gst::TagMergeMode::Replace);
        Some(gst::event::Tag::new(tags))
    }

    fn start_passing(&self, source: Source) {
        gst::info!(
            CAT,
            imp = self,
            "passing the source through: {} {}x{} level {}",
            source.codec.name(),
            source.width,
            source.height,
            source.level_idc
        );
        self.configure_fallback(source.codec, source.width, source.height, None);
        lock(&self.state).watch = Some(Watch::new(source));
        self.post(PassthroughState {
            active: true,
            mode: lock(&self.settings).mode,
            reason: String::new(),
            width: source.width,
            height: source.height,
        });
    }

    /// The fallback encoder makes what the room was told: the source's
    /// profile, at its size (0: as decoded), at its measured bitrate.
    fn configure_fallback(&self, codec: VideoCodec, width: u32, height: u32, bitrate: Option<u32>) {
        let state = lock(&self.state);
        let Some(parts) = state.parts.as_ref() else {
            return;
        };
        let codec = if codec.is_h264() {
            codec
        } else {
            VideoCodec::H264Baseline
        };
        let bitrate = bitrate.filter(|b| *b > 0).unwrap_or_else(|| {
            crate::presets::bitrate_for(width.max(320), height.max(180), FALLBACK_FRAMERATE)
        });
        parts
            .top_encoder
            .set_property("bitrate", (bitrate / 1000).max(1));
        parts.top_caps.set_property("caps", codec.encoded_caps());
        let mut size = gst::Caps::builder("video/x-raw");
        if width > 0 && height > 0 {
            size = size
                .field("width", width as i32)
                .field("height", height as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
        }
        parts.top_size.set_property("caps", size.build());
        parts
            .top_tags
            .set_property("tags", format!("nominal-bitrate=(uint){bitrate}"));
    }

    /// From now on the top layer is the source decoded and encoded again.
    fn fall_back(&self, reason: &str, width: u32, height: u32) {
        gst::warning!(
            CAT,
            imp = self,
            "not passing the source through: {reason}; the top layer is transcoded"
        );
        {
            let mut state = lock(&self.state);
            state.watch = None;
            state.reason = Some(reason.to_string());
            let Some(parts) = state.parts.as_ref() else {
                return;
            };
            let (gate, top, selector, pad) = (
                parts.decode_gate.clone(),
                parts.top_gate.clone(),
                parts.selector.clone(),
                parts.fallback_pad.clone(),
            );
            if gate.property::<bool>("drop") {
                state.open_decoder_at_keyframe = true;
            }
            drop(state);
            top.set_property("drop", false);
            selector.set_property("active-pad", &pad);
        }
        self.post(PassthroughState {
            active: false,
            mode: lock(&self.settings).mode,
            reason: reason.to_string(),
            width,
            height,
        });
    }

    fn post(&self, state: PassthroughState) {
        let obj = self.obj();
        let _ = obj.post_message(state.to_message(&*obj));
    }

    /// Single mode after a fallback: the decoder starts at a keyframe.
    fn open_decoder_at_keyframe(&self, pad: &gst::Pad) {
        let this = self.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let (Some(imp), Some(buffer)) = (this.upgrade(), info.buffer()) else {
                return gst::PadProbeReturn::Ok;
            };
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                return gst::PadProbeReturn::Ok;
            }
            let mut state = lock(&imp.state);
            if std::mem::take(&mut state.open_decoder_at_keyframe) {
                if let Some(parts) = state.parts.as_ref() {
                    gst::info!(CAT, imp = imp, "decoding from this keyframe on");
                    parts.decode_gate.set_property("drop", false);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Before each source keyframe going into the decoder, a downstream
    /// force-key-unit event at its running time: the decoder sends it out
    /// ahead of that picture, and every encoder downstream makes that
    /// picture a keyframe, so the layers switch where the source does.
    fn mark_keyframes(&self, pad: &gst::Pad) {
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                return gst::PadProbeReturn::Ok;
            }
            // No running time: the event travels serialized with this
            // picture (the decoder sends it out just before it), and "at
            // once" keys that very picture, whatever segment the decoder's
            // output is in.
            let event = gst_video::DownstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            pad.push_event(event);
            gst::PadProbeReturn::Ok
        });
    }

    /// Dynacast on the top layer: while it is transcoded, pausing it stops
    /// its encoder (resuming asks for a keyframe); while the source passes
    /// through there is nothing to save. Handled here, not sent upstream.
    fn watch_top_layer_control(&self, pad: &gst::Pad) {
        let this = self.downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            let Some(imp) = this.upgrade() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            if !LayerActive::is(event) {
                return gst::PadProbeReturn::Ok;
            }
            let state = lock(&imp.state);
            if let (Some(LayerActive { active }), Some(parts), None) = (
                LayerActive::parse(event),
                state.parts.as_ref(),
                state.watch.as_ref(),
            ) {
                if state.reason.is_some() && parts.top_gate.property::<bool>("drop") == active {
                    parts.top_gate.set_property("drop", !active);
                    if active {
                        parts.top_encoder.send_event(
                            gst_video::UpstreamForceKeyUnitEvent::builder()
                                .all_headers(true)
                                .build(),
                        );
                    }
                }
            }
            gst::PadProbeReturn::Handled
        });
    }
}

impl ObjectImpl for H264Passthrough {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
                    .nick("Mode")
                    .blurb("hybrid: decode for the lower layers (raw pad); single: decode nothing unless the top layer must be transcoded; off: always transcode the top layer")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("active")
                    .nick("Active")
                    .blurb("Whether the source's own access units go out on src")
                    .default_value(false)
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("reason")
                    .nick("Reason")
                    .blurb("Why the top layer is transcoded (empty while the source passes through, or before the first keyframe)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "mode" {
            lock(&self.settings).mode = value.get().unwrap_or(DEFAULT_MODE);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "mode" => lock(&self.settings).mode.to_value(),
            "active" => lock(&self.state).watch.is_some().to_value(),
            "reason" => lock(&self.state).reason.clone().to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        for pad in [&self.sinkpad, &self.srcpad, &self.rawpad] {
            obj.add_pad(pad).expect("add ghost pad");
        }
        match self.build() {
            Ok(parts) => lock(&self.state).parts = Some(parts),
            Err(err) => {
                gst::error!(CAT, imp = self, "cannot build: {err}");
                lock(&self.state).error = Some(err);
            }
        }
    }
}

impl GstObjectImpl for H264Passthrough {}

impl ElementImpl for H264Passthrough {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "H.264 pass-through top layer",
                "Codec/Video",
                "Passes a qualifying H.264 stream through as a simulcast top layer (transcoding it when it does not qualify) and decodes it for the lower layers",
                "LiveKit Ingress contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let h264 = gst::Caps::new_empty_simple("video/x-h264");
            let out = gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &h264,
                )
                .expect("sink template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &out,
                )
                .expect("src template"),
                gst::PadTemplate::new(
                    "raw",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &gst::Caps::new_empty_simple("video/x-raw"),
                )
                .expect("raw template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            let mode = lock(&self.settings).mode;
            let mut state = lock(&self.state);
            if let Some(err) = state.error.clone() {
                drop(state);
                gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ("{}", err));
                return Err(gst::StateChangeError);
            }
            if let Some(parts) = state.parts.as_ref() {
                parts.decode_gate.set_property("drop", mode == Mode::Single);
                parts.top_gate.set_property("drop", true);
                parts
                    .selector
                    .set_property("active-pad", &parts.passthrough_pad);
            }
            state.decided = false;
            state.watch = None;
            state.reason = None;
            state.measure = Measure::default();
            state.open_decoder_at_keyframe = false;
        }
        self.parent_change_state(transition)
    }
}

impl BinImpl for H264Passthrough {}
