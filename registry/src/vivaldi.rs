//! Vivaldi network coordinates, following Serf/HashiCorp's `coordinate` package: 8 Euclidean
//! dimensions plus a height (access-link latency), an error estimate and an adjustment term.
//! Units are seconds. Deterministic: where Serf picks a random direction (two coordinates that
//! coincide), this picks one from a seeded SplitMix64 stream ([`nexus_gossip::mix`]).
//!
//! Not ported: Serf's per-peer latency median filter (the caller has the peer's identity and may
//! filter RTT samples before [`Vivaldi::update`]).

use std::time::Duration;

use nexus_gossip::mix::splitmix64;
use serde::{Deserialize, Serialize};

/// Euclidean dimensions of a coordinate (Serf's default).
pub const VIVALDI_DIMENSIONS: usize = 8;
/// Largest error estimate (Serf `VivaldiErrorMax`).
pub const VIVALDI_ERROR_MAX: f64 = 1.5;
/// Error-update gain (Serf `VivaldiCE`).
pub const VIVALDI_CE: f64 = 0.25;
/// Position-update gain (Serf `VivaldiCC`).
pub const VIVALDI_CC: f64 = 0.25;
/// Samples in the adjustment window (Serf `AdjustmentWindowSize`).
pub const VIVALDI_ADJUSTMENT_WINDOW: usize = 20;
/// Smallest height, seconds (Serf `HeightMin`, 10 µs).
pub const VIVALDI_HEIGHT_MIN: f64 = 10.0e-6;
/// Gravity's reach, seconds (Serf `GravityRho`): pulls coordinates back towards the origin.
pub const VIVALDI_GRAVITY_RHO: f64 = 150.0;
/// Largest magnitude of any coordinate component, height or adjustment accepted from a peer
/// (seconds); anything larger or non-finite is refused by [`Coord::is_valid`].
pub const COORD_ABS_MAX: f64 = 1.0e4;
/// RTT samples above this are ignored by [`Vivaldi::update`] (Serf ignores RTTs over 10 s).
pub const VIVALDI_RTT_MAX: Duration = Duration::from_secs(10);

const ZERO_THRESHOLD: f64 = 1.0e-6;

/// A network coordinate. All fields in seconds except `error` (dimensionless).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Coord {
    /// Position in the Euclidean part of the space.
    pub vec: [f64; VIVALDI_DIMENSIONS],
    /// Confidence in the position: 0 = certain, [`VIVALDI_ERROR_MAX`] = no idea.
    pub error: f64,
    /// Offset added to every distance (centred adjustment of the node's RTT estimates).
    pub adjustment: f64,
    /// Height: latency of the node's access link, always at least [`VIVALDI_HEIGHT_MIN`].
    pub height: f64,
}

impl Default for Coord {
    fn default() -> Self {
        Coord {
            vec: [0.0; VIVALDI_DIMENSIONS],
            error: VIVALDI_ERROR_MAX,
            adjustment: 0.0,
            height: VIVALDI_HEIGHT_MIN,
        }
    }
}

impl Coord {
    /// Every field finite and within [`COORD_ABS_MAX`]; error in `0..=VIVALDI_ERROR_MAX`;
    /// height non-negative.
    pub fn is_valid(&self) -> bool {
        let bounded = |x: f64| x.is_finite() && x.abs() <= COORD_ABS_MAX;
        self.vec.iter().all(|&x| bounded(x))
            && bounded(self.adjustment)
            && bounded(self.height)
            && self.height >= 0.0
            && self.error.is_finite()
            && (0.0..=VIVALDI_ERROR_MAX).contains(&self.error)
    }

    fn raw_distance_to(&self, other: &Coord) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height
    }

    /// Estimated RTT to `other`, seconds (Serf's `DistanceTo`).
    pub fn distance_s(&self, other: &Coord) -> f64 {
        let dist = self.raw_distance_to(other);
        let adjusted = dist + self.adjustment + other.adjustment;
        if adjusted > 0.0 { adjusted } else { dist }
    }
}

/// Estimated round-trip time between two coordinates.
pub fn estimate_rtt(a: &Coord, b: &Coord) -> Duration {
    let s = a.distance_s(b);
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(COORD_ABS_MAX * 4.0))
    } else {
        Duration::ZERO
    }
}

fn diff(a: &[f64; VIVALDI_DIMENSIONS], b: &[f64; VIVALDI_DIMENSIONS]) -> [f64; VIVALDI_DIMENSIONS] {
    std::array::from_fn(|i| a[i] - b[i])
}

