use crate::claims::{next_event, Next};
use crate::lateness::LatenessGate;
use crate::messages::publish::{
    PublishPaused, PublishResumed, PublishStarted, PublishStopped, StatsMeter,
};
use crate::messages::rtmp::Metadata;
use crate::messages::BusMessage;
use crate::rtmp::flv::{self, AudioTag, InputVideoCodec, VideoTag};
use crate::rtmp::listener::{self, Claim, ListenerConfig, ListenerError, StreamEvent, TlsFiles};
use crate::rtmp::redact::redact_key;
use crate::rtmp::timestamps::{TimestampError, TimestampMapper};
use crate::sync::lock;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use rml_rtmp::sessions::StreamMetadata;
use std::sync::{Arc, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtmpingresssrc",
        gst::DebugColorFlags::empty(),
        Some("RTMP ingress source"),
    )
});

/// With no metadata to say which tracks come, pads are final after this much media.
const TRACKS_KNOWN_AFTER: Duration = Duration::from_secs(2);
/// An accepted publish that brings no sequence header (so no pad, nothing
/// for the pipeline) within this long is ended with an error: a publisher
/// that only pings or sends unusable tags must not hold the pipeline forever.
/// The listener's idle timeout cannot catch it, as bytes do arrive.
const FIRST_MEDIA_DEADLINE: Duration = Duration::from_secs(15);

const DEFAULT_ADDRESS: &str = "0.0.0.0";
const DEFAULT_PORT: u32 = 1935;
/// Seconds from connect to an accepted publish.
const DEFAULT_HANDSHAKE_TIMEOUT: u32 = 10;
/// Seconds without data before a publish is considered gone.
const DEFAULT_IDLE_TIMEOUT: u32 = 30;
/// Milliseconds behind the live edge past which frames are dropped (see
/// `crate::lateness`).
const DEFAULT_MAX_LATENESS: u32 = crate::lateness::DEFAULT_MAX_LATENESS_MS;
/// Seconds a stream waits for its publisher to come back: none, so a
/// launch line ends when its publisher leaves, as before.
const DEFAULT_RECONNECT_GRACE: u32 = 0;

#[derive(Debug, Clone)]
struct Settings {
    address: String,
    port: u32,
    stream_key: String,
    app: String,
    handshake_timeout: u32,
    idle_timeout: u32,
    tls_certificate: String,
    tls_key: String,
    max_lateness: u32,
    reconnect_grace: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            address: DEFAULT_ADDRESS.into(),
            port: DEFAULT_PORT,
            stream_key: String::new(),
            app: String::new(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls_certificate: String::new(),
            tls_key: String::new(),
            max_lateness: DEFAULT_MAX_LATENESS,
            reconnect_grace: DEFAULT_RECONNECT_GRACE,
        }
    }
}

