//! LiveKit's ingress semantics as pure functions: what CreateIngress and
//! UpdateIngress accept, the IngressInfo they produce, and whether a stream may
//! start. The API and the session manager both call these.

use livekit_protocol as proto;
use proto::ingress_state::Status;

/// A Twirp error: its code and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    /// Twirp's own: a body that does not decode as the method's request.
    #[error("{0}")]
    Malformed(String),
    /// Twirp's own: no such method, or a content type Twirp does not speak.
    #[error("{0}")]
    BadRoute(String),
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
            ApiError::Malformed(_) => "malformed",
            ApiError::BadRoute(_) => "bad_route",
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
            ApiError::InvalidArgument(_) | ApiError::Malformed(_) => 400,
            ApiError::BadRoute(_) => 404,
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

/// LiveKit's id alphabet (protocol's `utils/guid`, shortuuid's): base57,
/// without 0, 1, I, O and l.
pub const ID_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Characters after the prefix in an id, and in a stream key (`guid.Size`).
pub const ID_SIZE: usize = 12;

/// `prefix` and [`ID_SIZE`] characters of [`ID_ALPHABET`], uniformly from the
/// thread's CSPRNG (ChaCha seeded by the OS), as LiveKit's `guid.New`.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut id = String::with_capacity(prefix.len() + ID_SIZE);
    id.push_str(prefix);
    id.extend((0..ID_SIZE).map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char));
    id
}

/// LiveKit's answer when an ingress id names nothing (also an empty one).
pub fn not_found() -> ApiError {
    ApiError::NotFound(format!("{PSRPC}ingress does not exist"))
}

fn invalid_ingress(m: &str) -> ApiError {
    ApiError::InvalidArgument(format!("{PSRPC}invalid ingress: {m}"))
}

/// How livekit-server's psrpc errors read once Twirp has them (seen in its
/// answers): this prefix, then the error's text.
pub const PSRPC: &str = "twirp error unknown: ";

fn invalid_video(m: &str) -> ApiError {
    ApiError::InvalidArgument(format!("{PSRPC}invalid video parameters: {m}"))
}

fn invalid_audio(m: &str) -> ApiError {
    ApiError::InvalidArgument(format!("{PSRPC}invalid audio parameters: {m}"))
}

fn invalid_bypass(m: &str) -> ApiError {
    ApiError::InvalidArgument(format!(
        "{PSRPC}invalid transcoding bypass configuration: {m}"
    ))
}

fn is_input(info: &proto::IngressInfo, input: proto::IngressInput) -> bool {
    info.input_type == input as i32
}

/// LiveKit's `ingress.ValidateForSerialization` (protocol's
/// `ingress/validation.go`), check for check and message for message; the one
/// extension: custom video may also ask for H.264 main and high (LiveKit
/// refuses them with "video codec unsupported"; see README, LiveKit
/// compatibility).
pub fn validate_for_serialization(info: &proto::IngressInfo) -> Result<(), ApiError> {
    use proto::IngressInput::{RtmpInput, UrlInput, WhipInput};
    if !(is_input(info, RtmpInput) || is_input(info, WhipInput) || is_input(info, UrlInput)) {
        return Err(invalid_ingress("unsupported input type"));
    }
    if is_input(info, UrlInput) {
        if info.url.is_empty() {
            return Err(invalid_ingress("no source URL"));
        }
        if info.enabled == Some(false) {
            return Err(invalid_ingress("disabled non reusable ingress"));
        }
    } else if info.stream_key.is_empty() {
        return Err(invalid_ingress("no stream key"));
    }
    if info.participant_identity.is_empty() {
        return Err(invalid_ingress("no participant identity"));
    }
    let video_encoding = info
        .video
        .as_ref()
        .is_some_and(|v| v.encoding_options.is_some());
    let audio_encoding = info
        .audio
        .as_ref()
        .is_some_and(|a| a.encoding_options.is_some());
    #[allow(deprecated)]
    if info.bypass_transcoding {
        if !is_input(info, WhipInput) {
            return Err(invalid_bypass(
                "bypassing transcoding impossible with selected input type",
            ));
        }
        if video_encoding {
            return Err(invalid_bypass(
                "video encoding options must be empty if transcoding bypass is selected",
            ));
        }
        if audio_encoding {
            return Err(invalid_bypass(
                "audio encoding options must be empty if transcoding bypass is selected",
            ));
        }
    }
    let transcoding = if is_input(info, WhipInput) {
        info.enable_transcoding.unwrap_or(false)
    } else if info.enable_transcoding == Some(false) {
        return Err(invalid_bypass(
            "bypassing transcoding impossible with selected input type",
        ));
    } else {
        true
    };
    if !transcoding && video_encoding {
        return Err(invalid_bypass(
            "video encoding options must be empty if transcoding is disabled",
        ));
    }
    if !transcoding && audio_encoding {
        return Err(invalid_bypass(
            "audio encoding options must be empty if transcoding is disabled",
        ));
    }
    if let Some(video) = &info.video {
        validate_video(video)?;
    }
    if let Some(audio) = &info.audio {
        validate_audio(audio)?;
    }
    Ok(())
}

