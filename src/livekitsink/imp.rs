use super::pad::{LiveKitSinkPad, PadKind};
use super::wallclock::Wallclock;
use super::TrackSource;
use crate::codec::{self, SpsProfile, VideoCodec, OPUS, VIDEO_CODECS};
use crate::livekit::publisher::{
    self, MediaInput, PublisherConfig, PublisherError, PublisherEvent,
};
use crate::livekit::token::{self, Credentials, Identity};
use crate::livekit::tracks::{AudioTrackSpec, LayerSpec, VideoTrackSpec, MAX_LAYERS};
use crate::messages::layer_active::LayerActive;
use crate::messages::livekit::{Connected, Disconnected, Reconnecting, Resumed, TrackPublished};
use crate::messages::BusMessage;
use crate::sync::lock;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "livekitsink",
        gst::DebugColorFlags::empty(),
        Some("Publishes into a LiveKit room"),
    )
});

/// Frames waiting for the network; beyond this the oldest news is stale anyway.
const MEDIA_QUEUE: usize = 512;
/// How long EOS waits for the leave to reach the server.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

const DEFAULT_URL: &str = "ws://127.0.0.1:7880";
const DEFAULT_VIDEO_TRACK_NAME: &str = "video";
const DEFAULT_VIDEO_TRACK_SOURCE: TrackSource = TrackSource::Camera;
const DEFAULT_AUDIO_TRACK_NAME: &str = "audio";
const DEFAULT_AUDIO_TRACK_SOURCE: TrackSource = TrackSource::Microphone;
const DEFAULT_DYNACAST: bool = true;
/// Milliseconds between `livekit-stats` messages.
const DEFAULT_STATS_INTERVAL: u32 = 5000;

#[derive(Debug, Clone)]
struct Settings {
    url: String,
    api_key: String,
    api_secret: String,
    token: String,
    room_name: String,
    participant_identity: String,
    participant_name: String,
    participant_metadata: String,
    video_track_name: String,
    video_track_source: TrackSource,
    audio_track_name: String,
    audio_track_source: TrackSource,
    dynacast: bool,
    /// Milliseconds between `livekit-stats` messages; 0: none.
    stats_interval: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            url: DEFAULT_URL.into(),
            api_key: String::new(),
            api_secret: String::new(),
            token: String::new(),
            room_name: String::new(),
            participant_identity: String::new(),
            participant_name: String::new(),
            participant_metadata: String::new(),
            video_track_name: DEFAULT_VIDEO_TRACK_NAME.into(),
            video_track_source: DEFAULT_VIDEO_TRACK_SOURCE,
            audio_track_name: DEFAULT_AUDIO_TRACK_NAME.into(),
            audio_track_source: DEFAULT_AUDIO_TRACK_SOURCE,
            dynacast: DEFAULT_DYNACAST,
            stats_interval: DEFAULT_STATS_INTERVAL,
        }
    }
}

/// What a sink pad has told us so far.
#[derive(Debug, Clone)]
struct PadInfo {
    kind: PadKind,
    caps: Option<gst::Caps>,
    /// The SPS of the first H.264 buffer, read when the caps lack the profile.
    sps: Option<SpsProfile>,
    bitrate: u32,
    /// A buffer has arrived: every sticky event before it (the bitrate tag
    /// among them) has been seen.
    flowing: bool,
    eos: bool,
}

impl PadInfo {
    fn new(kind: PadKind) -> PadInfo {
        PadInfo {
            kind,
            caps: None,
            sps: None,
            bitrate: 0,
            flowing: false,
            eos: false,
        }
    }

    /// Whether the join has all it needs from this pad: its caps, the SPS
    /// where the caps lack the profile, and for a video layer its bitrate.
    /// The bitrate tag travels after the caps (an encoder tags its first
    /// buffer), so a layer without one is waited for until it flows: the
    /// AddTrack then carries every layer's bitrate the stream announces.
    fn ready_to_join(&self) -> bool {
        self.caps.is_some()
            && !self.needs_sps()
            && (self.kind == PadKind::Audio || self.bitrate > 0 || self.flowing)
    }

    /// H.264 caps without a profile: the join waits for the stream's SPS.
    fn needs_sps(&self) -> bool {
        self.sps.is_none()
            && self
                .caps
                .as_ref()
                .and_then(|c| c.structure(0))
                .is_some_and(|s| matches!(VideoCodec::from_caps(s), Ok(None)))
    }
}

