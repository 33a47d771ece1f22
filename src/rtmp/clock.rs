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
    pub fn extend(&mut self, ts: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(ts),
            Some((last_ts, last_ext)) => last_ext + i64::from(ts.wrapping_sub(last_ts) as i32),
        };
        self.last = Some((ts, extended));
        extended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_forward() {
        let mut u = Unwrapper::default();
        assert_eq!(u.extend(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(u.extend(5), i64::from(u32::MAX) + 6);
        assert_eq!(u.extend(40), i64::from(u32::MAX) + 41);
    }

    #[test]
    fn small_steps_back_stay_close() {
        let mut u = Unwrapper::default();
        u.extend(1000);
        assert_eq!(u.extend(967), 967);
        assert_eq!(u.extend(1033), 1033);
    }
}