fn validate_video(video: &proto::IngressVideoOptions) -> Result<(), ApiError> {
    use proto::ingress_video_options::EncodingOptions;
    use proto::TrackSource::{Camera, ScreenShare, Unknown};
    if !matches!(
        proto::TrackSource::try_from(video.source),
        Ok(Unknown | Camera | ScreenShare)
    ) {
        return Err(invalid_video("invalid track source"));
    }
    let options = match &video.encoding_options {
        None => return Ok(()),
        Some(EncodingOptions::Preset(p)) => {
            return match proto::IngressVideoEncodingPreset::try_from(*p) {
                Ok(_) => Ok(()),
                Err(_) => Err(invalid_video("invalid preset")),
            }
        }
        Some(EncodingOptions::Options(o)) => o,
    };
    if options.frame_rate < 0.0 {
        return Err(invalid_video("invalid framerate"));
    }
    use proto::VideoCodec::{DefaultVc, H264Baseline, H264High, H264Main, Vp8};
    // H264Main and H264High: this service's extension.
    if !matches!(
        proto::VideoCodec::try_from(options.video_codec),
        Ok(DefaultVc | H264Baseline | H264Main | H264High | Vp8)
    ) {
        return Err(invalid_video("video codec unsupported"));
    }
    let mut by_quality = std::collections::BTreeMap::new();
    for layer in &options.layers {
        if layer.width == 0 || layer.height == 0 {
            return Err(invalid_video("invalid output media dimensions"));
        }
        if layer.width % 2 == 1 {
            return Err(invalid_ingress("layer width must be even"));
        }
        if layer.height % 2 == 1 {
            return Err(invalid_ingress("layer height must be even"));
        }
        if by_quality.insert(layer.quality, layer).is_some() {
            return Err(invalid_video(
                "more than one layer with the same quality level",
            ));
        }
    }
    // LOW, MEDIUM, HIGH in order; a layer of another quality (OFF) is not compared.
    let (mut width, mut height) = (0, 0);
    for quality in [
        proto::VideoQuality::Low,
        proto::VideoQuality::Medium,
        proto::VideoQuality::High,
    ] {
        let Some(layer) = by_quality.get(&(quality as i32)) else {
            continue;
        };
        if layer.height < height {
            return Err(invalid_video(
                "video layers do not have increasing height with increasing quality",
            ));
        }
        if layer.width < width {
            return Err(invalid_video(
                "video layers do not have increasing width with increasing quality",
            ));
        }
        (width, height) = (layer.width, layer.height);
    }
    Ok(())
}

fn validate_audio(audio: &proto::IngressAudioOptions) -> Result<(), ApiError> {
    use proto::ingress_audio_options::EncodingOptions;
    use proto::TrackSource::{Microphone, ScreenShareAudio, Unknown};
    if !matches!(
        proto::TrackSource::try_from(audio.source),
        Ok(Unknown | Microphone | ScreenShareAudio)
    ) {
        return Err(invalid_audio("invalid track source"));
    }
    match &audio.encoding_options {
        None => Ok(()),
        Some(EncodingOptions::Preset(p)) => match proto::IngressAudioEncodingPreset::try_from(*p) {
            Ok(_) => Ok(()),
            Err(_) => Err(invalid_audio("invalid preset")),
        },
        Some(EncodingOptions::Options(o)) => {
            if !matches!(
                proto::AudioCodec::try_from(o.audio_codec),
                Ok(proto::AudioCodec::DefaultAc | proto::AudioCodec::Opus)
            ) {
                return Err(invalid_audio("audio codec unsupported"));
            }
            if o.channels > 2 {
                return Err(invalid_audio("invalid audio channel count"));
            }
            Ok(())
        }
    }
}

