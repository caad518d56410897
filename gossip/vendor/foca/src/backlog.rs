/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
//! Nexus patch: the cluster-update backlog.
//!
//! Upstream keeps every pending update serialized in a `BinaryHeap`
//! ordered by remaining transmissions; each outgoing message pops and
//! re-pushes entries, and each new update runs `retain` over the whole
//! heap to drop the update it replaces. With thousands of pending
//! updates (mass joins) that is O(backlog) per update and per message.
//!
//! Here each pending update is a `Member<T>` (serialized only when it is
//! sent) in a slab, found by address through a hash index, and queued
//! in one FIFO per remaining-transmission count. Sending takes from the
//! highest count down, as upstream does; replacing an update bumps its
//! stamp so older queue entries for it are skipped. Every operation is
//! O(1) amortised.
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use bytes::buf::Limit;
use bytes::BufMut;

use crate::index::hash_of;
use crate::{Identity, Member};

struct Slot<T> {
    member: Member<T>,
    remaining: usize,
    stamp: u32,
}

pub(crate) struct UpdateBacklog<T> {
    slots: Vec<Option<Slot<T>>>,
    free: Vec<u32>,
    index: hashbrown::HashTable<u32>,
    // queues[r]: (slot, stamp) of updates with r transmissions left.
    queues: Vec<VecDeque<(u32, u32)>>,
    live: usize,
    moved: Vec<(u32, u32, usize)>,
}

impl<T: Identity> UpdateBacklog<T> {
    pub(crate) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: hashbrown::HashTable::new(),
            queues: Vec::new(),
            live: 0,
            moved: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn slot_addr(slots: &[Option<Slot<T>>], i: u32) -> u64 {
        match &slots[i as usize] {
            Some(slot) => hash_of(&slot.member.id().addr()),
            None => 0,
        }
    }

    fn enqueue(&mut self, slot: u32, stamp: u32, remaining: usize) {
        if self.queues.len() <= remaining {
            self.queues.resize_with(remaining + 1, VecDeque::new);
        }
        self.queues[remaining].push_back((slot, stamp));
    }

