//! Which frames of a push input are too late to matter, so that a publisher
//! whose connection stalled and then delivered seconds of backlog at once is
//! live again in the room within a GOP, instead of staying behind for the
//! rest of the stream (nothing downstream syncs to the clock: a backlog is
//! transcoded about as fast as it came, so its delay would stay).
//!
//! The rule, sans-IO (times in nanoseconds of running time, given by the
//! caller):
//!
//! - A frame's *delay* is its arrival time minus its stream time (the
//!   publisher's timestamp mapped to running time). The *live edge* is the
//!   smallest delay seen: what the path gives when nothing is queued. It
//!   rises by at most [`FLOOR_RISE_PER_S`] per second of stream, so a
//!   publisher whose clock runs a little slow is not taken for late for good.
//! - A frame's *lateness* is its delay minus the live edge. A video frame
//!   later than `max_lateness` starts a drop: it and every frame after it are
//!   dropped up to the next keyframe that is on time, late by at most half of
//!   `max_lateness` (resuming at a frame almost as late as the one that
//!   started the drop would leave the room that far behind for good). So the
//!   decoder never sees a frame whose reference was dropped.
//! - Audio has no references: an audio frame is dropped while video is being
//!   dropped (so the two stay in sync) and whenever it is itself later than
//!   `max_lateness`; audio never starts a video drop.
//! - `max_lateness` 0: nothing is ever dropped.

/// How fast the live edge may rise, in ns per second of stream time: 1 ms/s
/// (0.1 %), ten times the drift of a typical encoder's crystal, and far below
/// a stall's seconds.
pub const FLOOR_RISE_PER_S: u64 = 1_000_000;

const NS_PER_S: u64 = 1_000_000_000;

/// The sources' default `max-lateness`, in ms: above the jitter of a sound
/// path, well below what a viewer takes for "behind".
pub const DEFAULT_MAX_LATENESS_MS: u32 = 250;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Dropped, and it starts a drop (worth a log line); `late_ns` is how late.
    StartDrop {
        late_ns: u64,
    },
    /// Passed: the keyframe that ends a drop, with what the drop took and
    /// how late the frame that started it was.
    Resume {
        dropped: Dropped,
        late_ns: u64,
    },
}

impl Verdict {
    pub fn passes(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::Resume { .. })
    }
}

/// Frames dropped, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub video: u64,
    pub audio: u64,
}

#[derive(Debug, Clone)]
pub struct LatenessGate {
    max_lateness_ns: u64,
    /// The live edge: the smallest delay, and the stream time it was seen at.
    floor: Option<(i128, u64)>,
    /// Dropping video until an on-time keyframe; what this drop took so far
    /// and how late its first frame was.
    dropping: Option<(Dropped, u64)>,
    /// Every frame dropped since the start.
    pub total: Dropped,
}

impl LatenessGate {
    pub fn new(max_lateness_ns: u64) -> Self {
        LatenessGate {
            max_lateness_ns,
            floor: None,
            dropping: None,
            total: Dropped::default(),
        }
    }

    /// How late a frame of stream time `stream_ns` arriving at `arrival_ns`
    /// is, updating the live edge.
    fn lateness(&mut self, arrival_ns: u64, stream_ns: u64) -> u64 {
        let delay = i128::from(arrival_ns) - i128::from(stream_ns);
        let edge = match self.floor {
            None => delay,
            Some((floor, at)) => {
                let risen = u128::from(stream_ns.saturating_sub(at)) * u128::from(FLOOR_RISE_PER_S)
                    / u128::from(NS_PER_S);
                (floor + risen as i128).min(delay)
            }
        };
        if self.floor.is_none_or(|(floor, _)| edge != floor) {
            self.floor = Some((edge, stream_ns));
        }
        u64::try_from(delay - edge).unwrap_or(u64::MAX)
    }

    /// The verdict on a video frame of decode time `dts_ns` arriving at
    /// `arrival_ns`.
    pub fn video(&mut self, arrival_ns: u64, dts_ns: u64, keyframe: bool) -> Verdict {
        let late = self.lateness(arrival_ns, dts_ns);
        if self.max_lateness_ns == 0 {
            return Verdict::Pass;
        }
        match self.dropping {
            Some((dropped, late_ns)) if keyframe && late <= self.max_lateness_ns / 2 => {
                self.dropping = None;
                Verdict::Resume { dropped, late_ns }
            }
            Some((ref mut dropped, _)) => {
                dropped.video += 1;
                self.total.video += 1;
                Verdict::Drop
            }
            None if late > self.max_lateness_ns => {
                self.dropping = Some((Dropped { video: 1, audio: 0 }, late));
                self.total.video += 1;
                Verdict::StartDrop { late_ns: late }
            }
            None => Verdict::Pass,
        }
    }

