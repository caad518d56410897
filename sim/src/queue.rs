//! The engines' event queue: events ordered by `(virtual time, sequence number)`. Sequence
//! numbers are unique and increase with every push, so events at one instant pop in the order
//! they were pushed and the order is total: a run is a function of its seed.

use std::collections::BinaryHeap;

/// A queued event; ordered so the max-heap pops the earliest `(at_us, seq)` first.
#[derive(Debug)]
struct Queued<E> {
    at_us: u64,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}

impl<E> Eq for Queued<E> {}

impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Queued<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

/// Pending events of one run, earliest `(time, sequence)` first.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Queued<E>>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `ev` at virtual time `at_us`, after everything already scheduled then.
    pub fn push(&mut self, at_us: u64, ev: E) {
        self.seq += 1;
        self.heap.push(Queued {
            at_us,
            seq: self.seq,
            ev,
        });
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|q| q.at_us)
    }

    /// Removes the earliest event, with its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|q| (q.at_us, q.ev))
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::EventQueue;

    #[test]
    fn earliest_first_then_push_order() {
        let mut q = EventQueue::new();
        q.push(5, "c");
        q.push(1, "a");
        q.push(5, "d");
        q.push(1, "b");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [(1, "a"), (1, "b"), (5, "c"), (5, "d")]);
    }
}
