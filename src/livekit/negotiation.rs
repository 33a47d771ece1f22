//! What to publish and how far each track got: AddTrack, the server's
//! TrackPublished, our offer and its answer. Sans-IO: fed the server's
//! messages, it changes str0m's `Rtc` and queues the requests to send.
//!
//! One rule shapes it: str0m has one offer in flight at a time, so a track
//! the server publishes while an offer is unanswered waits for that answer,
//! and the tracks of the start wait for each other to go in one offer.

use super::publisher::PublisherError;
use super::tracks::{AudioTrackSpec, VideoTrackSpec};
use crate::codec::OPUS;
use livekit_protocol as proto;
use proto::signal_request::Message as Request;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Simulcast, SimulcastLayer};
use str0m::Rtc;

/// How long the server may take to publish a track we announced.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Offers exactly the codec we send, H.264 at the profile and level encoded
/// (from the codec table), so the server cannot pick another variant: with
/// several H.264 profiles offered it answers with the first one it likes,
/// which need not be the one the encoder produces.
pub fn rtc_config(
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

/// How far one track got.
#[derive(Clone, Debug, PartialEq)]
pub enum TrackState {
    /// AddTrack sent at `since`; the server has not published it yet.
    Requested { since: Instant },
    /// Published by the server; its m-line waits for the next offer.
    Announced { info: proto::TrackInfo },
    /// Its m-line is in the offer in flight.
    Negotiating { mid: Mid, info: proto::TrackInfo },
    /// Answered: frames go out on `mid` with payload type `pt`.
    Sending {
        mid: Mid,
        pt: Pt,
        info: proto::TrackInfo,
    },
}

#[derive(Debug)]
struct Track {
    kind: MediaKind,
    /// Our id for the track, which TrackPublished and the offer refer to.
    cid: String,
    name: String,
    /// Added after the start: its failures drop the track, not the session.
    late: bool,
    state: TrackState,
}

impl Track {
    fn info(&self) -> Option<&proto::TrackInfo> {
        match &self.state {
            TrackState::Requested { .. } => None,
            TrackState::Announced { info }
            | TrackState::Negotiating { info, .. }
            | TrackState::Sending { info, .. } => Some(info),
        }
    }

    fn mid(&self) -> Option<Mid> {
        match self.state {
            TrackState::Negotiating { mid, .. } | TrackState::Sending { mid, .. } => Some(mid),
            _ => None,
        }
    }
}

/// What the negotiation wants done.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Send this to the server.
    Signal(Box<Request>),
    /// A track's m-line went into an offer: the room has it.
    Published {
        kind: &'static str,
        layers: u32,
        info: Box<proto::TrackInfo>,
    },
}

pub struct Negotiation {
    video_spec: Option<VideoTrackSpec>,
    tracks: Vec<Track>,
    pending_offer: Option<SdpPendingOffer>,
    /// The last offer sent; a resume tells the server it already has it.
    last_offer: Option<proto::SessionDescription>,
    /// Every m-line's track cid, as each offer tells the server.
    mid_to_track_id: HashMap<String, String>,
    actions: VecDeque<Action>,
}

impl Negotiation {
    /// Announces the tracks of the start.
    pub fn new(
        video: Option<&VideoTrackSpec>,
        audio: Option<&AudioTrackSpec>,
        now: Instant,
    ) -> Self {
        let mut negotiation = Negotiation {
            video_spec: video.cloned(),
            tracks: Vec::new(),
            pending_offer: None,
            last_offer: None,
            mid_to_track_id: HashMap::new(),
            actions: VecDeque::new(),
        };
        if let Some(spec) = video {
            let cid = format!("video-{}", std::process::id());
            negotiation.request(MediaKind::Video, spec.add_track_request(&cid), false, now);
        }
        if let Some(spec) = audio {
            negotiation.request(
                MediaKind::Audio,
                spec.add_track_request(&audio_cid()),
                false,
                now,
            );
        }
        negotiation
    }

    fn request(
        &mut self,
        kind: MediaKind,
        request: proto::AddTrackRequest,
        late: bool,
        now: Instant,
    ) {
        self.tracks.push(Track {
            kind,
            cid: request.cid.clone(),
            name: request.name.clone(),
            late,
            state: TrackState::Requested { since: now },
        });
        self.actions
            .push_back(Action::Signal(Box::new(Request::AddTrack(request))));
    }

