//! Keeps turmoil's link states equal to the simulator's model: cuts from `partition` actions (the
//! [`Net`] the invariant checkers read) and held links from `pause` actions.
//!
//! turmoil keeps one state per direction of a link, and its operations overwrite each other:
//! `hold` on a cut link un-cuts it, `release` and `repair` heal both directions. So instead of
//! mirroring each action, every change recomputes the wanted state of every link and moves each
//! link that differs from what was applied: first back to healthy (`release` if it was held, so
//! held datagrams are delivered; `repair` if it was cut), then to the new state.

use std::collections::BTreeMap;

use crate::net::Net;

use super::socket::node_host;

/// A link's wanted state; a healthy link has no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    /// Datagrams both ways are held until released (one end is paused).
    Held,
    /// Datagrams are dropped in the marked directions (`ab` is lower index → higher index).
    Cut { ab: bool, ba: bool },
}

/// The link states applied to turmoil, for links that are not healthy.
#[derive(Debug, Default)]
pub(super) struct Links {
    applied: BTreeMap<(usize, usize), LinkState>,
}

impl Links {
    /// Brings turmoil's links in line with `net`'s cuts and the paused nodes. A cut wins over a
    /// pause: a paused node's link that is cut in one direction is cut in that direction only
    /// (turmoil cannot hold one direction of a link).
    pub(super) fn sync(&mut self, sim: &turmoil::Sim<'_>, net: &Net, paused: &[bool]) {
        let n = paused.len();
        let mut wanted = BTreeMap::new();
        if net.any_cut() || paused.iter().any(|p| *p) {
            for a in 0..n {
                for b in a + 1..n {
                    let (ab, ba) = (net.is_cut(a, b), net.is_cut(b, a));
                    let state = if ab || ba {
                        Some(LinkState::Cut { ab, ba })
                    } else if paused[a] || paused[b] {
                        Some(LinkState::Held)
                    } else {
                        None
                    };
                    if let Some(s) = state {
                        wanted.insert((a, b), s);
                    }
                }
            }
        }
        let mut pairs: Vec<(usize, usize)> = self.applied.keys().copied().collect();
        pairs.extend(wanted.keys().copied());
        pairs.sort_unstable();
        pairs.dedup();
        for (a, b) in pairs {
            let old = self.applied.get(&(a, b)).copied();
            let new = wanted.get(&(a, b)).copied();
            if old == new {
                continue;
            }
            let (ha, hb) = (node_host(a), node_host(b));
            match old {
                Some(LinkState::Held) => sim.release(ha, hb),
                Some(LinkState::Cut { .. }) => sim.repair(ha, hb),
                None => {}
            }
            match new {
                Some(LinkState::Held) => sim.hold(ha, hb),
                Some(LinkState::Cut { ab: true, ba: true }) => sim.partition(ha, hb),
                Some(LinkState::Cut {
                    ab: true,
                    ba: false,
                }) => sim.partition_oneway(ha, hb),
                Some(LinkState::Cut {
                    ab: false,
                    ba: true,
                }) => sim.partition_oneway(hb, ha),
                Some(LinkState::Cut { .. }) | None => {}
            }
        }
        self.applied = wanted;
    }
}
