use crate::codec::{VideoCodec, VIDEO_CODECS};
use crate::messages::layer_active::LayerActive;
use crate::presets::{self, PresetError, VideoEncoding, VideoLayer, VideoPreset};
use crate::sync::lock;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "simulcastenc",
        gst::DebugColorFlags::empty(),
        Some("LiveKit simulcast encoder"),
    )
});

// `preset` and `codec` default to their enums' `#[default]` variants.
/// Seconds between keyframes.
const DEFAULT_KEYFRAME_INTERVAL: f64 = 2.0;
/// The `framerate` property's "not set" (the preset's, or 30 fps).
const DEFAULT_FRAMERATE: f64 = 0.0;

#[derive(Debug, Clone)]
struct Settings {
    preset: VideoPreset,
    /// Custom settings; any of them set replaces the preset.
    codec: Option<VideoCodec>,
    framerate: Option<f64>,
    layers: Option<Layers>,
    /// Seconds between keyframes.
    keyframe_interval: f64,
}

/// The custom layers, as the last of `layers` (text) or `layer-specs`
/// (structures) set them.
#[derive(Debug, Clone)]
enum Layers {
    Text(String),
    Typed(Vec<VideoLayer>),
    /// A `layer-specs` item that does not describe a layer.
    Invalid(PresetError),
}

impl Layers {
    fn resolve(&self) -> Result<Vec<VideoLayer>, PresetError> {
        match self {
            Layers::Text(text) => presets::parse_layers(text),
            Layers::Typed(layers) => Ok(layers.clone()),
            Layers::Invalid(err) => Err(err.clone()),
        }
    }

    fn from_array(array: &gst::Array) -> Option<Layers> {
        if array.is_empty() {
            return None;
        }
        let layers: Result<Vec<VideoLayer>, PresetError> = array
            .iter()
            .enumerate()
            .map(|(index, value)| {
                value
                    .get::<gst::Structure>()
                    .map_err(|_| PresetError::BadLayerList(format!("{value:?}")))
                    .and_then(|s| VideoLayer::from_structure(&s, index))
            })
            .collect();
        Some(match layers {
            Ok(layers) => Layers::Typed(layers),
            Err(err) => Layers::Invalid(err),
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            preset: VideoPreset::default(),
            codec: None,
            framerate: None,
            layers: None,
            keyframe_interval: DEFAULT_KEYFRAME_INTERVAL,
        }
    }
}

impl Settings {
    /// The encoding these settings describe, or why they are invalid.
    fn encoding(&self) -> Result<VideoEncoding, PresetError> {
        if self.codec.is_none() && self.framerate.is_none() && self.layers.is_none() {
            return Ok(self.preset.encoding());
        }
        let layers: Vec<VideoLayer> = match &self.layers {
            Some(layers) => layers.resolve()?,
            None => Vec::new(),
        };
        VideoEncoding::custom(self.codec.unwrap_or_default(), self.framerate, &layers)
    }
}

/// The elements of one layer that are touched after construction.
struct Layer {
    spec: VideoLayer,
    valve: gst::Element,
    raw_caps: gst::Element,
    encoder: gst::Element,
    ghost: gst::GhostPad,
}

#[derive(Default)]
struct State {
    encoding: Option<VideoEncoding>,
    error: Option<String>,
    layers: Vec<Layer>,
    /// Everything but the ghost pads, rebuilt when the settings change.
    elements: Vec<gst::Element>,
}

pub struct SimulcastEnc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    sinkpad: gst::GhostPad,
    /// Running time (ns) of the newest frame handed to the layers' queues,
    /// `u64::MAX` before the first: a keyframe is asked for after it.
    newest_fanned_out: AtomicU64,
}

