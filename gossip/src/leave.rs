//! Leave notices: a custom foca broadcast that tells the fabric a member left on purpose, so the
//! member list can say `left` rather than `down`.
//!
//! SWIM itself only knows alive, suspect and down; a graceful leave and a crash look the same to
//! it. A node that leaves first queues a [`LeaveNotice`] and then declares itself down; peers
//! that later see it down and hold its notice report it as `left`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use foca::{BroadcastHandler, Invalidates};

use crate::id::{MemberId, NodeId};

/// Leave notices remembered at once; beyond this the lowest `(node id, generation)` is forgotten
/// (not necessarily the oldest: the set is ordered, not timed).
pub const LEAVE_NOTICES_MAX: usize = 4096;

const TAG: u8 = 0x4c; // 'L'
const NOTICE_BYTES: usize = 1 + 32 + 8;

/// "Node `node_id` in generation `generation` left the fabric on purpose."
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaveNotice {
    /// Who left.
    pub node_id: NodeId,
    /// Which of its generations left.
    pub generation: u64,
}

impl LeaveNotice {
    /// The notice's wire form: tag, node id, generation (big-endian).
    pub fn encode(&self) -> [u8; NOTICE_BYTES] {
        let mut out = [0u8; NOTICE_BYTES];
        out[0] = TAG;
        out[1..33].copy_from_slice(&self.node_id.0);
        out[33..].copy_from_slice(&self.generation.to_be_bytes());
        out
    }

    /// Parses one notice (foca frames each broadcast item with its length).
    pub fn decode(data: &[u8]) -> Result<Self, LeaveDecodeError> {
        let bytes: &[u8; NOTICE_BYTES] = data
            .try_into()
            .map_err(|_| LeaveDecodeError::Length(data.len()))?;
        if bytes[0] != TAG {
            return Err(LeaveDecodeError::Tag(bytes[0]));
        }
        let mut node = [0u8; 32];
        node.copy_from_slice(&bytes[1..33]);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&bytes[33..]);
        Ok(LeaveNotice {
            node_id: NodeId(node),
            generation: u64::from_be_bytes(generation),
        })
    }
}

impl Invalidates for LeaveNotice {
    fn invalidates(&self, other: &Self) -> bool {
        self.node_id == other.node_id && self.generation >= other.generation
    }
}

/// A leave notice could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveDecodeError {
    /// Not exactly the size of a notice.
    #[error("leave notice is {NOTICE_BYTES} bytes, got {0}")]
    Length(usize),
    /// The first byte is not the leave-notice tag.
    #[error("unknown broadcast tag {0:#04x}")]
    Tag(u8),
}

/// The set of leave notices seen, and foca's broadcast handler for them.
///
/// foca owns its handler and offers no accessor, so the set is shared between the handler foca
/// holds and the [`crate::Membership`] that reads it. Both live in one core driven by one thread
/// at a time; the mutex is never contended.
#[derive(Debug, Default, Clone)]
pub(crate) struct LeaveNotices {
    seen: Arc<Mutex<BTreeSet<LeaveNotice>>>,
}

impl LeaveNotices {
    fn seen(&self) -> MutexGuard<'_, BTreeSet<LeaveNotice>> {
        // A panic while holding this lock would be a bug in this module's few lines; the set
        // itself is still consistent, so recover it rather than cascade.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `id`, in exactly its generation, announced that it left.
    pub(crate) fn has_left(&self, id: &MemberId) -> bool {
        self.seen().contains(&LeaveNotice {
            node_id: id.node_id(),
            generation: id.generation(),
        })
    }

    /// How many notices are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen().len()
    }
}

impl BroadcastHandler<MemberId> for LeaveNotices {
    type Key = LeaveNotice;
    type Error = LeaveDecodeError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&MemberId>,
    ) -> Result<Option<LeaveNotice>, LeaveDecodeError> {
        let notice = LeaveNotice::decode(data)?;
        let mut seen = self.seen();
        if !seen.insert(notice) {
            return Ok(None); // Already known: stop spreading it.
        }
        while seen.len() > LEAVE_NOTICES_MAX {
            seen.pop_first();
        }
        Ok(Some(notice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_dedup() {
        let notice = LeaveNotice {
            node_id: NodeId([7; 32]),
            generation: 9,
        };
        let bytes = notice.encode();
        assert_eq!(LeaveNotice::decode(&bytes), Ok(notice));
        let mut handler = LeaveNotices::default();
        assert_eq!(handler.receive_item(&bytes, None), Ok(Some(notice)));
        assert_eq!(handler.receive_item(&bytes, None), Ok(None));
        assert_eq!(handler.len(), 1);
    }

    #[test]
    fn bad_input_is_rejected() {
        assert_eq!(
            LeaveNotice::decode(&[TAG; 3]),
            Err(LeaveDecodeError::Length(3))
        );
        assert_eq!(
            LeaveNotice::decode(&[TAG; 42]),
            Err(LeaveDecodeError::Length(42))
        );
        let mut bytes = LeaveNotice {
            node_id: NodeId([1; 32]),
            generation: 1,
        }
        .encode();
        bytes[0] = 0;
        assert_eq!(LeaveNotice::decode(&bytes), Err(LeaveDecodeError::Tag(0)));
    }

    #[test]
    fn bounded() {
        let mut handler = LeaveNotices::default();
        for g in 0..(LEAVE_NOTICES_MAX as u64 + 10) {
            let notice = LeaveNotice {
                node_id: NodeId([1; 32]),
                generation: g,
            };
            handler.receive_item(&notice.encode(), None).expect("valid");
        }
        assert_eq!(handler.len(), LEAVE_NOTICES_MAX);
    }
}
