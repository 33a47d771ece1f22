//! An ingress's own settings for this service: what LiveKit's Ingress API has
//! no field for. They are kept beside the ingress in the store (and deleted
//! with it), set through `/ingress/{id}/options` (`super::options_api`), and
//! never change an answer of the Ingress API, so parity with livekit-server
//! needs no exception for them. A setting left out means the service's own.

use crate::passthrough::Mode;
use serde::Serialize;
use serde_json::Value;

/// What a caller is shown when the body is no options object.
const EXAMPLE: &str = r#"{"video_passthrough": "hybrid"}"#;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngressOptions {
    /// H.264 pass-through for this ingress's streams; `None`: the service's
    /// `video_passthrough`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_passthrough: Option<Mode>,
}

impl IngressOptions {
    /// Options as a caller sends them: a JSON object of known settings (a
    /// null one is the service's); the error names the setting and value at
    /// fault and what would do.
    pub fn from_json(body: &[u8]) -> Result<IngressOptions, String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("ingress options are not JSON: {e}"))?;
        let Value::Object(settings) = value else {
            return Err(format!(
                "ingress options are a JSON object such as {EXAMPLE}, not {value}"
            ));
        };
        let mut options = IngressOptions::default();
        for (name, value) in settings {
            match name.as_str() {
                "video_passthrough" => {
                    options.video_passthrough = match &value {
                        Value::Null => None,
                        _ => Some(value.as_str().and_then(Mode::from_name).ok_or_else(|| {
                            format!(
                                "ingress option video_passthrough is off, hybrid or single, \
                                 not {value}"
                            )
                        })?),
                    };
                }
                _ => {
                    return Err(format!(
                        "no ingress option {name:?}; the options are: video_passthrough"
                    ))
                }
            }
        }
        Ok(options)
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
                r#"video_passthrough is off, hybrid or single, not "always""#,
            ),
            (
                br#"{"video_passthrough": 1}"#,
                "video_passthrough is off, hybrid or single, not 1",
            ),
            (
                br#"{"passthrough": "hybrid"}"#,
                r#"no ingress option "passthrough"; the options are: video_passthrough"#,
            ),
            (b"[]", "a JSON object such as"),
            (b"\"hybrid\"", "not \"hybrid\""),
            (b"", "not JSON"),
            (b"{\"video_passthrough\": \"hyb", "not JSON"),
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
