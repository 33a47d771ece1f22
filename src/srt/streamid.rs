//! The stream key in an SRT caller's `streamid`, and the SRT rejection code
//! for every refusal. A caller names its key either bare
//! (`srt://host:port?streamid=KEY`) or in SRT's access-control syntax
//! (`#!::r=KEY,m=publish,u=...`): `r` is the key, `m` must be `publish` when
//! given (this server only receives), `t` must be `stream` when given, other
//! fields (`u`, `h`, `s`, and any unknown one) are ignored.

use crate::input::RefusalKind;
use crate::rtmp::redact::MAX_STREAM_KEY_LEN;

/// Why a `streamid` names no key this server can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("no stream key in the streamid")]
    Empty,
    #[error("the streamid's access-control list has no r= (the stream key)")]
    NoResource,
    #[error("malformed access-control entry in the streamid (expected key=value)")]
    Malformed,
    #[error("only the #!:: form of SRT access control is understood")]
    Unsupported,
    #[error("this server only receives publishes (the streamid asks for m={0})")]
    Mode(String),
    #[error("this server only takes live streams (the streamid asks for t={0})")]
    Type(String),
    #[error("stream key too long")]
    TooLong,
}

/// SRT rejection codes a caller sees (libsrt's `SRT_REJX_*`, which srt-tokio
/// writes 1000 higher, as they travel in the handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 1400: the streamid cannot be read.
    BadRequest,
    /// 1401: no ingress has this key.
    Unauthorized,
    /// 1402: too many connections are waiting, or this node cannot take the
    /// stream now (full, shutting down, store out of reach).
    Overload,
    /// 1403: the ingress may not publish now (disabled, no room, other input).
    Forbidden,
    /// 1405: the caller wants to receive, or not a live stream.
    BadMode,
    /// 1409: the key is publishing already.
    Conflict,
    /// 1500: the stream could not be started, or no decision came in time.
    InternalServerError,
}

impl Rejection {
    /// The code as libsrt reports it to the caller (`srt_getrejectreason`).
    pub fn code(self) -> i32 {
        match self {
            Rejection::BadRequest => 1400,
            Rejection::Unauthorized => 1401,
            Rejection::Overload => 1402,
            Rejection::Forbidden => 1403,
            Rejection::BadMode => 1405,
            Rejection::Conflict => 1409,
            Rejection::InternalServerError => 1500,
        }
    }
}

impl From<&StreamIdError> for Rejection {
    fn from(e: &StreamIdError) -> Self {
        match e {
            StreamIdError::Mode(_) | StreamIdError::Type(_) => Rejection::BadMode,
            _ => Rejection::BadRequest,
        }
    }
}

/// The code for a refused publish (the listener's own refusals and the
/// application's [`crate::input::Decision::Reject`]). SRT carries no text, so
/// the code is all the caller learns; overload is the one that says "try later
/// or elsewhere".
pub fn rejection_for(kind: RefusalKind) -> Rejection {
    match kind {
        RefusalKind::UnknownKey => Rejection::Unauthorized,
        RefusalKind::Busy => Rejection::Conflict,
        RefusalKind::Forbidden => Rejection::Forbidden,
        RefusalKind::NodeUnavailable => Rejection::Overload,
        RefusalKind::Timeout | RefusalKind::Internal => Rejection::InternalServerError,
    }
}

/// The stream key a caller's `streamid` names.
pub fn stream_key(stream_id: &str) -> Result<String, StreamIdError> {
    let key = match stream_id.strip_prefix("#!::") {
        Some(list) => access_control_key(list)?,
        None if stream_id.starts_with("#!:") => return Err(StreamIdError::Unsupported),
        None => stream_id.to_string(),
    };
    if key.is_empty() {
        return Err(StreamIdError::Empty);
    }
    if key.len() > MAX_STREAM_KEY_LEN {
        return Err(StreamIdError::TooLong);
    }
    Ok(key)
}

/// `r` of `key=value,...`, checking `m` and `t`.
fn access_control_key(list: &str) -> Result<String, StreamIdError> {
    let mut resource = None;
    for entry in list.split(',') {
        let (name, value) = entry.split_once('=').ok_or(StreamIdError::Malformed)?;
        match name {
            "r" if resource.is_some() => return Err(StreamIdError::Malformed),
            "r" => resource = Some(value),
            "m" if value != "publish" => return Err(StreamIdError::Mode(short(value))),
            "t" if value != "stream" => return Err(StreamIdError::Type(short(value))),
            _ => {}
        }
    }
    resource
        .map(str::to_string)
        .ok_or(StreamIdError::NoResource)
}

/// A value echoed in an error, cut so a long one does not flood logs.
fn short(value: &str) -> String {
    value.chars().take(16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_access_control_keys() {
        assert_eq!(stream_key("sk_abc123").as_deref(), Ok("sk_abc123"));
        assert_eq!(stream_key("#!::r=sk_abc").as_deref(), Ok("sk_abc"));
        assert_eq!(
            stream_key("#!::u=alice,r=sk_abc,m=publish,t=stream,s=xyz,h=host,zz=1").as_deref(),
            Ok("sk_abc")
        );
        // A value may hold '=' (only the first splits).
        assert_eq!(stream_key("#!::r=a=b").as_deref(), Ok("a=b"));
    }

    #[test]
    fn what_is_refused_and_how() {
        let cases = [
            ("", StreamIdError::Empty),
            ("#!::r=", StreamIdError::Empty),
            ("#!::u=alice", StreamIdError::NoResource),
            ("#!::r=k,garbage", StreamIdError::Malformed),
            ("#!::r=a,r=b", StreamIdError::Malformed),
            ("#!:{r=k}", StreamIdError::Unsupported),
            ("#!::r=k,m=request", StreamIdError::Mode("request".into())),
            (
                "#!::m=bidirectional,r=k",
                StreamIdError::Mode("bidirectional".into()),
            ),
            ("#!::r=k,t=file", StreamIdError::Type("file".into())),
        ];
        for (stream_id, error) in cases {
            assert_eq!(stream_key(stream_id), Err(error), "{stream_id:?}");
        }
        assert_eq!(
            stream_key(&"k".repeat(MAX_STREAM_KEY_LEN + 1)),
            Err(StreamIdError::TooLong)
        );
        assert!(stream_key(&"k".repeat(MAX_STREAM_KEY_LEN)).is_ok());
        let mode = stream_key("#!::r=k,m=request").expect_err("request");
        assert_eq!(Rejection::from(&mode).code(), 1405);
        assert_eq!(Rejection::from(&StreamIdError::Empty).code(), 1400);
        // An echoed value is cut short.
        let long = format!("#!::r=k,m={}", "x".repeat(100));
        assert_eq!(stream_key(&long), Err(StreamIdError::Mode("x".repeat(16))));
    }

    #[test]
    fn refusals_get_their_codes() {
        let cases = [
            (RefusalKind::UnknownKey, 1401),
            (RefusalKind::Busy, 1409),
            (RefusalKind::Forbidden, 1403),
            (RefusalKind::NodeUnavailable, 1402),
            (RefusalKind::Timeout, 1500),
            (RefusalKind::Internal, 1500),
        ];
        for (kind, code) in cases {
            assert_eq!(rejection_for(kind).code(), code, "{kind:?}");
        }
    }
}
