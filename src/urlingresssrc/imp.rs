use crate::input::{InputKind, MediaKind};
use crate::messages::publish::{PublishStarted, PublishStopped, StatsMeter};
use crate::messages::BusMessage;
use crate::sync::lock;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "urlingresssrc",
        gst::DebugColorFlags::empty(),
        Some("LiveKit ingress URL pull source"),
    )
});

const DEFAULT_URL: Option<String> = None;
const DEFAULT_RETRY_TIMEOUT: u32 = 30;
/// The first pause between connection attempts, doubled up to the last.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(8);

#[derive(Debug, Clone)]
struct Settings {
    url: Option<String>,
    retry_timeout: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: DEFAULT_URL,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
        }
    }
}

/// The URL's scheme says whether its source is live (arrives at its own
/// pace, may come up later) or a file (paced here, there or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    Live,
    File,
}

fn pace_of(url: &str) -> Pace {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme.to_ascii_lowercase().as_str() {
        "rtsp" | "rtsps" | "rtspt" | "rtspu" | "srt" | "rtmp" | "rtmps" => Pace::Live,
        _ => Pace::File,
    }
}

/// The URL's host, for `ingress-publish-started` (never its path or query,
/// which may carry credentials).
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

fn static_pad(element: &gst::Element, name: &str) -> Result<gst::Pad, glib::BoolError> {
    element
        .static_pad(name)
        .ok_or_else(|| glib::bool_error!("{} has no {name} pad", element.name()))
}

/// What a live source's trouble leads to (see `UrlIngressSrc::decide`).
enum Trouble {
    Retry(Duration),
    Scheduled,
    GiveUp {
        /// It closed (EOS) rather than failed: it ended.
        ended: bool,
    },
}

/// Running from start to stop.
struct State {
    url: String,
    pace: Pace,
    /// The elements of the current attempt (urisourcebin, parsebins, and
    /// what streams nobody takes end in).
    elements: Vec<gst::Element>,
    attempt: u32,
    /// Since when the source has been failing (from the start until the
    /// first media; from the loss mid-stream until media flows again).
    trouble_since: Option<Instant>,
    /// A retry is scheduled: further errors of the failing attempt are its.
    retrying: bool,
    /// The trouble began with the source closing (EOS), not failing.
    ended_by_eos: bool,
    video: Option<gst::GhostPad>,
    audio: Option<gst::GhostPad>,
    /// Streams whose EOS is still to come.
    open_streams: usize,
    /// urisourcebin and parsebins that have not said no-more-pads yet: when
    /// none is left, neither has this element.
    undecided: usize,
    /// Bytes of each kind so far, for `ingress-input-stats`.
    bytes: (u64, u64),
    meter: StatsMeter,
    stopping: bool,
}

#[derive(Default)]
pub struct UrlIngressSrc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for UrlIngressSrc {
    const NAME: &'static str = "GstUrlIngressSrc";
    type Type = super::UrlIngressSrc;
    type ParentType = gst::Bin;
}

impl UrlIngressSrc {
    fn post(&self, message: &impl BusMessage) {
        let obj = self.obj();
        let _ = obj.post_message(message.to_message(&*obj));
    }

