//! **No node declares itself down (safety).** A running node's own row in its member list is
//! never `down` (it is `alive`, or `left` after a graceful leave).
//!
//! Why: a node that believes itself down stops answering as itself; SWIM's rule is that a node
//! refutes (or, in foca, renews its identity) rather than accept its own death.

use std::time::Duration;

use nexus_gossip::{MemberState, MemberView};

use super::{Invariant, Verdict, World};

/// See the module docs.
#[derive(Debug, Default)]
pub struct SelfDown {
    checks: u64,
    first: Option<(Duration, String)>,
}

impl Invariant for SelfDown {
    fn name(&self) -> &'static str {
        "self_down"
    }

    fn on_view(&mut self, world: &World<'_>, node: usize, view: &[MemberView]) {
        self.checks += 1;
        let bad = match view.iter().find(|m| m.local) {
            None => Some("has no local row".to_owned()),
            Some(m) if m.state == MemberState::Down || m.state == MemberState::Suspect => {
                Some(format!("lists itself as {}", m.state.as_str()))
            }
            Some(_) => None,
        };
        if let (Some(why), None) = (bad, &self.first) {
            self.first = Some((world.now, format!("n{} {why}", node + 1)));
        }
    }

    fn finish(&mut self, _world: &World<'_>) -> Verdict {
        Verdict::from_first(self.name(), self.first.as_ref(), || {
            format!("{} self-checks passed", self.checks)
        })
    }

    fn violation(&self) -> Option<(Duration, String)> {
        self.first.clone()
    }
}
