//! Where each node sits (rack, pod, region) and the one-way latency between two nodes.

use std::time::Duration;

use crate::scenario::{NodeSet, ScenarioError, Topology};

/// A node's place in the topology. Nodes are spread round-robin: node `i` is in rack
/// `i % racks`, region `i % regions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Rack index (racks topology; 0 otherwise).
    pub rack: usize,
    /// Pod index (racks topology; 0 otherwise).
    pub pod: usize,
    /// Region index (WAN topology; 0 otherwise).
    pub region: usize,
}

impl Topology {
    /// Where node `i` sits.
    pub fn placement(&self, i: usize) -> Placement {
        match self {
            Topology::Mesh { .. } => Placement {
                rack: 0,
                pod: 0,
                region: 0,
            },
            Topology::Racks {
                pods,
                racks_per_pod,
                ..
            } => {
                let rack = i % (pods * racks_per_pod);
                Placement {
                    rack,
                    pod: rack / racks_per_pod,
                    region: 0,
                }
            }
            Topology::Wan { regions, .. } => Placement {
                rack: 0,
                pod: 0,
                region: i % regions.len(),
            },
        }
    }

    /// One-way base latency from node `a` to node `b` (before jitter).
    pub fn latency(&self, a: usize, b: usize) -> Duration {
        let (pa, pb) = (self.placement(a), self.placement(b));
        match self {
            Topology::Mesh { latency } => *latency,
            Topology::Racks {
                intra_rack,
                intra_pod,
                inter_pod,
                ..
            } => {
                if pa.rack == pb.rack {
                    *intra_rack
                } else if pa.pod == pb.pod {
                    *intra_pod
                } else {
                    *inter_pod
                }
            }
            Topology::Wan {
                one_way,
                intra_region,
                ..
            } => {
                if pa.region == pb.region {
                    *intra_region
                } else {
                    one_way[pa.region][pb.region]
                }
            }
        }
    }

    /// The nodes of a group selector `rack:R`, `pod:P` or `region:NAME`.
    pub fn group(
        &self,
        n: usize,
        field: &str,
        kind: &str,
        value: &str,
    ) -> Result<NodeSet, ScenarioError> {
        let bad = |message: String| ScenarioError {
            field: field.into(),
            message,
        };
        let index = |limit: usize| -> Result<usize, ScenarioError> {
            value
                .parse::<usize>()
                .ok()
                .filter(|v| *v < limit)
                .ok_or_else(|| bad(format!("{kind}:{value}: must be 0..{limit}")))
        };
        match (self, kind) {
            (
                Topology::Racks {
                    pods,
                    racks_per_pod,
                    ..
                },
                "rack",
            ) => {
                let r = index(pods * racks_per_pod)?;
                Ok((0..n).filter(|&i| self.placement(i).rack == r).collect())
            }
            (Topology::Racks { pods, .. }, "pod") => {
                let p = index(*pods)?;
                Ok((0..n).filter(|&i| self.placement(i).pod == p).collect())
            }
            (Topology::Wan { regions, .. }, "region") => {
                let r = regions
                    .iter()
                    .position(|name| name == value)
                    .ok_or_else(|| {
                        bad(format!(
                            "no region {value:?} (regions: {})",
                            regions.join(", ")
                        ))
                    })?;
                Ok((0..n).filter(|&i| self.placement(i).region == r).collect())
            }
            _ => Err(bad(format!(
                "selector {kind}:{value} does not apply to this topology"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn racks_latency_tiers() {
        let t = Topology::Racks {
            pods: 2,
            racks_per_pod: 2,
            intra_rack: Duration::from_micros(50),
            intra_pod: Duration::from_micros(200),
            inter_pod: Duration::from_millis(1),
        };
        // Racks 0,1 in pod 0; racks 2,3 in pod 1; node i in rack i % 4.
        assert_eq!(t.latency(0, 4), Duration::from_micros(50));
        assert_eq!(t.latency(0, 1), Duration::from_micros(200));
        assert_eq!(t.latency(0, 2), Duration::from_millis(1));
        assert_eq!(
            t.group(8, "f", "pod", "1").expect("pod"),
            [2, 3, 6, 7].into()
        );
        assert!(t.group(8, "f", "pod", "2").is_err());
        assert!(t.group(8, "f", "region", "eu").is_err());
    }

    #[test]
    fn wan_uses_half_the_rtt() {
        let t = Topology::Wan {
            regions: vec!["us".into(), "eu".into()],
            one_way: vec![
                vec![Duration::ZERO, Duration::from_millis(40)],
                vec![Duration::from_millis(40), Duration::ZERO],
            ],
            intra_region: Duration::from_millis(1),
        };
        assert_eq!(t.latency(0, 1), Duration::from_millis(40));
        assert_eq!(t.latency(0, 2), Duration::from_millis(1));
        assert_eq!(t.group(5, "f", "region", "eu").expect("eu"), [1, 3].into());
    }
}
