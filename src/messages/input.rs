//! `ingress-input-video` / `ingress-input-audio`: application messages the
//! service's pipeline posts when a branch learns its decoded format, so the
//! session can report the input's format. The structure is the decoded caps
//! renamed, plus `mime-type` (what the source sent, before decoding); the
//! typed values hold what the service reads of it.

use super::{count_u32, text, BusMessage};
use gst::prelude::*;

/// The decoded caps `caps`, renamed to `name`, plus the source's `mime-type`.
/// Every caps field is kept: applications may read more than the service does.
fn from_caps(name: &str, caps: &gst::StructureRef, mime_type: &str) -> gst::Structure {
    let mut s = caps.to_owned();
    s.set_name(name);
    s.set("mime-type", mime_type);
    s
}

/// An application message (not an element message: the pipeline, not an
/// element, says it) carrying `s`.
pub fn application(s: gst::Structure, src: &impl IsA<gst::Object>) -> gst::Message {
    gst::message::Application::builder(s).src(src).build()
}

/// `ingress-input-video`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputVideo {
    pub mime_type: String,
    pub width: u32,
    pub height: u32,
    pub framerate: Option<gst::Fraction>,
}

impl InputVideo {
    pub fn from_caps(caps: &gst::StructureRef, mime_type: &str) -> gst::Structure {
        from_caps(Self::NAME, caps, mime_type)
    }

    /// Frames per second; 0 when unknown or variable (`0/1`).
    pub fn framerate_f64(&self) -> f64 {
        self.framerate
            .filter(|f| f.denom() != 0)
            .map_or(0.0, |f| f.numer() as f64 / f.denom() as f64)
    }
}

impl BusMessage for InputVideo {
    const NAME: &'static str = "ingress-input-video";

    /// Caps types: `i32` sizes, a fraction.
    fn to_structure(&self) -> gst::Structure {
        let mut s = gst::Structure::builder(Self::NAME)
            .field("mime-type", self.mime_type.as_str())
            .field("width", self.width.min(i32::MAX as u32) as i32)
            .field("height", self.height.min(i32::MAX as u32) as i32)
            .build();
        if let Some(framerate) = self.framerate {
            s.set("framerate", framerate);
        }
        s
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| InputVideo {
            mime_type: text(s, "mime-type"),
            width: count_u32(s, "width"),
            height: count_u32(s, "height"),
            framerate: s.get::<gst::Fraction>("framerate").ok(),
        })
    }

    fn to_message(&self, src: &impl IsA<gst::Object>) -> gst::Message {
        application(self.to_structure(), src)
    }
}

/// `ingress-input-audio`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputAudio {
    pub mime_type: String,
    pub channels: u32,
    /// Hz (the caps' `rate`).
    pub rate: u32,
}

impl InputAudio {
    pub fn from_caps(caps: &gst::StructureRef, mime_type: &str) -> gst::Structure {
        from_caps(Self::NAME, caps, mime_type)
    }
}

impl BusMessage for InputAudio {
    const NAME: &'static str = "ingress-input-audio";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("mime-type", self.mime_type.as_str())
            .field("channels", self.channels.min(i32::MAX as u32) as i32)
            .field("rate", self.rate.min(i32::MAX as u32) as i32)
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| InputAudio {
            mime_type: text(s, "mime-type"),
            channels: count_u32(s, "channels"),
            rate: count_u32(s, "rate"),
        })
    }

    fn to_message(&self, src: &impl IsA<gst::Object>) -> gst::Message {
        application(self.to_structure(), src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_messages_survive_the_bus() {
        gst::init().expect("gstreamer");
        let video = InputVideo {
            mime_type: "video/x-h264".into(),
            width: 1280,
            height: 720,
            framerate: Some(gst::Fraction::new(30000, 1001)),
        };
        assert_eq!(
            InputVideo::from_structure(&video.to_structure()),
            Some(video.clone())
        );
        assert!((video.framerate_f64() - 29.97).abs() < 0.01);
        let audio = InputAudio {
            mime_type: "audio/mpeg".into(),
            channels: 2,
            rate: 48_000,
        };
        assert_eq!(
            InputAudio::from_structure(&audio.to_structure()),
            Some(audio)
        );
        assert_eq!(
            InputAudio::from_structure(&gst::Structure::new_empty(InputVideo::NAME)),
            None
        );
    }

    #[test]
    fn decoded_caps_become_the_message() {
        gst::init().expect("gstreamer");
        let caps = gst::Structure::builder("video/x-raw")
            .field("format", "I420")
            .field("width", 640i32)
            .field("height", 360i32)
            .field("framerate", gst::Fraction::new(0, 1))
            .build();
        let s = InputVideo::from_caps(&caps, "video/x-h264");
        // Every caps field stays for applications that read more.
        assert_eq!(s.get::<String>("format").as_deref(), Ok("I420"));
        let video = InputVideo::from_structure(&s).expect("ingress-input-video");
        assert_eq!((video.width, video.height), (640, 360));
        assert_eq!(video.mime_type, "video/x-h264");
        assert_eq!(video.framerate_f64(), 0.0);
        // Missing fields read as 0 / empty, as the service always read them.
        assert_eq!(
            InputAudio::from_structure(&gst::Structure::new_empty(InputAudio::NAME)),
            Some(InputAudio::default())
        );
    }
}
