//! One publishing session: join a room over LiveKit's signal connection,
//! announce the tracks, negotiate one send-only PeerConnection with str0m, then
//! send media and follow the room (keyframe requests, dynacast, leave).
//!
//! The WebRTC state lives in str0m's sans-IO `Rtc`; this task is only its IO
//! loop: one UDP socket, the signal events, the media channel and str0m's timer.

use super::layer_sync::LayerSync;
use super::stats::{SendStats, StatsCollector, StreamStats};
use super::tracks::{AudioTrackSpec, VideoTrackSpec};
use super::trickle;
use crate::codec::OPUS;
use livekit_protocol as proto;
use livekit_signaling::{SignalClient, SignalError, SignalEvent, SignalOptions};
use proto::signal_request::Message as Request;
use proto::signal_response::Message as Response;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How long joining, announcing a track or connecting media may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to publish, and what.
#[derive(Clone, Debug)]
pub struct PublisherConfig {
    /// `ws://` or `wss://` URL of the LiveKit server.
    pub url: String,
    /// Access token with the room join and publish grants.
    pub token: String,
    pub video: Option<VideoTrackSpec>,
    pub audio: Option<AudioTrackSpec>,
    /// How often to report what was sent (`PublisherEvent::Stats`); never if `None`.
    pub stats_interval: Option<Duration>,
}

/// Encoded media for the room, timestamped by the caller.
#[derive(Debug)]
pub enum MediaInput {
    /// One encoded frame (H.264 Annex B access unit or VP8 frame) of layer `layer`.
    Video {
        layer: usize,
        wallclock: Instant,
        /// 90 kHz RTP time.
        rtp_time: u64,
        data: Vec<u8>,
    },
    /// One Opus packet.
    Audio {
        wallclock: Instant,
        /// 48 kHz RTP time.
        rtp_time: u64,
        data: Vec<u8>,
    },
    /// An audio track to publish now, in a session that started without one.
    AddAudio(AudioTrackSpec),
    /// The source ended: unpublish and leave.
    Finish,
}

/// What the session tells its owner.
#[derive(Clone, Debug, PartialEq)]
pub enum PublisherEvent {
    Connected {
        room_sid: String,
        room_name: String,
        participant_sid: String,
    },
    TrackPublished {
        kind: &'static str,
        layers: u32,
        /// The track as the server published it (sid, name, source, ...).
        info: Box<proto::TrackInfo>,
    },
    /// ICE and DTLS are up: media flows from now on.
    MediaConnected,
    /// The room wants a keyframe on video layer `layer` (all layers when `None`).
    KeyframeRequest { layer: Option<usize> },
    /// Dynacast: whether anyone subscribes to video layer `layer`.
    LayerActive { layer: usize, active: bool },
    /// The signal connection was lost and resumed; media never stopped.
    Resumed { reason: String },
    /// The connection was lost; the publisher is rejoining the room.
    Rejoining { reason: String },
    /// The session ended normally.
    Disconnected { reason: String },
    /// The session failed; the text is meant for the user.
    Failed { message: String },
    /// What was sent so far and what the room asked for, once per stats interval.
    Stats(Box<SendStats>),
}

pub type EventSink = Arc<dyn Fn(PublisherEvent) + Send + Sync>;

/// Runs a session to its end, reporting through `events`. A session that was
/// up and lost its server (signal closed, media connection gone, server
/// restarted) rejoins and republishes with growing pauses for up to
/// [`REJOIN_FOR`]; a session that never got in fails at once, with the reason.
pub async fn run(
    mut config: PublisherConfig,
    mut media: mpsc::Receiver<MediaInput>,
    events: EventSink,
) {
    let mut lost_since: Option<tokio::time::Instant> = None;
    let mut pause = Duration::from_millis(250);
    loop {
        let mut joined = false;
        let outcome = Session::run(&mut config, &mut media, events.clone(), &mut joined).await;
        match outcome {
            Ok(reason) => {
                events(PublisherEvent::Disconnected { reason });
                return;
            }
            Err(message) if joined || lost_since.is_some() => {
                let since = *lost_since.get_or_insert_with(tokio::time::Instant::now);
                if joined {
                    pause = Duration::from_millis(250);
                }
                if since.elapsed() > REJOIN_FOR {
                    events(PublisherEvent::Failed {
                        message: format!("{message}; rejoining failed for {REJOIN_FOR:?}"),
                    });
                    return;
                }
                events(PublisherEvent::Rejoining { reason: message });
                // Media that arrives meanwhile is of no use later: drop it.
                let wait = tokio::time::sleep(pause);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        frame = media.recv() => match frame {
                            Some(MediaInput::Finish) | None => {
                                events(PublisherEvent::Disconnected { reason: "end of stream".into() });
                                return;
                            }
                            // The rejoin publishes it with the rest.
                            Some(MediaInput::AddAudio(spec)) => config.audio = Some(spec),
                            Some(_) => {}
                        },
                    }
                }
                pause = (pause * 2).min(Duration::from_secs(4));
                if joined {
                    lost_since = Some(tokio::time::Instant::now());
                }
            }
            Err(message) => {
                events(PublisherEvent::Failed { message });
                return;
            }
        }
    }
}

