//! One WHIP session: the IO loop around str0m's `Rtc` (ICE-lite answerer)
//! on the session's own UDP socket. Frames go to the claiming element as
//! [`WhipEvent::Frame`]; the element's keyframe requests come back as
//! [`Control`] and leave as PLI. The loop ends, and says why, on DELETE,
//! when str0m closes (DTLS close), when ICE loses the client (consent), after
//! [`SILENCE`] without a datagram, or when the element stops taking frames.

use super::listener::{Control, Frame, MediaKind, VideoCodec, WhipEvent};
use crate::livekit::session::MAX_DUE_TIMEOUTS;
use crate::media_socket::MediaSocket;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};

/// No datagram from the client for this long ends the session (ICE consent
/// checks come every few seconds; RFC 7675 allows 30 s).
pub const SILENCE: Duration = Duration::from_secs(15);
/// From the answer to ICE and DTLS being up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The session as its loop sees it.
pub struct Session {
    pub rtc: Rtc,
    pub socket: MediaSocket,
    pub local: SocketAddr,
    /// Frames and the end to the element.
    pub events: mpsc::Sender<WhipEvent>,
    /// Keyframe requests from the element.
    pub control: mpsc::UnboundedReceiver<Control>,
    /// Fired by DELETE on the session's resource.
    pub deleted: oneshot::Receiver<()>,
}

impl Session {
    /// Runs until the session ends; returns why.
    pub async fn run(mut self) -> String {
        let mut buf = vec![0u8; 2000];
        let mut mids: HashMap<Mid, MediaKind> = HashMap::new();
        let started = Instant::now();
        let mut connected = false;
        let mut last_datagram = Instant::now();
        let mut dropped = 0u64;
        let mut due_in_a_row = 0;
        loop {
            // Everything str0m has to say, then how long until it needs us.
            let next = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        // Loss of one datagram is WebRTC's business (NACK), not an error.
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Event(event)) => {
                        match event {
                            Event::Connected => connected = true,
                            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                                return "ICE consent lost (the client is gone)".into();
                            }
                            Event::MediaAdded(added) => {
                                let kind = match added.kind {
                                    str0m::media::MediaKind::Audio => MediaKind::Audio,
                                    str0m::media::MediaKind::Video => MediaKind::Video,
                                };
                                mids.insert(added.mid, kind);
                            }
                            Event::MediaData(data) => {
                                if let Some(frame) = frame_of(&data) {
                                    match self.events.try_send(WhipEvent::Frame(frame)) {
                                        Ok(()) => {}
                                        Err(mpsc::error::TrySendError::Full(_)) => {
                                            dropped += 1;
                                            if dropped.is_power_of_two() {
                                                tracing::debug!("WHIP: element behind, {dropped} frames dropped");
                                            }
                                        }
                                        Err(mpsc::error::TrySendError::Closed(_)) => {
                                            return "the element stopped taking the stream".into();
                                        }
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    Err(e) => return format!("WebRTC error: {e}"),
                }
            };
            if !self.rtc.is_alive() {
                return "the client closed the connection".into();
            }
            let now = Instant::now();
            if !connected && now.duration_since(started) > CONNECT_TIMEOUT {
                return format!("ICE and DTLS not up within {CONNECT_TIMEOUT:?}");
            }
            if now.duration_since(last_datagram) > SILENCE {
                return format!("nothing from the client for {SILENCE:?}");
            }
            // A timeout str0m wants now is handled now: a timer cannot wait
            // less than a millisecond, and going through one would cost a
            // wake-up per datagram.
            if next <= now && due_in_a_row < MAX_DUE_TIMEOUTS {
                due_in_a_row += 1;
                if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                    return format!("WebRTC error: {e}");
                }
                continue;
            }
            due_in_a_row = 0;
            let wait = next
                .saturating_duration_since(now)
                .min(Duration::from_secs(1));
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = received else {
                        return "UDP receive failed".into();
                    };
                    last_datagram = Instant::now();
                    let Ok(contents) = buf.get(..n).unwrap_or_default().try_into() else {
                        continue;
                    };
                    let input = Input::Receive(
                        last_datagram,
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local,
                            contents,
                        },
                    );
                    if let Err(e) = self.rtc.handle_input(input) {
                        tracing::debug!("WHIP: datagram from {source} not taken: {e}");
                    }
                }
                control = self.control.recv() => match control {
                    Some(Control::RequestKeyframe { rid }) => {
                        let video: Vec<Mid> = mids
                            .iter()
                            .filter(|(_, kind)| **kind == MediaKind::Video)
                            .map(|(mid, _)| *mid)
                            .collect();
                        for mid in video {
                            if let Some(mut writer) = self.rtc.writer(mid) {
                                let rid = rid.as_deref().map(str0m::media::Rid::from);
                                let _ = writer.request_keyframe(rid, KeyframeRequestKind::Pli);
                            }
                        }
                    }
                    None => return "the element stopped".into(),
                },
                _ = &mut self.deleted => return "the client deleted the session".into(),
                _ = tokio::time::sleep(wait) => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        return format!("WebRTC error: {e}");
                    }
                }
            }
        }
    }
}

/// A depacketized frame of a codec the room takes as it is.
fn frame_of(data: &MediaData) -> Option<Frame> {
    let spec = data.params.spec();
    let (kind, codec) = match spec.codec {
        Codec::H264 => (MediaKind::Video, Some(VideoCodec::H264)),
        Codec::Vp8 => (MediaKind::Video, Some(VideoCodec::Vp8)),
        Codec::Opus => (MediaKind::Audio, None),
        _ => return None,
    };
    Some(Frame {
        kind,
        codec,
        rid: data.rid.map(|r| r.to_string()),
        data: data.data.clone(),
        rtp_time: data.time.numer(),
        clock_rate: data.time.denom(),
        keyframe: data.is_keyframe(),
        contiguous: data.contiguous,
        arrival: data.network_time,
    })
}
