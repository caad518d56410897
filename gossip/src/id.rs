//! Who a member is: its stable node id, the address peers use, its generation and its metadata.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Bytes allowed in [`MemberMeta::name`].
pub const NAME_BYTES_MAX: usize = 64;
/// Bytes allowed in [`MemberMeta::version`].
pub const VERSION_BYTES_MAX: usize = 32;
/// Roles a member may carry.
pub const ROLES_MAX: usize = 8;
/// Bytes allowed in one role name.
pub const ROLE_BYTES_MAX: usize = 16;

/// A node's stable identifier: its Ed25519 public key.
///
/// Using the public key itself (rather than a hash of it) lets any peer verify what the node signs
/// without a lookup.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// Lower-case hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// The first 12 hex digits, for tables and log lines.
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(12);
        hex
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A bounded metadata record every member carries: who it is, where its admin API is, what it
/// runs and which roles it has.
///
/// Construct it with [`MemberMeta::new`], which enforces the limits; decoded records are checked
/// against the same limits by the wire codec.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberMeta {
    name: String,
    admin: Option<SocketAddr>,
    version: String,
    roles: Vec<String>,
    dataplane: Option<SocketAddr>,
}

/// A metadata field broke its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The name is empty or longer than [`NAME_BYTES_MAX`].
    #[error("name must be 1..={NAME_BYTES_MAX} bytes, got {0}")]
    NameLength(usize),
    /// The name has a character other than `[A-Za-z0-9._-]`.
    #[error("name may only contain letters, digits, '.', '_' and '-'")]
    NameCharset,
    /// The version string is longer than [`VERSION_BYTES_MAX`].
    #[error("version must be at most {VERSION_BYTES_MAX} bytes, got {0}")]
    VersionLength(usize),
    /// More than [`ROLES_MAX`] roles.
    #[error("at most {ROLES_MAX} roles, got {0}")]
    TooManyRoles(usize),
    /// A role is empty, too long or not `[a-z0-9-]`.
    #[error("role {0:?} must be 1..={ROLE_BYTES_MAX} bytes of [a-z0-9-]")]
    BadRole(String),
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl MemberMeta {
    /// A metadata record, checked against the limits above.
    pub fn new(
        name: impl Into<String>,
        admin: Option<SocketAddr>,
        version: impl Into<String>,
        roles: Vec<String>,
    ) -> Result<Self, MetaError> {
        let meta = MemberMeta {
            name: name.into(),
            admin,
            version: version.into(),
            roles,
            dataplane: None,
        };
        meta.check()?;
        Ok(meta)
    }

    /// Checks every limit; used on construction and on decode.
    pub fn check(&self) -> Result<(), MetaError> {
        if self.name.is_empty() || self.name.len() > NAME_BYTES_MAX {
            return Err(MetaError::NameLength(self.name.len()));
        }
        if !self.name.chars().all(is_name_char) {
            return Err(MetaError::NameCharset);
        }
        if self.version.len() > VERSION_BYTES_MAX {
            return Err(MetaError::VersionLength(self.version.len()));
        }
        if self.roles.len() > ROLES_MAX {
            return Err(MetaError::TooManyRoles(self.roles.len()));
        }
        for role in &self.roles {
            let ok = !role.is_empty()
                && role.len() <= ROLE_BYTES_MAX
                && role
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                return Err(MetaError::BadRole(role.clone()));
            }
        }
        Ok(())
    }

    /// The node's human name (unique by convention, not enforced).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the node's admin API listens, if it said.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The software version the node runs.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The node's roles (e.g. `ca`).
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Where the node's data plane receives NexLink frames, if it runs one.
    pub fn dataplane(&self) -> Option<SocketAddr> {
        self.dataplane
    }

    /// The same record, saying where the node's data plane receives frames.
    pub fn with_dataplane(mut self, dataplane: Option<SocketAddr>) -> Self {
        self.dataplane = dataplane;
        self
    }
}

/// A member's identity as SWIM sees it.
///
/// `addr` is the address peers send to; `node_id` is stable across restarts; `generation` grows
/// on every (re)start and on every automatic rejoin, so a restarted node replaces its old entry
/// (foca's "rename") instead of being confused with it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberId {
    addr: SocketAddr,
    node_id: NodeId,
    generation: u64,
    meta: MemberMeta,
}

impl MemberId {
    /// A member identity.
    pub fn new(addr: SocketAddr, node_id: NodeId, generation: u64, meta: MemberMeta) -> Self {
        MemberId {
            addr,
            node_id,
            generation,
            meta,
        }
    }

    /// The identity used to announce to a seed whose node id is not known yet.
    ///
    /// foca accepts an `Announce` addressed to any identity with the receiver's address.
    pub(crate) fn seed(addr: SocketAddr) -> Self {
        MemberId {
            addr,
            node_id: NodeId([0; 32]),
            generation: 0,
            meta: MemberMeta::default(),
        }
    }

    /// The address peers send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stable node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The (re)start generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The metadata record.
    pub fn meta(&self) -> &MemberMeta {
        &self.meta
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down while alive (e.g. after a long pause): come back as a newer generation.
        Some(MemberId {
            generation: self.generation.saturating_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // Newer generation wins; on a tie (two data dirs behind one address) the order is
        // arbitrary but the same on every node.
        (self.generation, self.node_id) > (adversary.generation, adversary.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn meta(name: &str) -> MemberMeta {
        MemberMeta::new(name, None, "0.1.0", vec!["ca".into()]).expect("valid meta")
    }

    #[test]
    fn meta_limits() {
        assert!(matches!(
            MemberMeta::new("", None, "", vec![]),
            Err(MetaError::NameLength(0))
        ));
        assert!(matches!(
            MemberMeta::new("a".repeat(65), None, "", vec![]),
            Err(MetaError::NameLength(65))
        ));
        assert_eq!(
            MemberMeta::new("bad name", None, "", vec![]),
            Err(MetaError::NameCharset)
        );
        assert!(matches!(
            MemberMeta::new("n", None, "v".repeat(33), vec![]),
            Err(MetaError::VersionLength(33))
        ));
        assert!(matches!(
            MemberMeta::new("n", None, "", vec!["x".into(); 9]),
            Err(MetaError::TooManyRoles(9))
        ));
        assert!(matches!(
            MemberMeta::new("n", None, "", vec!["Upper".into()]),
            Err(MetaError::BadRole(_))
        ));
        assert!(MemberMeta::new("node-1.a_b", None, "0.1.0", vec!["ca".into()]).is_ok());
    }

    #[test]
    fn newer_generation_wins_address_conflict() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let old = MemberId::new(addr, NodeId([1; 32]), 3, meta("a"));
        let new = old.renew().expect("renewable");
        assert_eq!(new.generation(), 4);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn node_id_hex() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.to_hex().len(), 64);
        assert_eq!(id.short(), "abababababab");
    }
}
