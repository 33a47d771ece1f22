//! ICE candidates as LiveKit's signal protocol carries them: the JSON form of a
//! browser's `RTCIceCandidateInit` inside `TrickleRequest.candidate_init`.

use serde::{Deserialize, Serialize};
use str0m::Candidate;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateInit {
    candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sdp_m_line_index: Option<u32>,
}

/// Parses a trickled candidate. `Ok(None)` is the end-of-candidates marker
/// (an empty candidate string).
pub fn parse(candidate_init: &str) -> Result<Option<Candidate>, String> {
    let init: CandidateInit = serde_json::from_str(candidate_init)
        .map_err(|e| format!("malformed trickle candidate {candidate_init:?}: {e}"))?;
    let line = init.candidate.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let line = line.strip_prefix("a=").unwrap_or(line);
    Candidate::from_sdp_string(line)
        .map(Some)
        .map_err(|e| format!("unusable ICE candidate {line:?}: {e}"))
}

/// The `candidate_init` JSON for a local candidate on the first m-line.
pub fn format(candidate: &Candidate) -> String {
    let line = candidate.to_sdp_string();
    let line = line.strip_prefix("a=").unwrap_or(&line).to_string();
    serde_json::to_string(&CandidateInit {
        candidate: line,
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_server_trickles() {
        let json = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
        let c = parse(json).expect("valid").expect("a candidate");
        assert_eq!(c.addr().to_string(), "127.0.0.1:7882");
    }

    #[test]
    fn empty_candidate_is_end_of_candidates() {
        assert!(parse(r#"{"candidate":""}"#).expect("valid").is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"candidate":"candidate:nonsense"}"#).is_err());
    }

    #[test]
    fn formats_and_parses_back() {
        let c = Candidate::host("127.0.0.1:5000".parse().expect("addr"), "udp").expect("host");
        let back = parse(&format(&c)).expect("valid").expect("candidate");
        assert_eq!(back.addr(), c.addr());
    }
}