/// How long a publisher that lost its server keeps trying to rejoin.
pub const REJOIN_FOR: Duration = Duration::from_secs(60);

fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// A signal error in words a user can act on.
fn describe_signal_error(url: &str, err: &SignalError) -> String {
    match err {
        SignalError::Client(status, body) if status.as_u16() == 401 || status.as_u16() == 403 => {
            format!("the LiveKit server at {url} refused the credentials ({status}): {body}")
        }
        SignalError::Client(status, body) => {
            format!("the LiveKit server at {url} refused to join ({status}): {body}")
        }
        other => format!("cannot join the room on the LiveKit server at {url}: {other}"),
    }
}

/// The local address to use towards the server: the one the OS routes to it.
async fn local_ip_towards(url: &str) -> Result<IpAddr, String> {
    let without_scheme = url.split("://").nth(1).unwrap_or(url);
    let host_port = without_scheme.split('/').next().unwrap_or(without_scheme);
    let default_port = if url.starts_with("wss") || url.starts_with("https") {
        443
    } else {
        80
    };
    let target = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let addr = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target} has no address"))?;
    let probe = std::net::UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .and_then(|s| s.connect(addr).map(|_| s))
    .and_then(|s| s.local_addr())
    .map_err(|e| format!("no route to {addr}: {e}"))?;
    Ok(probe.ip())
}

/// Offers exactly the codec we send, H.264 at the profile and level encoded
/// (from the codec table), so the server cannot pick another variant: with
/// several H.264 profiles offered it answers with the first one it likes,
/// which need not be the one the encoder produces.
fn rtc_config(
    video: Option<&VideoTrackSpec>,
    stats_interval: Option<Duration>,
) -> str0m::RtcConfig {
    let mut config = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .set_stats_interval(stats_interval);
    let Some(video) = video else {
        return config;
    };
    match (video.profile_level_id(), video.codec.payload_types()) {
        (Some(profile_level_id), Some((pt, rtx))) => {
            // Packetization mode 1 (non-interleaved): what LiveKit and
            // browsers take, and what x264's access units need.
            config
                .codec_config()
                .add_h264(pt.into(), Some(rtx.into()), true, profile_level_id);
        }
        // VP8, on str0m's payload types.
        _ => config = config.enable_vp8(true),
    }
    config
}

struct SentTrack {
    mid: Mid,
    pt: Option<Pt>,
}

/// A video frame held by `layer_sync` until it may go.
struct VideoFrame {
    wallclock: Instant,
    rtp_time: u64,
    data: Vec<u8>,
}

struct Session {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    signal: SignalClient,
    events: EventSink,
    video_spec: Option<VideoTrackSpec>,
    video: Option<SentTrack>,
    audio: Option<SentTrack>,
    pending_offer: Option<SdpPendingOffer>,
    media_connected: bool,
    /// Last layer activity reported, so only changes go upstream.
    layer_active: HashMap<usize, bool>,
    /// Video frames waiting for the other layers' frames of their timestamp.
    layer_sync: LayerSync<VideoFrame>,
    /// What a resume tells the server it already has: our offer and the tracks.
    offer: Option<proto::SessionDescription>,
    published: Vec<proto::TrackPublishedResponse>,
    /// Every m-line's track cid, as each offer tells the server.
    mid_to_track_id: HashMap<String, String>,
    /// An audio track announced after the start, waiting for TrackPublished.
    late_audio: Option<String>,
    /// The late audio track, published by the server while our previous offer
    /// was still unanswered: str0m has one offer in flight at a time, so its
    /// renegotiation waits for that answer.
    deferred_audio: Option<(String, proto::TrackInfo)>,
    /// The streams' latest counters; reported once str0m's interval is complete.
    stats: StatsCollector,
    stats_due: bool,
    rtt: Option<Duration>,
}

