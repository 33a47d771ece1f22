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

/// Running from start to stop.
struct State {
    url: String,
    pace: Pace,
    started: Instant,
    /// The elements of the current attempt (urisourcebin, parsebins, and
    /// what streams nobody takes end in).
    elements: Vec<gst::Element>,
    attempt: u32,
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
        let media = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let kind = if media.starts_with("video/") {
            Some(MediaKind::Video)
        } else if media.starts_with("audio/") {
            Some(MediaKind::Audio)
        } else {
            None
        };
        let obj = self.obj();
        let mut state_guard = lock(&self.state);
        let Some(state) = state_guard.as_mut() else {
            return Ok(());
        };
        let taken = match kind {
            Some(MediaKind::Video) => state.video.is_some(),
            Some(MediaKind::Audio) => state.audio.is_some(),
            None => true,
        };
        let Some(kind) = kind.filter(|_| !taken) else {
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
        let name = match kind {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        };
        let templ = obj
            .pad_template(name)
            .ok_or_else(|| glib::bool_error!("no {name} template"))?;
        let ghost = gst::GhostPad::builder_from_template_with_target(&templ, &target)?
            .name(name)
            .build();
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
        ghost.set_active(true)?;
        // The contract: a pad comes with its caps. Its stream's own caps event
        // is still on its way through the pacing queue, so the parsed caps are
        // stored on the pad now (the same caps follow).
        if caps.is_fixed() {
            let _ = ghost.store_sticky_event(&gst::event::StreamStart::new(&format!(
                "{}/{name}",
                obj.name()
            )));
            let _ = ghost.store_sticky_event(&gst::event::Caps::new(&caps));
        }
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
                match &info.data {
                    Some(gst::PadProbeData::Buffer(buffer)) => imp.count(kind, buffer.size()),
                    Some(gst::PadProbeData::Event(event))
                        if event.type_() == gst::EventType::Eos =>
                    {
                        imp.stream_ended()
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }

    fn count(&self, kind: MediaKind, bytes: usize) {
        let stats = lock(&self.state).as_mut().and_then(|s| {
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

    /// An error from inside: retried while a live source has not delivered
    /// anything and time is left, posted otherwise.
    fn on_error(&self, message: gst::Message) {
        let retry_in = {
            let settings = lock(&self.settings).clone();
            let state = lock(&self.state);
            state.as_ref().and_then(|s| {
                let untouched = s.video.is_none() && s.audio.is_none();
                let within =
                    s.started.elapsed() < Duration::from_secs(settings.retry_timeout.into());
                (s.pace == Pace::Live && untouched && within && !s.stopping).then(|| {
                    FIRST_RETRY
                        .saturating_mul(1 << s.attempt.saturating_sub(1).min(3))
                        .min(LAST_RETRY)
                })
            })
        };
        let Some(pause) = retry_in else {
            self.parent_handle_message(message);
            return;
        };
        if let gst::MessageView::Error(e) = message.view() {
            gst::warning!(
                CAT,
                imp = self,
                "cannot connect ({}); again in {pause:?}",
                e.error()
            );
        }
        // Not from the streaming thread that posted the error: the attempt's
        // elements are shut down from another one.
        let this = self.downgrade();
        let spawned = std::thread::Builder::new()
            .name("urlingresssrc-retry".into())
            .spawn(move || {
                std::thread::sleep(pause);
                if let Some(imp) = this.upgrade() {
                    imp.retry();
                }
            });
        if spawned.is_err() {
            self.parent_handle_message(message);
        }
    }

    fn retry(&self) {
        let old = match lock(&self.state).as_mut() {
            Some(state) if !state.stopping => std::mem::take(&mut state.elements),
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
            started: Instant::now(),
            elements: Vec::new(),
            attempt: 0,
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
