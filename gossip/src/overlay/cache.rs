//! [`MessageCache`]: the ids of recently seen broadcasts with their payloads, bounded by a TTL and
//! a count.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::overlay::wire::MessageId;
use crate::time::Timestamp;

#[derive(Debug)]
struct Entry {
    payload: Vec<u8>,
    hops: u16,
}

/// Seen messages: answers "is this a duplicate?" and serves payloads to Grafts. Entries leave
/// after `ttl` or, when `max` are held, oldest first.
#[derive(Debug)]
pub(crate) struct MessageCache {
    entries: BTreeMap<MessageId, Entry>,
    /// Insertion order, which is expiry order (one TTL for all).
    order: VecDeque<(Timestamp, MessageId)>,
    ttl: Duration,
    max: usize,
}

impl MessageCache {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        MessageCache {
            entries: BTreeMap::new(),
            order: VecDeque::new(),
            ttl,
            max,
        }
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.entries.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The payload and this node's hop distance from the origin.
    pub(crate) fn get(&self, id: &MessageId) -> Option<(&[u8], u16)> {
        self.entries.get(id).map(|e| (e.payload.as_slice(), e.hops))
    }

    /// Remembers a message not yet held; returns how many entries were evicted early to make
    /// room (0 or 1).
    pub(crate) fn insert(
        &mut self,
        now: Timestamp,
        id: MessageId,
        payload: Vec<u8>,
        hops: u16,
    ) -> u64 {
        debug_assert!(!self.entries.contains_key(&id));
        let mut evicted = 0;
        while self.entries.len() >= self.max {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.entries.remove(&old);
                    evicted += 1;
                }
                None => break,
            }
        }
        self.entries.insert(id, Entry { payload, hops });
        self.order.push_back((now + self.ttl, id));
        evicted
    }

    /// Forgets every entry whose TTL ran out by `now`.
    pub(crate) fn expire(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&id);
        }
    }

    /// When the oldest entry expires.
    pub(crate) fn next_expiry(&self) -> Option<Timestamp> {
        self.order.front().map(|&(at, _)| at)
    }

    pub(crate) fn check_invariants(&self) {
        assert_eq!(
            self.entries.len(),
            self.order.len(),
            "cache index out of step"
        );
        assert!(self.entries.len() <= self.max, "cache over its bound");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_by_ttl_and_evicts_oldest_at_cap() {
        let mut c = MessageCache::new(Duration::from_secs(1), 2);
        let t0 = Timestamp::ZERO;
        let id = |n| MessageId::new(1, n);
        assert_eq!(c.insert(t0, id(1), vec![1], 0), 0);
        assert_eq!(
            c.insert(t0 + Duration::from_millis(10), id(2), vec![2], 3),
            0
        );
        assert_eq!(
            c.insert(t0 + Duration::from_millis(20), id(3), vec![3], 1),
            1
        );
        assert!(!c.contains(&id(1)));
        assert_eq!(c.get(&id(2)), Some((&[2u8][..], 3)));
        assert_eq!(c.next_expiry(), Some(t0 + Duration::from_millis(1010)));
        c.expire(t0 + Duration::from_millis(1015));
        assert!(!c.contains(&id(2)));
        assert!(c.contains(&id(3)));
        c.check_invariants();
    }
}
