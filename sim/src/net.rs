//! The simulated network: per-link latency from the topology, jitter, loss, duplication,
//! reordering, per-node egress bandwidth and partitions. Every random choice comes from the
//! simulation's seeded RNG, in the order the engine asks.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use crate::scenario::{JitterDistribution, Network, NodeSet, Topology};

/// What happens to one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered after each of these delays (two entries when duplicated).
    Deliver(Vec<Duration>),
    /// Dropped, with the reason.
    Drop(&'static str),
}

/// The network's state during a run.
#[derive(Debug, Clone)]
pub struct Net {
    topology: Topology,
    params: Network,
    /// Per-sender loss overrides (set by `loss` actions with `nodes`).
    loss_by_sender: Vec<Option<f64>>,
    /// Directed links that are cut.
    cut: BTreeSet<(usize, usize)>,
    /// When each node's egress link is next free (bandwidth model), µs.
    egress_free_us: Vec<u64>,
}

impl Net {
    /// A network of `n` nodes.
    pub fn new(n: usize, topology: Topology, params: Network) -> Self {
        Net {
            topology,
            params,
            loss_by_sender: vec![None; n],
            cut: BTreeSet::new(),
            egress_free_us: vec![0; n],
        }
    }

    /// Whether `from → to` is cut.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Whether any link is cut.
    pub fn any_cut(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Whether `a` and `b` can talk in both directions.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        !self.is_cut(a, b) && !self.is_cut(b, a)
    }

    /// Cuts every link between different groups.
    pub fn partition(&mut self, groups: &[NodeSet]) {
        for (i, g) in groups.iter().enumerate() {
            for h in groups.iter().skip(i + 1) {
                for &a in g {
                    for &b in h {
                        if a != b {
                            self.cut.insert((a, b));
                            self.cut.insert((b, a));
                        }
                    }
                }
            }
        }
    }

