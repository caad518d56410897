//! **Registry convergence (liveness).** Once the last registry change (register, load update,
//! withdrawal) or fault in the timeline is `[registry] converge_within` old, every healthy node
//! holds exactly the live services of the healthy nodes it can reach (its connected component,
//! itself included): nothing missing, nothing extra, and each at a version no older than the one
//! its origin signed `converge_within` ago (re-publishes and renewals keep signing new ones).
//! Keys that appeared or disappeared at their origin within `converge_within` (a lease running
//! out) are not judged yet.
//!
//! Why: resolves are answered from the local copy. A node missing a service cannot route to it;
//! one holding a service its peers dropped routes into a hole. Broadcast spreads changes in
//! milliseconds, anti-entropy and re-publishing repair what broadcast lost; this holds them to a
//! bound.

use std::time::Duration;

use super::Verdict;
use super::registry::{Entries, RegistryInvariant, RegistryWorld, key_name};

/// See the module docs.
#[derive(Debug, Default)]
pub struct RegistryConvergence {
    checks: u64,
    active: bool,
    first: Option<(Duration, String)>,
}

/// Why node `j`'s entries differ from the truth, if they do.
pub fn difference(w: &RegistryWorld<'_>, j: usize, entries: &Entries) -> Option<String> {
    let now = w.now();
    let grace = w.registry.converge_within;
    let expected = w.truth.expected(now, grace, j);
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    let mut extra = Vec::new();
    for (key, required) in &expected {
        if w.truth.recently_changed(now, grace, key) {
            continue;
        }
        match (entries.get(key), required) {
            (None, _) => missing.push(key_name(key, *required)),
            (Some(v), Some(r)) if v < r => {
                stale.push(format!("{} < v{r}", key_name(key, Some(*v))))
            }
            _ => {}
        }
    }
    for (key, v) in entries {
        if !expected.contains_key(key) && !w.truth.recently_changed(now, grace, key) {
            extra.push(key_name(key, Some(*v)));
        }
    }
    if missing.is_empty() && stale.is_empty() && extra.is_empty() {
        return None;
    }
    let list = |v: &[String]| {
        let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(", … {} more", v.len() - 5));
        }
        s
    };
    Some(format!(
        "n{} holds {} live services, expected {}; missing [{}], extra [{}], stale [{}]",
        j + 1,
        entries.len(),
        expected.len(),
        list(&missing),
        list(&extra),
        list(&stale)
    ))
}

impl RegistryInvariant for RegistryConvergence {
    fn name(&self) -> &'static str {
        "registry_convergence"
    }

    fn begin_sample(&mut self, w: &RegistryWorld<'_>) {
        self.active =
            self.first.is_none() && w.now() >= w.truth.last_change + w.registry.converge_within;
        if self.active {
            self.checks += 1;
        }
    }

    fn on_node(&mut self, w: &RegistryWorld<'_>, node: usize, entries: &Entries) {
        if !self.active || self.first.is_some() {
            return;
        }
        if let Some(why) = difference(w, node, entries) {
            self.first = Some((w.now(), why));
        }
    }

    fn finish(&mut self, w: &RegistryWorld<'_>) -> Verdict {
        if self.first.is_none() && self.checks == 0 {
            return Verdict {
                invariant: self.name(),
                ok: false,
                detail: format!(
                    "never checked: last registry change or fault {:?} + converge_within {:?} is past the end ({:?})",
                    w.truth.last_change,
                    w.registry.converge_within,
                    w.scenario().duration
                ),
                violated_at_s: None,
            };
        }
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "every connected node held the same live services from {:.1}s on ({} checks)",
                (w.truth.last_change + w.registry.converge_within).as_secs_f64(),
                self.checks
            )
        })
    }
}
