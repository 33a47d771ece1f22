//! An ingress's own settings for this service: what LiveKit's Ingress API has
//! no field for. They are kept beside the ingress in the store (and deleted
//! with it), set through `/ingress/{id}/options` (`super::options_api`), and
//! never change an answer of the Ingress API, so parity with livekit-server
//! needs no exception for them. A setting left out means the service's own.

use crate::passthrough::Mode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressOptions {
    /// H.264 pass-through for this ingress's streams; `None`: the service's
    /// `video_passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_passthrough: Option<Mode>,
}

impl IngressOptions {
    /// Options as a caller sends them: a JSON object with known settings
    /// only; the error says which setting or value is wrong.
    pub fn from_json(body: &[u8]) -> Result<IngressOptions, String> {
        serde_json::from_slice(body).map_err(|e| format!("ingress options: {e}"))
    }

    /// The JSON object stored and answered (settings left out are absent).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// True when every setting is the service's.
    pub fn is_empty(&self) -> bool {
        *self == IngressOptions::default()
    }

    /// What this ingress's streams use, with the service's defaults filled in.
    pub fn in_effect(&self, defaults: &IngressOptions) -> IngressOptions {
        IngressOptions {
            video_passthrough: self.video_passthrough.or(defaults.video_passthrough),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_settings_parse_and_round_trip() {
        let options = IngressOptions::from_json(br#"{"video_passthrough": "single"}"#).unwrap();
        assert_eq!(options.video_passthrough, Some(Mode::Single));
        assert_eq!(options.to_json(), r#"{"video_passthrough":"single"}"#);
        assert_eq!(
            IngressOptions::from_json(options.to_json().as_bytes()),
            Ok(options)
        );
        let empty = IngressOptions::from_json(b"{}").unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.to_json(), "{}");
        // null is "the service's", as absent.
        assert!(IngressOptions::from_json(br#"{"video_passthrough": null}"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_options_are_refused_naming_what_is_wrong() {
        for (body, needle) in [
            (
                &br#"{"video_passthrough": "always"}"#[..],
                "unknown variant `always`",
            ),
            (br#"{"video_passthrough": "always"}"#, "`hybrid`"),
            (
                br#"{"passthrough": "hybrid"}"#,
                "unknown field `passthrough`",
            ),
            (br#"{"video_passthrough": 1}"#, "video_passthrough"),
            (b"[]", "ingress options"),
            (b"", "EOF"),
            (b"{\"video_passthrough\": \"hyb", "EOF"),
        ] {
            let e = IngressOptions::from_json(body).expect_err("refused");
            assert!(e.contains(needle), "{body:?}: {e}");
        }
    }

    #[test]
    fn the_services_defaults_fill_what_is_left_out() {
        let service = IngressOptions {
            video_passthrough: Some(Mode::Hybrid),
        };
        let own = IngressOptions {
            video_passthrough: Some(Mode::Off),
        };
        assert_eq!(own.in_effect(&service), own);
        assert_eq!(IngressOptions::default().in_effect(&service), service);
    }
}
