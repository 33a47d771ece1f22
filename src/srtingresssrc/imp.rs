use crate::claims::{next_event, Next};
use crate::input::MediaKind;
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

mod demuxing;

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
    fn pad(&self, kind: MediaKind) -> Option<&gst::GhostPad> {
        match kind {
            MediaKind::Video => self.video.as_ref(),
            MediaKind::Audio => self.audio.as_ref(),
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