/// The codec and H.264 level of one video layer, from its caps or its SPS.
fn layer_codec(info: &PadInfo) -> Result<(VideoCodec, Option<u8>), String> {
    let s = info
        .caps
        .as_ref()
        .and_then(|c| c.structure(0))
        .ok_or("a video pad without caps")?;
    match (
        VideoCodec::from_caps(s).map_err(|e| e.to_string())?,
        info.sps,
    ) {
        (Some(codec), sps) => Ok((
            codec,
            codec::h264_level_from_caps(s).or(sps.map(|p| p.level_idc)),
        )),
        (None, Some(sps)) => match sps.codec {
            Some(codec) => Ok((codec, Some(sps.level_idc))),
            None => Err(format!(
                "unsupported H.264 profile (profile_idc {}, constraint flags {:#04x}): \
                 use constrained-baseline, main or high",
                sps.profile_idc, sps.constraint_flags
            )),
        },
        (None, None) => Err("H.264 caps without a profile and no SPS seen".into()),
    }
}

/// What the join publishes, from what the pads have told.
#[derive(Debug)]
struct TrackPlan {
    video: Option<VideoTrackSpec>,
    audio: Option<AudioTrackSpec>,
    /// Video pad name -> layer index, 0 the smallest picture.
    layers: HashMap<String, usize>,
}

/// The tracks the pads make: one video track whose layers are the video pads
/// ordered by picture size (whatever their names or the order they were
/// requested in), with their bitrates, and the first audio pad's track.
fn plan_tracks(settings: &Settings, pads: &HashMap<String, PadInfo>) -> Result<TrackPlan, String> {
    let mut video_pads: Vec<(&str, (u32, u32), u32)> = Vec::new();
    let mut video_codecs: Vec<(VideoCodec, Option<u8>)> = Vec::new();
    let mut audio_caps = None;
    for (name, info) in pads {
        let Some(caps) = info.caps.as_ref() else {
            continue;
        };
        match info.kind {
            PadKind::Video => {
                video_codecs.push(layer_codec(info)?);
                video_pads.push((name, picture_size(caps), info.bitrate));
            }
            PadKind::Audio if audio_caps.is_none() => audio_caps = Some(caps),
            PadKind::Audio => {}
        }
    }
    // Equal sizes (a source smaller than the preset's top layer) are ordered
    // by bitrate, so the layer announced as high is the one that carries most.
    video_pads
        .sort_by_key(|(name, (w, h), bitrate)| (u64::from(*w) * u64::from(*h), *bitrate, *name));
    if video_pads.len() > MAX_LAYERS {
        return Err(format!(
            "a LiveKit video track has at most {MAX_LAYERS} simulcast layers, {} video pads were linked",
            video_pads.len()
        ));
    }

    let video = match video_codecs.first() {
        None => None,
        Some(&(codec, _)) => {
            // One track, one codec: its layers are offered as one variant.
            if let Some((other, _)) = video_codecs.iter().find(|(c, _)| *c != codec) {
                return Err(format!(
                    "the video layers of one track must share a codec: {} and {}",
                    codec.name(),
                    other.name()
                ));
            }
            Some(VideoTrackSpec {
                name: settings.video_track_name.clone(),
                source: settings.video_track_source.to_proto(),
                codec,
                // The offer's level must cover the largest layer's.
                h264_level: video_codecs.iter().filter_map(|(_, l)| *l).max(),
                layers: video_pads
                    .iter()
                    .map(|&(_, (width, height), bitrate)| LayerSpec {
                        width,
                        height,
                        bitrate,
                    })
                    .collect(),
            })
        }
    };
    Ok(TrackPlan {
        video,
        audio: audio_caps.map(|caps| audio_spec(settings, caps)),
        layers: video_pads
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (name.to_string(), i))
            .collect(),
    })
}

/// The width and height a caps structure gives (0 where absent).
fn picture_size(caps: &gst::CapsRef) -> (u32, u32) {
    caps.structure(0).map_or((0, 0), |s| {
        (
            s.get::<i32>("width").unwrap_or(0).max(0) as u32,
            s.get::<i32>("height").unwrap_or(0).max(0) as u32,
        )
    })
}

/// The running session, from the first complete set of caps to stop.
struct Session {
    media: mpsc::Sender<MediaInput>,
    /// Video pad name -> layer index (0 is the smallest).
    layers: HashMap<String, usize>,
    /// Whether the audio track is published (or being published).
    has_audio: bool,
    /// The video codec's RTP clock (codec table).
    video_clock_rate: u32,
    left: std::sync::mpsc::Receiver<()>,
    dropped: u64,
}

/// `running_time` on an RTP clock of `clock_rate` Hz.
fn rtp_time(running_time: gst::ClockTime, clock_rate: u32) -> u64 {
    (u128::from(running_time.nseconds()) * u128::from(clock_rate) / 1_000_000_000) as u64
}

/// The audio track the settings and the pad's caps describe.
fn audio_spec(settings: &Settings, caps: &gst::CapsRef) -> AudioTrackSpec {
    let channels = caps
        .structure(0)
        .and_then(|s| s.get::<i32>("channels").ok())
        .unwrap_or(2);
    AudioTrackSpec {
        name: settings.audio_track_name.clone(),
        source: settings.audio_track_source.to_proto(),
        stereo: channels >= 2,
        dtx: true,
    }
}