/// LiveKit's checks, then what this service needs to run the stream: settings
/// the pipeline can be built from.
pub fn validate(info: &proto::IngressInfo) -> Result<(), ApiError> {
    validate_for_serialization(info)?;
    if is_input(info, proto::IngressInput::UrlInput) && info.room_name.is_empty() {
        // LiveKit's `ingress.Validate`, which URL input goes through.
        return Err(invalid_ingress("no room name"));
    }
    crate::options::resolve(info).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    Ok(())
}

/// LiveKit's `updateEnableTranscoding`: `enable_transcoding` filled in (true
/// but for WHIP) and the deprecated `bypass_transcoding` derived from it; what
/// a request says of `bypass_transcoding` never counts.
#[allow(deprecated)]
fn derive_transcoding(info: &mut proto::IngressInfo) {
    match info.enable_transcoding {
        Some(enable) => info.bypass_transcoding = !enable,
        None if is_input(info, proto::IngressInput::WhipInput) => {
            info.enable_transcoding = Some(false);
            info.bypass_transcoding = true;
        }
        None => info.enable_transcoding = Some(true),
    }
}

/// The URLs publishers are given, without the stream key: the RTMP one and
/// the WHIP one (LiveKit's `rtmp_base_url` and `whip_base_url`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseUrls {
    pub rtmp: String,
    pub whip: String,
}

/// CreateIngress as LiveKit's `CreateIngress`: the input type first, the URL
/// (the RTMP or WHIP base URL as configured, or a URL input's source), then a new reusable ingress with a fresh id and key, an
/// empty (INACTIVE) state, video and audio options as given (an empty message
/// stays an empty message).
pub fn create(
    req: proto::CreateIngressRequest,
    base_urls: &BaseUrls,
) -> Result<proto::IngressInfo, ApiError> {
    use proto::IngressInput::{RtmpInput, UrlInput, WhipInput};
    let input = proto::IngressInput::try_from(req.input_type);
    let url = match input {
        Ok(RtmpInput) => base_urls.rtmp.clone(),
        Ok(WhipInput) => base_urls.whip.clone(),
        Ok(UrlInput) => source_url(&req.url)?,
        Err(_) => {
            return Err(ApiError::InvalidArgument(format!(
                "{PSRPC}invalid ingress type"
            )))
        }
    };
    #[allow(deprecated)]
    let mut info = proto::IngressInfo {
        ingress_id: new_id("IN_"),
        name: req.name,
        stream_key: if input == Ok(UrlInput) {
            String::new()
        } else {
            new_id("")
        },
        url,
        input_type: req.input_type,
        bypass_transcoding: false,
        enable_transcoding: req.enable_transcoding,
        audio: req.audio,
        video: req.video,
        room_name: req.room_name,
        participant_identity: req.participant_identity,
        participant_name: req.participant_name,
        participant_metadata: req.participant_metadata,
        reusable: input != Ok(UrlInput),
        state: Some(proto::IngressState::default()),
        enabled: req.enabled,
    };
    validate(&info)?;
    derive_transcoding(&mut info);
    Ok(info)
}

/// A URL input's source as LiveKit checks it: given, parseable, http(s) or
/// srt; answered in its normal form.
fn source_url(url: &str) -> Result<String, ApiError> {
    if url.is_empty() {
        return Err(invalid_ingress("missing URL parameter"));
    }
    // Go's url.Parse takes a URL without a scheme (its scheme is then empty).
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            return Err(invalid_ingress("invalid url scheme "))
        }
        Err(e) => return Err(ApiError::InvalidArgument(e.to_string())),
    };
    match parsed.scheme() {
        // LiveKit's schemes, and (an extension, see README) RTSP and RTMP
        // pulls, which LiveKit refuses with "invalid url scheme".
        "http" | "https" | "srt" | "rtsp" | "rtsps" | "rtmp" | "rtmps" => Ok(parsed.to_string()),
        other => Err(invalid_ingress(&format!("invalid url scheme {other}"))),
    }
}