    /// The verdict on an audio frame of time `pts_ns` arriving at `arrival_ns`.
    pub fn audio(&mut self, arrival_ns: u64, pts_ns: u64) -> Verdict {
        let late = self.lateness(arrival_ns, pts_ns);
        if self.max_lateness_ns == 0 {
            return Verdict::Pass;
        }
        if let Some((dropped, _)) = self.dropping.as_mut() {
            dropped.audio += 1;
        } else if late <= self.max_lateness_ns {
            return Verdict::Pass;
        }
        self.total.audio += 1;
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const FRAME: u64 = 33 * MS;

    /// A 30 fps stream with a keyframe every `gop` frames, arriving on time
    /// except that frames `stall_from..` arrive only at `release` (then the
    /// stream goes on live). Returns the verdicts.
    fn run(gate: &mut LatenessGate, frames: u64, gop: u64, stall: (u64, u64)) -> Vec<Verdict> {
        let (from, release) = stall;
        (0..frames)
            .map(|i| {
                let t = 1_000 * MS + i * FRAME;
                let arrival = if i >= from { t.max(release) } else { t };
                gate.video(arrival + 5 * MS, t, i % gop == 0)
            })
            .collect()
    }

    #[test]
    fn a_live_stream_passes_whole() {
        let mut gate = LatenessGate::new(250 * MS);
        let v = run(&mut gate, 300, 30, (u64::MAX, 0));
        assert!(v.iter().all(|v| *v == Verdict::Pass));
        assert_eq!(gate.total, Dropped::default());
    }

    #[test]
    fn a_backlog_is_dropped_to_the_first_keyframe_on_time() {
        let mut gate = LatenessGate::new(250 * MS);
        // Frames 100.. (stream time 4.3 s on) held until 7.3 s: 3 s late.
        let release = 1_000 * MS + 100 * FRAME + 3_000 * MS;
        let v = run(&mut gate, 400, 30, (100, release));
        assert!(v[..100].iter().all(|v| *v == Verdict::Pass));
        assert!(matches!(v[100], Verdict::StartDrop { late_ns } if late_ns >= 2_900 * MS));
        // Frame 191 (t = 7.303 s) is the first not behind the release; the
        // next keyframe on time is 210.
        let resume = v.iter().position(|v| matches!(v, Verdict::Resume { .. }));
        assert_eq!(resume, Some(210));
        assert!(v[101..210].iter().all(|v| *v == Verdict::Drop));
        assert!(v[211..].iter().all(|v| *v == Verdict::Pass));
        assert_eq!(gate.total.video, 110);
    }

    #[test]
    fn a_keyframe_in_the_backlog_does_not_end_the_drop() {
        let mut gate = LatenessGate::new(250 * MS);
        let release = 1_000 * MS + 100 * FRAME + 3_000 * MS;
        let v = run(&mut gate, 400, 30, (100, release));
        // Keyframes 120, 150, 180 came with the backlog, seconds late.
        for k in [120, 150, 180] {
            assert_eq!(v[k], Verdict::Drop, "keyframe {k}");
        }
    }

    #[test]
    fn a_little_jitter_drops_nothing() {
        let mut gate = LatenessGate::new(250 * MS);
        for i in 0..1000u64 {
            let t = i * FRAME;
            let jitter = (i * 7919 % 200) * MS;
            assert!(gate.video(t + jitter, t, i % 60 == 0).passes(), "frame {i}");
        }
    }

    #[test]
    fn a_slow_publisher_clock_is_followed() {
        // The publisher's clock runs 0.05 % slow: its frames seem to come ever
        // later, 1.8 s an hour. The live edge follows; nothing is dropped.
        let mut gate = LatenessGate::new(250 * MS);
        for i in 0..(3600 * 30u64) {
            let t = i * FRAME;
            let arrival = t + t / 2000;
            assert!(gate.video(arrival, t, i % 60 == 0).passes(), "frame {i}");
        }
    }

    #[test]
    fn audio_follows_the_video_drop_and_its_own_lateness() {
        let mut gate = LatenessGate::new(250 * MS);
        assert!(gate.video(0, 0, true).passes());
        assert!(gate.audio(10 * MS, 10 * MS).passes());
        assert!(!gate.video(1_000 * MS, 33 * MS, false).passes());
        // Audio on time, but video is being dropped: dropped too.
        assert_eq!(gate.audio(1_000 * MS, 990 * MS), Verdict::Drop);
        assert!(matches!(
            gate.video(1_100 * MS, 1_090 * MS, true),
            Verdict::Resume {
                dropped: Dropped { video: 1, audio: 1 },
                late_ns: 966_000_000..=967_000_000
            }
        ));
        assert!(gate.audio(1_100 * MS, 1_095 * MS).passes());
        // Audio alone, late: dropped; it does not start a video drop.
        assert_eq!(gate.audio(2_000 * MS, 1_100 * MS), Verdict::Drop);
        assert!(gate.video(2_000 * MS, 1_990 * MS, false).passes());
        assert_eq!(gate.total, Dropped { video: 1, audio: 2 });
    }

    #[test]
    fn zero_turns_it_off() {
        let mut gate = LatenessGate::new(0);
        assert!(gate.video(0, 0, true).passes());
        assert!(gate.video(60_000 * MS, 33 * MS, false).passes());
        assert!(gate.audio(60_000 * MS, 40 * MS).passes());
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut gate = LatenessGate::new(250 * MS);
        gate.video(u64::MAX, 0, true);
        gate.video(0, u64::MAX, true);
        gate.audio(u64::MAX, 0);
        gate.video(u64::MAX, u64::MAX, false);
    }
}