#[derive(Default)]
struct State {
    pads: HashMap<String, PadInfo>,
    session: Option<Session>,
    /// Set when the session cannot start; buffers are refused from then on.
    failed: bool,
}

impl State {
    /// What `pad` has told so far (an entry made when it was requested).
    fn info(&mut self, pad: &LiveKitSinkPad) -> &mut PadInfo {
        self.pads
            .entry(pad.name().to_string())
            .or_insert_with(|| PadInfo::new(pad.kind()))
    }
}

#[derive(Default)]
pub struct LiveKitSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    wallclock: Wallclock,
}

/// The GStreamer error a failed session posts: refused credentials are
/// `NotAuthorized`, a server that cannot be reached or refuses to join is
/// `OpenWrite`, a refused codec is a stream `Format` error, a lost connection
/// `Write`, the rest `Failed`.
fn publisher_error_message(error: &PublisherError) -> gst::ErrorMessage {
    let text = error.to_string();
    match error {
        PublisherError::NotAuthorized(_) => {
            gst::error_msg!(gst::ResourceError::NotAuthorized, ("{}", text))
        }
        PublisherError::Unreachable(_) | PublisherError::Refused(_) => {
            gst::error_msg!(gst::ResourceError::OpenWrite, ("{}", text))
        }
        PublisherError::CodecRefused(_) => gst::error_msg!(gst::StreamError::Format, ("{}", text)),
        PublisherError::MediaLost(_) => gst::error_msg!(gst::ResourceError::Write, ("{}", text)),
        PublisherError::Other(_) => gst::error_msg!(gst::ResourceError::Failed, ("{}", text)),
    }
}

#[glib::object_subclass]
impl ObjectSubclass for LiveKitSink {
    const NAME: &'static str = "GstLiveKitSink";
    type Type = super::LiveKitSink;
    type ParentType = gst::Element;
}

