//! livekitsink's element messages about the room (its `livekit-stats` is in
//! [`super::livekit_stats`]).

use super::{text, BusMessage};
use gst::glib;
use livekit_protocol as proto;
use prost::Message as _;

/// `livekit-connected`: the participant joined the room.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Connected {
    pub room_sid: String,
    pub room_name: String,
    pub participant_sid: String,
}

impl BusMessage for Connected {
    const NAME: &'static str = "livekit-connected";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("room-sid", self.room_sid.as_str())
            .field("room-name", self.room_name.as_str())
            .field("participant-sid", self.participant_sid.as_str())
            .build()
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        (s.name() == Self::NAME).then(|| Connected {
            room_sid: text(s, "room-sid"),
            room_name: text(s, "room-name"),
            participant_sid: text(s, "participant-sid"),
        })
    }
}

/// `livekit-track-published`: the server published a track. On the bus also
/// `sid` and `name` (the info's), for applications that do not decode the
/// protobuf in `info`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackPublished {
    /// `video` or `audio`.
    pub kind: String,
    pub layers: u32,
    /// The server's TrackInfo.
    pub info: proto::TrackInfo,
}

impl BusMessage for TrackPublished {
    const NAME: &'static str = "livekit-track-published";

    fn to_structure(&self) -> gst::Structure {
        gst::Structure::builder(Self::NAME)
            .field("kind", self.kind.as_str())
            .field("sid", self.info.sid.as_str())
            .field("name", self.info.name.as_str())
            .field("layers", self.layers)
            .field("info", glib::Bytes::from_owned(self.info.encode_to_vec()))
            .build()
    }

    /// Refused without a decodable `info`: the track is what it describes.
    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        if s.name() != Self::NAME {
            return None;
        }
        let info = s.get::<glib::Bytes>("info").ok()?;
        Some(TrackPublished {
            kind: text(s, "kind"),
            layers: s.get::<u32>("layers").unwrap_or(0),
            info: proto::TrackInfo::decode(&info[..]).ok()?,
        })
    }
}

/// The connection-state messages, which carry one field, `reason`.
macro_rules! reason_message {
    ($(#[$doc:meta])* $type:ident, $name:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $type {
            pub reason: String,
        }

        impl BusMessage for $type {
            const NAME: &'static str = $name;

            fn to_structure(&self) -> gst::Structure {
                gst::Structure::builder(Self::NAME)
                    .field("reason", self.reason.as_str())
                    .build()
            }

            fn from_structure(s: &gst::StructureRef) -> Option<Self> {
                (s.name() == Self::NAME).then(|| $type {
                    reason: text(s, "reason"),
                })
            }
        }
    };
}

reason_message!(
    /// `livekit-resumed`: the signal connection dropped and was resumed while
    /// media kept flowing.
    Resumed,
    "livekit-resumed"
);
reason_message!(
    /// `livekit-reconnecting`: the server was lost; the element rejoins and
    /// republishes.
    Reconnecting,
    "livekit-reconnecting"
);
reason_message!(
    /// `livekit-disconnected`: the element left the room, or failed.
    Disconnected,
    "livekit-disconnected"
);

#[cfg(test)]
mod tests {
    use super::super::tests::round_trip;
    use super::*;

    #[test]
    fn livekit_messages_survive_the_bus() {
        gst::init().expect("gstreamer");
        round_trip(Connected {
            room_sid: "RM_1".into(),
            room_name: "demo".into(),
            participant_sid: "PA_1".into(),
        });
        round_trip(TrackPublished {
            kind: "video".into(),
            layers: 3,
            info: proto::TrackInfo {
                sid: "TR_1".into(),
                name: "camera".into(),
                width: 1280,
                ..Default::default()
            },
        });
        round_trip(Resumed {
            reason: "signal lost".into(),
        });
        round_trip(Reconnecting {
            reason: "server lost".into(),
        });
        round_trip(Disconnected {
            reason: "end of stream".into(),
        });
    }

    #[test]
    fn track_published_carries_sid_and_name_and_needs_its_info() {
        gst::init().expect("gstreamer");
        let published = TrackPublished {
            kind: "audio".into(),
            layers: 1,
            info: proto::TrackInfo {
                sid: "TR_2".into(),
                name: "mic".into(),
                ..Default::default()
            },
        };
        let mut s = published.to_structure();
        assert_eq!(s.get::<String>("sid").as_deref(), Ok("TR_2"));
        assert_eq!(s.get::<String>("name").as_deref(), Ok("mic"));
        s.remove_field("info");
        assert_eq!(TrackPublished::from_structure(&s), None);
        // The reason defaults to empty, as the service always read it.
        assert_eq!(
            Disconnected::from_structure(&gst::Structure::new_empty(Disconnected::NAME)),
            Some(Disconnected::default())
        );
    }
}
