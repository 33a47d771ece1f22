//! A publisher's timestamps mapped to running time, with arithmetic that cannot
//! overflow: the input is whatever a client puts on the wire (jumps of ~2^31 ms
//! per message, negative composition offsets, wraps), so every step is checked
//! and a clock that leaves the representable range is an error for the caller
//! to end the publish with, never a panic on the streaming thread.

use super::clock::Unwrapper;

/// Largest running time handed out, in nanoseconds: GStreamer code converts
/// running times to signed 64-bit values, so nothing beyond `i64::MAX` (292
/// years) is produced.
pub const MAX_RUNNING_TIME_NS: u64 = i64::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("the publisher's timestamps left the representable range (RTMP time {timestamp} ms after jumps of up to 24 days)")]
    OutOfRange { timestamp: u32 },
}

/// Maps (RTMP timestamp, composition offset) pairs to (PTS, DTS) in
/// nanoseconds of running time: the first message maps to the base the caller
/// gives then, later ones keep their distance to it.
#[derive(Debug, Default, Clone)]
pub struct TimestampMapper {
    clock: Unwrapper,
    /// (first extended RTMP time in ms, running time it maps to in ns).
    base: Option<(i64, u64)>,
}

impl TimestampMapper {
    /// PTS and DTS of a message with RTMP `timestamp` and composition offset
    /// `cts` (ms). `base_ns` is asked once, at the first message. Times before
    /// the first message clamp to the base's start (0 ns at the earliest).
    pub fn map(
        &mut self,
        timestamp: u32,
        cts: i32,
        base_ns: impl FnOnce() -> u64,
    ) -> Result<(u64, u64), TimestampError> {
        let out_of_range = TimestampError::OutOfRange { timestamp };
        let dts_ms = self.clock.extend(timestamp).ok_or(out_of_range.clone())?;
        let (first_ms, base) = *self
            .base
            .get_or_insert_with(|| (dts_ms, base_ns().min(MAX_RUNNING_TIME_NS)));
        // i128 holds every product of an i64 millisecond count and 10^6.
        let at = |ms: i64| -> Result<u64, TimestampError> {
            let ns = i128::from(base) + (i128::from(ms) - i128::from(first_ms)) * 1_000_000;
            if ns > i128::from(MAX_RUNNING_TIME_NS) {
                return Err(out_of_range.clone());
            }
            Ok(u64::try_from(ns.max(0)).unwrap_or(0))
        };
        let pts_ms = dts_ms.saturating_add(i64::from(cts));
        Ok((at(pts_ms)?, at(dts_ms)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn first_message_maps_to_the_base() {
        let mut m = TimestampMapper::default();
        assert_eq!(m.map(5000, 0, || 7 * MS), Ok((7 * MS, 7 * MS)));
        assert_eq!(m.map(5033, 66, || unreachable!()), Ok((106 * MS, 40 * MS)));
    }

    #[test]
    fn negative_composition_offsets_clamp_at_zero() {
        let mut m = TimestampMapper::default();
        assert_eq!(m.map(0, -8_388_608, || 0), Ok((0, 0)));
        assert_eq!(m.map(10, i32::MIN, || 0), Ok((0, 10 * MS)));
    }

    #[test]
    fn wrap_moves_forward() {
        let mut m = TimestampMapper::default();
        m.map(u32::MAX - 9, 0, || 0).expect("first");
        assert_eq!(m.map(10, 0, || 0), Ok((20 * MS, 20 * MS)));
    }

    /// The sequence that panicked the element's old mapping in a debug build:
    /// every message jumps ~24.8 days forward; after ~4300 of them the
    /// nanosecond offset leaves i64. Now it is an error and nothing panics.
    #[test]
    fn repeated_maximal_jumps_end_in_an_error() {
        let mut m = TimestampMapper::default();
        let mut ts = 0u32;
        let mut last_dts = 0;
        let mut result = Ok((0, 0));
        for i in 0..10_000 {
            result = m.map(ts, 8_388_607, || 0);
            match result {
                Ok((_, dts)) => {
                    assert!(dts >= last_dts, "monotonic until the error ({i})");
                    last_dts = dts;
                }
                Err(_) => break,
            }
            ts = ts.wrapping_add(i32::MAX as u32);
        }
        assert!(
            matches!(result, Err(TimestampError::OutOfRange { .. })),
            "{result:?}"
        );
        assert!(last_dts <= MAX_RUNNING_TIME_NS);
    }

    #[test]
    fn alternating_huge_steps_back_and_forth_stay_in_range() {
        let mut m = TimestampMapper::default();
        for i in 0..100_000u32 {
            let ts = if i % 2 == 0 { 0 } else { i32::MAX as u32 };
            let cts = if i % 3 == 0 { -8_388_608 } else { 8_388_607 };
            let (pts, dts) = m.map(ts, cts, || 0).expect("bounded");
            assert!(pts <= MAX_RUNNING_TIME_NS && dts <= MAX_RUNNING_TIME_NS);
        }
    }

    #[test]
    fn backward_from_the_first_message_clamps_at_zero() {
        let mut m = TimestampMapper::default();
        m.map(i32::MAX as u32, 0, || 5 * MS).expect("first");
        for _ in 0..5000 {
            // Each step is 2^31 ms backwards (the shortest way round the circle).
            let (pts, dts) = m.map(u32::MAX, 0, || 0).expect("clamped");
            assert_eq!((pts, dts), (0, 0));
            let (pts, dts) = m.map(i32::MAX as u32, 0, || 0).expect("clamped");
            assert!(pts <= MAX_RUNNING_TIME_NS && dts <= MAX_RUNNING_TIME_NS);
        }
    }
}