impl LiveKitSink {
    fn sink_event(&self, pad: &LiveKitSinkPad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Caps(caps) => {
                let mut state = lock(&self.state);
                state.info(pad).caps = Some(caps.caps_owned());
                // An audio pad that came after the join: publish it now.
                let late_audio = match state.session.as_mut() {
                    Some(session) if pad.kind() == PadKind::Audio && !session.has_audio => {
                        session.has_audio = true;
                        Some(session.media.clone())
                    }
                    _ => None,
                };
                drop(state);
                match late_audio {
                    Some(media) => {
                        let settings = lock(&self.settings).clone();
                        let spec = audio_spec(&settings, caps.caps());
                        gst::info!(CAT, imp = self, "publishing audio late: {spec:?}");
                        let _ = media.blocking_send(MediaInput::AddAudio(spec));
                    }
                    None => self.maybe_start(),
                }
                true
            }
            EventView::Tag(tag) => {
                if let Some(bitrate) = tag
                    .tag()
                    .get::<gst::tags::NominalBitrate>()
                    .or_else(|| tag.tag().get::<gst::tags::Bitrate>())
                {
                    lock(&self.state).info(pad).bitrate = bitrate.get();
                    self.maybe_start();
                }
                true
            }
            EventView::Eos(_) => {
                self.on_pad_eos(pad);
                true
            }
            EventView::StreamStart(_) | EventView::Segment(_) => true,
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    fn on_pad_eos(&self, pad: &LiveKitSinkPad) {
        let (all_eos, media, left) = {
            let mut state = lock(&self.state);
            state.info(pad).eos = true;
            let all_eos = state.pads.values().all(|p| p.eos);
            let session = if all_eos { state.session.take() } else { None };
            let (media, left) = match session {
                Some(s) => (Some(s.media), Some(s.left)),
                None => (None, None),
            };
            (all_eos, media, left)
        };
        if !all_eos {
            return;
        }
        if let Some(media) = media {
            gst::info!(
                CAT,
                imp = self,
                "end of stream: unpublishing and leaving the room"
            );
            let _ = media.blocking_send(MediaInput::Finish);
            if let Some(left) = left {
                let _ = left.recv_timeout(LEAVE_TIMEOUT);
            }
        }
        let _ = self
            .obj()
            .post_message(gst::message::Eos::builder().src(&*self.obj()).build());
    }

    /// Starts the session once every requested pad has its caps.
    fn maybe_start(&self) {
        let settings = lock(&self.settings).clone();
        let mut state = lock(&self.state);
        if state.session.is_some() || state.failed {
            return;
        }
        let pads: Vec<gst::Pad> = self.obj().sink_pads();
        if pads.is_empty()
            || pads.iter().any(|p| {
                state
                    .pads
                    .get(p.name().as_str())
                    .is_none_or(|i| !i.ready_to_join())
            })
        {
            return;
        }
        match self.start_session(&settings, &state.pads) {
            Ok(session) => state.session = Some(session),
            Err(message) => {
                state.failed = true;
                drop(state);
                gst::element_imp_error!(self, gst::ResourceError::Settings, ("{}", message));
            }
        }
    }

    fn start_session(
        &self,
        settings: &Settings,
        pads: &HashMap<String, PadInfo>,
    ) -> Result<Session, String> {
        let TrackPlan {
            video,
            audio,
            layers,
        } = plan_tracks(settings, pads)?;

        let credentials = if settings.token.is_empty() {
            if settings.api_key.is_empty() || settings.api_secret.is_empty() {
                return Err("set either `token` or both `api-key` and `api-secret`".into());
            }
            if settings.participant_identity.is_empty() || settings.room_name.is_empty() {
                return Err(
                    "`room-name` and `participant-identity` are required to make a token".into(),
                );
            }
            let who = Identity {
                room: settings.room_name.clone(),
                identity: settings.participant_identity.clone(),
                name: settings.participant_name.clone(),
                metadata: settings.participant_metadata.clone(),
            };
            // Bad keys fail here, at start, rather than at the first join.
            token::publisher_token(&settings.api_key, &settings.api_secret, &who)?;
            Credentials::ApiKey {
                key: settings.api_key.clone(),
                secret: settings.api_secret.clone(),
                who,
                ttl: token::MINTED_TTL,
            }
        } else {
            Credentials::Token(settings.token.clone())
        };

        gst::info!(
            CAT,
            imp = self,
            "joining {} as {:?}: video {:?}, audio {:?}",
            settings.url,
            settings.participant_identity,
            video,
            audio
        );
        let config_has_audio = audio.is_some();
        let video_clock_rate = video.as_ref().map_or(0, |v| v.codec.info().clock_rate);
        let config = PublisherConfig {
            url: settings.url.clone(),
            credentials,
            video,
            audio,
            stats_interval: (settings.stats_interval > 0)
                .then(|| Duration::from_millis(settings.stats_interval.into())),
        };
        let (media_tx, media_rx) = mpsc::channel(MEDIA_QUEUE);
        let (left_tx, left_rx) = std::sync::mpsc::channel();
        let element = self.obj().downgrade();
        let pad_of_layer: HashMap<usize, String> =
            layers.iter().map(|(name, i)| (*i, name.clone())).collect();
        let dynacast = settings.dynacast;
        let on_event: publisher::EventSink = std::sync::Arc::new(move |event| {
            if matches!(
                event,
                PublisherEvent::Disconnected { .. } | PublisherEvent::Failed { .. }
            ) {
                let _ = left_tx.send(());
            }
            if let Some(element) = element.upgrade() {
                element
                    .imp()
                    .on_publisher_event(event, &pad_of_layer, dynacast);
            }
        });
        crate::runtime::spawn_dedicated(
            "livekit-publish",
            publisher::run(config, media_rx, on_event),
        )
        .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
        Ok(Session {
            has_audio: config_has_audio,
            video_clock_rate,
            media: media_tx,
            layers,
            left: left_rx,
            dropped: 0,
        })
    }

    /// What the session reports: keyframe requests and dynacast go upstream
    /// on the layer's pad, the rest becomes a bus message.
    fn on_publisher_event(
        &self,
        event: PublisherEvent,
        pad_of_layer: &HashMap<usize, String>,
        dynacast: bool,
    ) {
        match event {
            PublisherEvent::KeyframeRequest { layer } => {
                self.request_keyframes(layer, pad_of_layer)
            }
            PublisherEvent::LayerActive { layer, active } => {
                if dynacast {
                    self.set_layer_active(layer, active, pad_of_layer);
                }
            }
            event => self.post_publisher_event(event),
        }
    }

    fn video_pad(&self, layer: usize, pad_of_layer: &HashMap<usize, String>) -> Option<gst::Pad> {
        pad_of_layer
            .get(&layer)
            .and_then(|name| self.obj().static_pad(name))
    }

    /// Asks the encoder of `layer` (every layer when `None`) for a keyframe.
    fn request_keyframes(&self, layer: Option<usize>, pad_of_layer: &HashMap<usize, String>) {
        let pads: Vec<gst::Pad> = match layer {
            Some(layer) => self.video_pad(layer, pad_of_layer).into_iter().collect(),
            None => pad_of_layer
                .keys()
                .filter_map(|l| self.video_pad(*l, pad_of_layer))
                .collect(),
        };
        for pad in pads {
            gst::debug!(CAT, imp = self, "keyframe requested on {}", pad.name());
            let event = gst_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            pad.push_event(event);
        }
    }

    /// Dynacast: tells the encoder of `layer` whether anyone watches it.
    fn set_layer_active(&self, layer: usize, active: bool, pad_of_layer: &HashMap<usize, String>) {
        if let Some(pad) = self.video_pad(layer, pad_of_layer) {
            gst::info!(
                CAT,
                imp = self,
                "dynacast: layer {layer} ({}) active={active}",
                pad.name()
            );
            pad.push_event(LayerActive { active }.to_event());
        }
    }

    /// Reports a session event on the bus (and in the log); a failure is
    /// also the element's error.
    fn post_publisher_event(&self, event: PublisherEvent) {
        let obj = self.obj();
        let post = |message: gst::Message| {
            let _ = obj.post_message(message);
        };
        match event {
            PublisherEvent::Connected {
                room_sid,
                room_name,
                participant_sid,
            } => {
                gst::info!(
                    CAT,
                    imp = self,
                    "joined room {room_name} ({room_sid}) as {participant_sid}"
                );
                post(
                    Connected {
                        room_sid,
                        room_name,
                        participant_sid,
                    }
                    .to_message(&*obj),
                );
            }
            PublisherEvent::TrackPublished { kind, layers, info } => {
                gst::info!(
                    CAT,
                    imp = self,
                    "published {kind} track {} ({}) with {layers} layers",
                    info.name,
                    info.sid
                );
                post(
                    TrackPublished {
                        kind: kind.into(),
                        layers,
                        info: *info,
                    }
                    .to_message(&*obj),
                );
            }
            PublisherEvent::Stats(stats) => post(stats.to_message(&*obj)),
            PublisherEvent::MediaConnected => {
                gst::info!(CAT, imp = self, "media connected");
            }
            PublisherEvent::Resumed { reason } => {
                gst::info!(
                    CAT,
                    imp = self,
                    "signal connection lost ({reason}); resumed"
                );
                post(Resumed { reason }.to_message(&*obj));
            }
            PublisherEvent::Rejoining { reason } => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "connection to the room lost ({reason}); rejoining"
                );
                post(Reconnecting { reason }.to_message(&*obj));
            }
            PublisherEvent::Disconnected { reason } => {
                gst::info!(CAT, imp = self, "left the room: {reason}");
                post(Disconnected { reason }.to_message(&*obj));
            }
            PublisherEvent::Failed { error } => {
                post(
                    Disconnected {
                        reason: error.to_string(),
                    }
                    .to_message(&*obj),
                );
                self.post_error_message(publisher_error_message(&error));
            }
            // Handled on the pads by on_publisher_event.
            PublisherEvent::KeyframeRequest { .. } | PublisherEvent::LayerActive { .. } => {}
        }
    }

    fn chain(
        &self,
        pad: &LiveKitSinkPad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let running_time = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|seg| {
                seg.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(buffer.pts().or(buffer.dts())))
            })
            .or(buffer.pts())
            .unwrap_or(gst::ClockTime::ZERO);
        let wallclock = self.wallclock_of(running_time);

        let mut state = lock(&self.state);
        if state.failed {
            return Err(gst::FlowError::Error);
        }
        let Some(session) = state.session.as_mut() else {
            // Not joined yet: media before the room is ready is of no use to
            // anyone, but it ends the wait for a bitrate tag, and an SPS may
            // tell the profile the caps did not.
            let info = state.info(pad);
            let was_ready = info.ready_to_join();
            info.flowing = true;
            if info.needs_sps() {
                if let Some(sps) = buffer
                    .map_readable()
                    .ok()
                    .and_then(|m| codec::find_sps(m.as_slice()))
                {
                    gst::info!(CAT, obj = pad, "profile from the SPS: {sps:?}");
                    info.sps = Some(sps);
                }
            }
            if !was_ready && info.ready_to_join() {
                drop(state);
                self.maybe_start();
            }
            return Ok(gst::FlowSuccess::Ok);
        };
        let Ok(map) = buffer.map_readable() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let name = pad.name();
        let input = if let Some(layer) = session.layers.get(name.as_str()) {
            MediaInput::Video {
                layer: *layer,
                wallclock,
                rtp_time: rtp_time(running_time, session.video_clock_rate),
                data: map.as_slice().to_vec(),
            }
        } else {
            MediaInput::Audio {
                wallclock,
                rtp_time: rtp_time(running_time, OPUS.clock_rate),
                data: map.as_slice().to_vec(),
            }
        };
        if session.media.try_send(input).is_err() {
            session.dropped += 1;
            if session.dropped.is_power_of_two() {
                gst::warning!(
                    CAT,
                    imp = self,
                    "network too slow: {} frames dropped",
                    session.dropped
                );
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// The instant a running time corresponds to on the pipeline clock, moved
    /// back as far as frames have run ahead of it (see `wallclock`).
    fn wallclock_of(&self, running_time: gst::ClockTime) -> Instant {
        let now = Instant::now();
        let ahead_ns = self.obj().current_running_time().map_or(0, |now_rt| {
            let ahead = i128::from(running_time.nseconds()) - i128::from(now_rt.nseconds());
            ahead.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        });
        self.wallclock.instant_of(now, ahead_ns)
    }

    fn stop(&self) {
        self.wallclock.reset();
        let session = {
            let mut state = lock(&self.state);
            state.failed = false;
            for info in state.pads.values_mut() {
                info.eos = false;
            }
            state.session.take()
        };
        if let Some(session) = session {
            // Leaving is the IO task's job; it ends when it has sent the leave.
            let _ = session.media.try_send(MediaInput::Finish);
        }
    }
}

impl ObjectImpl for LiveKitSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let string = |name: &str, nick: &str, blurb: &str, default: Option<&str>| {
                glib::ParamSpecString::builder(name)
                    .nick(nick)
                    .blurb(blurb)
                    .default_value(default)
                    .mutable_ready()
                    .build()
            };
            vec![
                string("url", "URL", "WebSocket URL of the LiveKit server", Some(DEFAULT_URL)),
                string("api-key", "API key", "API key used to mint an access token (with api-secret)", None),
                string("api-secret", "API secret", "API secret used to mint an access token", None),
                string("token", "Token", "Access token to join with, instead of api-key and api-secret", None),
                string("room-name", "Room name", "Room to join", None),
                string("participant-identity", "Participant identity", "Identity of the publishing participant", None),
                string("participant-name", "Participant name", "Display name of the publishing participant", None),
                string("participant-metadata", "Participant metadata", "Metadata of the publishing participant", None),
                string("video-track-name", "Video track name", "Name of the published video track", Some(DEFAULT_VIDEO_TRACK_NAME)),
                glib::ParamSpecEnum::builder_with_default("video-track-source", DEFAULT_VIDEO_TRACK_SOURCE)
                    .nick("Video track source")
                    .blurb("Source the video track is announced as: camera or screen-share")
                    .mutable_ready()
                    .build(),
                string("audio-track-name", "Audio track name", "Name of the published audio track", Some(DEFAULT_AUDIO_TRACK_NAME)),
                glib::ParamSpecEnum::builder_with_default("audio-track-source", DEFAULT_AUDIO_TRACK_SOURCE)
                    .nick("Audio track source")
                    .blurb("Source the audio track is announced as: microphone or screen-share-audio")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("dynacast")
                    .nick("Dynacast")
                    .blurb("Pause video layers no one subscribes to (sends livekit-layer-active upstream)")
                    .default_value(DEFAULT_DYNACAST)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("stats-interval")
                    .nick("Stats interval")
                    .blurb("Milliseconds between livekit-stats messages (packets, bytes, NACKs, PLIs, FIRs per stream, round-trip time); 0 for none")
                    .default_value(DEFAULT_STATS_INTERVAL)
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
            "url" => s.url = text(),
            "api-key" => s.api_key = text(),
            "api-secret" => s.api_secret = text(),
            "token" => s.token = text(),
            "room-name" => s.room_name = text(),
            "participant-identity" => s.participant_identity = text(),
            "participant-name" => s.participant_name = text(),
            "participant-metadata" => s.participant_metadata = text(),
            "video-track-name" => s.video_track_name = text(),
            "video-track-source" => match value.get::<TrackSource>() {
                Ok(source) if source.is_video() => s.video_track_source = source,
                _ => gst::warning!(
                    CAT,
                    imp = self,
                    "video-track-source: camera or screen-share"
                ),
            },
            "audio-track-name" => s.audio_track_name = text(),
            "audio-track-source" => match value.get::<TrackSource>() {
                Ok(source) if !source.is_video() => s.audio_track_source = source,
                _ => gst::warning!(
                    CAT,
                    imp = self,
                    "audio-track-source: microphone or screen-share-audio"
                ),
            },
            "dynacast" => s.dynacast = value.get().unwrap_or(DEFAULT_DYNACAST),
            "stats-interval" => s.stats_interval = value.get().unwrap_or(DEFAULT_STATS_INTERVAL),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "url" => s.url.to_value(),
            "api-key" => s.api_key.to_value(),
            "api-secret" => s.api_secret.to_value(),
            "token" => s.token.to_value(),
            "room-name" => s.room_name.to_value(),
            "participant-identity" => s.participant_identity.to_value(),
            "participant-name" => s.participant_name.to_value(),
            "participant-metadata" => s.participant_metadata.to_value(),
            "video-track-name" => s.video_track_name.to_value(),
            "video-track-source" => s.video_track_source.to_value(),
            "audio-track-name" => s.audio_track_name.to_value(),
            "audio-track-source" => s.audio_track_source.to_value(),
            "dynacast" => s.dynacast.to_value(),
            "stats-interval" => s.stats_interval.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_element_flags(gst::ElementFlags::SINK);
    }
}