    /// One attempt at the URL: a fresh urisourcebin, its streams parsed as
    /// they appear.
    fn connect(&self) -> Result<(), glib::BoolError> {
        let (url, attempt) = {
            let mut state = lock(&self.state);
            let Some(state) = state.as_mut() else {
                return Ok(());
            };
            state.attempt += 1;
            state.undecided = 1;
            (state.url.clone(), state.attempt)
        };
        gst::info!(
            CAT,
            imp = self,
            "connecting to {} (attempt {attempt})",
            host_of(&url)
        );
        let source = gst::ElementFactory::make("urisourcebin")
            .name(format!("source-{attempt}"))
            .property("uri", &url)
            .build()?;
        source.connect("source-setup", false, |args| {
            if let Some(element) = args.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
                // srtsrc reconnects for ever on its own; this element decides
                // (retries before media, the end of the stream after).
                if element.find_property("auto-reconnect").is_some() {
                    element.set_property("auto-reconnect", false);
                }
            }
            None
        });
        let this = self.downgrade();
        source.connect_pad_added(move |_, pad| {
            if let Some(imp) = this.upgrade() {
                if let Err(e) = imp.parse_stream(pad) {
                    gst::element_imp_error!(imp, gst::CoreError::Pad, ("{e}"));
                }
            }
        });
        self.watch_decided(&source);
        self.obj().add(&source)?;
        if let Some(state) = lock(&self.state).as_mut() {
            state.elements.push(source.clone());
        }
        source.sync_state_with_parent()?;
        Ok(())
    }

    /// A stream of the source: parsebin finds its container and codecs.
    fn parse_stream(&self, pad: &gst::Pad) -> Result<(), glib::BoolError> {
        let parse = gst::ElementFactory::make("parsebin").build()?;
        let this = self.downgrade();
        parse.connect_pad_added(move |_, pad| {
            let Some(imp) = this.upgrade() else {
                return;
            };
            match pad.current_caps() {
                Some(caps) => imp.expose_or_fail(pad, caps),
                // Some parsebin pads come before their caps: exposed on them.
                None => {
                    let this = imp.downgrade();
                    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
                        let Some(gst::PadProbeData::Event(event)) = &info.data else {
                            return gst::PadProbeReturn::Ok;
                        };
                        let gst::EventView::Caps(caps) = event.view() else {
                            return gst::PadProbeReturn::Ok;
                        };
                        if let Some(imp) = this.upgrade() {
                            imp.expose_or_fail(pad, caps.caps_owned());
                        }
                        gst::PadProbeReturn::Remove
                    });
                }
            }
        });
        self.watch_decided(&parse);
        self.obj().add(&parse)?;
        if let Some(state) = lock(&self.state).as_mut() {
            state.elements.push(parse.clone());
            state.undecided += 1;
        }
        parse.sync_state_with_parent()?;
        let sink = static_pad(&parse, "sink")?;
        pad.link(&sink)
            .map_err(|e| glib::bool_error!("cannot parse the stream: {e:?}"))?;
        Ok(())
    }

    fn expose_or_fail(&self, pad: &gst::Pad, caps: gst::Caps) {
        if let Err(e) = self.expose(pad, caps) {
            gst::element_imp_error!(self, gst::CoreError::Pad, ("{e}"));
        }
    }

    /// A parsed elementary stream: the first video and the first audio become
    /// the element's pads, the rest is dropped.
    fn expose(&self, pad: &gst::Pad, caps: gst::Caps) -> Result<(), glib::BoolError> {
        let media = caps.structure(0).map_or("", |s| s.name().as_str());
        let kind = MediaKind::of_caps(&caps);
        let obj = self.obj();
        let mut state_guard = lock(&self.state);
        let Some(state) = state_guard.as_mut() else {
            return Ok(());
        };
        let current = match kind {
            Some(MediaKind::Video) => state.video.clone(),
            Some(MediaKind::Audio) => state.audio.clone(),
            None => None,
        };
        // After a reconnect, the stream of a pad that lost its target takes
        // its place: downstream sees the same pad go on.
        if let (Some(kind), Some(ghost)) = (kind, &current) {
            if ghost.target().is_none() {
                gst::info!(CAT, imp = self, "{media} back after the reconnect");
                ghost.set_target(Some(pad))?;
                self.watch(pad, kind);
                return Ok(());
            }
        }
        let Some(kind) = kind.filter(|_| current.is_none()) else {
            gst::info!(CAT, imp = self, "dropping a stream of {media}");
            let sink = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()?;
            obj.add(&sink)?;
            state.elements.push(sink.clone());
            sink.sync_state_with_parent()?;
            let sink_pad = static_pad(&sink, "sink")?;
            pad.link(&sink_pad)
                .map_err(|e| glib::bool_error!("cannot drop a stream: {e:?}"))?;
            return Ok(());
        };

        // A file comes as fast as it can be read: pace it to the clock.
        let target = match state.pace {
            Pace::File => {
                // Each stream waits for the clock in its own thread, so that
                // one waiting does not hold the demuxer back from the other.
                let queue = gst::ElementFactory::make("queue").build()?;
                let sync = gst::ElementFactory::make("clocksync").build()?;
                obj.add_many([&queue, &sync])?;
                gst::Element::link_many([&queue, &sync])?;
                for element in [&queue, &sync] {
                    state.elements.push(element.clone());
                    element.sync_state_with_parent()?;
                }
                pad.link(&static_pad(&queue, "sink")?)
                    .map_err(|e| glib::bool_error!("cannot pace the stream: {e:?}"))?;
                static_pad(&sync, "src")?
            }
            Pace::Live => pad.clone(),
        };
        let name = kind.name();
        // The contract: a pad comes with its caps. Its stream's own caps event
        // may still be on its way through the pacing queue, so the parsed caps
        // (and the stream's start, from the parsed pad) are stored on it now.
        let ghost =
            crate::input::ghost_with_caps(&*obj, name, &target, pad, &gst::event::Caps::new(&caps))
                .ok_or_else(|| glib::bool_error!("cannot make the {name} pad"))?;
        self.watch(&target, kind);
        let first = state.video.is_none() && state.audio.is_none();
        match kind {
            MediaKind::Video => state.video = Some(ghost.clone()),
            MediaKind::Audio => state.audio = Some(ghost.clone()),
        }
        state.open_streams += 1;
        let url = state.url.clone();
        drop(state_guard);

        gst::info!(CAT, imp = self, "{name} stream: {caps}");
        obj.add_pad(&ghost)?;
        if first {
            self.post(&PublishStarted {
                input: InputKind::Url.name().into(),
                peer: host_of(&url),
                key: None,
                app: None,
            });
        }
        Ok(())
    }

    /// Counts `element`'s no-more-pads; the last one is this element's.
    fn watch_decided(&self, element: &gst::Element) {
        let this = self.downgrade();
        element.connect_no_more_pads(move |_| {
            let Some(imp) = this.upgrade() else {
                return;
            };
            let decided = lock(&imp.state).as_mut().is_some_and(|s| {
                s.undecided = s.undecided.saturating_sub(1);
                s.undecided == 0
            });
            if decided {
                gst::debug!(CAT, imp = imp, "every stream has its pad");
                imp.obj().no_more_pads();
            }
        });
    }

    /// Counts what a stream carries, and notes its end.
    fn watch(&self, pad: &gst::Pad, kind: MediaKind) {
        let this = self.downgrade();
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let Some(imp) = this.upgrade() else {
                    return gst::PadProbeReturn::Ok;
                };
                let eos = match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => {
                        imp.count(kind, buffer.size());
                        false
                    }
                    Some(gst::PadProbeData::Event(event)) => event.type_() == gst::EventType::Eos,
                    _ => false,
                };
                if eos && imp.holds_back_eos() {
                    // Ours to drop: taken out of the probe's hands.
                    drop(info.data.take());
                    return gst::PadProbeReturn::Handled;
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    fn count(&self, kind: MediaKind, bytes: usize) {
        let stats = lock(&self.state).as_mut().and_then(|s| {
            s.trouble_since = None;
            s.ended_by_eos = false;
            match kind {
                MediaKind::Video => s.bytes.0 += bytes as u64,
                MediaKind::Audio => s.bytes.1 += bytes as u64,
            }
            s.meter.due(s.bytes.0, s.bytes.1)
        });
        if let Some(stats) = stats {
            self.post(&stats);
        }
    }

    fn stream_ended(&self) {
        let all_ended = {
            let mut state = lock(&self.state);
            let Some(state) = state.as_mut() else {
                return;
            };
            state.open_streams = state.open_streams.saturating_sub(1);
            state.open_streams == 0
        };
        if all_ended {
            gst::info!(CAT, imp = self, "the source ended");
            self.post(&PublishStopped {
                reason: "the source ended".into(),
                key: None,
            });
        }
    }

    /// What a live source's trouble leads to: a retry (after a pause), an
    /// attempt already scheduled, or giving up once `retry-timeout` has
    /// passed since the trouble began (before the first media, or since the
    /// loss mid-stream). A file is never retried.
    fn decide(&self, by_eos: bool) -> Trouble {
        let timeout = Duration::from_secs(lock(&self.settings).retry_timeout.into());
        let mut state = lock(&self.state);
        let Some(s) = state
            .as_mut()
            .filter(|s| s.pace == Pace::Live && !s.stopping)
        else {
            return Trouble::GiveUp { ended: by_eos };
        };
        let since = *s.trouble_since.get_or_insert_with(Instant::now);
        // A source that said EOS (rtspsrc and srtsrc do when the other side
        // closes) ends the ingress as ended, not failed, if it never comes back.
        s.ended_by_eos |= by_eos;
        if since.elapsed() >= timeout {
            Trouble::GiveUp {
                ended: s.ended_by_eos,
            }
        } else if s.retrying {
            Trouble::Scheduled
        } else {
            s.retrying = true;
            Trouble::Retry(
                FIRST_RETRY
                    .saturating_mul(1 << s.attempt.saturating_sub(1).min(3))
                    .min(LAST_RETRY),
            )
        }
    }

    /// An error from inside: retried or posted (see [`Self::decide`]).
    fn on_error(&self, message: gst::Message) {
        match self.decide(false) {
            Trouble::GiveUp { ended: false } => self.parent_handle_message(message),
            Trouble::GiveUp { ended: true } => self.end_in_thread(),
            Trouble::Scheduled => {}
            Trouble::Retry(pause) => {
                if let gst::MessageView::Error(e) = message.view() {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "source failed ({}); again in {pause:?}",
                        e.error()
                    );
                }
                if !self.retry_in(pause) {
                    self.parent_handle_message(message);
                }
            }
        }
    }

    /// A stream's EOS: the end of the source (false: it goes on), or for a
    /// live source a loss that is retried (true: the EOS is held back).
    fn holds_back_eos(&self) -> bool {
        let retried = match self.decide(true) {
            Trouble::GiveUp { .. } => false,
            Trouble::Scheduled => true,
            Trouble::Retry(pause) => {
                gst::warning!(CAT, imp = self, "the source closed; again in {pause:?}");
                self.retry_in(pause)
            }
        };
        if !retried {
            self.stream_ended();
        }
        retried
    }

    /// Runs the next attempt after `pause`, from a thread of its own: the
    /// failing attempt's elements are shut down there, not from their own
    /// streaming threads. False if no thread could be made.
    fn retry_in(&self, pause: Duration) -> bool {
        let this = self.downgrade();
        std::thread::Builder::new()
            .name("urlingresssrc-retry".into())
            .spawn(move || {
                std::thread::sleep(pause);
                if let Some(imp) = this.upgrade() {
                    imp.retry();
                }
            })
            .is_ok()
    }

    /// A live source that closed and never came back: its end, as a source's
    /// end (EOS on every pad), from a thread of its own.
    fn end_in_thread(&self) {
        let this = self.downgrade();
        let _ = std::thread::Builder::new()
            .name("urlingresssrc-end".into())
            .spawn(move || {
                let Some(imp) = this.upgrade() else {
                    return;
                };
                let pads: Vec<gst::GhostPad> = lock(&imp.state)
                    .as_ref()
                    .map(|s| {
                        [&s.video, &s.audio]
                            .into_iter()
                            .flatten()
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                imp.post(&PublishStopped {
                    reason: "the source closed and did not come back".into(),
                    key: None,
                });
                for pad in pads {
                    pad.push_event(gst::event::Eos::new());
                }
            });
    }

    fn retry(&self) {
        let old = match lock(&self.state).as_mut() {
            Some(state) if !state.stopping => {
                state.retrying = false;
                // The pads stay; the next attempt's streams take them over.
                for ghost in [&state.video, &state.audio].into_iter().flatten() {
                    let _ = ghost.set_target(None::<&gst::Pad>);
                }
                std::mem::take(&mut state.elements)
            }
            _ => return,
        };
        let obj = self.obj();
        for element in old {
            let _ = element.set_state(gst::State::Null);
            let _ = obj.remove(&element);
        }
        if let Err(e) = self.connect() {
            gst::element_imp_error!(self, gst::ResourceError::OpenRead, ("{e}"));
        }
    }

    fn start(&self) -> Result<(), gst::StateChangeError> {
        let url = lock(&self.settings).url.clone().unwrap_or_default();
        if url.is_empty() {
            gst::element_imp_error!(self, gst::ResourceError::NotFound, ("no `url` set"));
            return Err(gst::StateChangeError);
        }
        *lock(&self.state) = Some(State {
            pace: pace_of(&url),
            url,
            elements: Vec::new(),
            attempt: 0,
            trouble_since: Some(Instant::now()),
            retrying: false,
            ended_by_eos: false,
            video: None,
            audio: None,
            open_streams: 0,
            undecided: 0,
            bytes: (0, 0),
            meter: StatsMeter::default(),
            stopping: false,
        });
        self.connect().map_err(|e| {
            gst::element_imp_error!(self, gst::CoreError::MissingPlugin, ("{e}"));
            gst::StateChangeError
        })
    }

    fn stop(&self) {
        let Some(mut state) = lock(&self.state).take() else {
            return;
        };
        state.stopping = true;
        let obj = self.obj();
        for element in state.elements {
            let _ = element.set_state(gst::State::Null);
            let _ = obj.remove(&element);
        }
        for pad in [state.video, state.audio].into_iter().flatten() {
            let _ = pad.set_active(false);
            let _ = obj.remove_pad(&pad);
        }
    }
}

impl ObjectImpl for UrlIngressSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("url")
                    .nick("URL")
                    .blurb("What to pull: http(s) file or HLS playlist, srt, rtsp(s), rtmp(s)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("retry-timeout")
                    .nick("Retry timeout")
                    .blurb("Seconds a live source (rtsp, srt, rtmp) is retried before its error")
                    .default_value(DEFAULT_RETRY_TIMEOUT)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "url" => settings.url = value.get().unwrap_or_default(),
            "retry-timeout" => {
                settings.retry_timeout = value.get().unwrap_or(DEFAULT_RETRY_TIMEOUT)
            }
            _ => {}
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        match pspec.name() {
            "url" => settings.url.to_value(),
            "retry-timeout" => settings.retry_timeout.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_element_flags(gst::ElementFlags::SOURCE);
    }
}

impl GstObjectImpl for UrlIngressSrc {}

impl ElementImpl for UrlIngressSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "URL ingress source",
                "Source/Network",
                "Pulls a URL (HTTP files and HLS, SRT, RTSP, RTMP) into parsed video and audio",
                "LiveKit Ingress contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // Whatever parsebin gives: the pipeline picks a decoder for it.
            ["video", "audio"]
                .into_iter()
                .map(|name| {
                    gst::PadTemplate::new(
                        name,
                        gst::PadDirection::Src,
                        gst::PadPresence::Sometimes,
                        &gst::Caps::new_any(),
                    )
                    .expect("a valid template")
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::NullToReady {
            self.start()?;
        }
        if transition == gst::StateChange::ReadyToNull {
            if let Some(state) = lock(&self.state).as_mut() {
                state.stopping = true;
            }
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToNull {
            self.stop();
        }
        // A source that goes on by itself, as the ingress's other inputs:
        // nothing prerolls (a file is paced to the clock from PLAYING on).
        match (transition, result) {
            (gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused, Ok(_)) => {
                Ok(gst::StateChangeSuccess::NoPreroll)
            }
            (_, result) => result,
        }
    }
}

impl BinImpl for UrlIngressSrc {
    fn handle_message(&self, message: gst::Message) {
        match message.view() {
            gst::MessageView::Error(_) => self.on_error(message),
            // The ingress is live: buffering must not pause it (urisourcebin
            // posts these for HTTP and HLS).
            gst::MessageView::Buffering(_) => {}
            _ => self.parent_handle_message(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_schemes_are_not_paced() {
        assert_eq!(pace_of("rtsp://cam/stream"), Pace::Live);
        assert_eq!(pace_of("SRT://host:9000?mode=caller"), Pace::Live);
        assert_eq!(pace_of("rtmp://host/live/key"), Pace::Live);
        assert_eq!(pace_of("https://host/a.m3u8"), Pace::File);
        assert_eq!(pace_of("http://host/a.mp4"), Pace::File);
        assert_eq!(pace_of("no scheme"), Pace::File);
    }

    #[test]
    fn only_the_host_is_told() {
        assert_eq!(
            host_of("rtsp://user:pass@cam.local:554/s?token=x"),
            "cam.local"
        );
        assert_eq!(host_of("not a url"), "");
    }
}
