//! One join of the room: the IO loop around str0m's sans-IO `Rtc` and the
//! `Negotiation`. It moves datagrams, signal messages, frames from the
//! element and timer ticks in, and str0m's transmits and events out; the
//! decisions are made in `negotiation`, `signalling`, `layer_sync`.

use super::layer_sync::LayerSync;
use super::negotiation::{rtc_config, Action, Negotiation};
use super::publisher::{EventSink, MediaInput, PublisherConfig, PublisherError, PublisherEvent};
use super::signalling::{self, SignalEvents, STEP_TIMEOUT};
use super::stats::{StatsCollector, StreamStats};
use super::token::Tokens;
use super::trickle;
use crate::media_socket::MediaSocket;
use livekit_protocol as proto;
use livekit_signaling::{SignalClient, SignalEvent};
use proto::signal_response::Message as Response;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Once;
use std::time::{Duration, Instant};
use str0m::media::{Frequency, MediaKind, MediaTime, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::mpsc;

/// str0m's timeouts that are already due, handled in a row before a session
/// loop (this one, a WHIP session's) looks at its inputs again.
pub(crate) const MAX_DUE_TIMEOUTS: u32 = 8;

/// A video frame held by `layer_sync` until it may go.
struct VideoFrame {
    wallclock: Instant,
    rtp_time: u64,
    data: Vec<u8>,
}

pub(super) struct Session {
    rtc: Rtc,
    socket: MediaSocket,
    local: SocketAddr,
    signal: SignalClient,
    events: EventSink,
    config: PublisherConfig,
    negotiation: Negotiation,
    media_connected: bool,
    /// Until then ICE and DTLS must be up, once the first offer went out.
    connect_deadline: Option<Instant>,
    /// Last layer activity reported, so only changes go upstream.
    layer_active: HashMap<usize, bool>,
    /// Video frames waiting for the other layers' frames of their timestamp.
    layer_sync: LayerSync<VideoFrame>,
    /// The streams' latest counters; reported once str0m's interval is complete.
    stats: StatsCollector,
    stats_due: bool,
    rtt: Option<Duration>,
}

/// One join, run to its end; `joined` is set once media flowed, so the
/// caller knows a failure after it is a lost connection rather than a refusal.
/// `config.audio` follows a late audio pad, so a rejoin publishes it too.
pub(super) async fn run(
    config: &mut PublisherConfig,
    tokens: &mut Tokens,
    media: &mut mpsc::Receiver<MediaInput>,
    events: EventSink,
    joined: &mut bool,
) -> Result<String, PublisherError> {
    install_crypto();
    // A fresh token for every join: the one we started with may have expired.
    let (signal, join, mut signal_events) = signalling::join(
        &config.url,
        &tokens.for_join().map_err(PublisherError::NotAuthorized)?,
    )
    .await?;
    let room = join.room.unwrap_or_default();
    let participant = join.participant.unwrap_or_default();
    events(PublisherEvent::Connected {
        room_sid: room.sid,
        room_name: room.name,
        participant_sid: participant.sid,
    });

    let ip = local_ip_towards(&config.url).await?;
    let socket = MediaSocket::bind(SocketAddr::new(ip, 0))
        .map_err(|e| PublisherError::Other(format!("cannot open a UDP socket on {ip}: {e}")))?;
    let local = socket
        .local_addr()
        .map_err(|e| PublisherError::Other(format!("UDP socket has no address: {e}")))?;
    let now = Instant::now();
    let mut rtc = rtc_config(config.video.as_ref(), config.stats_interval).build(now);
    let candidate = Candidate::host(local, "udp").map_err(|e| {
        PublisherError::Other(format!("cannot use {local} as an ICE candidate: {e}"))
    })?;
    rtc.add_local_candidate(candidate);

    let mut session = Session {
        rtc,
        socket,
        local,
        signal,
        events,
        negotiation: Negotiation::new(config.video.as_ref(), config.audio.as_ref(), now),
        media_connected: false,
        connect_deadline: None,
        layer_active: HashMap::new(),
        layer_sync: LayerSync::new(config.video.as_ref().map_or(0, |v| v.layers.len())),
        config: config.clone(),
        stats: StatsCollector::default(),
        stats_due: false,
        rtt: None,
    };
    let result = session
        .run_loop(tokens, media, &mut signal_events, joined)
        .await;
    config.audio = session.config.audio.clone();
    signalling::leave(&session.signal).await;
    session.rtc.disconnect();
    result
}

impl Session {
    async fn run_loop(
        &mut self,
        tokens: &mut Tokens,
        media: &mut mpsc::Receiver<MediaInput>,
        signal_events: &mut SignalEvents,
        joined: &mut bool,
    ) -> Result<String, PublisherError> {
        let mut buf = vec![0u8; 2000];
        loop {
            self.flush_actions().await;
            let wait = self.drive_due()?.saturating_duration_since(Instant::now());
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, source) = received.map_err(|e| PublisherError::MediaLost(format!("UDP receive failed: {e}")))?;
                    self.on_datagram(buf.get(..n).unwrap_or_default(), source)?;
                }
                _ = tokio::time::sleep(wait) => self.on_timeout(Instant::now())?,
                event = signal_events.recv() => match event {
                    // livekit-signaling resumes with the refreshed token
                    // itself; a rejoin needs it too.
                    Some(SignalEvent::Message(message)) => match *message {
                        Response::RefreshToken(token) => tokens.refreshed(token),
                        message => {
                            if let Some(reason) = self.on_signal(message)? {
                                return Ok(reason);
                            }
                        }
                    },
                    Some(SignalEvent::Close(reason)) => self.resume(&reason).await?,
                    None => return Err(PublisherError::MediaLost("the signal connection ended".into())),
                },
                input = media.recv() => match input {
                    Some(MediaInput::Finish) | None => return Ok("end of stream".into()),
                    Some(input) => self.on_media(input),
                },
            }
            if self.media_connected {
                *joined = true;
            }
        }
    }

    /// When the loop must wake next: str0m's timer, a frame `layer_sync`
    /// holds, a track the server has yet to publish, the media connection's
    /// deadline.
    fn drive(&mut self) -> Result<Instant, PublisherError> {
        let at = self.poll_rtc()?;
        Ok([
            Some(at),
            self.layer_sync.deadline(),
            self.negotiation.deadline(),
            self.connect_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(at))
    }

    /// Sends the frames `layer_sync` releases and [`Self::drive`]s, handling
    /// the timeouts already due at once: str0m packetizes a written frame at
    /// its next timeout, which it asks for "now", and a timer cannot wait
    /// less than a millisecond, so going through one would add a wake-up and
    /// a millisecond to every frame.
    fn drive_due(&mut self) -> Result<Instant, PublisherError> {
        // A bound, so that a timer that keeps being due cannot starve the
        // socket and the media channel.
        for _ in 0..MAX_DUE_TIMEOUTS {
            self.send_synced_video(Instant::now());
            let at = self.drive()?;
            let now = Instant::now();
            if at > now {
                return Ok(at);
            }
            self.on_timeout(now)?;
        }
        self.send_synced_video(Instant::now());
        self.drive()
    }

    fn on_timeout(&mut self, now: Instant) -> Result<(), PublisherError> {
        if self.connect_deadline.is_some_and(|d| now >= d) {
            return Err(PublisherError::Unreachable(
                "the media connection to the LiveKit server did not come up (ICE/DTLS timed out)"
                    .into(),
            ));
        }
        self.negotiation.handle_timeout(now)?;
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(webrtc_error)
    }

    fn on_datagram(&mut self, packet: &[u8], source: SocketAddr) -> Result<(), PublisherError> {
        let Ok(contents) = packet.try_into() else {
            return Ok(());
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        if self.rtc.accepts(&input) {
            self.rtc.handle_input(input).map_err(webrtc_error)?;
        }
        Ok(())
    }

    fn on_media(&mut self, input: MediaInput) {
        let now = Instant::now();
        match input {
            MediaInput::AddAudio(spec) => {
                self.negotiation.add_audio(&spec, now);
                self.config.audio = Some(spec);
            }
            MediaInput::Video {
                layer,
                wallclock,
                rtp_time,
                data,
            } => {
                let frame = VideoFrame {
                    wallclock,
                    rtp_time,
                    data,
                };
                self.layer_sync.push(layer, rtp_time, frame, now);
            }
            MediaInput::Audio {
                wallclock,
                rtp_time,
                data,
            } => {
                let time = MediaTime::new(rtp_time, Frequency::FORTY_EIGHT_KHZ);
                self.write(MediaKind::Audio, None, wallclock, time, data);
            }
            MediaInput::Finish => {}
        }
    }

    /// Sends what the negotiation asked for and reports published tracks.
    async fn flush_actions(&mut self) {
        while let Some(action) = self.negotiation.poll_action() {
            match action {
                Action::Signal(request) => {
                    let is_offer = matches!(*request, proto::signal_request::Message::Offer(_));
                    if is_offer && !self.media_connected && self.connect_deadline.is_none() {
                        self.connect_deadline = Some(Instant::now() + STEP_TIMEOUT);
                    }
                    self.signal.send(*request).await;
                }
                Action::Published { kind, layers, info } => {
                    (self.events)(PublisherEvent::TrackPublished { kind, layers, info });
                }
            }
        }
    }

    /// Lets str0m send what it has and handles its events; returns when it next
    /// wants time.
    fn poll_rtc(&mut self) -> Result<Instant, PublisherError> {
        loop {
            match self.rtc.poll_output().map_err(webrtc_error)? {
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

    fn on_rtc_event(&mut self, event: Event) -> Result<(), PublisherError> {
        match event {
            Event::Connected => {
                self.media_connected = true;
                self.connect_deadline = None;
                (self.events)(PublisherEvent::MediaConnected);
                (self.events)(PublisherEvent::KeyframeRequest { layer: None });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err(PublisherError::MediaLost(
                    "the media connection to the LiveKit server was lost".into(),
                ));
            }
            // PLI and FIR from the room: the encoder of that layer makes a keyframe.
            Event::KeyframeRequest(req) => {
                let is_video = self.negotiation.kind_of(req.mid) == Some(MediaKind::Video);
                if let (true, Some(spec)) = (is_video, &self.config.video) {
                    let rid = req.rid.as_ref().map(|r| r.to_string());
                    let layer = spec.layer_of_rid(rid.as_deref());
                    (self.events)(PublisherEvent::KeyframeRequest { layer });
                }
            }
            Event::MediaEgressStats(sent) => {
                let kind = match self.negotiation.kind_of(sent.mid) {
                    Some(MediaKind::Video) => "video",
                    Some(MediaKind::Audio) => "audio",
                    None => return Ok(()),
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

    /// Sends the video frames whose layers have caught up (see `layer_sync`).
    fn send_synced_video(&mut self, now: Instant) {
        while let Some((layer, frame)) = self.layer_sync.pop(now) {
            let rid = self.config.video.as_ref().and_then(|s| s.rid(layer));
            let time = MediaTime::new(frame.rtp_time, Frequency::NINETY_KHZ);
            self.write(MediaKind::Video, rid, frame.wallclock, time, frame.data);
        }
    }

    /// Hands one frame to str0m, which packetizes it; nothing is sent before
    /// the media connection is up and the track is answered.
    fn write(
        &mut self,
        kind: MediaKind,
        rid: Option<&str>,
        wallclock: Instant,
        time: MediaTime,
        data: Vec<u8>,
    ) {
        if !self.media_connected {
            return;
        }
        let Some((mid, pt)) = self.negotiation.sending(kind) else {
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
    fn on_signal(&mut self, message: Response) -> Result<Option<String>, PublisherError> {
        match message {
            Response::Answer(answer) => self.negotiation.on_answer(&mut self.rtc, &answer.sdp)?,
            Response::TrackPublished(published) => self
                .negotiation
                .on_track_published(&mut self.rtc, published),
            Response::RequestResponse(response) if response.reason != 0 => {
                self.negotiation.on_request_refused(&response)?
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
            Response::SubscribedQualityUpdate(update)
                if self.negotiation.is_video_track(&update.track_sid) =>
            {
                self.on_subscribed_qualities(&update);
            }
            Response::Leave(leave) => {
                if let Some(name) = self.negotiation.waiting_to_start() {
                    return Err(PublisherError::Refused(format!(
                        "the LiveKit server closed the session while publishing {name:?}"
                    )));
                }
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

    /// Dynacast: the layers someone subscribes to go on, the others pause.
    fn on_subscribed_qualities(&mut self, update: &proto::SubscribedQualityUpdate) {
        let Some(spec) = &self.config.video else {
            return;
        };
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

    /// The signal connection dropped: if media still flows, resume it in
    /// place (same participant, same tracks, nothing for subscribers to
    /// notice); otherwise, or if the server will not resume, the caller rejoins.
    async fn resume(&mut self, reason: &str) -> Result<(), PublisherError> {
        if !self.media_connected {
            return Err(PublisherError::MediaLost(format!(
                "the signal connection closed: {reason}"
            )));
        }
        tracing::info!("signal connection lost ({reason}); resuming");
        signalling::resume(&self.signal, reason, self.negotiation.sync_state()).await?;
        (self.events)(PublisherEvent::Resumed {
            reason: reason.to_string(),
        });
        Ok(())
    }
}

fn webrtc_error(e: str0m::RtcError) -> PublisherError {
    PublisherError::Other(format!("WebRTC failed: {e}"))
}

pub(crate) fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The local address to use towards the server: the one the OS routes to it.
async fn local_ip_towards(url: &str) -> Result<IpAddr, PublisherError> {
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
        .map_err(|e| PublisherError::Unreachable(format!("cannot resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| PublisherError::Unreachable(format!("{target} has no address")))?;
    let probe = std::net::UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .and_then(|s| s.connect(addr).map(|_| s))
    .and_then(|s| s.local_addr())
    .map_err(|e| PublisherError::Unreachable(format!("no route to {addr}: {e}")))?;
    Ok(probe.ip())
}
