//! The simulated network: per-link latency from the topology, jitter, loss, duplication,
//! reordering, per-node egress bandwidth and partitions, and the timeline's network actions.
//! Every random choice comes from the network's own generator, seeded from the run's seed, in
//! the order the engine routes datagrams.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;

use crate::engine::seeded_rng;
use crate::scenario::{Action, JitterDistribution, Network, NodeSet, Scenario, Topology};

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
    /// Nodes named by a partition since the last heal: the only ones a cut can involve.
    cut_nodes: BTreeSet<usize>,
    /// When each node's egress link is next free (bandwidth model), µs.
    egress_free_us: Vec<u64>,
    /// Every datagram's fate is drawn from it.
    rng: StdRng,
}

impl Net {
    /// A network of `n` nodes whose datagrams' fates are drawn from `rng`.
    pub fn new(n: usize, topology: Topology, params: Network, rng: StdRng) -> Self {
        Net {
            topology,
            params,
            loss_by_sender: vec![None; n],
            cut: BTreeSet::new(),
            cut_nodes: BTreeSet::new(),
            egress_free_us: vec![0; n],
            rng,
        }
    }

    /// The network of a run of `scenario` with `seed`: its nodes, topology and network
    /// settings, fates drawn from the generator [`seeded_rng`]`(seed, 2, 0)`.
    pub fn for_scenario(scenario: &Scenario, seed: u64) -> Self {
        Net::new(
            scenario.nodes,
            scenario.topology.clone(),
            scenario.network.clone(),
            seeded_rng(seed, 2, 0),
        )
    }

    /// Whether `from → to` is cut.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Whether any link is cut.
    pub fn any_cut(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Nodes named by a partition since the last heal (a superset of the nodes with a cut
    /// link).
    pub fn cut_nodes(&self) -> &BTreeSet<usize> {
        &self.cut_nodes
    }

    /// Whether `a` and `b` can talk in both directions.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        !self.is_cut(a, b) && !self.is_cut(b, a)
    }

    /// Cuts every link between different groups.
    pub fn partition(&mut self, groups: &[NodeSet]) {
        self.cut_nodes.extend(groups.iter().flatten());
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
        self.cut_nodes.extend(from.iter().chain(to));
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
        self.cut_nodes.clear();
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

    /// The loss rate of datagrams `sender` sends.
    pub fn loss_of(&self, sender: usize) -> f64 {
        self.loss_by_sender[sender].unwrap_or(self.params.loss)
    }

    /// Carries out a network action of the timeline (`partition`, one-way `partition`, `heal`,
    /// `loss`) and returns `true`; any other action is a node's, left to the engine: `false`.
    pub fn apply(&mut self, action: &Action) -> bool {
        match action {
            Action::Partition(groups) => self.partition(groups),
            Action::PartitionOneWay { from, to } => self.partition_one_way(from, to),
            Action::Heal => self.heal(),
            Action::Loss { nodes, rate } => self.set_loss(nodes.as_ref(), *rate),
            Action::Kill(_)
            | Action::Restart(_)
            | Action::Pause(_)
            | Action::Resume(_)
            | Action::Skew { .. } => return false,
        }
        true
    }

    /// Decides one datagram's fate, drawing from the network's generator. `now_us` is the send
    /// time.
    pub fn route(&mut self, now_us: u64, from: usize, to: usize, bytes: usize) -> Fate {
        if self.is_cut(from, to) {
            return Fate::Drop("partition");
        }
        let loss = self.loss_of(from);
        let rng = &mut self.rng;
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
        let p = &self.params;
        // `base` plus jitter, plus a hold-back when the copy is picked for reordering.
        let first = base + extra_delay(p.jitter, p.jitter_distribution, p.reorder, rng);
        if p.duplicate > 0.0 && rng.random_bool(p.duplicate) {
            let second = base + extra_delay(p.jitter, p.jitter_distribution, p.reorder, rng);
            Fate::Deliver(vec![first, second])
        } else {
            Fate::Deliver(vec![first])
        }
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

    fn net(params: Network, seed: u64) -> Net {
        Net::new(
            4,
            Topology::Mesh {
                latency: Duration::from_millis(1),
            },
            params,
            StdRng::seed_from_u64(seed),
        )
    }

    #[test]
    fn partitions_are_directional_and_heal() {
        let mut n = net(Network::default(), 1);
        n.partition_one_way(&[0].into(), &[1].into());
        assert_eq!(n.route(0, 0, 1, 10), Fate::Drop("partition"));
        assert!(matches!(n.route(0, 1, 0, 10), Fate::Deliver(_)));
        assert!(!n.connected(0, 1));
        n.heal();
        assert!(n.connected(0, 1));
        n.partition(&[[0, 1].into(), [2, 3].into()]);
        assert!(n.connected(0, 1) && !n.connected(1, 2) && !n.connected(3, 0));
    }

    #[test]
    fn loss_rate_is_respected() {
        let mut n = net(
            Network {
                loss: 0.3,
                ..Network::default()
            },
            2,
        );
        let lost = (0..10_000)
            .filter(|_| n.route(0, 0, 1, 10) == Fate::Drop("loss"))
            .count();
        assert!((2_700..3_300).contains(&lost), "lost {lost}");
    }

    #[test]
    fn bandwidth_queues_behind_earlier_datagrams() {
        // 8 kbit/s: a 1000-byte datagram takes 1 s to serialise.
        let mut n = net(
            Network {
                bandwidth_kbps: 8,
                ..Network::default()
            },
            3,
        );
        let Fate::Deliver(a) = n.route(0, 0, 1, 1000) else {
            panic!()
        };
        let Fate::Deliver(b) = n.route(0, 0, 2, 1000) else {
            panic!()
        };
        assert_eq!(a[0], Duration::from_millis(1001));
        assert_eq!(b[0], Duration::from_millis(2001));
    }

    #[test]
    fn jitter_distributions_have_their_shape() {
        let sample = |dist| {
            let mut n = net(
                Network {
                    jitter: Duration::from_millis(10),
                    jitter_distribution: dist,
                    ..Network::default()
                },
                4,
            );
            let mut v: Vec<f64> = (0..20_000)
                .map(|_| match n.route(0, 0, 1, 10) {
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
            let mut n = net(params.clone(), seed);
            (0..100).map(|_| n.route(0, 0, 1, 10)).collect::<Vec<_>>()
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