    /// Cuts `from → to` for every pair.
    pub fn partition_one_way(&mut self, from: &NodeSet, to: &NodeSet) {
        for &a in from {
            for &b in to {
                if a != b {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Sets the loss rate for `nodes` (as senders) or for the whole network.
    pub fn set_loss(&mut self, nodes: Option<&NodeSet>, rate: f64) {
        match nodes {
            None => {
                self.params.loss = rate;
                self.loss_by_sender.iter_mut().for_each(|l| *l = None);
            }
            Some(set) => {
                for &i in set {
                    self.loss_by_sender[i] = Some(rate);
                }
            }
        }
    }

    /// Decides one datagram's fate. `now_us` is the send time.
    pub fn route(
        &mut self,
        rng: &mut StdRng,
        now_us: u64,
        from: usize,
        to: usize,
        bytes: usize,
    ) -> Fate {
        if self.is_cut(from, to) {
            return Fate::Drop("partition");
        }
        let loss = self.loss_by_sender[from].unwrap_or(self.params.loss);
        if loss > 0.0 && rng.random_bool(loss) {
            return Fate::Drop("loss");
        }
        // Serialisation delay on the sender's egress link.
        let mut queue_us = 0;
        if self.params.bandwidth_kbps > 0 {
            let tx_us = (bytes as u64 * 8 * 1000).div_ceil(self.params.bandwidth_kbps);
            let start = self.egress_free_us[from].max(now_us);
            self.egress_free_us[from] = start + tx_us;
            queue_us = start + tx_us - now_us;
        }
        let base = self.topology.latency(from, to) + Duration::from_micros(queue_us);
        let first = self.delay(rng, base);
        if self.params.duplicate > 0.0 && rng.random_bool(self.params.duplicate) {
            let second = self.delay(rng, base);
            Fate::Deliver(vec![first, second])
        } else {
            Fate::Deliver(vec![first])
        }
    }

    /// `base` plus jitter, plus a hold-back when the datagram is picked for reordering.
    fn delay(&self, rng: &mut StdRng, base: Duration) -> Duration {
        let p = &self.params;
        base + extra_delay(p.jitter, p.jitter_distribution, p.reorder, rng)
    }
}

/// The extra delay of one datagram copy: jitter drawn from `distribution` (scaled by `jitter`),
/// plus a hold-back of up to `10 × jitter + 1 ms` when it is picked for reordering. Both modes
/// draw from this one function so they share one distribution.
pub fn extra_delay(
    jitter: Duration,
    distribution: JitterDistribution,
    reorder: f64,
    rng: &mut StdRng,
) -> Duration {
    let mut d = Duration::ZERO;
    if !jitter.is_zero() {
        let u: f64 = rng.random();
        let factor = match distribution {
            JitterDistribution::Uniform => u,
            // Inverse CDF; 1 - u is in (0, 1] so the logarithm is finite.
            JitterDistribution::Exponential => (-(1.0 - u).ln()).min(10.0),
            // Pareto with shape 2 and scale 1, shifted to start at 0: mean 1.
            JitterDistribution::Pareto => ((1.0 - u).powf(-0.5) - 1.0).min(20.0),
        };
        d += jitter.mul_f64(factor);
    }
    if reorder > 0.0 && rng.random_bool(reorder) {
        d += (jitter * 10 + Duration::from_millis(1)).mul_f64(rng.random::<f64>());
    }
    d
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn net(params: Network) -> Net {
        Net::new(
            4,
            Topology::Mesh {
                latency: Duration::from_millis(1),
            },
            params,
        )
    }

    #[test]
    fn partitions_are_directional_and_heal() {
        let mut n = net(Network::default());
        let mut rng = StdRng::seed_from_u64(1);
        n.partition_one_way(&[0].into(), &[1].into());
        assert_eq!(n.route(&mut rng, 0, 0, 1, 10), Fate::Drop("partition"));
        assert!(matches!(n.route(&mut rng, 0, 1, 0, 10), Fate::Deliver(_)));
        assert!(!n.connected(0, 1));
        n.heal();
        assert!(n.connected(0, 1));
        n.partition(&[[0, 1].into(), [2, 3].into()]);
        assert!(n.connected(0, 1) && !n.connected(1, 2) && !n.connected(3, 0));
    }

    #[test]
    fn loss_rate_is_respected() {
        let mut n = net(Network {
            loss: 0.3,
            ..Network::default()
        });
        let mut rng = StdRng::seed_from_u64(2);
        let lost = (0..10_000)
            .filter(|_| n.route(&mut rng, 0, 0, 1, 10) == Fate::Drop("loss"))
            .count();
        assert!((2_700..3_300).contains(&lost), "lost {lost}");
    }

    #[test]
    fn bandwidth_queues_behind_earlier_datagrams() {
        // 8 kbit/s: a 1000-byte datagram takes 1 s to serialise.
        let mut n = net(Network {
            bandwidth_kbps: 8,
            ..Network::default()
        });
        let mut rng = StdRng::seed_from_u64(3);
        let Fate::Deliver(a) = n.route(&mut rng, 0, 0, 1, 1000) else {
            panic!()
        };
        let Fate::Deliver(b) = n.route(&mut rng, 0, 0, 2, 1000) else {
            panic!()
        };
        assert_eq!(a[0], Duration::from_millis(1001));
        assert_eq!(b[0], Duration::from_millis(2001));
    }

    #[test]
    fn jitter_distributions_have_their_shape() {
        let sample = |dist| {
            let mut n = net(Network {
                jitter: Duration::from_millis(10),
                jitter_distribution: dist,
                ..Network::default()
            });
            let mut rng = StdRng::seed_from_u64(4);
            let mut v: Vec<f64> = (0..20_000)
                .map(|_| match n.route(&mut rng, 0, 0, 1, 10) {
                    Fate::Deliver(d) => (d[0] - Duration::from_millis(1)).as_secs_f64() * 1e3,
                    Fate::Drop(_) => unreachable!("no loss configured"),
                })
                .collect();
            v.sort_by(f64::total_cmp);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            (mean, v[v.len() * 99 / 100], v[v.len() - 1])
        };
        let (mean, p99, max) = sample(JitterDistribution::Uniform);
        assert!(
            (4.5..5.5).contains(&mean) && max <= 10.0,
            "{mean} {p99} {max}"
        );
        let (mean, p99, max) = sample(JitterDistribution::Exponential);
        assert!(
            (9.0..11.0).contains(&mean) && p99 > 40.0 && max <= 100.0,
            "{mean} {p99} {max}"
        );
        let (_, p99, max) = sample(JitterDistribution::Pareto);
        assert!(
            p99 > 50.0 && max <= 200.0,
            "long tail: p99 {p99}, max {max}"
        );
    }

    #[test]
    fn duplicates_and_jitter_come_from_the_seed() {
        let params = Network {
            jitter: Duration::from_millis(5),
            duplicate: 0.5,
            ..Network::default()
        };
        let run = |seed| {
            let mut n = net(params.clone());
            let mut rng = StdRng::seed_from_u64(seed);
            (0..100)
                .map(|_| n.route(&mut rng, 0, 0, 1, 10))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
        assert!(
            run(9)
                .iter()
                .any(|f| matches!(f, Fate::Deliver(v) if v.len() == 2))
        );
    }
}
