//! What the publisher has sent and what the room asked of it: counters per
//! RTP stream (each simulcast layer, the audio), gathered from str0m's
//! periodic stats events and reported once per interval.

use std::collections::BTreeMap;
use std::time::Duration;

/// One RTP stream's totals since the session joined.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// "video" or "audio".
    pub kind: &'static str,
    /// The simulcast layer's rid (q, h, f); none for audio or a single layer.
    pub rid: Option<String>,
    /// RTP packets and bytes sent, retransmissions included.
    pub packets: u64,
    pub bytes: u64,
    /// Retransmission requests (NACK), picture loss indications and full
    /// intra requests received from the server.
    pub nacks: u64,
    pub plis: u64,
    pub firs: u64,
    /// Fraction of packets the server reported lost, when it reported.
    pub loss: Option<f32>,
}

/// The streams of a session and the latest round-trip time to the server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SendStats {
    pub streams: Vec<StreamStats>,
    pub rtt: Option<Duration>,
}

/// Collects the per-stream events of one interval until the peer event
/// that closes it.
#[derive(Default)]
pub struct StatsCollector {
    /// Keyed by (kind, rid) so the report lists streams in a stable order.
    streams: BTreeMap<(&'static str, Option<String>), StreamStats>,
}

impl StatsCollector {
    /// The latest totals of one stream.
    pub fn stream(&mut self, stats: StreamStats) {
        self.streams.insert((stats.kind, stats.rid.clone()), stats);
    }

    /// The interval is over: what to report.
    pub fn report(&self, rtt: Option<Duration>) -> SendStats {
        SendStats {
            streams: self.streams.values().cloned().collect(),
            rtt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(kind: &'static str, rid: Option<&str>, packets: u64) -> StreamStats {
        StreamStats {
            kind,
            rid: rid.map(String::from),
            packets,
            ..Default::default()
        }
    }

    #[test]
    fn a_report_holds_each_streams_latest_totals_in_a_stable_order() {
        let mut collector = StatsCollector::default();
        collector.stream(stream("video", Some("q"), 10));
        collector.stream(stream("audio", None, 50));
        collector.stream(stream("video", Some("f"), 30));
        collector.stream(stream("video", Some("q"), 12));
        let report = collector.report(Some(Duration::from_millis(3)));
        let order: Vec<_> = report
            .streams
            .iter()
            .map(|s| (s.kind, s.rid.as_deref(), s.packets))
            .collect();
        assert_eq!(
            order,
            [
                ("audio", None, 50),
                ("video", Some("f"), 30),
                ("video", Some("q"), 12)
            ]
        );
        assert_eq!(report.rtt, Some(Duration::from_millis(3)));
    }
}
