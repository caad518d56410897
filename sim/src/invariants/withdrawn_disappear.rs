//! **Withdrawn services disappear (liveness).** `[registry] converge_within` after a service is
//! withdrawn (a `withdraw` action) or its lease runs out at its origin (its process stopped
//! renewing it), no healthy node holds it live at that version or older, and no resolve
//! returns it. Registering it again (a newer version) ends the watch.
//!
//! Why: a withdrawal is how a service leaves on purpose (draining, redeploying); nodes that
//! keep resolving to it send clients to something that no longer serves. The signed tombstone
//! spreads by broadcast and anti-entropy; a lease that ran out ends everywhere on its own.

use std::time::Duration;

use super::Verdict;
use super::registry::{Candidates, Entries, RegistryInvariant, RegistryWorld, key_name};

/// See the module docs.
#[derive(Debug, Default)]
pub struct WithdrawnDisappear {
    /// Keys past their bound at this sample: (key, gone at, last version).
    due: Vec<((usize, String), Duration, u64)>,
    watched: u64,
    checks: u64,
    first: Option<(Duration, String)>,
}

impl WithdrawnDisappear {
    fn refresh_due(&mut self, w: &RegistryWorld<'_>) {
        let bound = w.registry.converge_within;
        self.due = w
            .truth
            .keys
            .iter()
            .filter_map(|(k, h)| h.gone.map(|(t, v)| (k.clone(), t, v)))
            .filter(|(_, t, _)| *t + bound <= w.now())
            .collect();
    }

    fn check(
        &mut self,
        w: &RegistryWorld<'_>,
        node: usize,
        key: &(usize, String),
        v: u64,
        how: &str,
    ) {
        if self.first.is_some() {
            return;
        }
        if let Some((_, t, last)) = self.due.iter().find(|(k, _, _)| k == key)
            && v <= *last
        {
            self.first = Some((
                w.now(),
                format!(
                    "n{} {how} {} {:.1}s after it was withdrawn or expired at {:.1}s (bound {:.1}s)",
                    node + 1,
                    key_name(key, Some(v)),
                    (w.now() - *t).as_secs_f64(),
                    t.as_secs_f64(),
                    w.registry.converge_within.as_secs_f64()
                ),
            ));
        }
    }
}

impl RegistryInvariant for WithdrawnDisappear {
    fn name(&self) -> &'static str {
        "withdrawn_disappear"
    }

    fn begin_sample(&mut self, w: &RegistryWorld<'_>) {
        self.refresh_due(w);
        self.watched = self.watched.max(self.due.len() as u64);
        if !self.due.is_empty() {
            self.checks += 1;
        }
    }

    fn on_node(&mut self, w: &RegistryWorld<'_>, node: usize, entries: &Entries) {
        if self.due.is_empty() {
            return;
        }
        let keys: Vec<((usize, String), u64)> = self
            .due
            .iter()
            .filter_map(|(k, _, _)| entries.get(k).map(|v| (k.clone(), *v)))
            .collect();
        for (k, v) in keys {
            self.check(w, node, &k, v, "still holds");
        }
    }

    fn on_resolve(
        &mut self,
        w: &RegistryWorld<'_>,
        node: usize,
        task: &str,
        candidates: &Candidates,
        scripted: bool,
    ) {
        if scripted {
            // Scripted resolves happen between samples: look at the bound now.
            self.refresh_due(w);
        }
        if self.due.is_empty() {
            return;
        }
        let how = format!("resolved {task} to");
        for (o, id, v) in candidates {
            self.check(w, node, &(*o, id.clone()), *v, &how);
        }
    }

    fn finish(&mut self, _w: &RegistryWorld<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!(
                "withdrawn or expired services gone everywhere in time ({} samples watched, up to {} services at once)",
                self.checks, self.watched
            )
        })
    }
}