impl GstObjectImpl for LiveKitSink {}

impl ElementImpl for LiveKitSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "LiveKit room sink",
                "Sink/Network/Video/Audio",
                "Publishes simulcast video and Opus audio into a LiveKit room over WebRTC",
                "LiveKit Ingress contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // Any H.264 profile is accepted here: an unsupported one is an
            // error that names it at the join, not a refused link.
            let mut video = gst::Caps::new_empty();
            for row in &VIDEO_CODECS {
                let mut caps = gst::Caps::builder(row.caps_name);
                if row.h264.is_some() {
                    caps = caps
                        .field("stream-format", "byte-stream")
                        .field("alignment", "au");
                }
                video.make_mut().append(caps.build());
            }
            let audio = gst::Caps::builder(OPUS.caps_name).build();
            vec![
                gst::PadTemplate::with_gtype(
                    "video_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &video,
                    LiveKitSinkPad::static_type(),
                )
                .expect("valid video template"),
                gst::PadTemplate::with_gtype(
                    "audio_%u",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Request,
                    &audio,
                    LiveKitSinkPad::static_type(),
                )
                .expect("valid audio template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let kind = PadKind::of_template(templ.name_template())?;
        let prefix = templ.name_template().trim_end_matches("%u").to_string();
        let sink_pads = self.obj().sink_pads();
        let existing: Vec<String> = sink_pads.iter().map(|p| p.name().to_string()).collect();
        let existing_of = |k: PadKind| {
            sink_pads
                .iter()
                .filter_map(|p| p.downcast_ref::<LiveKitSinkPad>())
                .filter(|p| p.kind() == k)
                .count()
        };
        let name = match name {
            Some(n) if !existing.iter().any(|e| e == n) => n.to_string(),
            Some(n) => {
                gst::error!(CAT, imp = self, "pad {n} already exists");
                return None;
            }
            None => (0..)
                .map(|i| format!("{prefix}{i}"))
                .find(|n| !existing.contains(n))?,
        };
        if kind == PadKind::Audio && existing_of(PadKind::Audio) > 0 {
            gst::error!(
                CAT,
                imp = self,
                "a LiveKit participant publishes one audio track here"
            );
            return None;
        }
        if kind == PadKind::Video && existing_of(PadKind::Video) >= MAX_LAYERS {
            gst::error!(CAT, imp = self, "at most {MAX_LAYERS} video layers");
            return None;
        }
        // Simulcast layers are announced together, so video pads come before
        // the join; an audio track can still be published later.
        if lock(&self.state).session.is_some() && kind == PadKind::Video {
            gst::error!(
                CAT,
                imp = self,
                "video pads can't be added once the video track is published"
            );
            return None;
        }
        let pad = gst::PadBuilder::<LiveKitSinkPad>::from_template(templ)
            .name(name.as_str())
            .chain_function(|pad, parent, buffer| {
                LiveKitSink::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                LiveKitSink::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .build();
        pad.set_kind(kind);
        lock(&self.state)
            .pads
            .insert(name.clone(), PadInfo::new(kind));
        self.obj().add_pad(&pad).ok()?;
        Some(pad.upcast())
    }

    fn release_pad(&self, pad: &gst::Pad) {
        lock(&self.state).pads.remove(pad.name().as_str());
        let _ = self.obj().remove_pad(pad);
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        let success = self.parent_change_state(transition)?;
        // A live sink: nothing to preroll.
        if transition == gst::StateChange::ReadyToPaused {
            return Ok(gst::StateChangeSuccess::NoPreroll);
        }
        Ok(success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pad of `kind` that has had `caps` and, for video, a bitrate tag.
    fn pad(kind: PadKind, caps: &str, bitrate: u32) -> PadInfo {
        gst::init().expect("gstreamer");
        PadInfo {
            caps: Some(caps.parse().expect("caps")),
            bitrate,
            ..PadInfo::new(kind)
        }
    }

    fn h264(width: u32, height: u32, level: &str) -> String {
        format!(
            "video/x-h264,profile=constrained-baseline,level=(string){level},\
             width={width},height={height}"
        )
    }

    /// Layers are ordered by picture size, not by pad name or request order,
    /// and carry their own bitrates; the offer's level is the largest layer's.
    #[test]
    fn layers_are_ordered_by_size_with_their_bitrates() {
        let pads = HashMap::from([
            (
                "video_0".into(),
                pad(PadKind::Video, &h264(320, 180, "2.1"), 237_500),
            ),
            (
                "video_1".into(),
                pad(PadKind::Video, &h264(1280, 720, "3.1"), 1_900_000),
            ),
            (
                "video_7".into(),
                pad(PadKind::Video, &h264(640, 360, "3"), 671_751),
            ),
            (
                "audio_0".into(),
                pad(PadKind::Audio, "audio/x-opus,channels=1", 0),
            ),
        ]);
        let plan = plan_tracks(&Settings::default(), &pads).expect("a plan");
        let video = plan.video.expect("a video track");
        assert_eq!(video.codec, VideoCodec::H264Baseline);
        assert_eq!(video.h264_level, Some(31));
        let layers: Vec<(u32, u32, u32)> = video
            .layers
            .iter()
            .map(|l| (l.width, l.height, l.bitrate))
            .collect();
        assert_eq!(
            layers,
            [
                (320, 180, 237_500),
                (640, 360, 671_751),
                (1280, 720, 1_900_000)
            ]
        );
        assert_eq!(
            plan.layers,
            HashMap::from([
                ("video_0".to_string(), 0),
                ("video_7".to_string(), 1),
                ("video_1".to_string(), 2)
            ])
        );
        assert!(!plan.audio.expect("an audio track").stereo);
    }

    /// A 640x360 source through a 720p preset: the top layer, capped at the
    /// source's size, shares the middle one's; the richer one is the higher.
    #[test]
    fn layers_of_one_size_are_ordered_by_bitrate() {
        let pads = HashMap::from([
            (
                "video_0".into(),
                pad(PadKind::Video, &h264(320, 180, "2.1"), 237_500),
            ),
            (
                "video_1".into(),
                pad(PadKind::Video, &h264(640, 360, "3"), 1_900_000),
            ),
            (
                "video_2".into(),
                pad(PadKind::Video, &h264(640, 360, "3"), 671_751),
            ),
        ]);
        let plan = plan_tracks(&Settings::default(), &pads).expect("a plan");
        let bitrates: Vec<u32> = plan
            .video
            .expect("a video track")
            .layers
            .iter()
            .map(|l| l.bitrate)
            .collect();
        assert_eq!(bitrates, [237_500, 671_751, 1_900_000]);
        assert_eq!(plan.layers["video_1"], 2);
    }

    #[test]
    fn layers_of_two_codecs_or_too_many_layers_are_refused() {
        let vp8 = pad(PadKind::Video, "video/x-vp8,width=640,height=360", 500_000);
        let mixed = HashMap::from([
            (
                "video_0".into(),
                pad(PadKind::Video, &h264(1280, 720, "3.1"), 1),
            ),
            ("video_1".into(), vp8.clone()),
        ]);
        let error = plan_tracks(&Settings::default(), &mixed).unwrap_err();
        assert!(error.contains("must share a codec"), "{error}");

        let many: HashMap<String, PadInfo> = (0..=MAX_LAYERS)
            .map(|i| (format!("video_{i}"), vp8.clone()))
            .collect();
        let error = plan_tracks(&Settings::default(), &many).unwrap_err();
        assert!(error.contains("at most 3 simulcast layers"), "{error}");
    }

    /// Audio alone is a plan too (no video track, no layers).
    #[test]
    fn audio_alone_makes_an_audio_track() {
        let pads = HashMap::from([(
            "audio_0".into(),
            pad(PadKind::Audio, "audio/x-opus,channels=2", 0),
        )]);
        let plan = plan_tracks(&Settings::default(), &pads).expect("a plan");
        assert!(plan.video.is_none() && plan.layers.is_empty());
        assert!(plan.audio.expect("audio").stereo);
    }

    /// Running time onto the codecs' RTP clocks, exact and without overflow
    /// for a stream that runs for weeks.
    #[test]
    fn running_time_maps_onto_the_rtp_clock() {
        let ms = gst::ClockTime::from_mseconds;
        assert_eq!(rtp_time(ms(1000), 90_000), 90_000);
        assert_eq!(
            rtp_time(gst::ClockTime::from_nseconds(33_366_667), 90_000),
            3003
        );
        assert_eq!(rtp_time(ms(20), 48_000), 960);
        let weeks = gst::ClockTime::from_seconds(60 * 60 * 24 * 7 * 4);
        assert_eq!(rtp_time(weeks, 90_000), 2_419_200 * 90_000);
    }

    /// Each kind of failure posts the GStreamer error an application can match.
    #[test]
    fn publisher_errors_post_their_domain() {
        gst::init().expect("gstreamer");
        let _ = crate::plugin_register_static();
        let sink = gst::ElementFactory::make("livekitsink")
            .build()
            .expect("livekitsink")
            .downcast::<super::super::LiveKitSink>()
            .expect("a LiveKitSink");
        let bus = gst::Bus::new();
        sink.set_bus(Some(&bus));
        let posted = |error: PublisherError| {
            sink.imp()
                .post_error_message(publisher_error_message(&error));
            let message = bus.pop().expect("a message");
            let gst::MessageView::Error(e) = message.view() else {
                panic!("{message:?}");
            };
            assert_eq!(e.error().message(), error.to_string());
            e.error()
        };
        let auth = posted(PublisherError::NotAuthorized(
            "refused the credentials".into(),
        ));
        assert!(auth.matches(gst::ResourceError::NotAuthorized));
        let away = posted(PublisherError::Unreachable("did not answer".into()));
        assert!(away.matches(gst::ResourceError::OpenWrite));
        let codec = posted(PublisherError::CodecRefused("codec refused".into()));
        assert!(codec.matches(gst::StreamError::Format));
        let lost = posted(PublisherError::MediaLost("lost".into()));
        assert!(lost.matches(gst::ResourceError::Write));
    }
}