    /// An audio track for a session that started without one.
    pub fn add_audio(&mut self, spec: &AudioTrackSpec, now: Instant) {
        if self.tracks.iter().any(|t| t.kind == MediaKind::Audio) {
            return;
        }
        self.request(
            MediaKind::Audio,
            spec.add_track_request(&audio_cid()),
            true,
            now,
        );
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The server published track `cid`: offer it when no offer is in flight.
    pub fn on_track_published(&mut self, rtc: &mut Rtc, published: proto::TrackPublishedResponse) {
        let Some(track) = self.tracks.iter_mut().find(|t| t.cid == published.cid) else {
            return;
        };
        if matches!(track.state, TrackState::Requested { .. }) {
            let info = published.track.unwrap_or_default();
            track.state = TrackState::Announced { info };
            self.offer(rtc);
        }
    }

    /// The server refused a request. A refused track of the start ends the
    /// session; a late one is dropped.
    pub fn on_request_refused(
        &mut self,
        response: &proto::RequestResponse,
    ) -> Result<(), PublisherError> {
        // Older servers do not say which request it was: blame the first waiting track.
        let cid = match &response.request {
            Some(proto::request_response::Request::AddTrack(request)) => Some(request.cid.as_str()),
            _ => None,
        };
        let Some(index) = self.tracks.iter().position(|t| {
            matches!(t.state, TrackState::Requested { .. }) && cid.is_none_or(|c| c == t.cid)
        }) else {
            return Ok(());
        };
        let track = self.tracks.remove(index);
        let message = format!(
            "the LiveKit server refused track {:?}: {}",
            track.name, response.message
        );
        if track.late {
            tracing::warn!("{message}");
            Ok(())
        } else {
            Err(PublisherError::Refused(message))
        }
    }

    /// The answer to our offer: the tracks in it start sending, and a track
    /// that waited for the answer is offered.
    pub fn on_answer(&mut self, rtc: &mut Rtc, sdp: &str) -> Result<(), PublisherError> {
        tracing::debug!("answer:\n{sdp}");
        if let Some(kind) = rejected_media(sdp) {
            return Err(self.codec_refused(kind));
        }
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| {
            PublisherError::Other(format!("the LiveKit server sent an unreadable answer: {e}"))
        })?;
        let Some(pending) = self.pending_offer.take() else {
            return Ok(());
        };
        rtc.sdp_api().accept_answer(pending, answer).map_err(|e| {
            PublisherError::Other(format!("the LiveKit server's answer was refused: {e}"))
        })?;
        let video_codec = match self.video_spec.as_ref().map(|s| s.codec.is_h264()) {
            Some(false) => Codec::Vp8,
            _ => Codec::H264,
        };
        for i in 0..self.tracks.len() {
            let Some(track) = self.tracks.get(i) else {
                break;
            };
            let TrackState::Negotiating { mid, info } = &track.state else {
                continue;
            };
            let codec = match track.kind {
                MediaKind::Video => video_codec,
                MediaKind::Audio => Codec::Opus,
            };
            // A track whose codec the answer left out would send nothing.
            let pt = rtc.writer(*mid).and_then(|writer| {
                writer
                    .payload_params()
                    .find(|p| p.spec().codec == codec)
                    .map(|p| p.pt())
            });
            let Some(pt) = pt else {
                return Err(self.codec_refused(track.kind));
            };
            let (mid, info) = (*mid, info.clone());
            if let Some(track) = self.tracks.get_mut(i) {
                track.state = TrackState::Sending { mid, pt, info };
            }
        }
        self.offer(rtc);
        Ok(())
    }

    /// When a requested track is overdue, if any is.
    pub fn deadline(&self) -> Option<Instant> {
        self.tracks
            .iter()
            .filter_map(|t| match t.state {
                TrackState::Requested { since } => Some(since + PUBLISH_TIMEOUT),
                _ => None,
            })
            .min()
    }

