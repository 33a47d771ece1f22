//! RTMP timestamps are 32-bit milliseconds that wrap after 49.7 days (and
//! encoders may start anywhere). This extends them to a monotonic 64-bit clock.

/// Extends wrapping 32-bit millisecond timestamps.
#[derive(Debug, Default, Clone)]
pub struct Unwrapper {
    last: Option<(u32, i64)>,
}

impl Unwrapper {
    /// The extended value of `ts`: steps are taken as the shortest way around the
    /// 32-bit circle, so a wrap moves forward and a small reordering backward.
    /// `None` once the extended clock would leave `i64` (only a publisher that
    /// jumps by ~2^31 ms billions of times gets there); the state is then kept.
    pub fn extend(&mut self, ts: u32) -> Option<i64> {
        let extended = match self.last {
            None => i64::from(ts),
            Some((last_ts, last_ext)) => {
                last_ext.checked_add(i64::from(ts.wrapping_sub(last_ts) as i32))?
            }
        };
        self.last = Some((ts, extended));
        Some(extended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_forward() {
        let mut u = Unwrapper::default();
        assert_eq!(u.extend(u32::MAX - 10), Some(i64::from(u32::MAX - 10)));
        assert_eq!(u.extend(5), Some(i64::from(u32::MAX) + 6));
        assert_eq!(u.extend(40), Some(i64::from(u32::MAX) + 41));
    }

    #[test]
    fn small_steps_back_stay_close() {
        let mut u = Unwrapper::default();
        u.extend(1000);
        assert_eq!(u.extend(967), Some(967));
        assert_eq!(u.extend(1033), Some(1033));
    }

    #[test]
    fn overflow_is_reported_not_a_panic() {
        let mut u = Unwrapper {
            last: Some((0, i64::MAX - 5)),
        };
        assert_eq!(u.extend(10), None);
        assert_eq!(
            u.extend(3),
            Some(i64::MAX - 2),
            "state kept after a refusal"
        );
        let mut u = Unwrapper {
            last: Some((0, i64::MIN + 5)),
        };
        assert_eq!(u.extend(u32::MAX - 9), None, "-10 from near i64::MIN");
    }
}
