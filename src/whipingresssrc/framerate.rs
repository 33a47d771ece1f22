//! The frame rate of a video stream measured from its RTP timestamps, for
//! codecs whose bitstream does not say it (VP8 has no timing in its frame
//! header, unlike an H.264 SPS), so the caps, and the ingress's state,
//! carry it.

/// Frames are counted over at least this much RTP time before a rate is told.
const WINDOW_SECONDS: u64 = 1;

/// Counts frames between the first timestamp and the latest.
#[derive(Debug, Default)]
pub struct FrameRateMeter {
    first: Option<u64>,
    last: u64,
    /// Frames after the first one (distinct timestamps).
    frames: u64,
    told: bool,
}

impl FrameRateMeter {
    /// A frame at `rtp_time` (unwrapped, `clock_rate` Hz); the measured rate
    /// once, as soon as a window is full.
    pub fn frame(&mut self, rtp_time: u64, clock_rate: u32) -> Option<gst::Fraction> {
        if self.told || clock_rate == 0 {
            return None;
        }
        let first = *self.first.get_or_insert(rtp_time);
        if rtp_time > self.last.max(first) {
            self.frames += 1;
            self.last = rtp_time;
        }
        let span = self.last.saturating_sub(first);
        if span < WINDOW_SECONDS * u64::from(clock_rate) || self.frames == 0 {
            return None;
        }
        self.told = true;
        Some(rate(self.frames, span, clock_rate))
    }
}

/// `frames` in `span` ticks of a `clock_rate` Hz clock, as a fraction: a
/// whole number when it is within 1 % (at least 0.1 fps) of one (a
/// camera's timestamps jitter), else in hundredths.
fn rate(frames: u64, span: u64, clock_rate: u32) -> gst::Fraction {
    let fps = frames as f64 * f64::from(clock_rate) / span as f64;
    let whole = fps.round();
    if whole >= 1.0 && (fps - whole).abs() <= (whole * 0.01).max(0.1) {
        return gst::Fraction::new(whole.min(f64::from(i32::MAX)) as i32, 1);
    }
    gst::Fraction::new((fps * 100.0).round().min(f64::from(i32::MAX)) as i32, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(step: impl Fn(u64) -> u64) -> (u64, gst::Fraction) {
        let mut meter = FrameRateMeter::default();
        (0..200)
            .find_map(|i| meter.frame(1_000_000 + step(i), 90_000).map(|r| (i, r)))
            .expect("a rate within 200 frames")
    }

    #[test]
    fn a_steady_stream_is_told_its_rate_after_a_second() {
        assert_eq!(measure(|i| i * 3000), (30, gst::Fraction::new(30, 1)));
        assert_eq!(measure(|i| i * 3600), (25, gst::Fraction::new(25, 1)));
        // Browsers' 90 kHz stamps of a 30 fps camera jitter around 3000.
        let (_, jittered) = measure(|i| i * 3000 + (i % 3) * 7);
        assert_eq!(jittered, gst::Fraction::new(30, 1));
    }

    #[test]
    fn repeated_timestamps_are_one_frame_and_odd_rates_keep_hundredths() {
        // Every timestamp twice (a frame split in two): still 30 fps.
        assert_eq!(measure(|i| (i / 2) * 3000).1, gst::Fraction::new(30, 1));
        // 90000 / 7000 = 12.857 fps.
        assert_eq!(measure(|i| i * 7000).1, gst::Fraction::new(1286, 100));
    }

    #[test]
    fn the_rate_is_told_once() {
        let mut meter = FrameRateMeter::default();
        let told = (0..100)
            .filter_map(|i| meter.frame(i * 3000, 90_000))
            .count();
        assert_eq!(told, 1);
    }
}