fn magnitude(v: &[f64; VIVALDI_DIMENSIONS]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// One node's Vivaldi state (Serf's `coordinate.Client` without the latency filter).
///
/// Call [`Vivaldi::update`] with each RTT sample to a peer and that peer's coordinate (from its
/// advert or a probe); read the result with [`Vivaldi::coord`].
#[derive(Clone, Debug)]
pub struct Vivaldi {
    coord: Coord,
    origin: Coord,
    adjustment_samples: [f64; VIVALDI_ADJUSTMENT_WINDOW],
    adjustment_index: usize,
    direction_state: u64,
    updates: u64,
}

impl Default for Vivaldi {
    fn default() -> Self {
        Self::new()
    }
}

impl Vivaldi {
    /// A coordinate at the origin with maximal error; coincident-coordinate directions from seed 0.
    pub fn new() -> Self {
        Self::with_seed(0)
    }

    /// As [`Vivaldi::new`], with the seed for the direction chosen when this node's coordinate
    /// coincides with a peer's. Give each node its own (derive it from the node id or the node's
    /// seed), or two nodes starting at the origin move in the same direction.
    pub fn with_seed(seed: u64) -> Self {
        Vivaldi {
            coord: Coord::default(),
            origin: Coord {
                error: VIVALDI_ERROR_MAX,
                height: 0.0,
                ..Coord::default()
            },
            adjustment_samples: [0.0; VIVALDI_ADJUSTMENT_WINDOW],
            adjustment_index: 0,
            direction_state: seed,
            updates: 0,
        }
    }

    /// The current coordinate.
    pub fn coord(&self) -> Coord {
        self.coord
    }

    /// RTT samples applied so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Folds in one RTT sample to a peer whose coordinate is `peer`. Samples above
    /// [`VIVALDI_RTT_MAX`] and invalid peer coordinates are ignored; a result that would be
    /// invalid (non-finite) resets the coordinate, as Serf does.
    pub fn update(&mut self, rtt: Duration, peer: &Coord) {
        if rtt > VIVALDI_RTT_MAX || !peer.is_valid() {
            return;
        }
        let rtt_s = rtt.as_secs_f64().max(ZERO_THRESHOLD);
        self.update_vivaldi(peer, rtt_s);
        self.update_adjustment(peer, rtt_s);
        self.update_gravity();
        if !self.coord.is_valid() {
            self.coord = Coord::default();
            self.adjustment_samples = [0.0; VIVALDI_ADJUSTMENT_WINDOW];
        }
        self.updates += 1;
    }

    fn update_vivaldi(&mut self, other: &Coord, rtt_s: f64) {
        let dist = self.coord.distance_s(other);
        let wrongness = (dist - rtt_s).abs() / rtt_s;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;
        self.coord.error = (VIVALDI_CE * weight * wrongness
            + self.coord.error * (1.0 - VIVALDI_CE * weight))
            .min(VIVALDI_ERROR_MAX);
        let force = VIVALDI_CC * weight * (rtt_s - dist);
        self.coord = self.apply_force(force, other);
    }

    fn update_adjustment(&mut self, other: &Coord, rtt_s: f64) {
        let dist = self.coord.raw_distance_to(other);
        self.adjustment_samples[self.adjustment_index] = rtt_s - dist;
        self.adjustment_index = (self.adjustment_index + 1) % VIVALDI_ADJUSTMENT_WINDOW;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * VIVALDI_ADJUSTMENT_WINDOW as f64);
    }

    fn update_gravity(&mut self) {
        let origin = self.origin;
        let dist = origin.distance_s(&self.coord);
        let force = -(dist / VIVALDI_GRAVITY_RHO).powi(2);
        self.coord = self.apply_force(force, &origin);
    }

    fn apply_force(&mut self, force: f64, other: &Coord) -> Coord {
        let mut out = self.coord;
        let (unit, mag) = self.unit_vector_at(&self.coord.vec.clone(), &other.vec);
        for (x, u) in out.vec.iter_mut().zip(unit) {
            *x += u * force;
        }
        if mag > ZERO_THRESHOLD {
            out.height =
                ((out.height + other.height) * force / mag + out.height).max(VIVALDI_HEIGHT_MIN);
        }
        out
    }

    fn unit_vector_at(
        &mut self,
        a: &[f64; VIVALDI_DIMENSIONS],
        b: &[f64; VIVALDI_DIMENSIONS],
    ) -> ([f64; VIVALDI_DIMENSIONS], f64) {
        let d = diff(a, b);
        let mag = magnitude(&d);
        if mag > ZERO_THRESHOLD {
            return (d.map(|x| x / mag), mag);
        }
        // Coincident: a seeded pseudo-random direction (Serf uses math/rand here).
        let state = &mut self.direction_state;
        let r: [f64; VIVALDI_DIMENSIONS] =
            std::array::from_fn(|_| (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64 - 0.5);
        let mag_r = magnitude(&r);
        if mag_r > ZERO_THRESHOLD {
            return (r.map(|x| x / mag_r), 0.0);
        }
        let mut unit = [0.0; VIVALDI_DIMENSIONS];
        unit[0] = 1.0;
        (unit, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs rounds of every node sampling every other node's true RTT; returns the coordinates.
    fn converge(truth: &[Vec<f64>], rounds: usize) -> Vec<Coord> {
        let n = truth.len();
        let mut nodes: Vec<Vivaldi> = (0..n).map(|i| Vivaldi::with_seed(i as u64 + 1)).collect();
        for _ in 0..rounds {
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        let peer = nodes[j].coord();
                        nodes[i].update(Duration::from_secs_f64(truth[i][j]), &peer);
                    }
                }
            }
        }
        nodes.iter().map(Vivaldi::coord).collect()
    }

    fn max_relative_error(truth: &[Vec<f64>], coords: &[Coord]) -> f64 {
        let mut worst: f64 = 0.0;
        for i in 0..truth.len() {
            for j in 0..truth.len() {
                if i != j {
                    let est = estimate_rtt(&coords[i], &coords[j]).as_secs_f64();
                    worst = worst.max((est - truth[i][j]).abs() / truth[i][j]);
                }
            }
        }
        worst
    }

    #[test]
    fn converges_on_a_triangle() {
        // 10 ms, 20 ms, 25 ms sides.
        let truth = vec![
            vec![0.0, 0.010, 0.020],
            vec![0.010, 0.0, 0.025],
            vec![0.020, 0.025, 0.0],
        ];
        let coords = converge(&truth, 200);
        let err = max_relative_error(&truth, &coords);
        assert!(err < 0.1, "max relative error {err}");
        assert!(coords.iter().all(|c| c.error < 0.5), "{coords:?}");
    }

    #[test]
    fn converges_on_a_grid() {
        // 4x4 grid, 10 ms per hop (Manhattan), plus 1 ms access link each side.
        let side = 4;
        let n = side * side;
        let truth: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        if i == j {
                            return 0.0;
                        }
                        let (xi, yi) = ((i % side) as f64, (i / side) as f64);
                        let (xj, yj) = ((j % side) as f64, (j / side) as f64);
                        let euclid = ((xi - xj).powi(2) + (yi - yj).powi(2)).sqrt();
                        0.010 * euclid + 0.002
                    })
                    .collect()
            })
            .collect();
        let coords = converge(&truth, 300);
        let err = max_relative_error(&truth, &coords);
        assert!(err < 0.25, "max relative error {err}");
        // Neighbours estimate closer than opposite corners.
        let near = estimate_rtt(&coords[0], &coords[1]);
        let far = estimate_rtt(&coords[0], &coords[n - 1]);
        assert!(near * 3 < far, "{near:?} vs {far:?}");
    }

    #[test]
    fn coincident_start_is_deterministic_and_separates() {
        let run = || {
            let mut a = Vivaldi::with_seed(7);
            let mut b = Vivaldi::with_seed(8);
            for _ in 0..50 {
                let cb = b.coord();
                a.update(Duration::from_millis(30), &cb);
                let ca = a.coord();
                b.update(Duration::from_millis(30), &ca);
            }
            (a.coord(), b.coord())
        };
        let (a1, b1) = run();
        let (a2, b2) = run();
        assert_eq!(a1, a2);
        assert_eq!(b1, b2);
        let est = estimate_rtt(&a1, &b1).as_secs_f64();
        assert!((est - 0.030).abs() < 0.003, "estimated {est}");
    }

    #[test]
    fn invalid_peer_and_huge_rtt_are_ignored() {
        let mut v = Vivaldi::new();
        let bad = Coord {
            height: f64::NAN,
            ..Coord::default()
        };
        v.update(Duration::from_millis(10), &bad);
        v.update(Duration::from_secs(11), &Coord::default());
        assert_eq!(v.updates(), 0);
        assert_eq!(v.coord(), Coord::default());
    }
}
