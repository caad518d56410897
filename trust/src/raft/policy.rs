//! [`LinkPolicy`]: which node keys may open a CA link and which may send Raft RPCs over it.
//!
//! Four key sets, each replaced as a whole:
//! - **voters** and **learners** of this member's Raft membership (the effective configuration
//!   of its log, joint configurations included), kept current by [`super::CaNode`] from
//!   openraft's metrics — a change committed through `/v1/ca/voters` reaches it as soon as the
//!   membership entry is in this member's log;
//! - **expected voters**: the CA voters the embedder knows of (the trust actor: members that
//!   advertise a CA Raft address in gossip). They stand in for the voter set while this node has
//!   no membership (before the group is formed, while a new voter waits for its first
//!   AppendEntries, on a node that is only a client of the CA);
//! - **clients**: further keys allowed to send client requests (the trust actor: every alive
//!   fabric member).
//!
//! Decisions ([`LinkPolicy::admits`]):
//!
//! | who may | keys |
//! |---|---|
//! | complete an inbound handshake, send client requests | voters ∪ learners ∪ expected voters ∪ clients |
//! | send Raft RPCs (AppendEntries, Vote, InstallSnapshot) and membership changes (AddVoter, RemoveVoter) | voters; expected voters while the membership is empty |
//! | be the server of an outbound link | voters ∪ learners ∪ expected voters |
//!
//! Every inbound frame is checked again against the sets current when it arrives, so a key
//! removed from the group loses its rights on established connections too.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::tls::{KeyCheck, refused_key};

/// What an inbound frame asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// AppendEntries, Vote or InstallSnapshot.
    Raft,
    /// A membership change (add or remove a voter): voters only, like Raft RPCs, so that a
    /// fabric member cannot make itself a voter.
    Membership,
    /// Any other client request (write, read index, read, status).
    Client,
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Raft => "Raft RPCs",
            Self::Membership => "membership changes",
            Self::Client => "client requests",
        })
    }
}

/// Why a key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key is neither a CA member, an expected voter nor an allowed client.
    #[error("key {0} is not allowed on CA links")]
    Unknown(KeyHex),
    /// The key may send client requests but is not a voter, so it may not send Raft RPCs or
    /// membership changes (the kind it tried).
    #[error("key {0} is not a CA voter and may not send {1}")]
    NotAVoter(KeyHex, MessageKind),
}

/// The first 8 bytes of a key in hex (for errors and logs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHex([u8; 8]);

impl KeyHex {
    /// The prefix of `key`.
    pub fn of(key: &[u8; 32]) -> Self {
        let mut p = [0u8; 8];
        p.copy_from_slice(&key[..8]);
        KeyHex(p)
    }
}

impl fmt::Display for KeyHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl fmt::Debug for KeyHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Counters of refusals on the CA links of one node.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Inbound connections whose TLS handshake failed: unknown key, not TLS (e.g. plain Raft
    /// frames), bad signature, timeout, or the handshake limit reached.
    pub handshakes_refused: AtomicU64,
    /// Outbound connections whose TLS handshake failed (the server's key is not a CA member, or
    /// it refused ours).
    pub handshakes_failed_out: AtomicU64,
    /// Inbound frames refused after the handshake: a Raft RPC or membership change from a key
    /// that is not a voter, or any frame from a key no longer allowed.
    pub frames_refused: AtomicU64,
}

impl LinkStats {
    /// `(handshakes_refused, handshakes_failed_out, frames_refused)` now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.handshakes_refused.load(Ordering::Relaxed),
            self.handshakes_failed_out.load(Ordering::Relaxed),
            self.frames_refused.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug, Default)]
struct KeySets {
    voters: BTreeSet<[u8; 32]>,
    learners: BTreeSet<[u8; 32]>,
    expected_voters: BTreeSet<[u8; 32]>,
    clients: BTreeSet<[u8; 32]>,
}

