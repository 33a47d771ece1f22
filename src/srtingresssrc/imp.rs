use crate::claims::{next_event, Next};
use crate::messages::publish::{
    PublishPaused, PublishResumed, PublishStarted, PublishStopped, StatsMeter,
};
use crate::messages::BusMessage;
use crate::rtmp::redact::redact_key;
use crate::srt::listener::{self, Claim, ListenerConfig, ListenerError, SrtEvent};
use crate::sync::lock;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "srtingresssrc",
        gst::DebugColorFlags::empty(),
        Some("SRT ingress source"),
    )
});

/// A publish whose MPEG-TS brings no audio or video stream with known caps
/// within this long is ended with an error (a caller sending anything but
/// MPEG-TS must not hold the pipeline forever).
const FIRST_MEDIA_DEADLINE: Duration = Duration::from_secs(15);
/// What the internal appsrc queues before the listener is read no faster.
const QUEUED_BYTES: u64 = 4 * 1024 * 1024;

const DEFAULT_ADDRESS: &str = "0.0.0.0";
const DEFAULT_PORT: u32 = 7001;
/// Seconds from a caller's request to the decision on it.
const DEFAULT_HANDSHAKE_TIMEOUT: u32 = 10;
/// Seconds without data before a publish is considered gone.
const DEFAULT_IDLE_TIMEOUT: u32 = 10;
/// Seconds a stream waits for its caller to come back: none, so a launch
/// line ends when its caller leaves, as rtmpingresssrc's.
const DEFAULT_RECONNECT_GRACE: u32 = 0;

#[derive(Debug, Clone)]
struct Settings {
    address: String,
    port: u32,
    stream_key: String,
    handshake_timeout: u32,
    idle_timeout: u32,
    reconnect_grace: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            address: DEFAULT_ADDRESS.into(),
            port: DEFAULT_PORT,
            stream_key: String::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            reconnect_grace: DEFAULT_RECONNECT_GRACE,
        }
    }
}

/// The feeding thread and how to stop it.
struct State {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// The demuxer's streams as they become the contract's pads. The pads
/// outlive a caller that comes back within the grace period; the rest is
/// of the current caller's demuxer.
#[derive(Default)]
struct Pads {
    video: Option<gst::GhostPad>,
    audio: Option<gst::GhostPad>,
    /// A video / audio stream was chosen (its pad may still wait for caps).
    video_chosen: bool,
    audio_chosen: bool,
    /// Chosen streams whose pad waits for its parser's caps.
    waiting: usize,
    demuxer_done: bool,
    no_more_pads: bool,
}

impl Pads {
    fn pad(&self, kind: Kind) -> Option<&gst::GhostPad> {
        match kind {
            Kind::Video => self.video.as_ref(),
            Kind::Audio => self.audio.as_ref(),
        }
    }

    /// A returning caller's demuxer chooses its streams afresh; the pads stay.
    fn next_caller(&mut self) {
        self.video_chosen = false;
        self.audio_chosen = false;
        self.waiting = 0;
        self.demuxer_done = false;
    }
}

/// What the probe behind a parser keeps of its stream.
#[derive(Default)]
struct Flow {
    /// Video has had its keyframe: frames before it are dropped, as the
    /// decoder downstream would get them without their references (a
    /// returning caller may start mid-GOP; the decoder has the last
    /// caller's pictures).
    keyframe_seen: bool,
    /// The stream goes on on a pad an earlier caller's stream made.
    continued: Option<Continued>,
    /// This stream's own segment, from its demuxer.
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
}

/// What a returning caller's stream takes from the pad it goes on on, so
/// that downstream sees one stream: the pad's stream-start and segment
/// stand in for the stream's own (replaced, not dropped: a sticky event a
/// probe drops is sent again before every buffer), and its timestamps are
/// moved into that segment.
struct Continued {
    stream_start: Option<gst::Event>,
    segment_event: Option<gst::Event>,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
}

impl Continued {
    fn of(pad: &gst::Pad) -> Continued {
        let segment_event = pad.sticky_event::<gst::event::Segment>(0);
        Continued {
            stream_start: pad
                .sticky_event::<gst::event::StreamStart>(0)
                .map(gst::Event::from),
            segment: segment_event
                .as_ref()
                .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned()),
            segment_event: segment_event.map(gst::Event::from),
        }
    }
}