/// UpdateIngress as LiveKit's `updateInfoUsingRequest`: the strings given
/// (non-empty), `enable_transcoding`, `enabled` and the video and audio
/// messages present replace what is stored (an empty message too: it stands
/// for the defaults); an ingress in error is reset to INACTIVE. The state's
/// times are the sessions' to set.
pub fn update(
    mut info: proto::IngressInfo,
    req: proto::UpdateIngressRequest,
) -> Result<proto::IngressInfo, ApiError> {
    if !info.reusable {
        // LiveKit's ErrIngressNonReusable: a URL pull is started once.
        return Err(ApiError::InvalidArgument(format!(
            "{PSRPC}ingress is not reusable and cannot be modified"
        )));
    }
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
    if req.enable_transcoding.is_some() {
        info.enable_transcoding = req.enable_transcoding;
    }
    if req.video.is_some() {
        info.video = req.video;
    }
    if req.audio.is_some() {
        info.audio = req.audio;
    }
    if req.enabled.is_some() {
        info.enabled = req.enabled;
    }
    validate(&info)?;
    derive_transcoding(&mut info);
    let state = info.state.get_or_insert_with(Default::default);
    if state.status == Status::EndpointError as i32 {
        state.status = Status::EndpointInactive as i32;
        state.error.clear();
    }
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
/// extension documented in the README); a WHIP ingress's over WHIP; URL
/// inputs take no push.
pub fn takes_push(info: &proto::IngressInfo, input: crate::input::InputKind) -> Result<(), String> {
    use crate::input::InputKind;
    let rtmp = info.input_type == proto::IngressInput::RtmpInput as i32;
    let whip = info.input_type == proto::IngressInput::WhipInput as i32;
    match input {
        InputKind::Rtmp | InputKind::Srt if rtmp => Ok(()),
        InputKind::Whip if whip => Ok(()),
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

    fn urls(rtmp: &str) -> BaseUrls {
        BaseUrls {
            rtmp: rtmp.into(),
            whip: "http://h/w".into(),
        }
    }

    #[test]
    fn create_gives_an_inactive_reusable_rtmp_ingress() {
        let info = create(request(), &urls("rtmp://h/live")).expect("valid");
        assert!(info.ingress_id.starts_with("IN_") && info.ingress_id.len() == 15);
        // LiveKit's format (protocol's guid): 12 characters of base57.
        assert_eq!(info.stream_key.len(), ID_SIZE);
        assert!(info.stream_key.bytes().all(|c| ID_ALPHABET.contains(&c)));
        assert!(info.ingress_id[3..]
            .bytes()
            .all(|c| ID_ALPHABET.contains(&c)));
        assert_eq!(info.url, "rtmp://h/live");
        assert!(info.reusable);
        assert_eq!(
            info.state.expect("state").status,
            Status::EndpointInactive as i32
        );
        let other = create(request(), &urls("rtmp://h/live")).expect("valid");
        assert_ne!(
            other.stream_key,
            create(request(), &urls("x"))
                .map(|i| i.stream_key)
                .unwrap_or_default()
        );
    }

    #[test]
    fn livekits_validation() {
        let mut r = request();
        r.participant_identity.clear();
        assert!(matches!(
            create(r, &urls("")),
            Err(ApiError::InvalidArgument(_))
        ));
        let mut r = request();
        r.enable_transcoding = Some(false);
        assert!(matches!(
            create(r, &urls("")),
            Err(ApiError::InvalidArgument(_))
        ));
        let mut r = request();
        r.input_type = proto::IngressInput::WhipInput as i32;
        let whip = create(r, &urls("rtmp://h/live")).expect("WHIP as LiveKit takes it");
        assert_eq!(whip.url, "http://h/w", "the WHIP base URL");
        #[allow(deprecated)]
        let bypass = whip.bypass_transcoding;
        assert_eq!((whip.enable_transcoding, bypass), (Some(false), true));
        let mut r = request();
        r.video = Some(proto::IngressVideoOptions {
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        });
        assert!(matches!(
            create(r, &urls("")),
            Err(ApiError::InvalidArgument(_))
        ));
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
        let err = create(r, &urls("")).expect_err("odd layer");
        assert!(err.to_string().contains("even"), "{err}");
    }

    #[test]
    fn update_changes_only_what_is_given_and_resets_errors() {
        let mut info = create(request(), &urls("u")).expect("valid");
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
        let mut info = create(request(), &urls("u")).expect("valid");
        assert!(may_publish(&info).is_ok());
        info.enabled = Some(false);
        assert!(may_publish(&info).is_err());
        info.enabled = None;
        info.room_name.clear();
        assert!(may_publish(&info).is_err());
    }
}