impl Session {
    /// One join of the room; `joined` is set once media flowed, so the caller
    /// knows a failure after it is a lost connection rather than a refusal.
    async fn run(
        config: &mut PublisherConfig,
        media: &mut mpsc::Receiver<MediaInput>,
        events: EventSink,
        joined: &mut bool,
    ) -> Result<String, String> {
        install_crypto();
        let mut options = SignalOptions::default();
        options.auto_subscribe = false;
        options.region_failover = false;
        let connect = SignalClient::connect(&config.url, &config.token, options, None);
        let (signal, join, mut signal_events) = tokio::time::timeout(STEP_TIMEOUT, connect)
            .await
            .map_err(|_| format!("the LiveKit server at {} did not answer", config.url))?
            .map_err(|e| describe_signal_error(&config.url, &e))?;

        let room = join.room.clone().unwrap_or_default();
        let participant = join.participant.clone().unwrap_or_default();
        events(PublisherEvent::Connected {
            room_sid: room.sid,
            room_name: room.name,
            participant_sid: participant.sid,
        });

        let ip = local_ip_towards(&config.url).await?;
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| format!("cannot open a UDP socket on {ip}: {e}"))?;
        let local = socket
            .local_addr()
            .map_err(|e| format!("UDP socket has no address: {e}"))?;

        let mut rtc =
            rtc_config(config.video.as_ref(), config.stats_interval).build(Instant::now());
        let candidate = Candidate::host(local, "udp")
            .map_err(|e| format!("cannot use {local} as an ICE candidate: {e}"))?;
        rtc.add_local_candidate(candidate);