/// The streaming thread and how to stop it.
struct State {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
pub struct RtmpIngressSrc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

/// The GStreamer error for a listener that could not be set up: the key held
/// by another element is busy, unusable TLS files are settings, the rest
/// (bind, unreadable files) cannot be opened.
fn listener_error_domain(e: &ListenerError) -> gst::ResourceError {
    match e {
        ListenerError::KeyClaimed { .. } => gst::ResourceError::Busy,
        ListenerError::Tls(_) => gst::ResourceError::Settings,
        ListenerError::Bind { .. } | ListenerError::TlsFile { .. } => gst::ResourceError::OpenRead,
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtmpIngressSrc {
    const NAME: &'static str = "GstRtmpIngressSrc";
    type Type = super::RtmpIngressSrc;
    type ParentType = gst::Element;
}

/// Per-publish streaming state, owned by the streaming thread.
struct Stream {
    video: Option<gst::Pad>,
    audio: Option<gst::Pad>,
    no_more_pads: bool,
    expect_video: Option<bool>,
    expect_audio: Option<bool>,
    timestamps: TimestampMapper,
    /// Drops what a stalled connection delivers too late to matter.
    lateness: LatenessGate,
    max_lateness_ns: u64,
    /// The publisher left: until when the stream waits for the key to publish
    /// again, and why it left.
    grace: Option<(Instant, String)>,
    /// Video waits for a keyframe (a publisher came back: the decoder must
    /// not get its frames before their reference).
    need_keyframe: bool,
    first_media: Option<Instant>,
    /// When the publish was accepted (Started), until a pad exists.
    waiting_since: Option<Instant>,
    key: String,
    video_bytes: u64,
    audio_bytes: u64,
    stats: StatsMeter,
}

impl RtmpIngressSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let tls = match (
            settings.tls_certificate.is_empty(),
            settings.tls_key.is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some(TlsFiles {
                certificate: settings.tls_certificate.clone(),
                key: settings.tls_key.clone(),
            }),
            _ => {
                return Err(gst::error_msg!(
                    gst::ResourceError::Settings,
                    ["RTMPS needs both tls-certificate and tls-key"]
                ))
            }
        };
        let port = u16::try_from(settings.port).map_err(|_| {
            gst::error_msg!(
                gst::ResourceError::Settings,
                ["port {} out of range", settings.port]
            )
        })?;
        let config = ListenerConfig {
            address: settings.address.clone(),
            port,
            tls,
            handshake_timeout: Duration::from_secs(settings.handshake_timeout.into()),
            idle_timeout: Duration::from_secs(settings.idle_timeout.into()),
        };
        let app = (!settings.app.is_empty()).then_some(settings.app.as_str());
        let claim = listener::listener(&config)
            .and_then(|listener| listener.claim(&settings.stream_key, app))
            .map_err(|e| gst::error_msg!(listener_error_domain(&e), ("{}", e)))?;
        gst::info!(
            CAT,
            imp = self,
            "waiting for a publish on {} key {}",
            claim.local_addr(),
            redact_key(&settings.stream_key)
        );

        let stop = Arc::new(Notify::new());
        let element = self.obj().clone();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rtmpingresssrc:{}", settings.port))
            .spawn(move || element.imp().stream(claim, thread_stop))
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
        let obj = self.obj();
        for pad in obj.src_pads() {
            let _ = pad.set_active(false);
            let _ = obj.remove_pad(&pad);
        }
    }

    /// The streaming thread: one publish from start to end.
    fn stream(&self, mut claim: Claim, stop: Arc<Notify>) {
        let max_lateness = u64::from(lock(&self.settings).max_lateness) * 1_000_000;
        let mut stream = Stream {
            video: None,
            audio: None,
            no_more_pads: false,
            expect_video: None,
            expect_audio: None,
            timestamps: TimestampMapper::default(),
            lateness: LatenessGate::new(max_lateness),
            max_lateness_ns: max_lateness,
            grace: None,
            need_keyframe: false,
            first_media: None,
            waiting_since: None,
            key: String::new(),
            video_bytes: 0,
            audio_bytes: 0,
            stats: StatsMeter::default(),
        };
        loop {
            let media_deadline = stream
                .waiting_since
                .filter(|_| stream.video.is_none() && stream.audio.is_none())
                .map(|since| since + FIRST_MEDIA_DEADLINE);
            let deadline = stream.grace.as_ref().map(|(until, _)| *until);
            let next = next_event(&mut claim.events, &stop, deadline.or(media_deadline));
            let event = match next {
                Next::Stop => return,
                Next::Event(Some(event)) => event,
                // The listener let go of the channel without saying why:
                // still an end, or the pipeline would wait forever.
                Next::Event(None) => StreamEvent::Ended {
                    reason: "the listener closed".into(),
                },
                Next::NoMedia if stream.grace.is_some() => {
                    let reason = stream.grace.take().map(|(_, r)| r).unwrap_or_default();
                    self.on_ended(&mut stream, reason);
                    return;
                }
                Next::NoMedia => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Demux,
                        (
                            "the publisher sent no audio or video sequence header within {:?}",
                            FIRST_MEDIA_DEADLINE
                        )
                    );
                    // Returning drops the claim: the listener closes the connection.
                    return;
                }
            };
            match self.handle_event(&mut stream, event) {
                Ok(true) => {}
                Ok(false) => return,
                Err(flow) => {
                    gst::debug!(CAT, imp = self, "streaming stopped: {flow:?}");
                    return;
                }
            }
        }
    }

    fn post(&self, message: &impl BusMessage) {
        let obj = self.obj();
        let _ = obj.post_message(message.to_message(&*obj));
    }

    /// Handles one event; `Ok(false)` when the publish is over.
    fn handle_event(
        &self,
        stream: &mut Stream,
        event: StreamEvent,
    ) -> Result<bool, gst::FlowError> {
        match event {
            StreamEvent::Started { app, key, peer } => self.on_started(stream, app, key, peer),
            StreamEvent::Metadata(metadata) => self.on_metadata(stream, &metadata),
            StreamEvent::Video { timestamp, data } => self.on_video(stream, timestamp, &data)?,
            StreamEvent::Audio { timestamp, data } => self.on_audio(stream, timestamp, &data)?,
            StreamEvent::Ended { reason } => {
                if self.pause(stream, &reason) {
                    return Ok(true);
                }
                self.on_ended(stream, reason);
                return Ok(false);
            }
        }
        self.maybe_post_stats(stream);
        Ok(true)
    }

    /// The publisher left: with a grace period and media flowing, the pads
    /// stay (no EOS, so the room keeps the participant and its tracks) and
    /// the stream waits for the key to publish again. Whether it waits.
    /// Only an element given its key waits: one taking any key would take
    /// whichever key published next into the same stream.
    fn pause(&self, stream: &mut Stream, reason: &str) -> bool {
        let (grace, any_key) = {
            let settings = lock(&self.settings);
            (settings.reconnect_grace, settings.stream_key.is_empty())
        };
        let flowing = stream.video.is_some() || stream.audio.is_some();
        if grace == 0 || any_key || !flowing || stream.grace.is_some() {
            return false;
        }
        gst::info!(
            CAT,
            imp = self,
            "publisher left ({reason}): waiting {grace} s for it to come back"
        );
        self.post(&PublishPaused {
            reason: reason.to_string(),
            grace,
        });
        stream.grace = Some((
            Instant::now() + Duration::from_secs(grace.into()),
            reason.to_string(),
        ));
        // The next publish has its own clock: its first frame maps to the
        // running time it arrives at, after the gap.
        stream.timestamps = TimestampMapper::default();
        stream.lateness = LatenessGate::new(stream.max_lateness_ns);
        stream.need_keyframe = true;
        true
    }

    fn on_started(
        &self,
        stream: &mut Stream,
        app: String,
        key: String,
        peer: std::net::SocketAddr,
    ) {
        if stream.grace.take().is_some() {
            gst::info!(CAT, imp = self, "publisher back from {peer}");
            self.post(&PublishResumed {
                peer: peer.to_string(),
            });
            return;
        }
        gst::info!(
            CAT,
            imp = self,
            "publish of {} on {app:?} from {peer}",
            redact_key(&key)
        );
        stream.waiting_since = Some(Instant::now());
        // The key goes on the bus only to an application that lets
        // any key in (it needs to know which one came); one that set
        // the key knows it, and GStreamer's debug log prints every
        // message posted.
        let any_key = lock(&self.settings).stream_key.is_empty();
        stream.key = if any_key { key } else { String::new() };
        self.post(&PublishStarted {
            input: "rtmp".into(),
            peer: peer.to_string(),
            key: any_key.then(|| stream.key.clone()),
            app: Some(app),
        });
    }

    /// One FLV video tag: a sequence header makes or updates the pad, a frame
    /// is pushed with its timestamps.
    fn on_video(
        &self,
        stream: &mut Stream,
        timestamp: u32,
        data: &bytes::Bytes,
    ) -> Result<(), gst::FlowError> {
        stream.video_bytes += data.len() as u64;
        match flv::parse_video(data) {
            Ok(VideoTag::SequenceHeader { codec, config }) => {
                self.ensure_video_pad(stream, codec, &config)?
            }
            Ok(VideoTag::Frame {
                keyframe,
                cts,
                data,
                ..
            }) => {
                if stream.need_keyframe && !keyframe {
                    return Ok(());
                }
                stream.need_keyframe = false;
                if let Some(pad) = stream.video.clone() {
                    let (pts, dts) = self.timestamps(stream, timestamp, cts)?;
                    let verdict = stream
                        .lateness
                        .video(self.arrival(), dts.nseconds(), keyframe);
                    if !crate::input::on_time(&*self.obj(), *CAT, verdict) {
                        return Ok(());
                    }
                    let mut buffer = gst::Buffer::from_slice(data);
                    if let Some(b) = buffer.get_mut() {
                        b.set_pts(pts);
                        b.set_dts(dts);
                        if !keyframe {
                            b.set_flags(gst::BufferFlags::DELTA_UNIT);
                        }
                    }
                    self.push(&pad, buffer)?;
                }
            }
            Ok(VideoTag::Other) => {}
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::CodecNotFound,
                    ("unusable video from the publisher: {}", e)
                );
                return Err(gst::FlowError::NotNegotiated);
            }
        }
        self.check_tracks_known(stream);
        Ok(())
    }

    /// One FLV audio tag: the AAC config makes or updates the pad, a frame
    /// is pushed with its timestamp.
    fn on_audio(
        &self,
        stream: &mut Stream,
        timestamp: u32,
        data: &bytes::Bytes,
    ) -> Result<(), gst::FlowError> {
        stream.audio_bytes += data.len() as u64;
        match flv::parse_audio(data) {
            Ok(AudioTag::AacConfig(config)) => self.ensure_audio_pad(stream, &config)?,
            Ok(AudioTag::AacFrame(data)) => {
                if let Some(pad) = stream.audio.clone() {
                    let (pts, _) = self.timestamps(stream, timestamp, 0)?;
                    let verdict = stream.lateness.audio(self.arrival(), pts.nseconds());
                    if !crate::input::on_time(&*self.obj(), *CAT, verdict) {
                        return Ok(());
                    }
                    let mut buffer = gst::Buffer::from_slice(data);
                    if let Some(b) = buffer.get_mut() {
                        b.set_pts(pts);
                        b.set_dts(pts);
                    }
                    self.push(&pad, buffer)?;
                }
            }
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::CodecNotFound,
                    ("unusable audio from the publisher: {}", e)
                );
                return Err(gst::FlowError::NotNegotiated);
            }
        }
        self.check_tracks_known(stream);
        Ok(())
    }

    /// The publish is over: the bus hears why, and every pad gets EOS (the
    /// pipeline gets one itself when nothing was ever published).
    fn on_ended(&self, stream: &mut Stream, reason: String) {
        gst::info!(CAT, imp = self, "publish ended: {reason}");
        self.post(&PublishStopped {
            reason,
            key: (!stream.key.is_empty()).then(|| stream.key.clone()),
        });
        if !stream.no_more_pads {
            self.obj().no_more_pads();
        }
        for pad in [&stream.video, &stream.audio].into_iter().flatten() {
            pad.push_event(gst::event::Eos::new());
        }
        if stream.video.is_none() && stream.audio.is_none() {
            // Nothing was ever published: the pipeline still has to end.
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Eos::builder().src(&*obj).build());
        }
    }

    fn on_metadata(&self, stream: &mut Stream, m: &StreamMetadata) {
        stream.expect_video = Some(m.video_codec_id.is_some() || m.video_width.is_some());
        stream.expect_audio = Some(m.audio_codec_id.is_some() || m.audio_sample_rate.is_some());
        self.post(&Metadata::from(m));
    }

    /// Signals no-more-pads once every announced track has its pad (or after a
    /// while without metadata).
    fn check_tracks_known(&self, stream: &mut Stream) {
        if stream.no_more_pads {
            return;
        }
        let first = *stream.first_media.get_or_insert_with(Instant::now);
        let video_done = stream.video.is_some() || stream.expect_video == Some(false);
        let audio_done = stream.audio.is_some() || stream.expect_audio == Some(false);
        let both_known = stream.expect_video.is_some() && video_done && audio_done;
        let have_both = stream.video.is_some() && stream.audio.is_some();
        if both_known || have_both || first.elapsed() > TRACKS_KNOWN_AFTER {
            stream.no_more_pads = true;
            self.obj().no_more_pads();
        }
    }

    /// PTS and DTS of a message: the publisher's clock, extended past its 32-bit
    /// wrap and mapped to the running time of the first frame. Timestamps that
    /// leave the representable range end the publish with an error.
    fn timestamps(
        &self,
        stream: &mut Stream,
        timestamp: u32,
        cts: i32,
    ) -> Result<(gst::ClockTime, gst::ClockTime), gst::FlowError> {
        let obj = self.obj();
        let base = || {
            obj.current_running_time()
                .unwrap_or(gst::ClockTime::ZERO)
                .nseconds()
        };
        match stream.timestamps.map(timestamp, cts, base) {
            Ok((pts, dts)) => Ok((
                gst::ClockTime::from_nseconds(pts),
                gst::ClockTime::from_nseconds(dts),
            )),
            Err(e @ TimestampError::OutOfRange { .. }) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e));
                Err(gst::FlowError::Error)
            }
        }
    }

    /// Now, in running time: when the frame being handled arrived here.
    fn arrival(&self) -> u64 {
        self.obj()
            .current_running_time()
            .unwrap_or(gst::ClockTime::ZERO)
            .nseconds()
    }

    fn push(&self, pad: &gst::Pad, buffer: gst::Buffer) -> Result<(), gst::FlowError> {
        match pad.push(buffer) {
            Ok(_) | Err(gst::FlowError::NotLinked) => Ok(()),
            Err(gst::FlowError::Flushing) => Err(gst::FlowError::Flushing),
            Err(gst::FlowError::Eos) => Ok(()),
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("streaming stopped: {:?}", err)
                );
                Err(err)
            }
        }
    }

    fn ensure_video_pad(
        &self,
        stream: &mut Stream,
        codec: InputVideoCodec,
        config: &[u8],
    ) -> Result<(), gst::FlowError> {
        let caps = match codec {
            InputVideoCodec::H264 => gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .field("codec_data", gst::Buffer::from_slice(config.to_vec()))
                .build(),
            InputVideoCodec::H265 => gst::Caps::builder("video/x-h265")
                .field("stream-format", "hvc1")
                .field("alignment", "au")
                .field("codec_data", gst::Buffer::from_slice(config.to_vec()))
                .build(),
            InputVideoCodec::Av1 => gst::Caps::builder("video/x-av1")
                .field("stream-format", "obu-stream")
                .field("alignment", "tu")
                .field("codec_data", gst::Buffer::from_slice(config.to_vec()))
                .build(),
            InputVideoCodec::Vp9 => gst::Caps::builder("video/x-vp9").build(),
        };
        if !has_decoder_for(&caps) {
            gst::element_imp_error!(
                self,
                gst::StreamError::CodecNotFound,
                (
                    "the publisher sends {} video, which this installation cannot decode",
                    codec.name()
                )
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        stream.video = Some(self.ensure_pad(stream.video.take(), "video", caps));
        Ok(())
    }

    fn ensure_audio_pad(&self, stream: &mut Stream, config: &[u8]) -> Result<(), gst::FlowError> {
        let Some((rate, channels)) = flv::aac_config_rate_channels(config) else {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("unreadable AAC configuration from the publisher")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let caps = gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .field("codec_data", gst::Buffer::from_slice(config.to_vec()))
            .field("rate", rate as i32)
            .field("channels", channels.max(1) as i32)
            .build();
        stream.audio = Some(self.ensure_pad(stream.audio.take(), "audio", caps));
        Ok(())
    }

    /// The pad `name` with `caps`: created and added the first time, new caps after.
    fn ensure_pad(&self, existing: Option<gst::Pad>, name: &str, caps: gst::Caps) -> gst::Pad {
        if let Some(pad) = existing {
            if pad.current_caps().as_ref() != Some(&caps) {
                pad.push_event(gst::event::Caps::new(&caps));
            }
            return pad;
        }
        let obj = self.obj();
        let templ = obj.pad_template(name).expect("pad template");
        let pad = gst::Pad::builder_from_template(&templ)
            .name(name)
            .query_function(|pad, parent, query| {
                RtmpIngressSrc::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .build();
        let _ = pad.set_active(true);
        let stream_id = pad.create_stream_id(&*obj, Some(name));
        let _ = pad.store_sticky_event(&gst::event::StreamStart::builder(&stream_id).build());
        let _ = pad.store_sticky_event(&gst::event::Caps::new(&caps));
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        let _ = pad.store_sticky_event(&gst::event::Segment::new(&segment));
        let _ = obj.add_pad(&pad);
        pad
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                // Live: buffers are timestamped when they arrive.
                q.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                true
            }
            gst::QueryViewMut::Scheduling(q) => {
                q.set(gst::SchedulingFlags::SEQUENTIAL, 1, -1, 0);
                q.add_scheduling_modes([gst::PadMode::Push]);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn maybe_post_stats(&self, stream: &mut Stream) {
        if let Some(stats) = stream.stats.due(stream.video_bytes, stream.audio_bytes) {
            self.post(&stats);
        }
    }
}

/// Whether some installed decoder takes `caps` (after a parser if needed).
fn has_decoder_for(caps: &gst::Caps) -> bool {
    crate::decode::decoder_factories(caps).is_ok()
}

impl ObjectImpl for RtmpIngressSrc {
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
                    .blurb("TCP port to listen on (shared by every rtmpingresssrc on it; 0 picks a free one)")
                    .maximum(65535)
                    .default_value(DEFAULT_PORT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("stream-key")
                    .nick("Stream key")
                    .blurb("Accept only publishes on this key (empty: any key no other element claimed)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("app")
                    .nick("Application")
                    .blurb("Accept only this RTMP application name (empty: any)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("handshake-timeout")
                    .nick("Handshake timeout")
                    .blurb("Seconds a connection may take from connecting to an accepted publish (one deadline, not per read)")
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
                glib::ParamSpecUInt::builder("max-lateness")
                    .nick("Maximum lateness")
                    .blurb("Milliseconds a frame may arrive behind the live edge (the smallest delay seen) \
                            before it is dropped, with every frame after it up to the next keyframe late by \
                            at most half this, and the audio beside them: a publisher whose connection \
                            stalled is live again after its backlog instead of behind for good (0: never drop)")
                    .default_value(DEFAULT_MAX_LATENESS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("reconnect-grace")
                    .nick("Reconnect grace")
                    .blurb("Seconds to wait, when the publisher leaves, for the same key to publish again: \
                            meanwhile the pads stay without EOS and the next publish goes on through them \
                            from its first keyframe (ingress-publish-paused, then ingress-publish-resumed); \
                            only with stream-key set; 0: the stream ends when the publisher leaves")
                    .default_value(DEFAULT_RECONNECT_GRACE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tls-certificate")
                    .nick("TLS certificate")
                    .blurb("PEM certificate file: serve RTMPS (with tls-key)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("tls-key")
                    .nick("TLS key")
                    .blurb("PEM PKCS#8 private key file for RTMPS")
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
            "app" => s.app = text(),
            "handshake-timeout" => {
                s.handshake_timeout = value.get().unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
            }
            "idle-timeout" => s.idle_timeout = value.get().unwrap_or(DEFAULT_IDLE_TIMEOUT),
            "tls-certificate" => s.tls_certificate = text(),
            "tls-key" => s.tls_key = text(),
            "max-lateness" => s.max_lateness = value.get().unwrap_or(DEFAULT_MAX_LATENESS),
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
            "app" => s.app.to_value(),
            "handshake-timeout" => s.handshake_timeout.to_value(),
            "idle-timeout" => s.idle_timeout.to_value(),
            "tls-certificate" => s.tls_certificate.to_value(),
            "tls-key" => s.tls_key.to_value(),
            "max-lateness" => s.max_lateness.to_value(),
            "reconnect-grace" => s.reconnect_grace.to_value(),
            _ => glib::Value::from_type(pspec.value_type()),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_element_flags(gst::ElementFlags::SOURCE);
    }
}

impl GstObjectImpl for RtmpIngressSrc {}

impl ElementImpl for RtmpIngressSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RTMP ingress source",
                "Source/Network",
                "RTMP(S) server that accepts a publish authenticated by its stream key",
                "LiveKit Ingress contributors",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let video = crate::input::any_of(&[
                "video/x-h264",
                "video/x-h265",
                "video/x-av1",
                "video/x-vp9",
            ]);
            let audio = gst::Caps::builder("audio/mpeg")
                .field("mpegversion", 4i32)
                .build();
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
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::PausedToReady => self.stop(),
            _ => {}
        }
        let success = self.parent_change_state(transition)?;
        if transition == gst::StateChange::ReadyToPaused {
            // A live source: nothing to preroll until a publisher sends.
            return Ok(gst::StateChangeSuccess::NoPreroll);
        }
        Ok(success)
    }
}
