//! The `livekit-stats` element message, written by livekitsink and read by
//! whoever follows its bus (the service's metrics): `streams`, one `stream`
//! structure per RTP stream (kind, rid, packets, bytes, nacks, plis, firs and,
//! once the server reported it, loss), and `rtt` once known.

//!
//! The value is [`SendStats`] itself: the livekit core keeps no GStreamer
//! types, so the message side lives here.

use super::BusMessage;
use crate::livekit::stats::{SendStats, StreamStats};
use gst::prelude::*;

impl BusMessage for SendStats {
    const NAME: &'static str = "livekit-stats";

    fn to_structure(&self) -> gst::Structure {
        to_structure(self)
    }

    fn from_structure(s: &gst::StructureRef) -> Option<Self> {
        from_structure(s)
    }
}

fn to_structure(stats: &SendStats) -> gst::Structure {
    let streams = stats.streams.iter().map(|s| {
        let mut stream = gst::Structure::builder("stream")
            .field("kind", s.kind)
            .field("rid", s.rid.as_deref().unwrap_or(""))
            .field("packets", s.packets)
            .field("bytes", s.bytes)
            .field("nacks", s.nacks)
            .field("plis", s.plis)
            .field("firs", s.firs)
            .build();
        if let Some(loss) = s.loss {
            stream.set("loss", loss);
        }
        stream.to_send_value()
    });
    let mut message = gst::Structure::builder(SendStats::NAME)
        .field("streams", gst::Array::from_values(streams))
        .build();
    if let Some(rtt) = stats.rtt {
        message.set("rtt", gst::ClockTime::from_nseconds(rtt.as_nanos() as u64));
    }
    message
}

/// The stats in a `livekit-stats` structure; `None` for any other.
fn from_structure(s: &gst::StructureRef) -> Option<SendStats> {
    if s.name() != SendStats::NAME {
        return None;
    }
    let streams = s
        .get::<gst::Array>("streams")
        .ok()?
        .iter()
        .filter_map(|v| v.get::<gst::Structure>().ok())
        .filter_map(|stream| {
            let kind = match stream.get::<String>("kind").ok()?.as_str() {
                "video" => "video",
                "audio" => "audio",
                _ => return None,
            };
            let count = |name: &str| stream.get::<u64>(name).unwrap_or(0);
            Some(StreamStats {
                kind,
                rid: stream.get::<String>("rid").ok().filter(|r| !r.is_empty()),
                packets: count("packets"),
                bytes: count("bytes"),
                nacks: count("nacks"),
                plis: count("plis"),
                firs: count("firs"),
                loss: stream.get::<f32>("loss").ok(),
            })
        })
        .collect();
    Some(SendStats {
        streams,
        rtt: s
            .get::<gst::ClockTime>("rtt")
            .ok()
            .map(|t| std::time::Duration::from_nanos(t.nseconds())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stats_survive_the_message() {
        gst::init().expect("gstreamer");
        let stats = SendStats {
            streams: vec![
                StreamStats {
                    kind: "audio",
                    rid: None,
                    packets: 500,
                    bytes: 60_000,
                    ..Default::default()
                },
                StreamStats {
                    kind: "video",
                    rid: Some("f".into()),
                    packets: 900,
                    bytes: 800_000,
                    nacks: 3,
                    plis: 2,
                    firs: 1,
                    loss: Some(0.25),
                },
            ],
            rtt: Some(Duration::from_micros(1500)),
        };
        let message = stats.to_structure();
        assert_eq!(message.name(), "livekit-stats");
        assert_eq!(SendStats::from_structure(&message), Some(stats));
        assert_eq!(
            SendStats::from_structure(&gst::Structure::new_empty("livekit-connected")),
            None
        );
        // A structure without streams is refused, as before.
        assert_eq!(
            SendStats::from_structure(&gst::Structure::new_empty(SendStats::NAME)),
            None
        );
    }
}