/// The key sets of one node's CA links and the refusal counters. Shared (`Arc`) by the
/// transport's verifiers, the listener and whoever feeds it.
#[derive(Debug, Default)]
pub struct LinkPolicy {
    sets: RwLock<KeySets>,
    stats: LinkStats,
}

impl LinkPolicy {
    /// A policy that admits nobody until it is fed.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeySets> {
        self.sets.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeySets> {
        self.sets.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the voters and learners (this member's Raft membership).
    pub fn set_membership(&self, voters: BTreeSet<[u8; 32]>, learners: BTreeSet<[u8; 32]>) {
        let mut sets = self.write();
        sets.voters = voters;
        sets.learners = learners;
    }

    /// Replaces the expected voters and the allowed clients (what the embedder knows of the
    /// fabric).
    pub fn set_fabric(&self, expected_voters: BTreeSet<[u8; 32]>, clients: BTreeSet<[u8; 32]>) {
        let mut sets = self.write();
        sets.expected_voters = expected_voters;
        sets.clients = clients;
    }

    /// The voters currently in force for Raft RPCs.
    pub fn raft_senders(&self) -> BTreeSet<[u8; 32]> {
        let sets = self.read();
        if sets.voters.is_empty() {
            sets.expected_voters.clone()
        } else {
            sets.voters.clone()
        }
    }

    /// Whether `key` may send frames of `kind` (and, for [`MessageKind::Client`], complete an
    /// inbound handshake).
    pub fn admits(&self, key: &[u8; 32], kind: MessageKind) -> Result<(), Refusal> {
        let sets = self.read();
        let member = sets.voters.contains(key)
            || sets.learners.contains(key)
            || sets.expected_voters.contains(key)
            || sets.clients.contains(key);
        if !member {
            return Err(Refusal::Unknown(KeyHex::of(key)));
        }
        match kind {
            MessageKind::Client => Ok(()),
            MessageKind::Raft | MessageKind::Membership => {
                let voter = if sets.voters.is_empty() {
                    sets.expected_voters.contains(key)
                } else {
                    sets.voters.contains(key)
                };
                if voter {
                    Ok(())
                } else {
                    Err(Refusal::NotAVoter(KeyHex::of(key), kind))
                }
            }
        }
    }

    /// Whether `key` may be the server of an outbound link (a CA member or expected voter).
    pub fn accepts_server(&self, key: &[u8; 32]) -> bool {
        let sets = self.read();
        sets.voters.contains(key)
            || sets.learners.contains(key)
            || sets.expected_voters.contains(key)
    }

    /// The refusal counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }
}

/// The server-side handshake check: the client's key must be admitted for client requests.
#[derive(Debug, Clone)]
pub(crate) struct InboundKeys(pub(crate) std::sync::Arc<LinkPolicy>);

impl KeyCheck for InboundKeys {
    fn check(&self, key: &[u8; 32]) -> Result<(), rustls::Error> {
        self.0.admits(key, MessageKind::Client).map_err(|refusal| {
            tracing::debug!(%refusal, "CA link: handshake refused");
            refused_key()
        })
    }
}

/// The client-side handshake check: the server's key must be a CA member or expected voter.
#[derive(Debug, Clone)]
pub(crate) struct OutboundKeys(pub(crate) std::sync::Arc<LinkPolicy>);

impl KeyCheck for OutboundKeys {
    fn check(&self, key: &[u8; 32]) -> Result<(), rustls::Error> {
        if self.0.accepts_server(key) {
            Ok(())
        } else {
            tracing::debug!(key = %KeyHex::of(key), "CA link: server key is not a CA member");
            Err(refused_key())
        }
    }
}

/// Parses a [`super::CaPeer::node`] (64 lowercase or uppercase hex digits) into a key.
pub fn parse_node_key(hex_key: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_key).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(keys: &[u8]) -> BTreeSet<[u8; 32]> {
        keys.iter().map(|k| [*k; 32]).collect()
    }

    #[test]
    fn nobody_before_it_is_fed() {
        let p = LinkPolicy::new();
        assert_eq!(
            p.admits(&[1; 32], MessageKind::Client),
            Err(Refusal::Unknown(KeyHex::of(&[1; 32])))
        );
        assert!(!p.accepts_server(&[1; 32]));
    }

    #[test]
    fn expected_voters_stand_in_only_while_the_membership_is_empty() {
        let p = LinkPolicy::new();
        p.set_fabric(set(&[1, 2, 9]), set(&[5]));
        assert_eq!(p.admits(&[9; 32], MessageKind::Raft), Ok(()));
        assert_eq!(
            p.admits(&[5; 32], MessageKind::Raft),
            Err(Refusal::NotAVoter(KeyHex::of(&[5; 32]), MessageKind::Raft))
        );
        assert_eq!(
            p.admits(&[5; 32], MessageKind::Membership),
            Err(Refusal::NotAVoter(
                KeyHex::of(&[5; 32]),
                MessageKind::Membership
            ))
        );
        assert_eq!(p.admits(&[9; 32], MessageKind::Membership), Ok(()));
        assert_eq!(p.admits(&[5; 32], MessageKind::Client), Ok(()));
        p.set_membership(set(&[1, 2, 3]), set(&[4]));
        // 9 advertises itself as a voter but is not one in this member's membership.
        assert!(matches!(
            p.admits(&[9; 32], MessageKind::Raft),
            Err(Refusal::NotAVoter(_, MessageKind::Raft))
        ));
        assert_eq!(p.admits(&[9; 32], MessageKind::Client), Ok(()));
        assert_eq!(p.admits(&[3; 32], MessageKind::Raft), Ok(()));
        assert!(matches!(
            p.admits(&[4; 32], MessageKind::Raft),
            Err(Refusal::NotAVoter(_, _))
        ));
        assert_eq!(p.admits(&[4; 32], MessageKind::Client), Ok(()));
        assert!(matches!(
            p.admits(&[7; 32], MessageKind::Client),
            Err(Refusal::Unknown(_))
        ));
        assert_eq!(p.raft_senders(), set(&[1, 2, 3]));
        assert!(p.accepts_server(&[4; 32]));
        assert!(p.accepts_server(&[9; 32]));
        assert!(!p.accepts_server(&[5; 32]));
    }

    #[test]
    fn removal_takes_effect_at_once() {
        let p = LinkPolicy::new();
        p.set_membership(set(&[1, 2, 3]), BTreeSet::new());
        assert_eq!(p.admits(&[3; 32], MessageKind::Raft), Ok(()));
        p.set_membership(set(&[1, 2]), BTreeSet::new());
        assert!(matches!(
            p.admits(&[3; 32], MessageKind::Raft),
            Err(Refusal::Unknown(_))
        ));
    }

    #[test]
    fn handshake_checks_follow_the_policy() {
        let p = std::sync::Arc::new(LinkPolicy::new());
        p.set_fabric(set(&[1]), set(&[2]));
        assert!(InboundKeys(p.clone()).check(&[2; 32]).is_ok());
        assert!(InboundKeys(p.clone()).check(&[3; 32]).is_err());
        assert!(OutboundKeys(p.clone()).check(&[1; 32]).is_ok());
        assert!(OutboundKeys(p).check(&[2; 32]).is_err());
    }

    #[test]
    fn node_keys_parse_from_hex() {
        let hex_key = "ab".repeat(32);
        assert_eq!(parse_node_key(&hex_key), Some([0xab; 32]));
        assert_eq!(parse_node_key(&"AB".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_node_key("ab"), None);
        assert_eq!(parse_node_key(&"zz".repeat(32)), None);
        assert_eq!(parse_node_key(""), None);
    }

    #[test]
    fn refusals_name_the_key() {
        let r = Refusal::NotAVoter(KeyHex::of(&[0xab; 32]), MessageKind::Raft);
        assert_eq!(
            r.to_string(),
            "key abababababababab… is not a CA voter and may not send Raft RPCs"
        );
    }
}