        let mut session = Session {
            rtc,
            socket,
            local,
            signal,
            events,
            video_spec: config.video.clone(),
            video: None,
            audio: None,
            pending_offer: None,
            media_connected: false,
            layer_active: HashMap::new(),
            layer_sync: LayerSync::new(config.video.as_ref().map_or(0, |v| v.layers.len())),
            offer: None,
            published: Vec::new(),
            mid_to_track_id: HashMap::new(),
            late_audio: None,
            deferred_audio: None,
            stats: StatsCollector::default(),
            stats_due: false,
            rtt: None,
        };
        let result = session
            .publish_and_stream(config, media, &mut signal_events, joined)
            .await;
        session.leave().await;
        result
    }

    async fn publish_and_stream(
        &mut self,
        config: &mut PublisherConfig,
        media: &mut mpsc::Receiver<MediaInput>,
        signal_events: &mut mpsc::UnboundedReceiver<SignalEvent>,
        joined: &mut bool,
    ) -> Result<String, String> {
        let mut sdp = self.rtc.sdp_api();
        // Registered once the offer is made (the SDP API holds the Rtc till then).
        let mut announced = Vec::new();
        if let Some(spec) = &config.video {
            let cid = format!("video-{}", std::process::id());
            let published =
                announce(&self.signal, signal_events, spec.add_track_request(&cid)).await?;
            let simulcast = spec.is_simulcast().then(|| {
                let mut s = Simulcast::new();
                for i in 0..spec.layers.len() {
                    if let Some(rid) = spec.rid(i) {
                        s.add_send_layer(SimulcastLayer::new(rid));
                    }
                }
                s
            });
            let mid = sdp.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("ingress".into()),
                Some(cid.clone()),
                simulcast,
            );
            announced.push((MediaKind::Video, mid, cid, published));
        }
        if let Some(spec) = &config.audio {
            let cid = audio_cid();
            let published =
                announce(&self.signal, signal_events, spec.add_track_request(&cid)).await?;
            announced.push((
                MediaKind::Audio,
                add_audio_mline(&mut sdp, &cid),
                cid,
                published,
            ));
        }
        let (offer, pending) = sdp
            .apply()
            .ok_or_else(|| "there is no track to publish".to_string())?;
        for (kind, mid, cid, published) in announced {
            self.register_track(kind, mid, cid, published);
        }
        self.send_offer(offer, pending).await;

        let mut buf = vec![0u8; 2000];
        let mut connect_deadline = Some(tokio::time::Instant::now() + STEP_TIMEOUT);
        loop {
            self.send_synced_video(Instant::now());
            let mut timeout = self.drive()?;
            if let Some(deadline) = self.layer_sync.deadline() {
                timeout = timeout.min(deadline);
            }
            let wait = timeout.saturating_duration_since(Instant::now());
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, source) = received.map_err(|e| format!("UDP receive failed: {e}"))?;
                    let Some(packet) = buf.get(..n) else { continue };
                    if let Ok(contents) = packet.try_into() {
                        let input = Input::Receive(Instant::now(), Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        });
                        if self.rtc.accepts(&input) {
                            self.rtc.handle_input(input).map_err(|e| format!("WebRTC failed: {e}"))?;
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now()))
                        .map_err(|e| format!("WebRTC failed: {e}"))?;
                }
                event = signal_events.recv() => match event {
                    Some(SignalEvent::Message(message)) => {
                        if let Some(reason) = self.on_signal(*message).await? {
                            return Ok(reason);
                        }
                    }
                    Some(SignalEvent::Close(reason)) => self.resume(&reason).await?,
                    None => return Err("the signal connection ended".into()),
                },
                input = media.recv() => match input {
                    Some(MediaInput::Finish) | None => return Ok("end of stream".into()),
                    Some(MediaInput::AddAudio(spec)) => {
                        config.audio = Some(spec.clone());
                        self.announce_late_audio(&spec).await;
                    }
                    Some(MediaInput::Video { layer, wallclock, rtp_time, data }) => {
                        let frame = VideoFrame { wallclock, rtp_time, data };
                        self.layer_sync.push(layer, rtp_time, frame, Instant::now());
                    }
                    Some(MediaInput::Audio { wallclock, rtp_time, data }) => {
                        self.write_audio(wallclock, rtp_time, data);
                    }
                },
                _ = sleep_until_opt(connect_deadline) => {
                    return Err("the media connection to the LiveKit server did not come up (ICE/DTLS timed out)".into());
                }
            }
            if self.media_connected {
                connect_deadline = None;
                *joined = true;
            }
        }
    }

    /// Keeps what the session needs of a track the server published on m-line
    /// `mid`, and reports it.
    fn register_track(
        &mut self,
        kind: MediaKind,
        mid: Mid,
        cid: String,
        published: proto::TrackInfo,
    ) {
        self.mid_to_track_id.insert(mid.to_string(), cid.clone());
        let track = Some(SentTrack { mid, pt: None });
        let (name, layers) = match kind {
            MediaKind::Video => {
                self.video = track;
                let layers = self.video_spec.as_ref().map_or(1, |s| s.layers.len());
                ("video", layers as u32)
            }
            MediaKind::Audio => {
                self.audio = track;
                ("audio", 1)
            }
        };
        (self.events)(PublisherEvent::TrackPublished {
            kind: name,
            layers,
            info: Box::new(published.clone()),
        });
        self.published.push(proto::TrackPublishedResponse {
            cid,
            track: Some(published),
        });
    }

    /// Whether `sid` is our published video track.
    fn is_video_track(&self, sid: &str) -> bool {
        self.published.iter().any(|p| {
            p.track
                .as_ref()
                .is_some_and(|t| t.sid == sid && t.r#type == proto::TrackType::Video as i32)
        })
    }

    async fn send_offer(&mut self, offer: str0m::change::SdpOffer, pending: SdpPendingOffer) {
        self.pending_offer = Some(pending);
        let offer = proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: self.offer.as_ref().map_or(1, |o| o.id + 1),
            mid_to_track_id: self.mid_to_track_id.clone(),
        };
        tracing::debug!("sending offer {}:\n{}", offer.id, offer.sdp);
        self.offer = Some(offer.clone());
        self.signal.send(Request::Offer(offer)).await;
    }

    /// An audio track that came after the start: announce it now; the
    /// renegotiation follows when the server has published it.
    async fn announce_late_audio(&mut self, spec: &AudioTrackSpec) {
        if self.audio.is_some() || self.late_audio.is_some() {
            return;
        }
        let cid = audio_cid();
        self.late_audio = Some(cid.clone());
        self.signal
            .send(Request::AddTrack(spec.add_track_request(&cid)))
            .await;
    }

    /// The server published the late audio track: add its m-line and offer
    /// again, once no other offer is in flight.
    async fn negotiate_late_audio(&mut self, cid: String, published: proto::TrackInfo) {
        if self.pending_offer.is_some() {
            self.deferred_audio = Some((cid, published));
            return;
        }
        let mut sdp = self.rtc.sdp_api();
        let mid = add_audio_mline(&mut sdp, &cid);
        let Some((offer, pending)) = sdp.apply() else {
            return;
        };
        self.register_track(MediaKind::Audio, mid, cid, published);
        self.send_offer(offer, pending).await;
    }

    /// Lets str0m send what it has and handles its events; returns when it next
    /// wants time.
    fn drive(&mut self) -> Result<Instant, String> {
        loop {
            match self
                .rtc
                .poll_output()
                .map_err(|e| format!("WebRTC failed: {e}"))?
            {
                Output::Timeout(at) => {
                    // str0m hands out one interval's stats events together.
                    if std::mem::take(&mut self.stats_due) {
                        let report = self.stats.report(self.rtt);
                        (self.events)(PublisherEvent::Stats(Box::new(report)));
                    }
                    return Ok(at);
                }
                Output::Transmit(t) => {
                    // Loss of one datagram is WebRTC's business (NACK, RTX), not an error.
                    let _ = self.socket.try_send_to(&t.contents, t.destination);
                }
                Output::Event(event) => self.on_rtc_event(event)?,
            }
        }
    }

    fn on_rtc_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Connected => {
                self.media_connected = true;
                self.resolve_payload_types();
                (self.events)(PublisherEvent::MediaConnected);
                (self.events)(PublisherEvent::KeyframeRequest { layer: None });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err("the media connection to the LiveKit server was lost".into());
            }
            Event::KeyframeRequest(req) => {
                let is_video = self.video.as_ref().is_some_and(|v| v.mid == req.mid);
                if let (true, Some(spec)) = (is_video, &self.video_spec) {
                    let rid = req.rid.as_ref().map(|r| r.to_string());
                    let layer = spec.layer_of_rid(rid.as_deref());
                    (self.events)(PublisherEvent::KeyframeRequest { layer });
                }
            }
            Event::MediaEgressStats(sent) => {
                let is =
                    |track: &Option<SentTrack>| track.as_ref().is_some_and(|t| t.mid == sent.mid);
                let kind = match (is(&self.video), is(&self.audio)) {
                    (true, _) => "video",
                    (_, true) => "audio",
                    _ => return Ok(()),
                };
                self.stats.stream(StreamStats {
                    kind,
                    rid: sent.rid.map(|r| r.to_string()),
                    packets: sent.packets,
                    bytes: sent.bytes,
                    nacks: sent.nacks,
                    plis: sent.plis,
                    firs: sent.firs,
                    loss: sent.loss,
                });
            }
            Event::PeerStats(peer) => {
                self.rtt = peer.rtt.or(self.rtt);
                self.stats_due = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// A track whose codec the answer left out would send nothing: say so.
    fn check_codecs_accepted(&self) -> Result<(), String> {
        let refused = |track: &Option<SentTrack>| track.as_ref().is_some_and(|t| t.pt.is_none());
        if refused(&self.video) {
            return Err(self.codec_refused(MediaKind::Video));
        }
        if refused(&self.audio) {
            return Err(self.codec_refused(MediaKind::Audio));
        }
        Ok(())
    }

    fn codec_refused(&self, kind: MediaKind) -> String {
        let mime = match kind {
            MediaKind::Video => self.video_spec.as_ref().map_or("video", |s| s.codec.mime()),
            MediaKind::Audio => OPUS.mime,
        };
        format!("the LiveKit server does not accept {mime} in this room (codec refused)")
    }

    /// Picks the negotiated payload type of each track.
    fn resolve_payload_types(&mut self) {
        let video_codec = match self.video_spec.as_ref().map(|s| s.codec.is_h264()) {
            Some(false) => Codec::Vp8,
            _ => Codec::H264,
        };
        for (track, codec) in [
            (&mut self.video, video_codec),
            (&mut self.audio, Codec::Opus),
        ] {
            let Some(track) = track else { continue };
            if let Some(writer) = self.rtc.writer(track.mid) {
                track.pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt());
            }
        }
    }

    /// Sends the video frames whose layers have caught up (see `layer_sync`).
    fn send_synced_video(&mut self, now: Instant) {
        while let Some((layer, frame)) = self.layer_sync.pop(now) {
            let rid = self.video_spec.as_ref().and_then(|s| s.rid(layer));
            let time = MediaTime::new(frame.rtp_time, Frequency::NINETY_KHZ);
            let track = self.video.as_ref().map(|t| (t.mid, t.pt));
            self.write(track, rid, frame.wallclock, time, frame.data);
        }
    }

    fn write_audio(&mut self, wallclock: Instant, rtp_time: u64, data: Vec<u8>) {
        let time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
        let track = self.audio.as_ref().map(|t| (t.mid, t.pt));
        self.write(track, None, wallclock, time, data);
    }

    /// Hands one frame to str0m, which packetizes it; nothing is sent before
    /// the media connection is up.
    fn write(
        &mut self,
        track: Option<(Mid, Option<Pt>)>,
        rid: Option<&str>,
        wallclock: Instant,
        time: MediaTime,
        data: Vec<u8>,
    ) {
        if !self.media_connected {
            return;
        }
        let Some((mid, Some(pt))) = track else {
            return;
        };
        let Some(mut writer) = self.rtc.writer(mid) else {
            return;
        };
        if let Some(rid) = rid {
            writer = writer.rid(Rid::from(rid));
        }
        if let Err(e) = writer.write(pt, wallclock, time, data) {
            tracing::debug!("dropped a frame: {e}");
        }
    }

    /// Handles a signal message; `Some(reason)` ends the session.
    async fn on_signal(&mut self, message: Response) -> Result<Option<String>, String> {
        match message {
            Response::Answer(answer) => {
                tracing::debug!("answer {}:\n{}", answer.id, answer.sdp);
                if let Some(kind) = rejected_media(&answer.sdp) {
                    return Err(self.codec_refused(kind));
                }
                let answer = SdpAnswer::from_sdp_string(&answer.sdp)
                    .map_err(|e| format!("the LiveKit server sent an unreadable answer: {e}"))?;
                if let Some(pending) = self.pending_offer.take() {
                    self.rtc
                        .sdp_api()
                        .accept_answer(pending, answer)
                        .map_err(|e| format!("the LiveKit server's answer was refused: {e}"))?;
                    self.resolve_payload_types();
                    self.check_codecs_accepted()?;
                }
                if let Some((cid, published)) = self.deferred_audio.take() {
                    self.negotiate_late_audio(cid, published).await;
                }
            }
            Response::TrackPublished(published)
                if self.late_audio.as_deref() == Some(published.cid.as_str()) =>
            {
                self.late_audio = None;
                let track = published.track.unwrap_or_default();
                self.negotiate_late_audio(published.cid, track).await;
            }
            Response::Trickle(trickle)
                if trickle.target == proto::SignalTarget::Publisher as i32 =>
            {
                match trickle::parse(&trickle.candidate_init) {
                    Ok(Some(candidate)) => self.rtc.add_remote_candidate(candidate),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
            Response::SubscribedQualityUpdate(update) if self.is_video_track(&update.track_sid) => {
                self.on_subscribed_qualities(&update);
            }
            Response::Leave(leave) => {
                return Ok(Some(format!(
                    "the LiveKit server asked to leave ({})",
                    proto::DisconnectReason::try_from(leave.reason)
                        .map(|r| r.as_str_name().to_string())
                        .unwrap_or_else(|_| leave.reason.to_string())
                )));
            }
            _ => {}
        }
        Ok(None)
    }

    fn on_subscribed_qualities(&mut self, update: &proto::SubscribedQualityUpdate) {
        let Some(spec) = &self.video_spec else { return };
        let codec_qualities = update
            .subscribed_codecs
            .iter()
            .find(|c| {
                spec.codec
                    .mime()
                    .eq_ignore_ascii_case(&format!("video/{}", c.codec))
                    || c.codec.eq_ignore_ascii_case(spec.codec.mime())
            })
            .map(|c| c.qualities.as_slice());
        // Servers that predate per-codec qualities send the flat list.
        #[allow(deprecated)]
        let qualities = codec_qualities.unwrap_or(update.subscribed_qualities.as_slice());
        for q in qualities {
            let Ok(quality) = proto::VideoQuality::try_from(q.quality) else {
                continue;
            };
            let Some(layer) = spec.layer_of_quality(quality) else {
                continue;
            };
            self.layer_sync.set_active(layer, q.enabled);
            if self.layer_active.insert(layer, q.enabled) != Some(q.enabled) {
                (self.events)(PublisherEvent::LayerActive {
                    layer,
                    active: q.enabled,
                });
            }
        }
    }

    /// The signal connection dropped: if media still flows, reopen it as a
    /// resume (same participant, same tracks, nothing for subscribers to
    /// notice); otherwise, or if the server will not resume, the caller rejoins.
    async fn resume(&mut self, reason: &str) -> Result<(), String> {
        if !self.media_connected {
            return Err(format!("the signal connection closed: {reason}"));
        }
        tracing::info!("signal connection lost ({reason}); resuming");
        let restart = self
            .signal
            .restart(proto::ReconnectReason::RrSignalDisconnected);
        match tokio::time::timeout(STEP_TIMEOUT, restart).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(format!(
                    "the signal connection closed ({reason}) and could not be resumed: {e}"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "the signal connection closed ({reason}) and resuming it timed out"
                ))
            }
        }
        self.signal
            .send(Request::SyncState(proto::SyncState {
                offer: self.offer.clone(),
                publish_tracks: self.published.clone(),
                ..Default::default()
            }))
            .await;
        self.signal.set_reconnected().await;
        (self.events)(PublisherEvent::Resumed {
            reason: reason.to_string(),
        });
        Ok(())
    }

    /// Unpublishes and leaves: the participant is gone from the room at once.
    async fn leave(&mut self) {
        self.signal
            .send(Request::Leave(proto::LeaveRequest {
                can_reconnect: false,
                reason: proto::DisconnectReason::ClientInitiated as i32,
                action: proto::leave_request::Action::Disconnect as i32,
                regions: None,
            }))
            .await;
        self.signal.close().await;
        self.rtc.disconnect();
    }
}