impl Flow {
    /// Moves a continued stream's buffer from its segment into the pad's, by
    /// running time, so it goes on after the gap whatever segment the new
    /// demuxer chose. False when it falls outside the pad's segment.
    fn restamp(&self, buffer: &mut gst::Buffer) -> bool {
        let Some(pad) = self.continued.as_ref().and_then(|c| c.segment.as_ref()) else {
            return true;
        };
        let Some(own) = &self.segment else {
            return true;
        };
        let map = |ts: Option<gst::ClockTime>| match ts {
            None => Some(None),
            Some(ts) => own
                .to_running_time(ts)
                .and_then(|rt| pad.position_from_running_time(rt))
                .map(Some),
        };
        let (Some(pts), Some(dts)) = (map(buffer.pts()), map(buffer.dts())) else {
            return false;
        };
        let buffer = buffer.make_mut();
        buffer.set_pts(pts);
        buffer.set_dts(dts);
        true
    }

    /// What a continued stream sends instead of its own stream-start or
    /// segment `event`.
    fn stand_in(&mut self, event: &gst::Event) -> Option<gst::Event> {
        let continued = self.continued.as_ref()?;
        match event.view() {
            gst::EventView::StreamStart(_) => continued.stream_start.clone(),
            gst::EventView::Segment(e) => {
                self.segment = e.segment().downcast_ref::<gst::ClockTime>().cloned();
                continued.segment_event.clone()
            }
            _ => None,
        }
    }
}

/// How a parser's stream reached its pad.
enum Exposed {
    /// On a pad of its own (new, or its own already).
    Own,
    /// On the pad an earlier caller's stream made.
    Continued(Continued),
    /// Nowhere (an error was posted).
    Refused,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Video,
    Audio,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Audio => "audio",
        }
    }
}

#[derive(Default)]
pub struct SrtIngressSrc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    pads: Mutex<Pads>,
    video_bytes: AtomicU64,
    audio_bytes: AtomicU64,
}

#[glib::object_subclass]
impl ObjectSubclass for SrtIngressSrc {
    const NAME: &'static str = "GstSrtIngressSrc";
    type Type = super::SrtIngressSrc;
    type ParentType = gst::Bin;
}

fn listener_error_domain(e: &ListenerError) -> gst::ResourceError {
    match e {
        ListenerError::KeyClaimed(_) => gst::ResourceError::Busy,
        ListenerError::Bind { .. } => gst::ResourceError::OpenRead,
    }
}

