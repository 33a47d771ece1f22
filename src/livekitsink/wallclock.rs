//! The instant each frame is stamped with for WebRTC.
//!
//! str0m derives a sender report's RTP time from the last frame's (RTP time,
//! instant) pair, carried forward to the report's time; when that instant lies
//! in the future it writes RTP time 0. The LiveKit server drops such a report
//! as out of order, and without sender reports it cannot switch a subscriber
//! between simulcast layers, nor can subscribers line audio up with video.
//!
//! Frames do arrive ahead of the pipeline clock: an RTMP publisher catching up
//! after a slow start, B-frames whose PTS lies after their decode time, a
//! source that does not run in real time. So the running time -> instant map
//! is moved back by the most any frame has been ahead. It moves for every
//! track alike, so their timing relative to each other is kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Wallclock {
    /// How far (ns) the furthest-ahead frame so far was ahead of the clock.
    ahead: AtomicU64,
}

impl Wallclock {
    /// The instant, never after `now`, of a frame `ahead_ns` after the
    /// clock's current running time (negative: behind it).
    pub fn instant_of(&self, now: Instant, ahead_ns: i64) -> Instant {
        let ahead = u64::try_from(ahead_ns).unwrap_or(0);
        let shift = self.ahead.fetch_max(ahead, Ordering::Relaxed).max(ahead);
        let behind = shift as i128 - i128::from(ahead_ns);
        let behind = Duration::from_nanos(u64::try_from(behind).unwrap_or(u64::MAX));
        now.checked_sub(behind).unwrap_or(now)
    }

    /// A new stream: frames are on time until one shows otherwise.
    pub fn reset(&self) {
        self.ahead.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn frames_behind_the_clock_keep_their_instant() {
        let clock = Wallclock::default();
        let now = Instant::now();
        assert_eq!(
            clock.instant_of(now, -40 * MS),
            now - Duration::from_millis(40)
        );
        assert_eq!(clock.instant_of(now, 0), now);
    }

    #[test]
    fn a_frame_ahead_moves_every_later_instant_back_alike() {
        let clock = Wallclock::default();
        let now = Instant::now();
        assert_eq!(clock.instant_of(now, 120 * MS), now);
        // A frame 30 ms behind the first one, on any track, stays 30 ms behind it.
        assert_eq!(
            clock.instant_of(now, 90 * MS),
            now - Duration::from_millis(30)
        );
        assert_eq!(
            clock.instant_of(now, -10 * MS),
            now - Duration::from_millis(130)
        );
        // Less ahead later does not move the map forward again.
        let later = now + Duration::from_millis(500);
        assert_eq!(
            clock.instant_of(later, 50 * MS),
            later - Duration::from_millis(70)
        );
    }

    #[test]
    fn no_instant_is_ever_in_the_future() {
        let clock = Wallclock::default();
        let now = Instant::now();
        for ahead in [0, 5 * MS, 300 * MS, 2 * MS, 10_000 * MS, -MS] {
            assert!(clock.instant_of(now, ahead) <= now);
        }
        clock.reset();
        assert_eq!(clock.instant_of(now, -MS), now - Duration::from_millis(1));
    }
}