/// Drops the bitrate an encoder tags its output with, so that the layer's
/// own (taginject's, after it) is the one downstream reads. x264enc tags its
/// `bitrate` property times 1024, and which of the two tags arrived last
/// decided the bitrate a LiveKit track announced.
fn strip_encoder_bitrate(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Tag(tag) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut list = tag.tag_owned();
        {
            let list = list.make_mut();
            list.remove::<gst::tags::NominalBitrate>();
            list.remove::<gst::tags::Bitrate>();
            list.remove::<gst::tags::MinimumBitrate>();
            list.remove::<gst::tags::MaximumBitrate>();
        }
        if list.n_tags() == 0 {
            return gst::PadProbeReturn::Drop;
        }
        info.data = Some(gst::PadProbeData::Event(gst::event::Tag::new(list)));
        gst::PadProbeReturn::Ok
    });
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("element {factory} is missing (install the GStreamer plugin providing it)")
    })
}

#[glib::object_subclass]
impl ObjectSubclass for SimulcastEnc {
    const NAME: &'static str = "GstSimulcastEnc";
    type Type = super::SimulcastEnc;
    type ParentType = gst::Bin;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").expect("sink template");
        let sinkpad = gst::GhostPad::builder_from_template(&templ).build();
        SimulcastEnc {
            settings: Mutex::default(),
            state: Mutex::default(),
            sinkpad,
            newest_fanned_out: AtomicU64::new(u64::MAX),
        }
    }
}

impl SimulcastEnc {
    /// Rebuilds the layers for the current settings. Pads appear as soon as the
    /// settings are known so gst-launch can link them before PLAYING.
    fn rebuild(&self) {
        let settings = lock(&self.settings).clone();
        let obj = self.obj();
        let mut state = lock(&self.state);
        for layer in state.layers.drain(..) {
            let _ = obj.remove_pad(&layer.ghost);
        }
        for element in state.elements.drain(..) {
            let _ = element.set_state(gst::State::Null);
            let _ = obj.remove(&element);
        }
        let _ = self.sinkpad.set_target(None::<&gst::Pad>);
        state.encoding = None;
        state.error = None;

        let encoding = match settings.encoding() {
            Ok(e) => e,
            Err(err) => {
                gst::error!(CAT, imp = self, "invalid settings: {err}");
                state.error = Some(err.to_string());
                return;
            }
        };
        if let Err(err) = self.build(&settings, &encoding, &mut state) {
            gst::error!(CAT, imp = self, "cannot build the layers: {err}");
            state.error = Some(err);
            return;
        }
        gst::debug!(CAT, imp = self, "layers: {:?}", encoding.layers);
        state.encoding = Some(encoding);
    }