impl SrtIngressSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let port = u16::try_from(settings.port).map_err(|_| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ["port {} out of range", settings.port]
            )
        })?;
        let config = ListenerConfig {
            address: settings.address.clone(),
            port,
            decision_timeout: Duration::from_secs(settings.handshake_timeout.into()),
            idle_timeout: Duration::from_secs(settings.idle_timeout.into()),
        };
        let claim = listener::listener(&config)
            .and_then(|listener| listener.claim(&settings.stream_key))
            .map_err(|e| gst::error_msg!(listener_error_domain(&e), ("{}", e)))?;
        gst::info!(
            CAT,
            imp = self,
            "waiting for an SRT caller on {} key {}",
            claim.local_addr(),
            redact_key(&settings.stream_key)
        );
        *lock(&self.pads) = Pads::default();
        self.video_bytes.store(0, Ordering::Relaxed);
        self.audio_bytes.store(0, Ordering::Relaxed);
        let (appsrc, _) = self.build_demuxing()?;

        let stop = Arc::new(Notify::new());
        let element = self.obj().clone();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("srtingresssrc:{port}"))
            .spawn(move || element.imp().feed(claim, appsrc, thread_stop))
            .map_err(|e| gst::error_msg!(gst::CoreError::Failed, ["cannot start thread: {}", e]))?;
        *lock(&self.state) = Some(State {
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    /// appsrc -> tsdemux inside the bin; the demuxer's pads are handled as
    /// they come.
    fn build_demuxing(&self) -> Result<(gst_app::AppSrc, gst::Element), gst::ErrorMessage> {
        let missing = |what: &str, e: glib::BoolError| {
            gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ["cannot create {}: {}", what, e]
            )
        };
        let appsrc = gst_app::AppSrc::builder()
            .name("received")
            .caps(
                &gst::Caps::builder("video/mpegts")
                    .field("systemstream", true)
                    .build(),
            )
            .is_live(true)
            .format(gst::Format::Time)
            .do_timestamp(true)
            .stream_type(gst_app::AppStreamType::Stream)
            .max_bytes(QUEUED_BYTES)
            .block(true)
            .build();
        let demux = gst::ElementFactory::make("tsdemux")
            .name("demux")
            .build()
            .map_err(|e| missing("tsdemux (gst-plugins-bad)", e))?;
        let obj = self.obj();
        obj.add_many([appsrc.upcast_ref::<gst::Element>(), &demux])
            .and_then(|()| appsrc.link(&demux))
            .map_err(|e| missing("the demuxing chain", e))?;
        let weak = obj.downgrade();
        demux.connect_pad_added(move |_, pad| {
            if let Some(element) = weak.upgrade() {
                element.imp().demuxer_pad_added(pad);
            }
        });
        let weak = obj.downgrade();
        demux.connect_no_more_pads(move |_| {
            if let Some(element) = weak.upgrade() {
                let imp = element.imp();
                lock(&imp.pads).demuxer_done = true;
                imp.check_no_more_pads();
            }
        });
        Ok((appsrc, demux))
    }

    /// A returning caller's MPEG-TS gets a demuxer and parsers of its own:
    /// its clock (PCR, PTS) starts from another origin, its continuity
    /// counters restart and its tables may differ, which the last caller's
    /// demuxer would take for a broken stream. Their streams go on on the
    /// same pads (see [`Self::expose`]); the new appsrc stamps on arrival in
    /// the same running time, so timestamps go on after the gap.
    fn restart_demuxing(&self) -> Result<gst_app::AppSrc, gst::ErrorMessage> {
        let obj = self.obj();
        // The last caller's chain has been idle since it left.
        for child in obj.children() {
            let _ = child.set_state(gst::State::Null);
            let _ = obj.remove(&child);
        }
        lock(&self.pads).next_caller();
        let (appsrc, demux) = self.build_demuxing()?;
        for element in [&demux, appsrc.upcast_ref()] {
            element.sync_state_with_parent().map_err(|e| {
                gst::error_msg!(
                    gst::CoreError::StateChange,
                    ["cannot start demuxing the returning caller: {}", e]
                )
            })?;
        }
        Ok(appsrc)
    }

    fn stop(&self) {
        let state = lock(&self.state).take();
        if let Some(mut state) = state {
            if let Some(thread) = state.thread.take() {
                let _ = thread.join();
            }
        }
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

    /// A stream of the demuxer: the first video and the first audio stream
    /// get a parser and, once it knows its caps, a pad; the rest a fakesink.
    fn demuxer_pad_added(&self, pad: &gst::Pad) {
        let caps = pad
            .current_caps()
            .or_else(|| pad.allowed_caps())
            .unwrap_or_else(gst::Caps::new_any);
        let media = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let kind = if media.starts_with("video/") {
            Some(Kind::Video)
        } else if media.starts_with("audio/") {
            Some(Kind::Audio)
        } else {
            None
        };
        let chosen = kind.filter(|kind| {
            let mut pads = lock(&self.pads);
            // After no-more-pads no pad is added: a returning caller's
            // stream of a kind the first one lacked is not used.
            let open = pads.pad(*kind).is_some() || !pads.no_more_pads;
            let slot = match kind {
                Kind::Video => &mut pads.video_chosen,
                Kind::Audio => &mut pads.audio_chosen,
            };
            let take = !*slot && open;
            *slot = true;
            if take {
                pads.waiting += 1;
            }
            take
        });
        gst::info!(
            CAT,
            imp = self,
            "demuxer stream {} ({media}): {}",
            pad.name(),
            chosen.map_or("not used", Kind::name)
        );
        let result = match chosen {
            Some(kind) => self.add_parser(pad, &caps, kind),
            None => self.add_fakesink(pad),
        };
        if let Err(e) = result {
            gst::element_imp_error!(
                self,
                gst::StreamError::Demux,
                ("cannot take the publisher's {} stream: {}", media, e)
            );
        }
    }

    fn add_fakesink(&self, pad: &gst::Pad) -> Result<(), String> {
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .map_err(|e| e.to_string())?;
        self.add_and_link(pad, &[sink])
    }

    /// Adds `chain`, linked in order, and links `pad` to its first element.
    fn add_and_link(&self, pad: &gst::Pad, chain: &[gst::Element]) -> Result<(), String> {
        let obj = self.obj();
        obj.add_many(chain).map_err(|e| e.to_string())?;
        gst::Element::link_many(chain).map_err(|e| e.to_string())?;
        for element in chain {
            element
                .sync_state_with_parent()
                .map_err(|e| e.to_string())?;
        }
        let first = chain.first().ok_or("nothing to link")?;
        let sink = first
            .static_pad("sink")
            .ok_or_else(|| format!("{} has no sink pad", first.name()))?;
        pad.link(&sink).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The stream's parser; its src pad becomes the contract's pad `kind`
    /// when its caps come (the pipeline picks a decoder by them).
    fn add_parser(&self, pad: &gst::Pad, caps: &gst::Caps, kind: Kind) -> Result<(), String> {
        let parser = crate::decode::parser_for(caps)
            .map(Ok)
            .unwrap_or_else(|| gst::ElementFactory::make("identity").build())
            .map_err(|e| e.to_string())?;
        let mut chain = vec![parser];
        if caps
            .structure(0)
            .is_some_and(|s| s.name() == "video/x-h264")
        {
            // H.264 leaves as AVC, as RTMP's does: its SPS and PPS then
            // come in the caps (codec_data), which is where the pipeline
            // reads them to decide on pass-through before the first buffer.
            let avc = gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-h264")
                        .field("stream-format", "avc")
                        .field("alignment", "au")
                        .build(),
                )
                .build()
                .map_err(|e| e.to_string())?;
            chain.push(avc);
        }
        let last = chain.last().ok_or("no parser")?;
        let parsed = last
            .static_pad("src")
            .ok_or_else(|| format!("{} has no src pad", last.name()))?;
        let weak = self.obj().downgrade();
        let flow = Mutex::new(Flow::default());
        parsed.add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |target, info| match weak.upgrade() {
                Some(element) => element
                    .imp()
                    .on_parsed(kind, &mut lock(&flow), target, info),
                None => gst::PadProbeReturn::Remove,
            },
        );
        self.add_and_link(pad, &chain)
    }

    /// What comes out of the parser of the stream `kind`, `target`: counted,
    /// video held until its first keyframe, the first caps making or
    /// continuing the pad, a continued stream's stream-start, segment and
    /// timestamps made the pad's.
    fn on_parsed(
        &self,
        kind: Kind,
        flow: &mut Flow,
        target: &gst::Pad,
        info: &mut gst::PadProbeInfo,
    ) -> gst::PadProbeReturn {
        let stand_in = match &mut info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => {
                let bytes = match kind {
                    Kind::Video => &self.video_bytes,
                    Kind::Audio => &self.audio_bytes,
                };
                bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
                if kind == Kind::Video && !flow.keyframe_seen {
                    if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                        return gst::PadProbeReturn::Drop;
                    }
                    flow.keyframe_seen = true;
                    // What came before it was dropped.
                    buffer.make_mut().set_flags(gst::BufferFlags::DISCONT);
                }
                if !flow.restamp(buffer) {
                    return gst::PadProbeReturn::Drop;
                }
                None
            }
            Some(gst::PadProbeData::Event(event)) => {
                if let gst::EventView::Caps(_) = event.view() {
                    if let Exposed::Continued(continued) = self.expose(kind, target, event) {
                        flow.continued = Some(continued);
                    }
                }
                flow.stand_in(event)
            }
            _ => None,
        };
        if let Some(event) = stand_in {
            info.data = Some(gst::PadProbeData::Event(event));
        }
        gst::PadProbeReturn::Ok
    }

    /// Adds the pad `kind` for `target` (the first caps on it): its sticky
    /// events stored first, so the application's pad-added sees the caps.
    /// A returning caller's stream goes on on the pad that exists.
    fn expose(&self, kind: Kind, target: &gst::Pad, caps: &gst::Event) -> Exposed {
        let obj = self.obj();
        let existing = lock(&self.pads).pad(kind).cloned();
        if let Some(ghost) = existing {
            return self.continue_on(kind, &ghost, target, caps);
        }
        let Some(ghost) = crate::input::ghost_with_caps(&*obj, kind.name(), target, target, caps)
        else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Pad,
                ("cannot expose the {} stream", kind.name())
            );
            return Exposed::Refused;
        };
        {
            let mut pads = lock(&self.pads);
            match kind {
                Kind::Video => pads.video = Some(ghost.clone()),
                Kind::Audio => pads.audio = Some(ghost.clone()),
            }
            pads.waiting = pads.waiting.saturating_sub(1);
        }
        gst::info!(CAT, imp = self, "{} pad: {:?}", kind.name(), caps);
        let _ = obj.add_pad(&ghost);
        self.check_no_more_pads();
        Exposed::Own
    }

    /// A returning caller's stream `target` goes on on `ghost`, the pad the
    /// first caller's stream of its kind made, if it is of the same media
    /// type: the branch downstream was built for that codec.
    fn continue_on(
        &self,
        kind: Kind,
        ghost: &gst::GhostPad,
        target: &gst::Pad,
        caps: &gst::Event,
    ) -> Exposed {
        if ghost.target().as_ref() == Some(target) {
            // New caps within one caller's stream.
            return Exposed::Own;
        }
        let media = |caps: Option<&gst::CapsRef>| {
            caps.and_then(|c| c.structure(0))
                .map(|s| s.name().to_string())
                .unwrap_or_default()
        };
        let was = media(ghost.current_caps().as_deref());
        let now = match caps.view() {
            gst::EventView::Caps(c) => media(Some(c.caps())),
            _ => String::new(),
        };
        if was != now {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "the publisher came back sending {} as {now} where it sent {was}: a stream cannot change codecs",
                    kind.name()
                )
            );
            return Exposed::Refused;
        }
        let continued = Continued::of(ghost.upcast_ref());
        if let Err(e) = ghost.set_target(Some(target)) {
            gst::element_imp_error!(
                self,
                gst::CoreError::Pad,
                (
                    "cannot go on with the returning caller's {}: {}",
                    kind.name(),
                    e
                )
            );
            return Exposed::Refused;
        }
        gst::info!(CAT, imp = self, "{} goes on: {:?}", kind.name(), caps);
        {
            let mut pads = lock(&self.pads);
            pads.waiting = pads.waiting.saturating_sub(1);
        }
        self.check_no_more_pads();
        Exposed::Continued(continued)
    }

    /// no-more-pads once the demuxer has all its streams and every chosen
    /// one has its pad.
    fn check_no_more_pads(&self) {
        let ready = {
            let mut pads = lock(&self.pads);
            let ready = pads.demuxer_done && pads.waiting == 0 && !pads.no_more_pads;
            pads.no_more_pads |= ready;
            ready
        };
        if ready {
            self.obj().no_more_pads();
        }
    }

    fn has_pads(&self) -> bool {
        let pads = lock(&self.pads);
        pads.video.is_some() || pads.audio.is_some()
    }

    fn post(&self, message: &impl BusMessage) {
        let obj = self.obj();
        let _ = obj.post_message(message.to_message(&*obj));
    }

    /// The feeding thread: one publish from start to end, its bytes into
    /// the appsrc; with a grace period, the callers that come back on the
    /// key within it too.
    fn feed(&self, mut claim: Claim, mut appsrc: gst_app::AppSrc, stop: Arc<Notify>) {
        let any_key = lock(&self.settings).stream_key.is_empty();
        let mut key = None;
        let mut started: Option<Instant> = None;
        // The caller left: until when the stream waits for the key to
        // publish again, and why it left.
        let mut grace: Option<(Instant, String)> = None;
        let mut meter = StatsMeter::default();
        loop {
            let media_deadline = started
                .filter(|_| !self.has_pads())
                .map(|since| since + FIRST_MEDIA_DEADLINE);
            let deadline = grace.as_ref().map(|(until, _)| *until);
            let next = next_event(&mut claim.events, &stop, deadline.or(media_deadline));
            let event = match next {
                Next::Stop => return,
                Next::NoMedia => {
                    if let Some((_, reason)) = grace.take() {
                        self.end(&appsrc, reason, key);
                        return;
                    }
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Demux,
                        (
                            "the publisher sent no audio or video stream in MPEG-TS within {:?}",
                            FIRST_MEDIA_DEADLINE
                        )
                    );
                    // Returning drops the claim: the listener closes the connection.
                    return;
                }
                Next::Event(Some(event)) => event,
                Next::Event(None) => SrtEvent::Ended {
                    reason: "the listener closed".into(),
                },
            };
            match event {
                SrtEvent::Started { peer, .. } if grace.is_some() => {
                    gst::info!(CAT, imp = self, "caller back from {peer}");
                    grace = None;
                    self.post(&PublishResumed {
                        peer: peer.to_string(),
                    });
                    match self.restart_demuxing() {
                        Ok(next) => appsrc = next,
                        Err(e) => {
                            self.post_error_message(e);
                            return;
                        }
                    }
                }
                SrtEvent::Started { key: k, peer } => {
                    gst::info!(CAT, imp = self, "publish of {} from {peer}", redact_key(&k));
                    started = Some(Instant::now());
                    key = any_key.then_some(k);
                    self.post(&PublishStarted {
                        input: "srt".into(),
                        peer: peer.to_string(),
                        key: key.clone(),
                        app: None,
                    });
                }
                SrtEvent::Data(data) => {
                    if let Err(flow) = appsrc.push_buffer(gst::Buffer::from_slice(data)) {
                        gst::debug!(CAT, imp = self, "feeding stopped: {flow:?}");
                        return;
                    }
                    let video = self.video_bytes.load(Ordering::Relaxed);
                    let audio = self.audio_bytes.load(Ordering::Relaxed);
                    if let Some(stats) = meter.due(video, audio) {
                        self.post(&stats);
                    }
                }
                SrtEvent::Ended { reason } => {
                    if let Some((until, _)) = &grace {
                        // A caller let in during the grace period that failed
                        // before it started: the stream still waits, and the
                        // application, which took its waiting mark to let that
                        // one in, is told again.
                        let left = until.saturating_duration_since(Instant::now());
                        self.post(&PublishPaused {
                            reason,
                            grace: u32::try_from(left.as_secs() + 1).unwrap_or(u32::MAX),
                        });
                        continue;
                    }
                    if let Some(until) = self.pause(&reason) {
                        grace = Some((until, reason));
                        continue;
                    }
                    self.end(&appsrc, reason, key);
                    return;
                }
            }
        }
    }

    /// The caller left: with a grace period and media flowing, the pads stay
    /// (no EOS, so the room keeps the participant and its tracks) and the
    /// stream waits for the key to publish again; until when. Only an
    /// element given its key waits: one taking any key would take whichever
    /// key published next into the same stream.
    fn pause(&self, reason: &str) -> Option<Instant> {
        let (grace, any_key) = {
            let settings = lock(&self.settings);
            (settings.reconnect_grace, settings.stream_key.is_empty())
        };
        if grace == 0 || any_key || !self.has_pads() {
            return None;
        }
        gst::info!(
            CAT,
            imp = self,
            "caller left ({reason}): waiting {grace} s for it to come back"
        );
        self.post(&PublishPaused {
            reason: reason.to_string(),
            grace,
        });
        Some(Instant::now() + Duration::from_secs(grace.into()))
    }

    /// The publish is over: the bus hears why, and every pad gets EOS (the
    /// pipeline gets one itself when no pad was ever added).
    fn end(&self, appsrc: &gst_app::AppSrc, reason: String, key: Option<String>) {
        gst::info!(CAT, imp = self, "publish ended: {reason}");
        self.post(&PublishStopped { reason, key });
        let pads: Vec<gst::GhostPad> = {
            let pads = lock(&self.pads);
            [&pads.video, &pads.audio]
                .into_iter()
                .flatten()
                .cloned()
                .collect()
        };
        if pads.is_empty() {
            // Nothing was ever published: the pipeline still has to end.
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Eos::builder().src(&*obj).build());
            return;
        }
        // Through the demuxer, so what it holds goes out first.
        let _ = appsrc.end_of_stream();
        for pad in pads {
            // A pad whose stream a returning caller did not bring again has
            // no demuxer behind it.
            if pad.target().is_none() {
                pad.push_event(gst::event::Eos::new());
            }
        }
    }
}

