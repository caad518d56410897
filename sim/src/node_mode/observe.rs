//! Membership events in node mode, read off the member lists instead of hooked out of the
//! gossip actor: at every sample each node's list is compared with the one it gave at the
//! previous sample, and each change becomes the [`Event`] the core would have emitted for it.
//!
//! What this cannot see: a change undone between two samples (a member suspected and cleared,
//! or down and back up within one `sample_every`), and `Joined`/`Isolated`/`ProbeRtt`, which
//! leave no trace in the list. Events carry the time of the sample that saw them.

use std::collections::BTreeMap;

use nexus_gossip::{Event, MemberState, MemberView, NodeId};

fn alive(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

fn down(view: &MemberView) -> Event {
    Event::MemberDown {
        id: view.id.clone(),
        left: view.state == MemberState::Left,
    }
}

/// The events that turn `prev` (the node's previous list; empty after a (re)start) into `next`.
/// `next` lists the local node first, as `Membership::members` does.
pub(super) fn diff(prev: &[MemberView], next: &[MemberView]) -> Vec<Event> {
    let mut events = Vec::new();
    let local_before = prev.iter().find(|m| m.local);
    if let (Some(before), Some(now)) = (local_before, next.iter().find(|m| m.local))
        && now.id.generation() > before.id.generation()
    {
        events.push(Event::Rejoined(now.id.clone()));
    }
    let before: BTreeMap<NodeId, &MemberView> = prev
        .iter()
        .filter(|m| !m.local)
        .map(|m| (m.id.node_id(), m))
        .collect();
    for row in next.iter().filter(|m| !m.local) {
        match before.get(&row.id.node_id()) {
            None if alive(row.state) => events.push(Event::MemberUp(row.id.clone())),
            None => {}
            Some(old) if old.id.generation() < row.id.generation() => {
                if alive(row.state) {
                    events.push(Event::MemberReplaced {
                        old: old.id.clone(),
                        new: row.id.clone(),
                    });
                } else {
                    events.push(down(row));
                }
            }
            Some(old) => match (alive(old.state), alive(row.state)) {
                (true, false) => events.push(down(row)),
                (false, true) => events.push(Event::MemberUp(row.id.clone())),
                // A down member announcing its leave late: now it is `left`.
                (false, false)
                    if old.state == MemberState::Down && row.state == MemberState::Left =>
                {
                    events.push(down(row))
                }
                _ => {}
            },
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use nexus_gossip::{MemberId, MemberMeta};

    use super::*;

    fn row(node: u8, generation: u64, state: MemberState, local: bool) -> MemberView {
        let addr: SocketAddr = format!("10.0.0.{node}:7946").parse().expect("addr");
        MemberView {
            id: MemberId::new(addr, NodeId([node; 32]), generation, MemberMeta::default()),
            swim_incarnation: 0,
            state,
            local,
        }
    }

    #[test]
    fn changes_become_events() {
        use MemberState::*;
        let prev = vec![
            row(1, 1, Alive, true),
            row(2, 1, Alive, false),
            row(3, 1, Alive, false),
            row(4, 1, Down, false),
            row(5, 1, Suspect, false),
        ];
        let next = vec![
            row(1, 2, Alive, true),
            row(2, 1, Down, false),
            row(3, 2, Alive, false),
            row(4, 1, Alive, false),
            row(5, 1, Left, false),
            row(6, 1, Alive, false),
            row(7, 1, Down, false),
        ];
        let events = diff(&prev, &next);
        assert_eq!(
            events,
            vec![
                Event::Rejoined(next[0].id.clone()),
                Event::MemberDown {
                    id: next[1].id.clone(),
                    left: false
                },
                Event::MemberReplaced {
                    old: prev[2].id.clone(),
                    new: next[2].id.clone()
                },
                Event::MemberUp(next[3].id.clone()),
                Event::MemberDown {
                    id: next[4].id.clone(),
                    left: true
                },
                Event::MemberUp(next[5].id.clone()),
            ]
        );
        assert!(diff(&next, &next).is_empty(), "no change, no event");
    }
}