    fn build(
        &self,
        settings: &Settings,
        encoding: &VideoEncoding,
        state: &mut State,
    ) -> Result<(), String> {
        let obj = self.obj();
        let convert = make("videoconvert")?;
        let rate = make("videorate")?;
        rate.set_property("drop-only", true);
        rate.set_property("max-rate", encoding.framerate.ceil().max(1.0) as i32);
        let tee = make("tee")?;
        self.watch_fan_out(&tee.static_pad("sink").ok_or("tee has no sink pad")?);
        let head = [convert.clone(), rate, tee.clone()];
        obj.add_many(&head).map_err(|e| e.to_string())?;
        gst::Element::link_many(&head).map_err(|e| e.to_string())?;
        state.elements.extend(head);

        let keyframe_distance = (encoding.framerate * settings.keyframe_interval)
            .round()
            .max(1.0) as u32;
        for (index, spec) in encoding.layers.iter().enumerate() {
            let queue = make("queue")?;
            // A live encoder: a few frames of slack, no seconds of backlog.
            queue.set_property("max-size-buffers", 3u32);
            queue.set_property("max-size-bytes", 0u32);
            queue.set_property("max-size-time", 0u64);
            let valve = make("valve")?;
            valve.set_property_from_str("drop-mode", "forward-sticky-events");
            let scale = make("videoscale")?;
            let raw_caps = make("capsfilter")?;
            let (encoder, encoded_caps) =
                make_encoder(encoding.codec, spec.bitrate, keyframe_distance)?;
            let caps_filter = make("capsfilter")?;
            caps_filter.set_property("caps", &encoded_caps);
            let tags = make("taginject")?;
            tags.set_property("tags", format!("nominal-bitrate=(uint){}", spec.bitrate));
            let chain = [
                queue,
                valve.clone(),
                scale,
                raw_caps.clone(),
                encoder.clone(),
                caps_filter,
                tags.clone(),
            ];
            obj.add_many(&chain).map_err(|e| e.to_string())?;
            gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
            tee.link(&chain[0]).map_err(|e| e.to_string())?;
            state.elements.extend(chain);

            strip_encoder_bitrate(&tags.static_pad("sink").ok_or("taginject has no sink pad")?);
            let target = tags.static_pad("src").ok_or("taginject has no src pad")?;
            let templ = obj.pad_template("src_%u").ok_or("no src template")?;
            let ghost = gst::GhostPad::builder_from_template_with_target(&templ, &target)
                .map_err(|e| e.to_string())?
                .name(format!("src_{index}"))
                .build();
            self.watch_upstream(&target, index);
            ghost.set_active(true).map_err(|e| e.to_string())?;
            obj.add_pad(&ghost).map_err(|e| e.to_string())?;
            state.layers.push(Layer {
                spec: *spec,
                valve,
                raw_caps,
                encoder,
                ghost,
            });
        }

        let convert_sink = convert
            .static_pad("sink")
            .ok_or("videoconvert has no sink pad")?;
        self.watch_source_caps(&convert_sink);
        self.sinkpad
            .set_target(Some(&convert_sink))
            .map_err(|e| e.to_string())?;
        for element in &state.elements {
            let _ = element.sync_state_with_parent();
        }
        Ok(())
    }

