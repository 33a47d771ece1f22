//! Who may hold a connection before publishing, and how the accept loop waits
//! when accepting fails. A connection that has not started publishing has
//! proven nothing (no valid key yet), so how many of them exist, from one
//! address and in all, is bounded; a publisher, once accepted, no longer counts.

use crate::sync::lock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bounds on connections that have not started publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections per listener (all addresses together).
    pub max_pending: usize,
    /// Connections per remote IP address.
    pub max_pending_per_ip: usize,
    /// Bytes the server may write to a connection before its publish is
    /// accepted: a client that never reads its replies is dropped once they
    /// pile up beyond this, instead of filling kernel buffers.
    pub write_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 256,
            max_pending_per_ip: 16,
            // The handshake (3073 bytes) and the answers to connect,
            // releaseStream, FCPublish, createStream and publish fit many times.
            write_budget: 64 * 1024,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts connections that have not started publishing.
#[derive(Debug, Default)]
pub struct Admission {
    limits: Mutex<Limits>,
    counts: Mutex<Counts>,
}

/// A place among the connections that have not started publishing; given
/// back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn limits(&self) -> Limits {
        *lock(&self.limits)
    }

    /// New limits apply to connections accepted from now on.
    pub fn set_limits(&self, limits: Limits) {
        *lock(&self.limits) = limits;
    }

    /// A slot for a new connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, String> {
        let limits = self.limits();
        let mut counts = lock(&self.counts);
        if counts.total >= limits.max_pending {
            return Err(format!(
                "{} connections are already waiting to publish",
                counts.total
            ));
        }
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= limits.max_pending_per_ip {
            return Err(format!(
                "{from_ip} connections from {ip} are already waiting to publish"
            ));
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Connections holding a slot now.
    pub fn pending(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// The accept loop's pause after a failed `accept()`. Failures come in bursts
/// (out of file descriptors: every retry fails at once until some connection
/// closes), so retrying at once spins a core; the pause doubles from 10 ms to
/// 1 s and starts over after a success. Only a burst's first failure is worth
/// a log line.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
    failures: u64,
}

pub const BACKOFF_FIRST: Duration = Duration::from_millis(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// After a failure: how long to wait, and whether it starts a burst.
    pub fn failed(&mut self) -> (Duration, bool) {
        self.failures += 1;
        let delay = match self.delay {
            None => BACKOFF_FIRST,
            Some(d) => (d * 2).min(BACKOFF_MAX),
        };
        self.delay = Some(delay);
        (delay, self.failures == 1)
    }

    /// After a success: the number of failures in the burst it ends, if any.
    pub fn succeeded(&mut self) -> Option<u64> {
        self.delay = None;
        let failures = std::mem::take(&mut self.failures);
        (failures > 0).then_some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_ip_and_in_all_and_slots_come_back() {
        let admission = Arc::new(Admission::default());
        admission.set_limits(Limits {
            max_pending: 3,
            max_pending_per_ip: 2,
            write_budget: 0,
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let a1 = admission.admit(a).expect("a1");
        let _a2 = admission.admit(a).expect("a2");
        assert!(admission.admit(a).is_err(), "third from one address");
        let _b1 = admission.admit(b).expect("b1");
        assert!(admission.admit(c).is_err(), "fourth in all");
        drop(a1);
        assert_eq!(admission.pending(), 2);
        let _c1 = admission.admit(c).expect("a slot came back");
    }

    #[test]
    fn backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let (d, first) = b.failed();
        assert_eq!((d, first), (BACKOFF_FIRST, true));
        let delays: Vec<_> = (0..10).map(|_| b.failed()).collect();
        assert!(delays.iter().all(|(_, first)| !first), "one log per burst");
        assert_eq!(delays[0].0, Duration::from_millis(20));
        assert_eq!(delays.last().map(|d| d.0), Some(BACKOFF_MAX));
        assert_eq!(b.succeeded(), Some(11));
        assert_eq!(b.succeeded(), None);
        assert_eq!(b.failed(), (BACKOFF_FIRST, true), "a new burst");
    }
}