fn add_audio_mline(sdp: &mut str0m::change::SdpApi<'_>, cid: &str) -> Mid {
    sdp.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("ingress".into()),
        Some(cid.to_string()),
        None,
    )
}

fn audio_cid() -> String {
    format!("audio-{}", std::process::id())
}

/// The first media section the answer rejected (port 0, RFC 3264), which is
/// how the server turns down a codec the room does not enable.
fn rejected_media(sdp: &str) -> Option<MediaKind> {
    sdp.lines().find_map(|line| {
        let mut words = line.strip_prefix("m=")?.split_whitespace();
        let kind = match words.next()? {
            "video" => MediaKind::Video,
            "audio" => MediaKind::Audio,
            _ => return None,
        };
        (words.next()? == "0").then_some(kind)
    })
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends AddTrack and waits for the server to publish it.
async fn announce(
    signal: &SignalClient,
    events: &mut mpsc::UnboundedReceiver<SignalEvent>,
    request: proto::AddTrackRequest,
) -> Result<proto::TrackInfo, String> {
    let cid = request.cid.clone();
    let name = request.name.clone();
    signal.send(Request::AddTrack(request)).await;
    let wait = async {
        while let Some(event) = events.recv().await {
            match event {
                SignalEvent::Message(message) => match *message {
                    Response::TrackPublished(published) if published.cid == cid => {
                        return Ok(published.track.unwrap_or_default());
                    }
                    Response::RequestResponse(resp) if resp.reason != 0 => {
                        return Err(format!(
                            "the LiveKit server refused track {name:?}: {}",
                            resp.message
                        ));
                    }
                    Response::Leave(_) => {
                        return Err(format!(
                            "the LiveKit server closed the session while publishing {name:?}"
                        ));
                    }
                    _ => {}
                },
                SignalEvent::Close(reason) => {
                    return Err(format!("the signal connection closed: {reason}"));
                }
            }
        }
        Err("the signal connection ended".to_string())
    };
    tokio::time::timeout(STEP_TIMEOUT, wait)
        .await
        .map_err(|_| format!("the LiveKit server did not publish track {name:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;

    fn spec(codec: VideoCodec, h264_level: Option<u8>) -> VideoTrackSpec {
        VideoTrackSpec {
            name: "video".into(),
            source: proto::TrackSource::Camera,
            codec,
            h264_level,
            layers: Vec::new(),
        }
    }

    /// The offer a session sends for one video codec plus Opus.
    fn offer_for(codec: VideoCodec) -> String {
        offer_for_spec(&spec(codec, None))
    }

    fn offer_for_spec(spec: &VideoTrackSpec) -> String {
        let mut rtc = rtc_config(Some(spec), None).build(Instant::now());
        let mut sdp = rtc.sdp_api();
        sdp.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        sdp.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, _) = sdp.apply().expect("an offer");
        offer.to_sdp_string()
    }

    /// The payload type of the first `rtpmap` line naming `encoding`.
    fn pt_of(sdp: &str, encoding: &str) -> String {
        sdp.lines()
            .find_map(|l| {
                let rest = l.strip_prefix("a=rtpmap:")?;
                let (pt, name) = rest.split_once(' ')?;
                name.starts_with(encoding).then(|| pt.to_string())
            })
            .unwrap_or_else(|| panic!("no {encoding} in the offer:\n{sdp}"))
    }

    /// Lost video packets can be recovered: the room may NACK and we resend
    /// over RTX from str0m's bounded send buffer; PLI and FIR are accepted.
    #[test]
    fn video_offers_nack_rtx_and_keyframe_requests() {
        for (codec, encoding) in [
            (VideoCodec::H264Baseline, "H264/90000"),
            (VideoCodec::H264Main, "H264/90000"),
            (VideoCodec::H264High, "H264/90000"),
            (VideoCodec::Vp8, "VP8/90000"),
        ] {
            let sdp = offer_for(codec);
            let pt = pt_of(&sdp, encoding);
            for feedback in ["nack", "nack pli", "ccm fir"] {
                assert!(
                    sdp.contains(&format!("a=rtcp-fb:{pt} {feedback}\r\n")),
                    "{encoding}: no {feedback} in\n{sdp}"
                );
            }
            assert!(
                sdp.contains(&format!(" apt={pt}")),
                "{encoding}: no RTX for payload {pt} in\n{sdp}"
            );
            // Only the codec we encode is offered.
            let others = ["H264/90000", "VP8/90000", "VP9/90000", "AV1/90000"]
                .into_iter()
                .filter(|e| *e != encoding && sdp.contains(e))
                .collect::<Vec<_>>();
            assert!(others.is_empty(), "{encoding}: also offers {others:?}");
        }
    }

    #[test]
    fn a_rejected_media_section_is_found() {
        let answer = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n\
                      m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert_eq!(rejected_media(answer), Some(MediaKind::Video));
        assert_eq!(
            rejected_media("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"),
            None
        );
    }

    /// The H.264 fmtp line of an offer.
    fn h264_fmtp(sdp: &str) -> String {
        let pt = pt_of(sdp, "H264/90000");
        sdp.lines()
            .find(|l| l.starts_with(&format!("a=fmtp:{pt} ")))
            .expect("H.264 fmtp")
            .to_string()
    }

    #[test]
    fn h264_offer_is_constrained_baseline_packetization_mode_1() {
        let fmtp = h264_fmtp(&offer_for(VideoCodec::H264Baseline));
        assert!(fmtp.contains("profile-level-id=42e01f"), "{fmtp}");
        assert!(fmtp.contains("packetization-mode=1"), "{fmtp}");
    }

    /// Main and high are offered as what the encoder produces, at its level,
    /// and only that one profile.
    #[test]
    fn h264_offer_carries_the_encoded_profile_and_level() {
        for (codec, level, plid) in [
            (VideoCodec::H264Main, None, "4d001f"),
            (VideoCodec::H264Main, Some(40), "4d0028"),
            (VideoCodec::H264High, Some(31), "64001f"),
            (VideoCodec::H264Baseline, Some(40), "42e028"),
        ] {
            let sdp = offer_for_spec(&spec(codec, level));
            let fmtp = h264_fmtp(&sdp);
            assert!(
                fmtp.contains(&format!("profile-level-id={plid}")),
                "{codec:?} {level:?}: {fmtp}"
            );
            assert_eq!(
                sdp.matches("profile-level-id=").count(),
                1,
                "one H.264 variant:\n{sdp}"
            );
        }
    }
}