    /// Queues `member` for `max_tx` transmissions, replacing any
    /// pending update about the same address.
    pub(crate) fn add_or_replace(&mut self, member: Member<T>, max_tx: usize) {
        debug_assert!(max_tx > 0);
        let addr = member.id().addr();
        let hash = hash_of(&addr);
        let slots = &self.slots;
        let found = self
            .index
            .find(hash, |&i| {
                slots[i as usize]
                    .as_ref()
                    .is_some_and(|s| s.member.id().addr() == addr)
            })
            .copied();
        let (slot, stamp) = match found {
            Some(i) => {
                let entry = self.slots[i as usize]
                    .as_mut()
                    .expect("indexed slots are occupied");
                entry.member = member;
                entry.remaining = max_tx;
                entry.stamp = entry.stamp.wrapping_add(1);
                (i, entry.stamp)
            }
            None => {
                let new = Slot {
                    member,
                    remaining: max_tx,
                    stamp: 0,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = Some(new);
                        i
                    }
                    None => {
                        self.slots.push(Some(new));
                        (self.slots.len() - 1) as u32
                    }
                };
                let slots = &self.slots;
                self.index
                    .insert_unique(hash, i, |&j| Self::slot_addr(slots, j));
                self.live += 1;
                (i, 0)
            }
        };
        self.enqueue(slot, stamp, max_tx);
    }

    fn release(&mut self, i: u32) {
        let Some(slot) = self.slots[i as usize].take() else {
            return;
        };
        let hash = hash_of(&slot.member.id().addr());
        if let Ok(entry) = self.index.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        self.free.push(i);
        self.live -= 1;
    }

    /// Writes up to `max_items` pending updates into `buf` (those with
    /// the most transmissions left first), each through `encode`, and
    /// counts one transmission for each. Stops at the first update that
    /// does not fit.
    pub(crate) fn fill<E>(
        &mut self,
        buf: &mut Limit<Vec<u8>>,
        max_items: usize,
        mut encode: impl FnMut(&Member<T>, &mut Limit<Vec<u8>>) -> Result<(), E>,
    ) -> usize {
        let mut taken = 0;
        let mut full = false;
        let mut r = self.queues.len();
        while r > 1 && !full && taken < max_items {
            r -= 1;
            while taken < max_items {
                let Some(&(i, stamp)) = self.queues[r].front() else {
                    break;
                };
                let current = self.slots[i as usize]
                    .as_ref()
                    .is_some_and(|s| s.stamp == stamp && s.remaining == r);
                if !current {
                    // Replaced (or already sent) since it was queued.
                    self.queues[r].pop_front();
                    continue;
                }
                if !buf.has_remaining_mut() {
                    full = true;
                    break;
                }
                let pos = buf.get_ref().len();
                let slot = self.slots[i as usize]
                    .as_ref()
                    .expect("checked occupied above");
                if encode(&slot.member, buf).is_err() {
                    buf.get_mut().truncate(pos);
                    full = true;
                    break;
                }
                self.queues[r].pop_front();
                taken += 1;
                self.moved.push((i, stamp, r - 1));
            }
        }
        // Re-queue after the pass so no update goes out twice in one message.
        let mut moved = core::mem::take(&mut self.moved);
        for (i, stamp, left) in moved.drain(..) {
            if left == 0 {
                self.release(i);
            } else {
                if let Some(slot) = self.slots[i as usize].as_mut() {
                    slot.remaining = left;
                }
                self.enqueue(i, stamp, left);
            }
        }
        self.moved = moved;
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::State;
    use alloc::vec;

    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Id(u8);

    impl Identity for Id {
        type Addr = u8;
        fn renew(&self) -> Option<Self> {
            None
        }
        fn addr(&self) -> u8 {
            self.0
        }
        fn win_addr_conflict(&self, _adversary: &Self) -> bool {
            false
        }
    }

    fn encode(m: &Member<Id>, buf: &mut Limit<Vec<u8>>) -> Result<(), ()> {
        if buf.remaining_mut() < 2 {
            return Err(());
        }
        buf.put_u8(m.id().0);
        buf.put_u8(m.incarnation() as u8);
        Ok(())
    }

    fn send(b: &mut UpdateBacklog<Id>, room: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(room).limit(room);
        b.fill(&mut buf, usize::MAX, encode);
        buf.into_inner()
    }

    #[test]
    fn sends_each_update_max_tx_times_freshest_first() {
        let mut b = UpdateBacklog::new();
        b.add_or_replace(Member::new(Id(1), 0, State::Alive), 2);
        assert_eq!(send(&mut b, 100), vec![1, 0]);
        b.add_or_replace(Member::new(Id(2), 0, State::Alive), 2);
        // 2 has two transmissions left, 1 has one: 2 first.
        assert_eq!(send(&mut b, 100), vec![2, 0, 1, 0]);
        assert_eq!(b.len(), 1);
        assert_eq!(send(&mut b, 100), vec![2, 0]);
        assert!(b.is_empty());
        assert_eq!(send(&mut b, 100), Vec::<u8>::new());
    }

    #[test]
    fn replacing_resets_and_never_duplicates() {
        let mut b = UpdateBacklog::new();
        b.add_or_replace(Member::new(Id(1), 0, State::Alive), 3);
        assert_eq!(send(&mut b, 100), vec![1, 0]);
        b.add_or_replace(Member::new(Id(1), 5, State::Suspect), 3);
        assert_eq!(b.len(), 1);
        // Only the new version goes out, once per message, three times.
        for _ in 0..3 {
            assert_eq!(send(&mut b, 100), vec![1, 5]);
        }
        assert!(b.is_empty());
    }

    #[test]
    fn stops_when_full_and_keeps_the_rest() {
        let mut b = UpdateBacklog::new();
        for i in 0..5 {
            b.add_or_replace(Member::new(Id(i), 0, State::Alive), 1);
        }
        assert_eq!(send(&mut b, 5), vec![0, 0, 1, 0]);
        assert_eq!(b.len(), 3);
        assert_eq!(send(&mut b, 100), vec![2, 0, 3, 0, 4, 0]);
        assert!(b.is_empty());
        // Freed slots are reused.
        b.add_or_replace(Member::new(Id(9), 1, State::Down), 1);
        assert_eq!(send(&mut b, 100), vec![9, 1]);
    }
}
