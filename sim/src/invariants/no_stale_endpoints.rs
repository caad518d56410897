//! **No stale endpoints (safety).** No resolve — a scripted `resolve` action, or the sample
//! resolve every healthy node makes for each task tag in use — returns a service on a node that
//! has been crashed, paused or cut off from the resolver (another connected component) for
//! longer than `stale_bound`: the membership detection bound for the scenario's size
//! (`MembershipConfig::detection_bound`) plus the registry refresh period, unless
//! `[invariants] stale_bound` says otherwise.
//!
//! Why: a resolve that names a dead endpoint sends traffic into a hole. Membership promises to
//! declare a failed node down within its detection bound, and the registry withdraws that
//! node's services on the verdict (and at the latest at its next member-list reconciliation).

use std::time::Duration;

use super::Verdict;
use super::registry::{Candidates, RegistryInvariant, RegistryWorld, key_name};

/// See the module docs.
#[derive(Debug, Default)]
pub struct NoStaleEndpoints {
    resolves: u64,
    candidates: u64,
    first: Option<(Duration, String)>,
}

impl RegistryInvariant for NoStaleEndpoints {
    fn name(&self) -> &'static str {
        "no_stale_endpoints"
    }

    fn on_resolve(
        &mut self,
        w: &RegistryWorld<'_>,
        node: usize,
        task: &str,
        candidates: &Candidates,
        scripted: bool,
    ) {
        self.resolves += 1;
        self.candidates += candidates.len() as u64;
        if self.first.is_some() {
            return;
        }
        let bound = w.registry.checks.stale_bound;
        for (o, id, v) in candidates {
            let Some(down) = w.truth.down_for(w.now(), node, *o) else {
                continue;
            };
            if down > bound {
                let how = if w.truth.unhealthy_since[*o].is_some() {
                    "crashed or paused"
                } else {
                    "cut off from the resolver"
                };
                self.first = Some((
                    w.now(),
                    format!(
                        "n{} resolved {task} ({}) to {}, but n{} has been {how} for {:.1}s (bound {:.1}s)",
                        node + 1,
                        if scripted {
                            "timeline resolve"
                        } else {
                            "sample resolve"
                        },
                        key_name(&(*o, id.clone()), Some(*v)),
                        o + 1,
                        down.as_secs_f64(),
                        bound.as_secs_f64()
                    ),
                ));
                return;
            }
        }
    }

    fn finish(&mut self, w: &RegistryWorld<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "{} resolves, {} candidates, none down for more than {:.1}s",
                self.resolves,
                self.candidates,
                w.registry.checks.stale_bound.as_secs_f64()
            )
        })
    }
}