impl ObjectImpl for SrtIngressSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("address")
                    .nick("Address")
                    .blurb("Address to listen on")
                    .default_value(Some(DEFAULT_ADDRESS))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("port")
                    .nick("Port")
                    .blurb("UDP port to listen on for SRT (shared by every srtingresssrc on it; 0 picks a free one)")
                    .maximum(65535)
                    .default_value(DEFAULT_PORT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-key")
                    .nick("Stream key")
                    .blurb("Accept only callers whose streamid names this key (KEY or #!::r=KEY; empty: any key no other element claimed)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("handshake-timeout")
                    .nick("Handshake timeout")
                    .blurb("Seconds from a caller's connection request to the decision on it")
                    .minimum(1)
                    .default_value(DEFAULT_HANDSHAKE_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("idle-timeout")
                    .nick("Idle timeout")
                    .blurb("Seconds without data after which a publish is considered gone")
                    .minimum(1)
                    .default_value(DEFAULT_IDLE_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("reconnect-grace")
                    .nick("Reconnect grace")
                    .blurb("Seconds to wait, when the caller leaves, for the same key to publish again: \
                            meanwhile the pads stay without EOS and the next caller's MPEG-TS goes on \
                            through them, video from its first keyframe (ingress-publish-paused, then \
                            ingress-publish-resumed); only with stream-key set; 0: the stream ends when \
                            the caller leaves")
                    .default_value(DEFAULT_RECONNECT_GRACE)
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
            "handshake-timeout" => {
                s.handshake_timeout = value.get().unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
            }
            "idle-timeout" => s.idle_timeout = value.get().unwrap_or(DEFAULT_IDLE_TIMEOUT),
            "reconnect-grace" => s.reconnect_grace = value.get().unwrap_or(DEFAULT_RECONNECT_GRACE),
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "address" => s.address.to_value(),
            "port" => s.port.to_value(),
            "stream-key" => s.stream_key.to_value(),
            "handshake-timeout" => s.handshake_timeout.to_value(),
            "idle-timeout" => s.idle_timeout.to_value(),
            "reconnect-grace" => s.reconnect_grace.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_element_flags(gst::ElementFlags::SOURCE);
    }
}

impl GstObjectImpl for SrtIngressSrc {}

impl BinImpl for SrtIngressSrc {}

impl ElementImpl for SrtIngressSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "SRT ingress source",
                "Source/Network",
                "SRT listener that accepts an MPEG-TS publish authenticated by the stream key in its streamid",
                "LiveKit Ingress contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            use crate::input::any_of;
            let video = any_of(&["video/x-h264", "video/x-h265", "video/mpeg"]);
            let audio = any_of(&["audio/mpeg", "audio/x-opus", "audio/x-ac3", "audio/x-eac3"]);
            crate::input::pad_templates(&video, &audio)
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        match transition {
            gst::StateChange::ReadyToPaused => {
                if let Err(err) = self.start() {
                    self.post_error_message(err);
                    self.stop();
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::PausedToReady => {
                if let Some(state) = lock(&self.state).as_ref() {
                    state.stop.notify_one();
                }
            }
            _ => {}
        }
        // Going to READY flushes the appsrc, which frees a feeding thread
        // blocked on a full queue; it is joined after.
        let success = self.parent_change_state(transition);
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        let success = success?;
        if transition == gst::StateChange::ReadyToPaused {
            // A live source: nothing to preroll until a publisher sends.
            return Ok(gst::StateChangeSuccess::NoPreroll);
        }
        Ok(success)
    }
}
