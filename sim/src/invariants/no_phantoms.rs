//! **No phantoms (safety).** Every member in every view is a node that exists, at a generation
//! no newer than that node's own.
//!
//! Why: a view holding an identity nobody has (a forged, corrupted or mis-merged entry) would be
//! routed to and probed forever; a generation from the future means two nodes disagree about
//! who is newer, which breaks the restart rule (newer generation wins).

use std::time::Duration;

use nexus_gossip::MemberView;

use super::{Invariant, Verdict, World};

/// See the module docs.
#[derive(Debug, Default)]
pub struct NoPhantoms {
    rows: u64,
    first: Option<(Duration, String)>,
}

impl Invariant for NoPhantoms {
    fn name(&self) -> &'static str {
        "no_phantoms"
    }

    fn on_view(&mut self, world: &World<'_>, node: usize, view: &[MemberView]) {
        if self.first.is_some() {
            return;
        }
        for m in view {
            self.rows += 1;
            let why = match world.index_of(&m.id.node_id()) {
                None => Some(format!(
                    "n{} lists unknown node {}",
                    node + 1,
                    m.id.node_id().short()
                )),
                Some(j) if m.id.generation() > world.truth[j].generation => Some(format!(
                    "n{} lists n{} at generation {} but it is at {}",
                    node + 1,
                    j + 1,
                    m.id.generation(),
                    world.truth[j].generation
                )),
                Some(_) => None,
            };
            if let Some(why) = why {
                self.first = Some((world.now, why));
                return;
            }
        }
    }

    fn finish(&mut self, _world: &World<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!("{} rows checked", self.rows)
        })
    }

    fn violation(&self) -> Option<(Duration, String)> {
        self.first.clone()
    }
}
