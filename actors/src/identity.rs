//! The node's Ed25519 identity key, created at first start and kept in the data directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use nexus_gossip::NodeId;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// The node's identity key. Its public half is the node id.
#[derive(Clone)]
pub struct NodeKey {
    signing: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret half.
        write!(f, "NodeKey({:?})", self.node_id())
    }
}

/// The key file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// An I/O error on the key file.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("{path}: not an Ed25519 secret key (expected 32 bytes, found {len})")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Others can read the key file.
    #[error("{path}: readable by group or others (mode {mode:o}); run `chmod 600` on it")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

impl NodeKey {
    /// A key from its 32 secret bytes (the simulator derives these from its seed).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        NodeKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The signing key (adverts and, later, certificate requests are signed with it).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The node id: the public half of the key.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    /// Loads `dir/node.key`, or creates it (mode 0600) with a fresh key from the OS RNG.
    /// Returns the key and whether it was created now.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), IdentityError> {
        let path = dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(bytes) => {
                let mode = fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::Permissions { path, mode });
                }
                let secret: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| IdentityError::Malformed {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok((NodeKey::from_secret(secret), false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signing = SigningKey::generate(&mut rand_core_06::OsRng);
                let tmp = dir.join(format!("{KEY_FILE}.tmp"));
                let write = || -> std::io::Result<()> {
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)?;
                    file.write_all(&signing.to_bytes())?;
                    file.sync_all()?;
                    // Rename is atomic: a crash leaves either no key or a whole one.
                    fs::rename(&tmp, &path)?;
                    fs::File::open(dir)?.sync_all()
                };
                write().map_err(io)?;
                Ok((NodeKey { signing }, true))
            }
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, created) = NodeKey::load_or_create(dir.path()).expect("create");
        assert!(created);
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = NodeKey::load_or_create(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(a.node_id(), b.node_id());
    }

    #[test]
    fn bad_key_files_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, b"short").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            NodeKey::load_or_create(dir.path()),
            Err(IdentityError::Malformed { len: 5, .. })
        ));
        fs::write(&path, [7u8; 32]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            NodeKey::load_or_create(dir.path()),
            Err(IdentityError::Permissions { mode: 0o644, .. })
        ));
    }
}