    /// Sizes every layer for the source when its caps arrive, before they flow on.
    fn watch_source_caps(&self, pad: &gst::Pad) {
        let this = self.downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::EventView::Caps(caps) = event.view() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(s) = caps.caps().structure(0) else {
                return gst::PadProbeReturn::Ok;
            };
            let (w, h) = (
                s.get::<i32>("width").unwrap_or(0).max(0) as u32,
                s.get::<i32>("height").unwrap_or(0).max(0) as u32,
            );
            // Non-square pixels: size the layers for the picture as displayed.
            let par = s.get::<gst::Fraction>("pixel-aspect-ratio").ok();
            let display_w = match par {
                Some(p) if p.numer() > 0 && p.denom() > 0 => {
                    (u64::from(w) * p.numer() as u64 / p.denom() as u64) as u32
                }
                _ => w,
            };
            if let Some(imp) = this.upgrade() {
                imp.size_layers(caps.caps(), display_w, h);
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn size_layers(&self, source: &gst::CapsRef, width: u32, height: u32) {
        let state = lock(&self.state);
        for layer in &state.layers {
            let (w, h) = presets::fit_layer(&layer.spec, width, height);
            gst::info!(
                CAT,
                imp = self,
                "source {width}x{height}: layer {}x{} -> {w}x{h}",
                layer.spec.width,
                layer.spec.height
            );
            layer
                .raw_caps
                .set_property("caps", crate::scaling::scaled_caps(source, w, h));
        }
    }

    /// Handles keyframe requests and pause/resume arriving on a layer's output.
    fn watch_upstream(&self, pad: &gst::Pad, index: usize) {
        let this = self.downgrade();
        pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
            let Some(imp) = this.upgrade() else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            if gst_video::UpstreamForceKeyUnitEvent::parse(event).is_ok() {
                gst::debug!(CAT, imp = imp, "keyframe requested on layer {index}");
                imp.force_keyframes();
                return gst::PadProbeReturn::Handled;
            }
            if LayerActive::is(event) {
                // One without `active` is ours all the same: not for upstream.
                if let Some(LayerActive { active }) = LayerActive::parse(event) {
                    imp.set_layer_active(index, active);
                }
                return gst::PadProbeReturn::Handled;
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Notes the running time of each frame that enters the layers' queues.
    fn watch_fan_out(&self, pad: &gst::Pad) {
        let this = self.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(imp), Some(buffer)) = (this.upgrade(), info.buffer()) else {
                return gst::PadProbeReturn::Ok;
            };
            let running_time = pad.sticky_event::<gst::event::Segment>(0).and_then(|e| {
                e.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(buffer.pts()))
            });
            if let Some(running_time) = running_time {
                imp.newest_fanned_out
                    .store(running_time.nseconds(), Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Asks the encoders of all active layers for a keyframe on the first
    /// frame after the newest one fanned out. Each layer has its own queue,
    /// filled to its own level, so "your next frame" would be a different
    /// frame per layer; a running time names the same one.
    fn force_keyframes(&self) {
        let encoders: Vec<gst::Element> = {
            let state = lock(&self.state);
            state
                .layers
                .iter()
                .filter(|l| !l.valve.property::<bool>("drop"))
                .map(|l| l.encoder.clone())
                .collect()
        };
        let after = match self.newest_fanned_out.load(Ordering::Relaxed) {
            u64::MAX => None,
            newest => Some(gst::ClockTime::from_nseconds(newest + 1)),
        };
        for encoder in encoders {
            request_keyframe(&encoder, after);
        }
    }

    pub(super) fn set_layer_active(&self, index: usize, active: bool) {
        let layer = lock(&self.state)
            .layers
            .get(index)
            .map(|l| (l.valve.clone(), l.encoder.clone()));
        let Some((valve, encoder)) = layer else {
            gst::warning!(CAT, imp = self, "no layer {index}");
            return;
        };
        if valve.property::<bool>("drop") != active {
            return;
        }
        gst::info!(
            CAT,
            imp = self,
            "layer {index} {}",
            if active { "resumed" } else { "paused" }
        );
        if active {
            // Asked for before the valve opens, "the next frame" is the first
            // one through it. A running time would not do: the frames the
            // layer's queue still holds are older than any fanned out since,
            // and they would be encoded as delta frames after the gap.
            request_keyframe(&encoder, None);
        }
        valve.set_property("drop", !active);
    }
}

/// Asks `encoder` for a keyframe with headers on its first frame at or after
/// `running_time` (its next frame when `None`).
fn request_keyframe(encoder: &gst::Element, running_time: Option<gst::ClockTime>) {
    // An upstream event sent to the element is handled by its src pad, as if
    // it came from downstream.
    encoder.send_event(
        gst_video::UpstreamForceKeyUnitEvent::builder()
            .running_time(running_time)
            .all_headers(true)
            .build(),
    );
}

/// The encoder for a layer and the caps it must produce, from the codec table.
fn make_encoder(
    codec: VideoCodec,
    bitrate: u32,
    keyframe_distance: u32,
) -> Result<(gst::Element, gst::Caps), String> {
    let info = codec.info();
    let enc = make(info.encoder)?;
    (info.configure_encoder)(&enc, bitrate, keyframe_distance);
    Ok((enc, codec.encoded_caps()))
}

impl ObjectImpl for SimulcastEnc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("preset", VideoPreset::default())
                    .nick("Preset")
                    .blurb("LiveKit video preset (by enum name or nick); custom settings replace it")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("codec", VideoCodec::default())
                    .nick("Codec")
                    .blurb("Custom setting: video codec (replaces the preset)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("framerate")
                    .nick("Frame rate")
                    .blurb("Custom setting: maximum frame rate, frames above it are dropped (0: preset's / 30)")
                    .minimum(0.0)
                    .maximum(240.0)
                    .default_value(DEFAULT_FRAMERATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("layers")
                    .nick("Layers")
                    .blurb("Custom setting: WIDTHxHEIGHT[:BITRATE],… from the main layer down (qualities HIGH, MEDIUM, LOW)")
                    .mutable_ready()
                    .build(),
                gst::ParamSpecArray::builder("layer-specs")
                    .nick("Layer specs")
                    .blurb("Custom setting, typed form of `layers`: `layer` structures with quality (GstSimulcastEncQuality), width, height and bitrate (uint); the last of the two set wins")
                    .element_spec(
                        &glib::ParamSpecBoxed::builder::<gst::Structure>("layer")
                            .nick("Layer")
                            .blurb("layer, quality=…, width=…, height=…, bitrate=…")
                            .build(),
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("keyframe-interval")
                    .nick("Keyframe interval")
                    .blurb("Seconds between keyframes, aligned across layers")
                    .minimum(0.1)
                    .maximum(60.0)
                    .default_value(DEFAULT_KEYFRAME_INTERVAL)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![glib::subclass::Signal::builder("set-layer-active")
                .param_types([u32::static_type(), bool::static_type()])
                .action()
                .class_handler(|args| {
                    let element = args[0]
                        .get::<super::SimulcastEnc>()
                        .expect("signal receiver");
                    let index = args[1].get::<u32>().expect("layer index");
                    let active = args[2].get::<bool>().expect("active flag");
                    element.imp().set_layer_active(index as usize, active);
                    None
                })
                .build()]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        {
            let mut s = lock(&self.settings);
            match pspec.name() {
                "preset" => s.preset = value.get().unwrap_or_default(),
                "codec" => s.codec = value.get().ok(),
                "framerate" => s.framerate = value.get::<f64>().ok().filter(|f| *f > 0.0),
                "layers" => {
                    s.layers = value
                        .get::<Option<String>>()
                        .ok()
                        .flatten()
                        .filter(|l| !l.is_empty())
                        .map(Layers::Text)
                }
                "layer-specs" => {
                    s.layers = value
                        .get::<gst::Array>()
                        .ok()
                        .and_then(|a| Layers::from_array(&a))
                }
                "keyframe-interval" => {
                    s.keyframe_interval = value.get().unwrap_or(DEFAULT_KEYFRAME_INTERVAL)
                }
                _ => return,
            }
        }
        self.rebuild();
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "preset" => s.preset.to_value(),
            "codec" => s.codec.unwrap_or_default().to_value(),
            "framerate" => s.framerate.unwrap_or(DEFAULT_FRAMERATE).to_value(),
            "layers" => match &s.layers {
                Some(Layers::Text(text)) => Some(text.clone()),
                Some(Layers::Typed(layers)) => Some(presets::layers_to_string(layers)),
                Some(Layers::Invalid(_)) | None => None,
            }
            .to_value(),
            "layer-specs" => {
                let layers = s.layers.as_ref().and_then(|l| l.resolve().ok());
                gst::Array::new(
                    layers
                        .unwrap_or_default()
                        .iter()
                        .map(VideoLayer::to_structure),
                )
                .to_value()
            }
            "keyframe-interval" => s.keyframe_interval.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("add sink pad");
        self.rebuild();
    }
}

impl GstObjectImpl for SimulcastEnc {}

impl ElementImpl for SimulcastEnc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "LiveKit simulcast encoder",
                "Codec/Encoder/Video",
                "Encodes raw video into the simulcast layers of a LiveKit preset or custom settings",
                "LiveKit Ingress contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let mut src = gst::Caps::new_empty();
            for row in &VIDEO_CODECS {
                src.make_mut().append(row.codec.encoded_caps());
            }
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &gst::Caps::builder("video/x-raw").build(),
                )
                .expect("sink template"),
                gst::PadTemplate::new(
                    "src_%u",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &src,
                )
                .expect("src template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            if let Some(err) = lock(&self.state).error.clone() {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Settings,
                    ("invalid simulcastenc settings: {}", err)
                );
                return Err(gst::StateChangeError);
            }
        }
        self.parent_change_state(transition)
    }
}

impl BinImpl for SimulcastEnc {}
