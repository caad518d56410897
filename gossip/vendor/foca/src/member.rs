/* This Source Code Form is subject to the terms of the Mozilla Public
 * License, v. 2.0. If a copy of the MPL was not distributed with this
 * file, You can obtain one at https://mozilla.org/MPL/2.0/. */
extern crate alloc;
use alloc::vec::Vec;

use rand::{
    prelude::{IteratorRandom, SliceRandom},
    Rng,
};

/// State describes how a Foca instance perceives a member of the cluster.
///
/// This is part of the Suspicion Mechanism described in section 4.2 of the
/// original SWIM paper.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum State {
    /// Member is active.
    Alive,
    /// Member is active, but at least one cluster member
    /// suspects its down. For all purposes, a `Suspect` member
    /// is treated as if it were `Alive` until either it
    /// refutes the suspicion (becoming `Alive`) or fails to
    /// do so (being declared `Down`).
    Suspect,
    /// Confirmed Down.
    /// A member that reaches this state can't join the cluster
    /// with the same identity until the cluster forgets
    /// this knowledge.
    Down,
}

/// Incarnation is a member-controlled cluster-global number attached
/// to a member identity.
/// A member M's incarnation starts with zero and can only be incremented
/// by said member M when refuting suspicion.
pub type Incarnation = u16;

/// A Cluster Member. Also often called "cluster update".
///
/// A [`Member`] represents Foca's snapshot knowledge about an
/// [`crate::Identity`]. An individual cluster update is simply a
/// serialized Member which other Foca instances receive and use to
/// update their own cluster state representation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Member<T> {
    id: T,
    incarnation: Incarnation,
    state: State,
}

impl<T> Member<T> {
    /// Initializes a new member.
    ///
    /// `id` is an identity used to uniquely identify an individual
    /// cluster member (say, a primary key).
    pub const fn new(id: T, incarnation: Incarnation, state: State) -> Self {
        Self {
            id,
            incarnation,
            state,
        }
    }

    /// Shortcut for initializing a member as [`State::Alive`].
    pub fn alive(id: T) -> Self {
        Self::new(id, Incarnation::default(), State::Alive)
    }

    #[cfg(test)]
    pub(crate) fn suspect(id: T) -> Self {
        Self::new(id, Incarnation::default(), State::Suspect)
    }

    pub(crate) fn down(id: T) -> Self {
        Self::new(id, Incarnation::default(), State::Down)
    }

    /// Getter for the member's Incarnation
    pub const fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Getter for the member's State
    pub const fn state(&self) -> State {
        self.state
    }

    /// Getter for the member's identity
    pub const fn id(&self) -> &T {
        &self.id
    }

    pub(crate) const fn is_active(&self) -> bool {
        match self.state {
            State::Alive | State::Suspect => true,
            State::Down => false,
        }
    }

    pub(crate) fn change_state(&mut self, incarnation: Incarnation, state: State) -> bool {
        if self.can_change(incarnation, state) {
            self.state = state;
            self.incarnation = incarnation;
            true
        } else {
            false
        }
    }

    const fn can_change(&self, other_incarnation: Incarnation, other: State) -> bool {
        // This implements the order of preference of the Suspicion subprotocol
        // outlined on section 4.2 of the paper.
        match self.state {
            State::Alive => match other {
                State::Alive => other_incarnation > self.incarnation,
                State::Suspect => other_incarnation >= self.incarnation,
                State::Down => true,
            },
            State::Suspect => match other {
                State::Alive | State::Suspect => other_incarnation > self.incarnation,
                State::Down => true,
            },
            State::Down => false,
        }
    }

    pub(crate) fn into_identity(self) -> T {
        self.id
    }
}

// Nexus patch: bounds of the sparse choice in `Members::choose_members`.
/// Largest `wanted` served by random draws (larger ones scan).
const SPARSE_CHOICE_WANTED_MAX: usize = 64;
/// Random draws are used only with at least this many members per
/// wanted one.
const SPARSE_CHOICE_RATIO: usize = 4;
/// Draws per wanted member before falling back to a scan (few
/// eligible members).
const SPARSE_CHOICE_DRAWS_PER_WANTED: usize = 8;
/// Updates of one batch `Members::warm` reads ahead (a packet carries
/// fewer).
const WARM_BATCH_MAX: usize = 64;