    /// Gives up on overdue tracks: the session for one of the start, the
    /// track for a late one.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PublisherError> {
        let overdue = |t: &Track| matches!(t.state, TrackState::Requested { since } if now >= since + PUBLISH_TIMEOUT);
        if let Some(track) = self.tracks.iter().find(|t| overdue(t) && !t.late) {
            return Err(PublisherError::Refused(format!(
                "the LiveKit server did not publish track {:?}",
                track.name
            )));
        }
        self.tracks.retain(|t| {
            let keep = !overdue(t);
            if !keep {
                tracing::warn!("the LiveKit server did not publish track {:?}", t.name);
            }
            keep
        });
        Ok(())
    }

    /// A track of the start the server has not published yet, by name.
    pub fn waiting_to_start(&self) -> Option<&str> {
        self.tracks
            .iter()
            .find(|t| !t.late && matches!(t.state, TrackState::Requested { .. }))
            .map(|t| t.name.as_str())
    }

    /// Where and how to send a frame of `kind`, once it may be sent.
    pub fn sending(&self, kind: MediaKind) -> Option<(Mid, Pt)> {
        self.tracks.iter().find_map(|t| match t.state {
            TrackState::Sending { mid, pt, .. } if t.kind == kind => Some((mid, pt)),
            _ => None,
        })
    }

    /// The kind of the track on m-line `mid`.
    pub fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.tracks
            .iter()
            .find(|t| t.mid() == Some(mid))
            .map(|t| t.kind)
    }

    /// Whether the server's track `sid` is our video.
    pub fn is_video_track(&self, sid: &str) -> bool {
        self.tracks
            .iter()
            .any(|t| t.kind == MediaKind::Video && t.info().is_some_and(|i| i.sid == sid))
    }

    /// What a resume tells the server it already has: our offer and tracks.
    pub fn sync_state(&self) -> proto::SyncState {
        proto::SyncState {
            offer: self.last_offer.clone(),
            publish_tracks: self
                .tracks
                .iter()
                .filter(|t| t.mid().is_some())
                .map(|t| proto::TrackPublishedResponse {
                    cid: t.cid.clone(),
                    track: t.info().cloned(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Offers every announced track, unless an offer is in flight or a
    /// track of the start is still on its way (they go in one offer).
    fn offer(&mut self, rtc: &mut Rtc) {
        if self.pending_offer.is_some() || self.waiting_to_start().is_some() {
            return;
        }
        let mut sdp = rtc.sdp_api();
        let mut added = Vec::new();
        for (i, track) in self.tracks.iter().enumerate() {
            if !matches!(track.state, TrackState::Announced { .. }) {
                continue;
            }
            let simulcast = match (track.kind, &self.video_spec) {
                (MediaKind::Video, Some(spec)) => simulcast_of(spec),
                _ => None,
            };
            let mid = sdp.add_media(
                track.kind,
                Direction::SendOnly,
                Some("ingress".into()),
                Some(track.cid.clone()),
                simulcast,
            );
            added.push((i, mid));
        }
        let Some((offer, pending)) = sdp.apply() else {
            return;
        };
        for (i, mid) in added {
            let Some(track) = self.tracks.get_mut(i) else {
                continue;
            };
            let TrackState::Announced { info } = &track.state else {
                continue;
            };
            let info = info.clone();
            let layers = match track.kind {
                MediaKind::Video => self.video_spec.as_ref().map_or(1, |s| s.layers.len()),
                MediaKind::Audio => 1,
            };
            self.actions.push_back(Action::Published {
                kind: kind_name(track.kind),
                layers: layers as u32,
                info: Box::new(info.clone()),
            });
            self.mid_to_track_id
                .insert(mid.to_string(), track.cid.clone());
            track.state = TrackState::Negotiating { mid, info };
        }
        self.pending_offer = Some(pending);
        let offer = proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: self.last_offer.as_ref().map_or(1, |o| o.id + 1),
            mid_to_track_id: self.mid_to_track_id.clone(),
        };
        tracing::debug!("sending offer {}:\n{}", offer.id, offer.sdp);
        self.last_offer = Some(offer.clone());
        self.actions
            .push_back(Action::Signal(Box::new(Request::Offer(offer))));
    }

    fn codec_refused(&self, kind: MediaKind) -> PublisherError {
        let mime = match kind {
            MediaKind::Video => self.video_spec.as_ref().map_or("video", |s| s.codec.mime()),
            MediaKind::Audio => OPUS.mime,
        };
        PublisherError::CodecRefused(format!(
            "the LiveKit server does not accept {mime} in this room (codec refused)"
        ))
    }

    #[cfg(test)]
    fn state(&self, kind: MediaKind) -> Option<&TrackState> {
        self.tracks
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| &t.state)
    }
}

fn simulcast_of(spec: &VideoTrackSpec) -> Option<Simulcast> {
    spec.is_simulcast().then(|| {
        let mut s = Simulcast::new();
        for i in 0..spec.layers.len() {
            if let Some(rid) = spec.rid(i) {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
        }
        s
    })
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoCodec;
    use crate::livekit::tracks::LayerSpec;
    use str0m::change::SdpOffer;

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

    fn video() -> VideoTrackSpec {
        let layer = |width, height| LayerSpec {
            width,
            height,
            bitrate: 0,
        };
        VideoTrackSpec {
            name: "video".into(),
            source: proto::TrackSource::Camera,
            codec: VideoCodec::H264Baseline,
            h264_level: None,
            layers: vec![layer(640, 360), layer(1280, 720)],
        }
    }

    fn audio() -> AudioTrackSpec {
        AudioTrackSpec {
            name: "audio".into(),
            source: proto::TrackSource::Microphone,
            stereo: false,
            dtx: true,
        }
    }

    /// Our side and a str0m peer standing in for the server's answers.
    struct Fixture {
        rtc: Rtc,
        server: Rtc,
        negotiation: Negotiation,
        now: Instant,
    }

    impl Fixture {
        fn new(video: Option<VideoTrackSpec>, audio: Option<AudioTrackSpec>) -> Self {
            let now = Instant::now();
            Fixture {
                rtc: rtc_config(video.as_ref(), None).build(now),
                server: Rtc::builder().build(now),
                negotiation: Negotiation::new(video.as_ref(), audio.as_ref(), now),
                now,
            }
        }

        fn actions(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.negotiation.poll_action()).collect()
        }

        /// The cids of the AddTracks among `actions`.
        fn added(actions: &[Action]) -> Vec<String> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Signal(request) => match request.as_ref() {
                        Request::AddTrack(r) => Some(r.cid.clone()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        }

        fn offers(actions: &[Action]) -> Vec<proto::SessionDescription> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Signal(request) => match request.as_ref() {
                        Request::Offer(o) => Some(o.clone()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        }

        fn publish(&mut self, cid: &str, sid: &str) {
            let published = proto::TrackPublishedResponse {
                cid: cid.into(),
                track: Some(proto::TrackInfo {
                    sid: sid.into(),
                    ..Default::default()
                }),
            };
            self.negotiation
                .on_track_published(&mut self.rtc, published);
        }

        fn answer(&mut self, offer: &proto::SessionDescription) -> Result<(), PublisherError> {
            let offer = SdpOffer::from_sdp_string(&offer.sdp).expect("a readable offer");
            let answer = self.server.sdp_api().accept_offer(offer).expect("answered");
            self.negotiation
                .on_answer(&mut self.rtc, &answer.to_sdp_string())
        }
    }

    fn is_sending(state: Option<&TrackState>) -> bool {
        matches!(state, Some(TrackState::Sending { .. }))
    }

    #[test]
    fn the_tracks_of_the_start_go_in_one_offer() {
        let mut f = Fixture::new(Some(video()), Some(audio()));
        let requested = f.actions();
        let cids = Fixture::added(&requested);
        assert_eq!(cids.len(), 2, "{requested:?}");
        assert!(Fixture::offers(&requested).is_empty());

        f.publish(&cids[0], "TR_video");
        assert!(
            f.actions().is_empty(),
            "no offer while audio is unpublished"
        );
        assert!(matches!(
            f.negotiation.state(MediaKind::Video),
            Some(TrackState::Announced { .. })
        ));

        f.publish(&cids[1], "TR_audio");
        let actions = f.actions();
        let offers = Fixture::offers(&actions);
        assert_eq!(offers.len(), 1, "{actions:?}");
        assert_eq!(offers[0].id, 1);
        assert_eq!(offers[0].mid_to_track_id.len(), 2);
        assert!(offers[0].sdp.contains("a=simulcast:send q;h"));
        let published = actions
            .iter()
            .filter(|a| matches!(a, Action::Published { .. }))
            .count();
        assert_eq!(published, 2);
        assert!(f.negotiation.sending(MediaKind::Video).is_none());

        f.answer(&offers[0]).expect("accepted");
        assert!(is_sending(f.negotiation.state(MediaKind::Video)));
        assert!(is_sending(f.negotiation.state(MediaKind::Audio)));
        assert!(f.negotiation.is_video_track("TR_video"));
        assert!(!f.negotiation.is_video_track("TR_audio"));
        let state = f.negotiation.sync_state();
        assert_eq!(state.offer.map(|o| o.id), Some(1));
        assert_eq!(state.publish_tracks.len(), 2);
    }

    /// str0m has one offer in flight: late audio published before the first
    /// answer is offered when that answer came.
    #[test]
    fn late_audio_waits_for_the_offer_in_flight() {
        let mut f = Fixture::new(Some(video()), None);
        let video_cid = Fixture::added(&f.actions()).remove(0);
        f.publish(&video_cid, "TR_video");
        let first = Fixture::offers(&f.actions()).remove(0);

        f.negotiation.add_audio(&audio(), f.now);
        f.negotiation.add_audio(&audio(), f.now);
        let audio_cid = Fixture::added(&f.actions());
        assert_eq!(audio_cid.len(), 1, "one AddTrack for the audio");
        f.publish(&audio_cid[0], "TR_audio");
        assert!(f.actions().is_empty(), "no second offer in flight");
        assert!(matches!(
            f.negotiation.state(MediaKind::Audio),
            Some(TrackState::Announced { .. })
        ));

        f.answer(&first).expect("accepted");
        assert!(is_sending(f.negotiation.state(MediaKind::Video)));
        let second = Fixture::offers(&f.actions());
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].id, 2);
        assert!(matches!(
            f.negotiation.state(MediaKind::Audio),
            Some(TrackState::Negotiating { .. })
        ));
        f.answer(&second[0]).expect("accepted");
        assert!(is_sending(f.negotiation.state(MediaKind::Audio)));
        assert_eq!(f.negotiation.sync_state().publish_tracks.len(), 2);
    }

    #[test]
    fn a_refused_track_ends_the_start_but_not_a_running_session() {
        let refusal = |cid: &str| proto::RequestResponse {
            reason: proto::request_response::Reason::NotAllowed as i32,
            message: "no".into(),
            request: Some(proto::request_response::Request::AddTrack(
                proto::AddTrackRequest {
                    cid: cid.into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let mut f = Fixture::new(Some(video()), None);
        let video_cid = Fixture::added(&f.actions()).remove(0);
        let refused = f.negotiation.on_request_refused(&refusal(&video_cid));
        assert_eq!(
            refused,
            Err(PublisherError::Refused(
                "the LiveKit server refused track \"video\": no".into()
            ))
        );

        let mut f = Fixture::new(Some(video()), None);
        let video_cid = Fixture::added(&f.actions()).remove(0);
        f.publish(&video_cid, "TR_video");
        f.negotiation.add_audio(&audio(), f.now);
        let audio_cid = Fixture::added(&f.actions()).remove(0);
        assert_eq!(
            f.negotiation.on_request_refused(&refusal(&audio_cid)),
            Ok(())
        );
        assert_eq!(f.negotiation.state(MediaKind::Audio), None);
        assert!(f.negotiation.state(MediaKind::Video).is_some());
    }

    #[test]
    fn an_unpublished_track_of_the_start_times_out() {
        let mut f = Fixture::new(Some(video()), None);
        let deadline = f.negotiation.deadline().expect("a deadline");
        assert_eq!(deadline, f.now + PUBLISH_TIMEOUT);
        assert_eq!(f.negotiation.handle_timeout(f.now), Ok(()));
        assert_eq!(
            f.negotiation.handle_timeout(deadline),
            Err(PublisherError::Refused(
                "the LiveKit server did not publish track \"video\"".into()
            ))
        );
    }

    #[test]
    fn an_answer_without_our_codec_is_a_codec_refusal() {
        let mut f = Fixture::new(Some(video()), None);
        let cid = Fixture::added(&f.actions()).remove(0);
        f.publish(&cid, "TR_video");
        let offer = Fixture::offers(&f.actions()).remove(0);
        // A server that only takes VP8 answers with the m-line rejected.
        f.server = Rtc::builder().clear_codecs().enable_vp8(true).build(f.now);
        let err = f.answer(&offer).expect_err("refused");
        assert!(matches!(err, PublisherError::CodecRefused(_)), "{err:?}");
        let err = err.to_string();
        assert!(
            err.contains("video/H264") && err.contains("codec refused"),
            "{err}"
        );
    }
}
