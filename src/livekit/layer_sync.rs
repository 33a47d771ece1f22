//! Sends the simulcast layers of one frame together.
//!
//! Each layer is encoded on its own thread, so a big layer's frames come out
//! later than a small layer's. The LiveKit server switches a subscriber up to
//! a layer only at a keyframe whose timestamp is not behind what it already
//! forwarded from the current layer (by more than 50 ms); a top layer that
//! lags the others by more than that can then never be switched to. Browsers
//! do not meet this because they encode all layers of a frame in one call.
//! [`LayerSync`] gives the same order: it holds each layer's frames until every
//! layer that is producing has delivered that timestamp, then releases them in
//! timestamp order. A layer that stops (paused by dynacast, an encoder that
//! stalls) is waited for at most [`MAX_HOLD`], then no longer until it
//! delivers again, so one layer can never hold the others back for long.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The longest a frame waits for the other layers' frames of its timestamp.
pub const MAX_HOLD: Duration = Duration::from_millis(500);

struct Held<F> {
    rtp_time: u64,
    arrived: Instant,
    frame: F,
}

struct Layer<F> {
    held: VecDeque<Held<F>>,
    /// The room wants this layer (dynacast); a paused layer is not waited for.
    active: bool,
    /// Delivering frames: the others wait for its frame of each timestamp.
    producing: bool,
    /// The RTP time of the last frame it delivered.
    last: Option<u64>,
}

impl<F> Layer<F> {
    /// Wanted, but not waited for before its first frame.
    fn new() -> Self {
        Layer {
            held: VecDeque::new(),
            active: true,
            producing: false,
            last: None,
        }
    }
}

/// Frames of several simulcast layers, released in timestamp order once every
/// producing layer has caught up.
pub struct LayerSync<F> {
    layers: Vec<Layer<F>>,
    max_hold: Duration,
}

impl<F> LayerSync<F> {
    pub fn new(layers: usize) -> Self {
        Self::with_max_hold(layers, MAX_HOLD)
    }

    pub fn with_max_hold(layers: usize, max_hold: Duration) -> Self {
        LayerSync {
            layers: (0..layers).map(|_| Layer::new()).collect(),
            max_hold,
        }
    }

    /// A frame of `layer` with its RTP time, encoded at `now`.
    pub fn push(&mut self, layer: usize, rtp_time: u64, frame: F, now: Instant) {
        if layer >= self.layers.len() {
            self.layers.resize_with(layer + 1, Layer::new);
        }
        let l = &mut self.layers[layer];
        l.producing = l.active;
        l.last = Some(rtp_time);
        l.held.push_back(Held {
            rtp_time,
            arrived: now,
            frame,
        });
    }

    /// The room paused or resumed `layer`. A paused layer is not waited for; a
    /// resumed one is waited for again from its first frame on.
    pub fn set_active(&mut self, layer: usize, active: bool) {
        if let Some(l) = self.layers.get_mut(layer) {
            l.active = active;
            if !active {
                l.producing = false;
            }
        }
    }