pub(crate) struct Members<T> {
    pub(crate) inner: Vec<Member<T>>,
    cursor: usize,
    num_active: usize,
    // Nexus patch: position in `inner` of the member holding each
    // address (there is at most one), so lookups by address are O(1)
    // instead of a scan of the whole list.
    // Members whose identity has no address slot are found here.
    index: hashbrown::HashTable<u32>,
    // Nexus patch: position + 1 (0: none) of the member holding each
    // address slot (`Identity::addr_slot`): one vector read per lookup
    // instead of a hash probe, a control-byte load and a comparison
    // through the identity (three cache misses when, as in a
    // simulation of thousands of nodes, every lookup touches another
    // node's table).
    slots: Vec<u32>,
    // Nexus patch: bumped on every change of the member list's contents
    // (not its order), so drivers can cache what they derive from it.
    version: u64,
}

#[cfg(test)]
impl<T> Members<T> {
    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }
}

impl<T> Members<T>
where
    T: PartialEq + Clone + crate::Identity,
{
    pub(crate) const fn num_active(&self) -> usize {
        self.num_active
    }

    pub(crate) fn new(inner: Vec<Member<T>>) -> Self {
        // XXX This doesn't prevent someone initializing with
        //     duplicated members... Not a problem (yet?) since
        //     inner is always empty outside of tests
        let num_active = inner.iter().filter(|member| member.is_active()).count();

        let mut members = Self {
            cursor: 0,
            num_active,
            inner,
            index: hashbrown::HashTable::new(),
            slots: Vec::new(),
            version: 0,
        };
        members.reindex();
        members
    }

    /// Rebuilds the address indexes from scratch (after a shuffle).
    fn reindex(&mut self) {
        self.index.clear();
        self.slots.iter_mut().for_each(|p| *p = 0);
        for pos in 0..self.inner.len() {
            self.index_insert(pos);
        }
    }

    /// Changes so far of the list's contents.
    pub(crate) const fn version(&self) -> u64 {
        self.version
    }

    /// The member holding `id`'s address, if any.
    pub(crate) fn get(&self, id: &T) -> Option<&Member<T>> {
        self.position_of(id).map(|pos| &self.inner[pos])
    }

    /// Position of the member holding `id`'s address, if any.
    fn position_of(&self, id: &T) -> Option<usize> {
        match id.addr_slot() {
            Some(slot) => match self.slots.get(slot as usize) {
                Some(&p) if p != 0 => Some(p as usize - 1),
                _ => None,
            },
            None => {
                let addr = id.addr();
                let hash = crate::index::hash_of(&addr);
                self.index
                    .find(hash, |&i| self.inner[i as usize].id.addr() == addr)
                    .map(|&i| i as usize)
            }
        }
    }

    /// Points the index entry of the member now at `pos` to `pos`
    /// (after it was moved there from `from`).
    fn repoint(&mut self, pos: usize, from: usize) {
        if let Some(slot) = self.inner[pos].id.addr_slot() {
            self.slots[slot as usize] = pos as u32 + 1;
            return;
        }
        let addr = self.inner[pos].id.addr();
        let hash = crate::index::hash_of(&addr);
        if let Some(slot) = self.index.find_mut(hash, |&i| i as usize == from) {
            *slot = pos as u32;
        }
    }

    /// Indexes the member at `pos` (not indexed yet).
    fn index_insert(&mut self, pos: usize) {
        if let Some(slot) = self.inner[pos].id.addr_slot() {
            let slot = slot as usize;
            if slot >= self.slots.len() {
                self.slots.resize(slot + 1, 0);
            }
            self.slots[slot] = pos as u32 + 1;
            return;
        }
        let inner = &self.inner;
        let hash = crate::index::hash_of(&inner[pos].id.addr());
        self.index.insert_unique(hash, pos as u32, |&i| {
            crate::index::hash_of(&inner[i as usize].id.addr())
        });
    }

    /// Nexus patch: reads the table entries that applying `updates`
    /// will touch (their address slots, then their members), all of
    /// them before any is applied. The reads of one pass do not depend
    /// on each other, so their cache misses overlap instead of being
    /// paid one after the other inside [`Members::apply`]; in a
    /// simulation of thousands of nodes every table is cold and those
    /// misses were most of the cost of an update. Changes nothing.
    pub(crate) fn warm(&self, updates: &[Member<T>]) {
        let mut positions = [0u32; WARM_BATCH_MAX];
        for (p, update) in positions.iter_mut().zip(updates) {
            if let Some(slot) = update.id.addr_slot() {
                *p = self.slots.get(slot as usize).copied().unwrap_or(0);
            }
        }
        let mut sink = 0u16;
        for &p in positions.iter().take(updates.len()) {
            if let Some(member) = (p as usize).checked_sub(1).and_then(|i| self.inner.get(i)) {
                sink ^= member.incarnation;
            }
        }
        core::hint::black_box(sink);
    }

    /// Drops the index entry of the member at `pos`.
    fn index_remove(&mut self, pos: usize) {
        if let Some(slot) = self.inner[pos].id.addr_slot() {
            self.slots[slot as usize] = 0;
            return;
        }
        let hash = crate::index::hash_of(&self.inner[pos].id.addr());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i as usize == pos) {
            entry.remove();
        }
    }

    // Next member that's considered active
    // Chosen at random (shuffle + round-robin)
    pub(crate) fn next(&mut self, mut rng: impl Rng) -> Option<&Member<T>> {
        // Round-robin with a shuffle at the end
        if self.cursor >= self.inner.len() {
            self.inner.shuffle(&mut rng);
            self.reindex();
            self.cursor = 0;
        }

        // Find an active member from cursor..len()
        let position = self
            .inner
            .iter()
            .skip(self.cursor)
            .position(|m| m.is_active())
            // Since we skip(), position() will start counting from zero
            // this ensures it's actually the index of the chosen member
            .map(|pos| pos + self.cursor);

        // And if we don't find any: try from 0..cursor
        let position = position.or_else(|| {
            self.inner
                .iter()
                .take(self.cursor)
                .position(|m| m.is_active())
        });

        if let Some(pos) = position {
            if pos < self.cursor {
                // We wrapped around the list to find a member. A shuffle
                // is needed, so we set it to MAX. Any other value could
                // cause the shuffle to not happen since members may join
                // in-between probes
                self.cursor = usize::MAX;
            } else {
                self.cursor = pos.saturating_add(1);
            }
            self.inner.get(pos)
        } else {
            None
        }
    }

    fn choose_members<F>(
        &self,
        wanted: usize,
        output: &mut Vec<Member<T>>,
        mut rng: impl Rng,
        picker: F,
    ) where
        F: Fn(&Member<T>) -> bool,
    {
        // Nexus patch: when few members are wanted out of many, draw
        // random positions and keep the eligible ones not chosen yet
        // (O(wanted) expected) instead of scanning the whole list
        // (O(members) per call: with 10,000 members, periodic gossip
        // alone scanned 5 * 10^8 members per second of a 10,000-node
        // simulation). Each accepted draw is uniform over the eligible
        // members not chosen yet, so the result is a uniform random
        // subset, as the reservoir's is. After a bounded number of
        // draws (few eligible members) it falls back to the reservoir.
        let start = output.len();
        if wanted > 0
            && wanted <= SPARSE_CHOICE_WANTED_MAX
            && wanted.saturating_mul(SPARSE_CHOICE_RATIO) <= self.inner.len()
        {
            let draws_max = wanted * SPARSE_CHOICE_DRAWS_PER_WANTED;
            for _ in 0..draws_max {
                let member = &self.inner[rng.random_range(0..self.inner.len())];
                if picker(member) && !output[start..].iter().any(|m| m.id == member.id) {
                    output.push(member.clone());
                    if output.len() - start == wanted {
                        return;
                    }
                }
            }
            output.truncate(start);
        }
        self.choose_members_scan(wanted, output, rng, picker);
    }

    fn choose_members_scan<F>(
        &self,
        wanted: usize,
        output: &mut Vec<Member<T>>,
        mut rng: impl Rng,
        picker: F,
    ) where
        F: Fn(&Member<T>) -> bool,
    {
        // Basic reservoir sampling
        let start = output.len();
        let mut num_chosen = 0;
        let mut num_seen = 0;

        for member in &self.inner {
            if !picker(member) {
                continue;
            }

            num_seen += 1;
            if num_chosen < wanted {
                num_chosen += 1;
                output.push(member.clone());
            } else {
                let replace_at = rng.random_range(0..num_seen);
                if replace_at < wanted {
                    output[start + replace_at] = member.clone();
                }
            }
        }
    }

    pub(crate) fn choose_down_members(
        &self,
        wanted: usize,
        output: &mut Vec<Member<T>>,
        rng: impl Rng,
    ) {
        // Nexus patch: nothing to scan for when every member is active.
        if self.num_active == self.inner.len() {
            return;
        }
        self.choose_members(wanted, output, rng, |member| !member.is_active());
    }

    pub(crate) fn choose_active_members<F>(
        &self,
        wanted: usize,
        output: &mut Vec<Member<T>>,
        rng: impl Rng,
        picker: F,
    ) where
        F: Fn(&T) -> bool,
    {
        self.choose_members(wanted, output, rng, |member| {
            member.is_active() && picker(member.id())
        });
    }

    pub(crate) fn remove_if_down(&mut self, id: &T) -> Option<Member<T>> {
        let pos = self
            .position_of(id)
            .filter(|&pos| &self.inner[pos].id == id && self.inner[pos].state == State::Down)?;
        self.index_remove(pos);
        self.version += 1;
        let removed = self.inner.swap_remove(pos);
        if pos < self.inner.len() {
            let from = self.inner.len();
            self.repoint(pos, from);
        }
        Some(removed)
    }

    pub(crate) fn iter_active(&self) -> impl Iterator<Item = &Member<T>> {
        self.inner.iter().filter(|m| m.is_active())
    }

    pub(crate) fn is_active(&self, id: &T) -> bool {
        self.position_of(id)
            .is_some_and(|pos| &self.inner[pos].id == id && self.inner[pos].is_active())
    }

    pub(crate) fn apply_existing_if<F: Fn(&Member<T>) -> bool>(
        &mut self,
        mut update: Member<T>,
        condition: F,
    ) -> Option<ApplySummary<T>> {
        let position = self.position_of(update.id());
        if let Some(known_member) = position.map(|pos| &mut self.inner[pos]) {
            // if there's a conflict and the update wins, the member
            // state is fully replaced
            let mut force_apply = false;
            if known_member.id != update.id {
                // If the update wins the conflict, the full member
                // state is replaced (it's essentially a rejoin)
                if known_member.id.win_addr_conflict(&update.id) {
                    // update lost conflict, it's junk
                    return Some(ApplySummary {
                        is_active_now: known_member.is_active(),
                        apply_successful: false,
                        changed_active_set: false,
                        conflict: ConflictResult::Lost,
                    });
                }
                force_apply = true;
            }

            if !condition(known_member) {
                let conflict = if force_apply {
                    ConflictResult::FailedCondition
                } else {
                    ConflictResult::NoConflict
                };

                return Some(ApplySummary {
                    is_active_now: known_member.is_active(),
                    apply_successful: false,
                    changed_active_set: false,
                    conflict,
                });
            }
            let was_active = known_member.is_active();
            let mut conflict = ConflictResult::NoConflict;
            let apply_successful = if force_apply {
                core::mem::swap(&mut known_member.id, &mut update.id);
                conflict = ConflictResult::Replaced(update.id);
                known_member.state = update.state;
                known_member.incarnation = update.incarnation;
                true
            } else {
                known_member.change_state(update.incarnation, update.state)
            };
            let is_active_now = known_member.is_active();
            let changed_active_set = is_active_now != was_active;
            if apply_successful {
                self.version += 1;
            }

            if changed_active_set {
                // XXX Overzealous checking
                if is_active_now {
                    self.num_active = self.num_active.saturating_add(1);
                } else {
                    self.num_active = self.num_active.saturating_sub(1);
                }
            }

            Some(ApplySummary {
                is_active_now,
                apply_successful,
                changed_active_set,
                conflict,
            })
        } else {
            None
        }
    }

    pub(crate) fn apply(&mut self, update: Member<T>, mut rng: impl Rng) -> ApplySummary<T> {
        self.apply_existing_if(update.clone(), |_member| true)
            .unwrap_or_else(|| {
                // Unknown member, we'll register it
                let is_active_now = update.is_active();

                // Insert at the end and swap with a random position.
                self.inner.push(update);
                let inserted_at = self.inner.len() - 1;

                let swap_idx = (0..self.inner.len())
                    .choose(&mut rng)
                    .unwrap_or(inserted_at);

                self.inner.swap(swap_idx, inserted_at);
                if swap_idx != inserted_at {
                    // The member that was at swap_idx now sits at the end.
                    self.repoint(inserted_at, swap_idx);
                }
                self.index_insert(swap_idx);
                self.version += 1;

                if is_active_now {
                    self.num_active = self.num_active.saturating_add(1);
                }

                ApplySummary {
                    is_active_now,
                    apply_successful: true,
                    // Registering a new active member changes the active set
                    changed_active_set: is_active_now,
                    conflict: ConflictResult::NoConflict,
                }
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub(crate) struct ApplySummary<T> {
    pub(crate) is_active_now: bool,
    pub(crate) apply_successful: bool,
    pub(crate) changed_active_set: bool,
    pub(crate) conflict: ConflictResult<T>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConflictResult<T> {
    NoConflict,
    Replaced(T),
    Lost,
    FailedCondition,
}

#[cfg(test)]
mod tests {

    use crate::Identity;

    use super::*;

    use alloc::vec;
    use rand::{rngs::SmallRng, SeedableRng};

    #[derive(Clone, Debug, PartialEq, Eq, Copy, PartialOrd, Ord)]
    struct Id(&'static str);
    impl crate::Identity for Id {
        type Addr = &'static str;

        fn renew(&self) -> Option<Self> {
            None
        }

        fn addr(&self) -> Self::Addr {
            self.0
        }

        fn win_addr_conflict(&self, _adversary: &Self) -> bool {
            panic!("addr is self, there'll never be a conflict");
        }
    }

    use State::*;

    #[test]
    fn alive_transitions() {
        let mut member = Member::new(Id("a"), 0, Alive);

        // Alive => Alive
        assert!(
            member.change_state(member.incarnation + 1, Alive),
            "can transition to a higher incarnation"
        );

        assert_eq!(1, member.incarnation);
        assert_eq!(Alive, member.state);

        assert!(
            !member.change_state(member.incarnation - 1, Alive),
            "cannot transition to a lower incarnation"
        );

        assert!(
            !member.change_state(member.incarnation, Alive),
            "cannot transition to same state and incarnation {:?}",
            &member
        );

        // Alive => Suspect
        assert!(
            !member.change_state(member.incarnation - 1, Suspect),
            "lower suspect incarnation shouldn't transition"
        );

        assert!(
            member.change_state(member.incarnation, Suspect),
            "transition to suspect with same incarnation"
        );
        assert_eq!(Suspect, member.state);

        member = Member::new(Id("b"), 0, Alive);
        assert!(
            member.change_state(member.incarnation + 1, Suspect),
            "transition to suspect with higher incarnation"
        );
        assert_eq!(1, member.incarnation);
        assert_eq!(Suspect, member.state);

        // Alive => Down, always works
        assert!(
            Member::new("c", 1, Alive).change_state(0, Down),
            "transitions to down on lower incarnation"
        );
        assert!(
            Member::new("c", 0, Alive).change_state(0, Down),
            "transitions to down on same incarnation"
        );
        assert!(
            Member::new("c", 0, Alive).change_state(1, Down),
            "transitions to down on higher incarnation"
        );
    }

    #[test]
    fn suspect_transitions() {
        let mut member = Member::new(Id("a"), 0, Suspect);

        // Suspect => Suspect
        assert!(
            member.change_state(member.incarnation + 1, Suspect),
            "can transition to a higher incarnation"
        );

        assert_eq!(1, member.incarnation);
        assert_eq!(Suspect, member.state);

        assert!(
            !member.change_state(member.incarnation - 1, Suspect),
            "cannot transition to a lower incarnation"
        );

        assert!(
            !member.change_state(member.incarnation, Suspect),
            "cannot transition to same state and incarnation {:?}",
            &member
        );

        // Suspect => Alive
        assert!(
            !member.change_state(member.incarnation - 1, Alive),
            "lower alive incarnation shouldn't transition"
        );
        assert!(
            !member.change_state(member.incarnation, Alive),
            "same alive incarnation shouldn't transition"
        );

        assert!(
            member.change_state(member.incarnation + 1, Alive),
            "can transition to alive with higher incarnation"
        );
        assert_eq!(Alive, member.state);

        // Suspect => Down, always works
        assert!(
            Member::new("c", 1, Suspect).change_state(0, Down),
            "transitions to down on lower incarnation"
        );
        assert!(
            Member::new("c", 0, Suspect).change_state(0, Down),
            "transitions to down on same incarnation"
        );
        assert!(
            Member::new("c", 0, Suspect).change_state(1, Down),
            "transitions to down on higher incarnation"
        );
    }

    #[test]
    fn down_never_transitions() {
        let mut member = Member::new("dead", 1, Down);

        for incarnation in 0..=2 {
            assert!(!member.change_state(incarnation, Alive));
            assert!(!member.change_state(incarnation, Suspect));
            assert!(!member.change_state(incarnation, Down));
        }
    }

    #[test]
    fn next_walks_sequentially_then_shuffles() {
        let ordered_ids = vec![Id("1"), Id("2"), Id("3"), Id("4"), Id("5")];
        let mut members = Members::new(ordered_ids.iter().cloned().map(Member::alive).collect());

        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        for wanted in ordered_ids.iter() {
            let got = members
                .next(&mut rng)
                .expect("Non-empty set of Alive members should always yield Some()")
                .id;
            assert_eq!(wanted, &got);
        }

        // By now we walked through all known live members so
        // the internal state should've shuffled.
        // We'll verify that by calling `next()` multiple
        // times and comparing with the original `ordered_ids`
        let mut after_shuffle = (0..ordered_ids.len())
            .map(|_| members.next(&mut rng).unwrap().id)
            .collect::<Vec<_>>();
        assert_ne!(ordered_ids, after_shuffle);

        // The shuffle only happens once the cursor walks
        // through the whole set, so `after_shuffle` should
        // contain every member, like `ordered_ids`, but in
        // a distinct order
        after_shuffle.sort_unstable();
        assert_eq!(ordered_ids, after_shuffle);
    }

    #[test]
    fn apply_existing_if_behaviour() {
        let mut members = Members::new(Vec::new());

        assert_eq!(
            None,
            members.apply_existing_if(Member::alive(Id("1")), |_member| true),
            "Only yield None only if member is not found"
        );

        let mut rng = SmallRng::seed_from_u64(0xF0CA);
        let _ = members.apply(Member::alive(Id("1")), &mut rng);

        assert_ne!(
            None,
            members.apply_existing_if(Member::alive(Id("1")), |_member| true),
            "Must yield Some() if existing, regardless of condition"
        );

        assert_ne!(
            None,
            members.apply_existing_if(Member::alive(Id("1")), |_member| false),
            "Must yield Some() if existing, regardless of condition"
        );
    }

    #[test]
    fn apply_summary_behaviour() {
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        // New and active member
        let res = members.apply(Member::suspect(Id("1")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: true,
                apply_successful: true,
                changed_active_set: true,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());
        assert_eq!(1, members.num_active());

        // Failed attempt to change member id=1 to alive
        // (since it's already suspect with same incarnation)
        let res = members.apply(Member::alive(Id("1")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: true,
                apply_successful: false,
                changed_active_set: false,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());

        // Successful attempt at changing member id=1 to
        // alive by using a higher incarnation
        let res = members.apply(Member::new(Id("1"), 1, State::Alive), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: true,
                apply_successful: true,
                changed_active_set: false,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());

        // Change existing member to down
        let res = members.apply(Member::down(Id("1")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: false,
                apply_successful: true,
                changed_active_set: true,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(1, members.len());
        assert_eq!(0, members.num_active());

        // New and inactive member
        let res = members.apply(Member::down(Id("2")), &mut rng);
        assert_eq!(
            ApplySummary {
                is_active_now: false,
                apply_successful: true,
                changed_active_set: false,
                conflict: ConflictResult::NoConflict,
            },
            res,
        );
        assert_eq!(2, members.len());
        assert_eq!(0, members.num_active());
    }

    #[test]
    fn remove_if_down_works() {
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        assert_eq!(
            None,
            members.remove_if_down(&Id("1")),
            "cant remove member that does not exist"
        );
        let _ = members.apply(Member::alive(Id("1")), &mut rng);

        assert_eq!(
            None,
            members.remove_if_down(&Id("1")),
            "cant remove member that isnt down"
        );
        let _ = members.apply(Member::down(Id("1")), &mut rng);

        assert_eq!(
            Some(Member::down(Id("1"))),
            members.remove_if_down(&Id("1")),
            "must return the removed member"
        );
    }

    #[test]
    fn next_yields_none_with_no_active_members() {
        let mut members = Members::new(Vec::new());
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        assert_eq!(
            None,
            members.next(&mut rng),
            "next() should yield None when there are no members"
        );

        let _ = members.apply(Member::down(Id("-1")), &mut rng);
        let _ = members.apply(Member::down(Id("-2")), &mut rng);
        let _ = members.apply(Member::down(Id("-3")), &mut rng);

        assert_eq!(
            None,
            members.next(&mut rng),
            "next() should yield None when there are no active members"
        );

        let _ = members.apply(Member::alive(Id("1")), &mut rng);

        for _i in 0..10 {
            assert_eq!(
                Some(Id("1")),
                members.next(&mut rng).map(|m| m.id),
                "next() should yield the same member if its the only active"
            );
        }
    }

    #[test]
    fn choose_active_members_behaviour() {
        let members = Members::new(Vec::from([
            // 5 active members
            Member::alive(Id("1")),
            Member::alive(Id("2")),
            Member::alive(Id("3")),
            Member::suspect(Id("4")),
            Member::suspect(Id("5")),
            // 2 down
            Member::down(Id("6")),
            Member::down(Id("7")),
        ]));

        assert_eq!(7, members.len());
        assert_eq!(5, members.num_active());

        let mut out = Vec::new();
        let mut rng = SmallRng::seed_from_u64(0xF0CA);

        out.clear();
        members.choose_active_members(0, &mut out, &mut rng, |_| true);
        assert_eq!(0, out.len(), "Can pointlessly choose 0 members");

        out.clear();
        members.choose_active_members(10, &mut out, &mut rng, |_| false);
        assert_eq!(0, out.len(), "Filtering works");

        out.clear();
        members.choose_active_members(members.len(), &mut out, &mut rng, |_| true);
        assert_eq!(
            members.num_active(),
            out.len(),
            "Only chooses active members"
        );

        out.clear();
        members.choose_active_members(2, &mut out, &mut rng, |_| true);
        assert_eq!(2, out.len(), "Respects `wanted` even if we have more");

        out.clear();
        members.choose_active_members(usize::MAX, &mut out, &mut rng, |&member_id| {
            member_id.0.parse::<usize>().expect("number") > 4
        });
        assert_eq!(vec![Member::suspect(Id("5"))], out);

        out.clear();
        members.choose_down_members(3, &mut out, &mut rng);
        assert_eq!(2, out.len());
        assert!(out.iter().any(|m| m.id == Id("7")));
        assert!(out.iter().any(|m| m.id == Id("6")));
    }

    #[test]
    fn sets_replaced_id_on_addr_conflict() {
        let id = crate::testing::ID::new(1).rejoinable();
        let mut members = Members::new(Vec::from([
            // 5 active members
            Member::alive(id),
        ]));

        let renewed = id.renew().unwrap();
        let summary = members
            .apply_existing_if(Member::alive(renewed), |_| true)
            .expect("member found");

        assert!(summary.apply_successful);
        assert_eq!(ConflictResult::Replaced(id), summary.conflict);

        let another = renewed.renew().unwrap();
        let summary = members
            .apply_existing_if(Member::alive(another), |_| false)
            .expect("member found");

        assert!(!summary.apply_successful);
        assert_eq!(
            ConflictResult::FailedCondition,
            summary.conflict,
            "must not apply if condition fails"
        );

        // trying to go back to the past leads to
        // conflict resolution failure
        let summary = members
            .apply_existing_if(Member::alive(id), |_| true)
            .expect("member found");

        assert_eq!(ConflictResult::Lost, summary.conflict,);
        assert!(!summary.apply_successful, "must not apply if conflict lost");
    }

    // Nexus patch tests: the address-slot index and the sparse choice.

    /// An identity that may carry an address slot (its address).
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Twin {
        addr: u16,
        generation: u8,
        slotted: bool,
    }

    impl crate::Identity for Twin {
        type Addr = u16;

        fn renew(&self) -> Option<Self> {
            None
        }

        fn addr(&self) -> u16 {
            self.addr
        }

        fn win_addr_conflict(&self, adversary: &Self) -> bool {
            self.generation > adversary.generation
        }

        fn addr_slot(&self) -> Option<u32> {
            self.slotted.then_some(u32::from(self.addr))
        }
    }

    fn plain(m: &Member<Twin>) -> (u16, u8, Incarnation, State) {
        (m.id.addr, m.id.generation, m.incarnation, m.state)
    }

    #[test]
    fn slot_index_agrees_with_hash_index() {
        // Two tables driven through the same random operations with the
        // same RNG: one whose identities have address slots (vector
        // index), one whose identities do not (hash index). Every
        // outcome and every lookup must be the same.
        let mut ops = SmallRng::seed_from_u64(7);
        let mut rng_a = SmallRng::seed_from_u64(1);
        let mut rng_b = SmallRng::seed_from_u64(1);
        let mut a = Members::new(Vec::new());
        let mut b = Members::new(Vec::new());
        let mut removed = 0;
        for _ in 0..20_000 {
            let addr = ops.random_range(0..48u16);
            let generation = ops.random_range(0..3u8);
            let id = |slotted| Twin {
                addr,
                generation,
                slotted,
            };
            match ops.random_range(0..6) {
                0..=2 => {
                    let state = [Alive, Suspect, Down][ops.random_range(0..3)];
                    let incarnation = ops.random_range(0..4);
                    let update = Member::new(id(true), incarnation, state);
                    a.warm(core::slice::from_ref(&update));
                    let sa = a.apply(update, &mut rng_a);
                    let sb = b.apply(Member::new(id(false), incarnation, state), &mut rng_b);
                    assert_eq!(
                        (sa.is_active_now, sa.apply_successful, sa.changed_active_set),
                        (sb.is_active_now, sb.apply_successful, sb.changed_active_set)
                    );
                }
                3 => {
                    let ra = a.remove_if_down(&id(true));
                    let rb = b.remove_if_down(&id(false));
                    assert_eq!(ra.as_ref().map(plain), rb.as_ref().map(plain));
                    removed += usize::from(ra.is_some());
                }
                4 => {
                    let na = a.next(&mut rng_a).map(plain);
                    let nb = b.next(&mut rng_b).map(plain);
                    assert_eq!(na, nb);
                }
                _ => assert_eq!(a.is_active(&id(true)), b.is_active(&id(false))),
            }
            assert_eq!(
                a.inner.iter().map(plain).collect::<Vec<_>>(),
                b.inner.iter().map(plain).collect::<Vec<_>>()
            );
            assert_eq!(a.num_active(), b.num_active());
            for addr in 0..50u16 {
                let probe = |slotted| Twin {
                    addr,
                    generation: 0,
                    slotted,
                };
                let got = a.get(&probe(true)).map(plain);
                assert_eq!(got, b.get(&probe(false)).map(plain));
                assert_eq!(
                    got.map(|g| g.0),
                    a.inner
                        .iter()
                        .find(|m| m.id.addr == addr)
                        .map(|m| m.id.addr)
                );
            }
        }
        assert!(removed > 100, "the sequence exercised removals ({removed})");
    }

    #[test]
    fn sparse_choice_is_uniform_distinct_and_filtered() {
        let members = Members::new(
            (0..1000u16)
                .map(|addr| {
                    let id = Twin {
                        addr,
                        generation: 0,
                        slotted: true,
                    };
                    // Every tenth member is down.
                    if addr % 10 == 0 {
                        Member::down(id)
                    } else {
                        Member::alive(id)
                    }
                })
                .collect(),
        );
        let mut rng = SmallRng::seed_from_u64(3);
        let mut out = Vec::new();
        let mut hits = vec![0u32; 1000];
        let rounds = 30_000;
        for _ in 0..rounds {
            out.clear();
            members.choose_active_members(3, &mut out, &mut rng, |id| id.addr % 7 != 0);
            assert_eq!(3, out.len());
            for (k, m) in out.iter().enumerate() {
                assert!(m.is_active() && m.id.addr % 7 != 0, "ineligible {m:?}");
                assert!(out[..k].iter().all(|o| o.id != m.id), "chosen twice");
                hits[m.id.addr as usize] += 1;
            }
        }
        let eligible: Vec<u32> = (0..1000)
            .filter(|a| a % 10 != 0 && a % 7 != 0)
            .map(|a| hits[a])
            .collect();
        let expected = f64::from(3 * rounds) / eligible.len() as f64;
        for h in &eligible {
            // ~117 expected per member; 5 standard deviations either way.
            assert!(
                (f64::from(*h) - expected).abs() < 5.0 * expected.sqrt(),
                "{h} vs {expected}"
            );
        }

        // Two eligible members out of 1000: the draws give up and the scan
        // finds both.
        out.clear();
        members.choose_active_members(3, &mut out, &mut rng, |id| id.addr == 1 || id.addr == 999);
        let mut got: Vec<u16> = out.iter().map(|m| m.id.addr).collect();
        got.sort_unstable();
        assert_eq!(vec![1, 999], got);

        // Down members, chosen among 100 of 1000.
        out.clear();
        members.choose_down_members(5, &mut out, &mut rng);
        assert_eq!(5, out.len());
        assert!(out.iter().all(|m| !m.is_active()));
    }

    #[test]
    fn no_down_members_to_choose_when_all_are_active() {
        let members = Members::new(
            (0..10u16)
                .map(|addr| {
                    Member::alive(Twin {
                        addr,
                        generation: 0,
                        slotted: false,
                    })
                })
                .collect(),
        );
        let mut out = Vec::new();
        members.choose_down_members(3, &mut out, SmallRng::seed_from_u64(1));
        assert!(out.is_empty());
    }
}
