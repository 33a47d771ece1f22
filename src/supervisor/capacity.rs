//! Admission by capacity: what the node can carry, in cores, and what each
//! stream costs. A publish that would take the streams' load past the limit
//! is refused before its key is claimed, so another node behind the same
//! address can take it, and no live stream loses frames to an extra one.
//!
//! Costs are per stream as measured (README, Performance): a transcoded
//! stream decodes its source and encodes the preset's layers, a bypassed one
//! only moves packets, a hybrid pass-through encodes only the lower layers.
//! A stream is admitted at what it may cost; once its pass-through is known
//! to run, its session holds the lower cost (and the full one again if the
//! source stops qualifying). They are estimates set in the configuration, not
//! readings of the CPU: a reading lags, and a node must say no before the
//! stream that overloads it has started.

use super::config::CapacityConfig;

/// What a stream asks of the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Decode and encode (every input but WHIP in bypass).
    Transcode,
    /// The source's H.264 as the top layer, the lower layers encoded
    /// (hybrid pass-through).
    Hybrid,
    /// Forwarded as it came (WHIP without transcoding, single
    /// pass-through).
    Bypass,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Transcode => "a transcoded stream",
            Load::Hybrid => "a stream passed through in hybrid",
            Load::Bypass => "a forwarded stream",
        }
    }
}

/// The node's limit and the costs, from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Cores the streams may take together.
    pub limit: f64,
    transcode_cost: f64,
    hybrid_cost: f64,
    bypass_cost: f64,
}

impl Capacity {
    /// `cores` 0 stands for the cores this process may run on.
    pub fn new(config: &CapacityConfig) -> Capacity {
        let cores = if config.cores > 0.0 {
            config.cores
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
        };
        Capacity {
            limit: cores * config.max_load,
            transcode_cost: config.transcode_cost,
            hybrid_cost: config.hybrid_cost,
            bypass_cost: config.bypass_cost,
        }
    }

    pub fn cost(&self, load: Load) -> f64 {
        match load {
            Load::Transcode => self.transcode_cost,
            Load::Hybrid => self.hybrid_cost,
            Load::Bypass => self.bypass_cost,
        }
    }

    /// Whether one more stream of `load` fits beside the `committed` cores
    /// of `streams` live streams; the reason for its publisher when not.
    pub fn admit(&self, committed: f64, streams: usize, load: Load) -> Result<(), String> {
        let cost = self.cost(load);
        // A hair of slack so that costs that add up to the limit exactly fit.
        if committed + cost <= self.limit + 1e-9 {
            return Ok(());
        }
        Err(format!(
            "at capacity ({streams} streams take {committed:.2} of its {:.2} cores; {} needs {cost:.2})",
            self.limit,
            load.name()
        ))
    }

    /// Whether the node can take no transcoded stream more: what `/health`
    /// tells a load balancer (a forwarded stream may still fit).
    pub fn full(&self, committed: f64) -> bool {
        self.admit(committed, 0, Load::Transcode).is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(cores: f64) -> Capacity {
        Capacity::new(&CapacityConfig {
            cores,
            ..CapacityConfig::default()
        })
    }

    #[test]
    fn streams_are_admitted_until_the_next_would_pass_the_limit() {
        let node = capacity(2.0);
        let cost = node.cost(Load::Transcode);
        let mut committed = 0.0;
        let mut admitted = 0;
        while node.admit(committed, admitted, Load::Transcode).is_ok() {
            committed += cost;
            admitted += 1;
        }
        assert!(committed <= node.limit + 1e-9 && committed + cost > node.limit);
        assert!(node.full(committed));
        let reason = node
            .admit(committed, admitted, Load::Transcode)
            .unwrap_err();
        assert!(reason.starts_with("at capacity"), "{reason}");
        assert!(reason.contains(&format!("{admitted} streams")), "{reason}");
    }

    #[test]
    fn a_forwarded_stream_can_fit_where_a_transcoded_one_does_not() {
        let node = capacity(1.0);
        let committed = node.limit - node.cost(Load::Bypass);
        assert!(node.full(committed));
        assert!(node.admit(committed, 1, Load::Bypass).is_ok());
    }

    #[test]
    fn passed_through_streams_cost_less() {
        let node = capacity(2.0);
        assert!(node.cost(Load::Hybrid) < node.cost(Load::Transcode));
        assert!(node.cost(Load::Bypass) < node.cost(Load::Hybrid));
        // Three transcoded streams fill a 2-core node; two of them passed
        // through in hybrid leave room for another transcoded one.
        let transcode = node.cost(Load::Transcode);
        assert!(node.full(3.0 * transcode));
        assert!(!node.full(transcode + 2.0 * node.cost(Load::Hybrid)));
    }

    #[test]
    fn costs_that_add_up_to_the_limit_exactly_fit() {
        let node = Capacity::new(&CapacityConfig {
            cores: 1.0,
            max_load: 0.9,
            transcode_cost: 0.3,
            hybrid_cost: 0.1,
            bypass_cost: 0.05,
        });
        assert!(node.admit(0.6, 2, Load::Transcode).is_ok());
        assert!(node.admit(0.9, 3, Load::Transcode).is_err());
    }

    #[test]
    fn no_cores_given_means_the_machines() {
        let node = capacity(0.0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert_eq!(node.limit, cores * CapacityConfig::default().max_load);
    }
}
