use super::framerate::FrameRateMeter;
use crate::claims::{next_event, Next};
use crate::messages::publish::{PublishStarted, PublishStopped, StatsMeter};
use crate::messages::BusMessage;
use crate::rtmp::redact::redact_key;
use crate::sync::lock;
use crate::whip::listener::{
    self, Claim, Control, Frame, ListenerError, MediaKind, VideoCodec, WhipEvent,
};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "whipingresssrc",
        gst::DebugColorFlags::empty(),
        Some("WHIP ingress source"),
    )
});

/// A session that brings no audio or video frame within this long is ended
/// with an error.
const FIRST_MEDIA_DEADLINE: Duration = Duration::from_secs(15);
/// Between keyframe requests while a video track waits for its first keyframe.
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);

const DEFAULT_ADDRESS: &str = "0.0.0.0";
const DEFAULT_PORT: u32 = 8080;

#[derive(Debug, Clone)]
struct Settings {
    address: String,
    port: u32,
    stream_key: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            address: DEFAULT_ADDRESS.into(),
            port: DEFAULT_PORT,
            stream_key: String::new(),
        }
    }
}

struct State {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// One of the client's streams inside the bin: its audio, its video, or one
/// simulcast encoding of its video.
struct Track {
    appsrc: gst_app::AppSrc,
    /// The encoding's rid, for keyframe requests; a client that sends one
    /// encoding under a rid has its frames taken by that rid only.
    rid: Option<String>,
    first_rtp: u64,
    first_pts: gst::ClockTime,
    /// Video: its frame rate, measured, goes into the caps once known.
    rate: Option<FrameRateMeter>,
}

#[derive(Default)]
struct Pads {
    exposed: usize,
    expected: usize,
    no_more_pads: bool,
}

/// What the feeding thread keeps of its session.
#[derive(Default)]
struct Feed {
    /// The offer's simulcast rids (empty: one video encoding).
    rids: Vec<String>,
    /// By pad name.
    tracks: HashMap<String, Track>,
    /// When a keyframe was last asked for, by pad name, while its first
    /// keyframe is awaited.
    keyframe_asked: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct WhipIngressSrc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    pads: Mutex<Pads>,
    /// Keyframe requests to the client of the current session.
    control: Mutex<Option<mpsc::UnboundedSender<Control>>>,
    video_bytes: AtomicU64,
    audio_bytes: AtomicU64,
}

#[glib::object_subclass]
impl ObjectSubclass for WhipIngressSrc {
    const NAME: &'static str = "GstWhipIngressSrc";
    type Type = super::WhipIngressSrc;
    type ParentType = gst::Bin;
}

/// The pad a frame goes out on: `audio`, `video`, or for one of several
/// simulcast encodings `video_{rid}`; `None` for an encoding the offer did
/// not announce.
fn pad_name(frame: &Frame, rids: &[String]) -> Option<String> {
    match (frame.kind, frame.rid.as_ref()) {
        (MediaKind::Audio, _) => Some("audio".into()),
        (MediaKind::Video, _) if rids.is_empty() => Some("video".into()),
        (MediaKind::Video, Some(rid)) if rids.contains(rid) => Some(format!("video_{rid}")),
        (MediaKind::Video, _) => None,
    }
}

/// Width and height from a VP8 keyframe's header (RFC 6386 9.1).
fn vp8_size(frame: &[u8]) -> Option<(i32, i32)> {
    let header = frame.get(..10)?;
    if header[0] & 1 != 0 || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
    let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
    Some((i32::from(width), i32::from(height)))
}

impl WhipIngressSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let port = u16::try_from(settings.port).map_err(|_| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ["port {} out of range", settings.port]
            )
        })?;
        let claim = listener::listener(&settings.address, port)
            .and_then(|listener| listener.claim(&settings.stream_key))
            .map_err(|e| {
                let domain = match e {
                    ListenerError::KeyClaimed(_) => gst::ResourceError::Busy,
                    ListenerError::Bind { .. } => gst::ResourceError::OpenRead,
                };
                gst::error_msg!(domain, ("{}", e))
            })?;
        gst::info!(
            CAT,
            imp = self,
            "waiting for a WHIP offer on {} key {}",
            claim.local_addr(),
            redact_key(&settings.stream_key)
        );
        *lock(&self.pads) = Pads::default();
        self.video_bytes.store(0, Ordering::Relaxed);
        self.audio_bytes.store(0, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        let element = self.obj().clone();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("whipingresssrc:{port}"))
            .spawn(move || element.imp().feed(claim, thread_stop))
            .map_err(|e| gst::error_msg!(gst::CoreError::Failed, ["cannot start thread: {}", e]))?;
        *lock(&self.state) = Some(State {
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    fn stop(&self) {
        let state = lock(&self.state).take();
        if let Some(mut state) = state {
            state.stop.notify_one();
            if let Some(thread) = state.thread.take() {
                let _ = thread.join();
            }
        }
        *lock(&self.control) = None;
        let obj = self.obj();
        for pad in obj.src_pads() {
            let _ = pad.set_active(false);
            let _ = obj.remove_pad(&pad);
        }
        for child in obj.children() {
            let _ = child.set_state(gst::State::Null);
            let _ = obj.remove(&child);
        }
        *lock(&self.pads) = Pads::default();
    }

    fn post(&self, message: &impl BusMessage) {
        let obj = self.obj();
        let _ = obj.post_message(message.to_message(&*obj));
    }

    /// A keyframe (PLI) from the client on the encoding `rid`.
    fn request_keyframe(&self, rid: Option<String>) {
        if let Some(control) = lock(&self.control).as_ref() {
            let _ = control.send(Control::RequestKeyframe { rid });
        }
    }

    /// The chain for a track's first frame: appsrc (and h264parse for
    /// H.264), its output exposed as the pad `name` once it has caps.
    fn add_track(&self, name: &str, frame: &Frame, pts: gst::ClockTime) -> Result<Track, String> {
        let caps = match (frame.kind, frame.codec) {
            (MediaKind::Video, Some(VideoCodec::H264)) => gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
            (MediaKind::Video, _) => {
                let (width, height) =
                    vp8_size(&frame.data).ok_or("a VP8 keyframe without its size")?;
                gst::Caps::builder("video/x-vp8")
                    .field("width", width)
                    .field("height", height)
                    .field("framerate", gst::Fraction::new(0, 1))
                    .build()
            }
            (MediaKind::Audio, _) => gst::Caps::builder("audio/x-opus")
                .field("channel-mapping-family", 0i32)
                .field("channels", 2i32)
                .field("rate", 48000i32)
                .build(),
        };
        let appsrc = gst_app::AppSrc::builder()
            .caps(&caps)
            .is_live(true)
            .format(gst::Format::Time)
            .stream_type(gst_app::AppStreamType::Stream)
            .max_buffers(64)
            .leaky_type(gst_app::AppLeakyType::Downstream)
            .build();
        let mut chain = vec![appsrc.clone().upcast::<gst::Element>()];
        if frame.codec == Some(VideoCodec::H264) {
            chain.push(
                gst::ElementFactory::make("h264parse")
                    .build()
                    .map_err(|e| format!("h264parse: {e}"))?,
            );
        }
        let obj = self.obj();
        obj.add_many(&chain).map_err(|e| e.to_string())?;
        gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
        let last = chain.last().cloned().ok_or("empty chain")?;
        let output = last.static_pad("src").ok_or("no src pad")?;
        let kind = frame.kind;
        let weak = obj.downgrade();
        let (pad, rid) = (name.to_string(), frame.rid.clone());
        output.add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |target, info| {
                let Some(element) = weak.upgrade() else {
                    return gst::PadProbeReturn::Remove;
                };
                let imp = element.imp();
                match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => {
                        let bytes = match kind {
                            MediaKind::Video => &imp.video_bytes,
                            MediaKind::Audio => &imp.audio_bytes,
                        };
                        bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
                    }
                    Some(gst::PadProbeData::Event(event)) => {
                        if let gst::EventView::Caps(_) = event.view() {
                            imp.expose(&pad, kind, rid.as_ref(), target, event);
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        // Downstream first: a started appsrc pushes its caps at once, and
        // h264parse taking an event before its start() (between its pad's
        // activation and the parser's setup) crashes in GStreamer 1.22.
        for element in chain.iter().rev() {
            element
                .sync_state_with_parent()
                .map_err(|e| e.to_string())?;
        }
        Ok(Track {
            appsrc,
            rid: frame.rid.clone(),
            first_rtp: frame.rtp_time,
            first_pts: pts,
            rate: (frame.kind == MediaKind::Video).then(FrameRateMeter::default),
        })
    }

    /// Adds the pad `name` for `target` once it has caps; a video pad's
    /// keyframe requests go to the client's encoding `rid`.
    fn expose(
        &self,
        name: &str,
        kind: MediaKind,
        rid: Option<&String>,
        target: &gst::Pad,
        caps: &gst::Event,
    ) {
        let obj = self.obj();
        if obj.static_pad(name).is_some() {
            return;
        }
        let Some(ghost) = crate::input::ghost_with_caps(&*obj, name, target, target, caps) else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Pad,
                ("cannot expose the {} stream", name)
            );
            return;
        };
        if kind == MediaKind::Video {
            // Room keyframe requests (livekitsink) become PLI to the client,
            // for this pad's encoding.
            let weak = obj.downgrade();
            let rid = rid.cloned();
            ghost.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                if let (Some(element), Some(gst::PadProbeData::Event(event))) =
                    (weak.upgrade(), &info.data)
                {
                    if gst_video::UpstreamForceKeyUnitEvent::parse(event).is_ok() {
                        element.imp().request_keyframe(rid.clone());
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        gst::info!(CAT, imp = self, "{name} pad: {:?}", caps);
        let _ = obj.add_pad(&ghost);
        let ready = {
            let mut pads = lock(&self.pads);
            pads.exposed += 1;
            let ready = pads.exposed >= pads.expected && !pads.no_more_pads;
            pads.no_more_pads |= ready;
            ready
        };
        if ready {
            obj.no_more_pads();
        }
    }

    fn has_pads(&self) -> bool {
        lock(&self.pads).exposed > 0
    }

    /// A frame into its track's appsrc (the track made at the first one;
    /// video from its first keyframe, each simulcast encoding from its own).
    fn push(&self, session: &mut Feed, frame: Frame) -> Result<(), String> {
        let Some(name) = pad_name(&frame, &session.rids) else {
            gst::log!(
                CAT,
                imp = self,
                "dropped a frame of an encoding the offer did not name: {:?}",
                frame.rid
            );
            return Ok(());
        };
        let now = self
            .obj()
            .current_running_time()
            .unwrap_or(gst::ClockTime::ZERO);
        if !session.tracks.contains_key(&name) {
            if frame.kind == MediaKind::Video && !frame.keyframe {
                let asked = session.keyframe_asked.get(&name);
                if asked.is_none_or(|at| at.elapsed() > KEYFRAME_RETRY) {
                    self.request_keyframe(frame.rid.clone());
                    session.keyframe_asked.insert(name, Instant::now());
                }
                return Ok(());
            }
            let track = self.add_track(&name, &frame, now)?;
            session.tracks.insert(name.clone(), track);
        }
        let Some(track) = session.tracks.get_mut(&name) else {
            return Ok(());
        };
        if track.rid != frame.rid {
            // One encoding sent under two rids: the first one is taken.
            return Ok(());
        }
        if let Some(rate) = track
            .rate
            .as_mut()
            .and_then(|meter| meter.frame(frame.rtp_time, frame.clock_rate))
        {
            // VP8 says no frame rate, nor does an SPS without timing: the
            // one measured goes into the caps, and so into the ingress's
            // state.
            if let Some(mut caps) = track.appsrc.caps() {
                caps.make_mut().set("framerate", rate);
                gst::info!(CAT, imp = self, "{name}: measured {rate} fps");
                track.appsrc.set_caps(Some(&caps));
            }
        }
        let ticks = frame.rtp_time.saturating_sub(track.first_rtp);
        let offset = gst::ClockTime::from_nseconds(
            ticks.saturating_mul(1_000_000_000) / u64::from(frame.clock_rate.max(1)),
        );
        let mut buffer = gst::Buffer::from_slice(frame.data);
        if let Some(buffer) = buffer.get_mut() {
            let pts = track.first_pts.saturating_add(offset);
            buffer.set_pts(pts);
            buffer.set_dts(pts);
            if frame.kind == MediaKind::Video && !frame.keyframe {
                buffer.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        track
            .appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|flow| format!("{flow:?}"))
    }

    /// The feeding thread: one session from its start to its end.
    fn feed(&self, mut claim: Claim, stop: Arc<Notify>) {
        let any_key = lock(&self.settings).stream_key.is_empty();
        let mut key = None;
        let mut started: Option<Instant> = None;
        let mut meter = StatsMeter::default();
        let mut session = Feed::default();
        loop {
            let media_deadline = started
                .filter(|_| !self.has_pads())
                .map(|since| since + FIRST_MEDIA_DEADLINE);
            let event = match next_event(&mut claim.events, &stop, media_deadline) {
                Next::Stop => return,
                Next::NoMedia => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        (
                            "the WHIP client sent no audio or video within {:?}",
                            FIRST_MEDIA_DEADLINE
                        )
                    );
                    return;
                }
                Next::Event(Some(event)) => event,
                Next::Event(None) => WhipEvent::Ended {
                    reason: "the listener closed".into(),
                },
            };
            match event {
                WhipEvent::Started {
                    key: k,
                    peer,
                    control,
                    offered,
                } => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "WHIP session of {} from {peer}",
                        redact_key(&k)
                    );
                    started = Some(Instant::now());
                    key = any_key.then_some(k);
                    // A pad per simulcast encoding, else one for the video.
                    let videos = if offered.video {
                        offered.rids.len().max(1)
                    } else {
                        0
                    };
                    lock(&self.pads).expected = videos + usize::from(offered.audio);
                    if !offered.rids.is_empty() {
                        gst::info!(CAT, imp = self, "simulcast: {:?}", offered.rids);
                    }
                    session.rids = offered.rids;
                    *lock(&self.control) = Some(control);
                    self.post(&PublishStarted {
                        input: "whip".into(),
                        peer: peer.to_string(),
                        key: key.clone(),
                        app: None,
                    });
                }
                WhipEvent::Frame(frame) => {
                    if let Err(e) = self.push(&mut session, frame) {
                        gst::debug!(CAT, imp = self, "feeding stopped: {e}");
                        if !e.contains("Flushing") && !e.contains("Eos") {
                            gst::element_imp_error!(
                                self,
                                gst::StreamError::Failed,
                                ("cannot take the WHIP client's media: {}", e)
                            );
                        }
                        return;
                    }
                    let video = self.video_bytes.load(Ordering::Relaxed);
                    let audio = self.audio_bytes.load(Ordering::Relaxed);
                    if let Some(stats) = meter.due(video, audio) {
                        self.post(&stats);
                    }
                }
                WhipEvent::Ended { reason } => {
                    gst::info!(CAT, imp = self, "WHIP session ended: {reason}");
                    *lock(&self.control) = None;
                    self.post(&PublishStopped { reason, key });
                    if self.has_pads() {
                        for track in session.tracks.values() {
                            let _ = track.appsrc.end_of_stream();
                        }
                    } else {
                        let obj = self.obj();
                        let _ = obj.post_message(gst::message::Eos::builder().src(&*obj).build());
                    }
                    return;
                }
            }
        }
    }
}

impl ObjectImpl for WhipIngressSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("address")
                    .nick("Address")
                    .blurb("Address to listen on (HTTP for WHIP; each session's UDP socket on the address the client reached)")
                    .default_value(Some(DEFAULT_ADDRESS))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("port")
                    .nick("Port")
                    .blurb("HTTP port for WHIP offers, POST /w/KEY (shared by every whipingresssrc on it)")
                    .maximum(65535)
                    .default_value(DEFAULT_PORT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-key")
                    .nick("Stream key")
                    .blurb("Accept only offers to /w/KEY (or Bearer KEY) for this key (empty: any key no other element claimed)")
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        let text = || {
            value
                .get::<Option<String>>()
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        match pspec.name() {
            "address" => s.address = text(),
            "port" => s.port = value.get().unwrap_or(DEFAULT_PORT),
            "stream-key" => s.stream_key = text(),
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "address" => s.address.to_value(),
            "port" => s.port.to_value(),
            "stream-key" => s.stream_key.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_element_flags(gst::ElementFlags::SOURCE);
    }
}

impl GstObjectImpl for WhipIngressSrc {}

impl BinImpl for WhipIngressSrc {}

impl ElementImpl for WhipIngressSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "WHIP ingress source",
                "Source/Network",
                "WHIP endpoint (WebRTC, str0m) that accepts a publish on its stream key and gives its encoded media",
                "LiveKit Ingress contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            use crate::input::any_of;
            let video = any_of(&["video/x-h264", "video/x-vp8"]);
            let audio = any_of(&["audio/x-opus"]);
            let mut templates = crate::input::pad_templates(&video, &audio);
            templates.extend(crate::input::layer_pad_template(&video));
            templates
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            if let Err(err) = self.start() {
                self.post_error_message(err);
                self.stop();
                return Err(gst::StateChangeError);
            }
        }
        if transition == gst::StateChange::PausedToReady {
            if let Some(state) = lock(&self.state).as_ref() {
                state.stop.notify_one();
            }
        }
        let success = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        let success = success?;
        if transition == gst::StateChange::ReadyToPaused {
            return Ok(gst::StateChangeSuccess::NoPreroll);
        }
        Ok(success)
    }
}
