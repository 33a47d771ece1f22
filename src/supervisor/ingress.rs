//! LiveKit's ingress semantics as pure functions: what CreateIngress and
//! UpdateIngress accept, the IngressInfo they produce, and whether a stream may
//! start. The API and the session manager both call these.

use crate::presets::{AudioEncoding, VideoEncoding};
use livekit_protocol as proto;
use proto::ingress_state::Status;
use rand::distr::{Alphanumeric, SampleString};

/// A Twirp error: its code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Internal(String),
    /// A dependency (the store) does not answer now; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The Twirp error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::FailedPrecondition(_) => "failed_precondition",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::Unimplemented(_) => "unimplemented",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status Twirp maps the code to.
    pub fn http_status(&self) -> u16 {
        match self {
            ApiError::InvalidArgument(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::FailedPrecondition(_) => 412,
            ApiError::Unauthenticated(_) => 401,
            ApiError::PermissionDenied(_) => 403,
            ApiError::Unimplemented(_) => 501,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) => 503,
        }
    }
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn random(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// Whether options were really given: LiveKit's clients send empty messages
/// for "unchanged".
fn video_given(v: &Option<proto::IngressVideoOptions>) -> Option<&proto::IngressVideoOptions> {
    v.as_ref()
        .filter(|v| **v != proto::IngressVideoOptions::default())
}

fn audio_given(a: &Option<proto::IngressAudioOptions>) -> Option<&proto::IngressAudioOptions> {
    a.as_ref()
        .filter(|a| **a != proto::IngressAudioOptions::default())
}

/// LiveKit's checks on a complete IngressInfo.
pub fn validate(info: &proto::IngressInfo) -> Result<(), ApiError> {
    let invalid = |m: String| Err(ApiError::InvalidArgument(m));
    match proto::IngressInput::try_from(info.input_type) {
        Ok(proto::IngressInput::RtmpInput) => {}
        Ok(other) => {
            return Err(ApiError::Unimplemented(format!(
                "{} is not supported yet: this ingress takes RTMP",
                other.as_str_name()
            )))
        }
        Err(_) => return invalid(format!("unknown input type {}", info.input_type)),
    }
    if info.participant_identity.is_empty() {
        return invalid("participant_identity is required".into());
    }
    #[allow(deprecated)]
    let bypass = info.bypass_transcoding;
    if bypass || info.enable_transcoding == Some(false) {
        return invalid("transcoding cannot be disabled for RTMP input".into());
    }
    if let Some(video) = &info.video {
        match proto::TrackSource::try_from(video.source) {
            Ok(
                proto::TrackSource::Unknown
                | proto::TrackSource::Camera
                | proto::TrackSource::ScreenShare,
            ) => {}
            _ => {
                return invalid(format!(
                    "video source {} is not a video source",
                    video.source
                ))
            }
        }
    }
    if let Some(audio) = &info.audio {
        match proto::TrackSource::try_from(audio.source) {
            Ok(
                proto::TrackSource::Unknown
                | proto::TrackSource::Microphone
                | proto::TrackSource::ScreenShareAudio,
            ) => {}
            _ => {
                return invalid(format!(
                    "audio source {} is not an audio source",
                    audio.source
                ))
            }
        }
    }
    VideoEncoding::from_proto(info.video.as_ref())
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    AudioEncoding::from_proto(info.audio.as_ref())
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    Ok(())
}

/// CreateIngress: a new reusable RTMP ingress, inactive, with a fresh id and key.
pub fn create(
    req: proto::CreateIngressRequest,
    rtmp_base_url: &str,
) -> Result<proto::IngressInfo, ApiError> {
    #[allow(deprecated)]
    let info = proto::IngressInfo {
        ingress_id: format!("IN_{}", random(12)),
        name: req.name,
        stream_key: random(16),
        url: rtmp_base_url.to_string(),
        input_type: req.input_type,
        bypass_transcoding: req.bypass_transcoding,
        enable_transcoding: req.enable_transcoding,
        audio: audio_given(&req.audio).cloned(),
        video: video_given(&req.video).cloned(),
        room_name: req.room_name,
        participant_identity: req.participant_identity,
        participant_name: req.participant_name,
        participant_metadata: req.participant_metadata,
        reusable: true,
        state: Some(proto::IngressState {
            status: Status::EndpointInactive as i32,
            updated_at: now_nanos(),
            ..Default::default()
        }),
        enabled: req.enabled,
    };
    validate(&info)?;
    Ok(info)
}

/// UpdateIngress: only the fields given change; an ingress in error is reset.
pub fn update(
    mut info: proto::IngressInfo,
    req: proto::UpdateIngressRequest,
) -> Result<proto::IngressInfo, ApiError> {
    let set = |field: &mut String, value: String| {
        if !value.is_empty() {
            *field = value;
        }
    };
    set(&mut info.name, req.name);
    set(&mut info.room_name, req.room_name);
    set(&mut info.participant_identity, req.participant_identity);
    set(&mut info.participant_name, req.participant_name);
    set(&mut info.participant_metadata, req.participant_metadata);
    #[allow(deprecated)]
    if let Some(bypass) = req.bypass_transcoding {
        info.bypass_transcoding = bypass;
    }
    if req.enable_transcoding.is_some() {
        info.enable_transcoding = req.enable_transcoding;
    }
    if let Some(video) = video_given(&req.video) {
        info.video = Some(video.clone());
    }
    if let Some(audio) = audio_given(&req.audio) {
        info.audio = Some(audio.clone());
    }
    if req.enabled.is_some() {
        info.enabled = req.enabled;
    }
    validate(&info)?;
    let state = info.state.get_or_insert_with(Default::default);
    if state.status == Status::EndpointError as i32 {
        state.status = Status::EndpointInactive as i32;
        state.error.clear();
    }
    state.updated_at = now_nanos();
    Ok(info)
}

/// Whether a stream may start on this ingress now; the text goes to the publisher.
pub fn may_publish(info: &proto::IngressInfo) -> Result<(), String> {
    if info.enabled == Some(false) {
        return Err("this ingress is disabled".into());
    }
    if info.room_name.is_empty() {
        return Err("this ingress has no room yet".into());
    }
    // Whether a stream runs is the claim's to say (see `store`), not the
    // stored state's: a node that died leaves its last state behind.
    Ok(())
}

/// Whether a push by `input` may publish to this ingress: an RTMP ingress's
/// key is taken over RTMP and, where the node listens for it, SRT (the
/// extension documented in the README); other inputs take no push.
pub fn takes_push(info: &proto::IngressInfo, input: crate::input::InputKind) -> Result<(), String> {
    use crate::input::InputKind;
    let rtmp = info.input_type == proto::IngressInput::RtmpInput as i32;
    match input {
        InputKind::Rtmp | InputKind::Srt if rtmp => Ok(()),
        _ => Err(format!(
            "this ingress takes {}, not {}",
            proto::IngressInput::try_from(info.input_type)
                .map_or("another input", |i| i.as_str_name()),
            input.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> proto::CreateIngressRequest {
        proto::CreateIngressRequest {
            input_type: proto::IngressInput::RtmpInput as i32,
            name: "show".into(),
            room_name: "stage".into(),
            participant_identity: "host".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_gives_an_inactive_reusable_rtmp_ingress() {
        let info = create(request(), "rtmp://h/live").expect("valid");
        assert!(info.ingress_id.starts_with("IN_") && info.ingress_id.len() == 15);
        assert_eq!(info.stream_key.len(), 16);
        assert_eq!(info.url, "rtmp://h/live");
        assert!(info.reusable);
        assert_eq!(
            info.state.expect("state").status,
            Status::EndpointInactive as i32
        );
        let other = create(request(), "rtmp://h/live").expect("valid");
        assert_ne!(
            other.stream_key,
            create(request(), "x")
                .map(|i| i.stream_key)
                .unwrap_or_default()
        );
    }

    #[test]
    fn livekits_validation() {
        let mut r = request();
        r.participant_identity.clear();
        assert!(matches!(create(r, ""), Err(ApiError::InvalidArgument(_))));
        let mut r = request();
        r.enable_transcoding = Some(false);
        assert!(matches!(create(r, ""), Err(ApiError::InvalidArgument(_))));
        let mut r = request();
        r.input_type = proto::IngressInput::WhipInput as i32;
        assert!(matches!(create(r, ""), Err(ApiError::Unimplemented(_))));
        let mut r = request();
        r.video = Some(proto::IngressVideoOptions {
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        });
        assert!(matches!(create(r, ""), Err(ApiError::InvalidArgument(_))));
        let mut r = request();
        r.video = Some(proto::IngressVideoOptions {
            encoding_options: Some(proto::ingress_video_options::EncodingOptions::Options(
                proto::IngressVideoEncodingOptions {
                    layers: vec![proto::VideoLayer {
                        width: 641,
                        height: 360,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
        let err = create(r, "").expect_err("odd layer");
        assert!(err.to_string().contains("even"), "{err}");
    }

    #[test]
    fn update_changes_only_what_is_given_and_resets_errors() {
        let mut info = create(request(), "u").expect("valid");
        info.state.as_mut().expect("state").status = Status::EndpointError as i32;
        info.state.as_mut().expect("state").error = "boom".into();
        let updated = update(
            info.clone(),
            proto::UpdateIngressRequest {
                ingress_id: info.ingress_id.clone(),
                room_name: "other".into(),
                audio: Some(Default::default()),
                video: Some(Default::default()),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(updated.room_name, "other");
        assert_eq!(updated.name, "show");
        assert_eq!(updated.participant_identity, "host");
        assert_eq!(updated.stream_key, info.stream_key);
        let state = updated.state.expect("state");
        assert_eq!(state.status, Status::EndpointInactive as i32);
        assert!(state.error.is_empty());
    }

    #[test]
    fn disabled_or_roomless_ingresses_refuse_streams() {
        let mut info = create(request(), "u").expect("valid");
        assert!(may_publish(&info).is_ok());
        info.enabled = Some(false);
        assert!(may_publish(&info).is_err());
        info.enabled = None;
        info.room_name.clear();
        assert!(may_publish(&info).is_err());
    }
}