    /// The next frame to send, if one may go at `now`.
    pub fn pop(&mut self, now: Instant) -> Option<(usize, F)> {
        let (layer, head) = self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.held.front().map(|h| (i, h)))
            .min_by_key(|(_, h)| h.rtp_time)?;
        // Every producing layer has delivered this timestamp or a later one:
        // none of them will deliver anything to send before it.
        let oldest = head.rtp_time;
        let caught_up = |l: &Layer<F>| !l.producing || l.last.is_some_and(|t| t >= oldest);
        if !self.layers.iter().all(caught_up) {
            if now < head.arrived + self.max_hold {
                return None;
            }
            // Waited long enough: stop waiting for the layers that are late.
            for l in &mut self.layers {
                if !caught_up(l) {
                    l.producing = false;
                }
            }
        }
        let frame = self.layers[layer].held.pop_front()?.frame;
        Some((layer, frame))
    }

    /// When the oldest held frame stops waiting, if any frame is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.layers
            .iter()
            .filter_map(|l| l.held.front())
            .map(|h| h.arrived + self.max_hold)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(sync: &mut LayerSync<&'static str>, now: Instant) -> Vec<(usize, &'static str)> {
        std::iter::from_fn(|| sync.pop(now)).collect()
    }

    #[test]
    fn the_first_frames_of_each_layer_go_out_at_once() {
        let t0 = Instant::now();
        let mut sync = LayerSync::new(3);
        sync.push(0, 0, "q0", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q0")]);
        sync.push(2, 0, "f0", t0);
        assert_eq!(drain(&mut sync, t0), [(2, "f0")]);
    }

    #[test]
    fn a_late_layer_holds_the_others_until_it_delivers() {
        let t0 = Instant::now();
        let mut sync = LayerSync::new(2);
        sync.push(0, 0, "q0", t0);
        sync.push(1, 0, "f0", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q0"), (1, "f0")]);
        // q runs two frames ahead of f.
        sync.push(0, 3000, "q1", t0);
        sync.push(0, 6000, "q2", t0);
        assert_eq!(drain(&mut sync, t0), []);
        sync.push(1, 3000, "f1", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q1"), (1, "f1")]);
        sync.push(1, 6000, "f2", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q2"), (1, "f2")]);
    }

    #[test]
    fn a_layer_that_stops_is_waited_for_only_until_the_deadline() {
        let t0 = Instant::now();
        let hold = Duration::from_millis(100);
        let mut sync = LayerSync::with_max_hold(2, hold);
        sync.push(0, 0, "q0", t0);
        sync.push(1, 0, "f0", t0);
        drain(&mut sync, t0);
        sync.push(0, 3000, "q1", t0);
        assert_eq!(sync.deadline(), Some(t0 + hold));
        assert_eq!(drain(&mut sync, t0 + hold / 2), []);
        assert_eq!(drain(&mut sync, t0 + hold), [(0, "q1")]);
        // No longer waited for: the next frames go at once.
        sync.push(0, 6000, "q2", t0 + hold);
        assert_eq!(drain(&mut sync, t0 + hold), [(0, "q2")]);
        assert_eq!(sync.deadline(), None);
        // Once it delivers again, the layers go out together again.
        sync.push(1, 9000, "f3", t0 + hold);
        assert_eq!(drain(&mut sync, t0 + hold), []);
        sync.push(0, 9000, "q3", t0 + hold);
        assert_eq!(drain(&mut sync, t0 + hold), [(0, "q3"), (1, "f3")]);
        sync.push(0, 12000, "q4", t0 + hold);
        assert_eq!(drain(&mut sync, t0 + hold), []);
    }

    #[test]
    fn a_paused_layer_is_not_waited_for_and_a_resumed_one_is_again() {
        let t0 = Instant::now();
        let mut sync = LayerSync::new(2);
        sync.push(0, 0, "q0", t0);
        sync.push(1, 0, "f0", t0);
        drain(&mut sync, t0);
        sync.set_active(1, false);
        sync.push(0, 3000, "q1", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q1")]);
        // A frame already in flight when the pause came does not make it wait.
        sync.push(1, 3000, "f1", t0);
        sync.push(0, 6000, "q2", t0);
        assert_eq!(drain(&mut sync, t0), [(1, "f1"), (0, "q2")]);
        sync.set_active(1, true);
        sync.push(0, 9000, "q3", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q3")]);
        sync.push(1, 12000, "f4", t0);
        sync.push(0, 15000, "q5", t0);
        assert_eq!(drain(&mut sync, t0), [(1, "f4")]);
    }

    #[test]
    fn a_layer_at_a_lower_rate_holds_the_others_one_frame_at_most() {
        let t0 = Instant::now();
        let mut sync = LayerSync::new(2);
        sync.push(1, 0, "f0", t0);
        sync.push(0, 0, "q0", t0);
        drain(&mut sync, t0);
        sync.push(0, 3000, "q1", t0);
        assert_eq!(drain(&mut sync, t0), []);
        sync.push(1, 6000, "f2", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q1")]);
        sync.push(0, 6000, "q2", t0);
        assert_eq!(drain(&mut sync, t0), [(0, "q2"), (1, "f2")]);
    }
}
