//! The environment seams a node is built with (DESIGN.md §4): datagram transport and durable
//! storage. Production passes tokio sockets and sled; the simulator passes virtual ones.
//!
//! Time needs no trait here: actors use `tokio::time`, which the simulator virtualises, and
//! convert it to [`nexus_gossip::Timestamp`] before calling a core. Randomness is a seed in each
//! actor's arguments.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

/// A datagram socket (the gossip transport).
pub trait DatagramSocket: Send + Sync + Debug + 'static {
    /// Sends one datagram.
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// Receives one datagram.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn send_to(
        &self,
        buf: &[u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, buf, target)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::UdpSocket::local_addr(self)
    }
}

/// A storage operation failed. Nothing was written when `put` fails.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend reported an error.
    #[error("storage: {0}")]
    Backend(String),
    /// A stored value does not have the expected form (corruption or a version mismatch).
    #[error("stored value for {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Small durable key-value storage for node state (generation, known peers, registrations; the
/// trust issue adds the Raft log).
pub trait Storage: Send + Sync + Debug + 'static {
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Stores `value` under `key`; durable (survives SIGKILL) once this returns `Ok`.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;
    /// Removes `key` (absent is not an error); durable once this returns `Ok`.
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Every key starting with `prefix`, with its value, in key order.
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
}

/// [`Storage`] in a sled database.
#[derive(Debug, Clone)]
pub struct SledStorage {
    db: sled::Db,
}

impl SledStorage {
    /// Opens (or creates) the database at `path`. Fails if another process holds it.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        Ok(SledStorage { db })
    }

    /// The underlying database, for components that keep their own trees in it (the CA's Raft
    /// log and state machine). They must not touch the default tree, which this type owns.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

impl Storage for SledStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| StorageError::Backend(e.to_string()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.db
            .insert(key, value)
            .and_then(|_| self.db.flush())
            .map(|_| ())
            .map_err(|e| StorageError::Backend(e.to_string()))
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.db
            .remove(key)
            .and_then(|_| self.db.flush())
            .map(|_| ())
            .map_err(|e| StorageError::Backend(e.to_string()))
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.db
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item.map_err(|e| StorageError::Backend(e.to_string()))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }
}

/// [`Storage`] in memory: for tests and for simulated nodes whose "disk" the simulator keeps.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Storage for MemoryStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let map = self
            .map
            .lock()
            .map_err(|_| StorageError::Backend("poisoned".into()))?;
        Ok(map.get(key).cloned())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| StorageError::Backend("poisoned".into()))?;
        map.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| StorageError::Backend("poisoned".into()))?;
        map.remove(key);
        Ok(())
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let map = self
            .map
            .lock()
            .map_err(|_| StorageError::Backend("poisoned".into()))?;
        Ok(map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

const GENERATION_KEY: &str = "node/generation";

/// Increments and durably stores the node's generation; returns the new value (1 on first start).
pub fn next_generation(storage: &dyn Storage) -> Result<u64, StorageError> {
    let current = match storage.get(GENERATION_KEY)? {
        None => 0,
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| StorageError::Corrupt {
                key: GENERATION_KEY.into(),
                reason: "not 8 bytes".into(),
            })?;
            u64::from_be_bytes(bytes)
        }
    };
    let next = current + 1;
    storage.put(GENERATION_KEY, &next.to_be_bytes())?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_grows_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = SledStorage::open(&dir.path().join("db")).expect("open");
            assert_eq!(next_generation(&db).expect("gen"), 1);
            assert_eq!(next_generation(&db).expect("gen"), 2);
        }
        let db = SledStorage::open(&dir.path().join("db")).expect("reopen");
        assert_eq!(next_generation(&db).expect("gen"), 3);
    }

    #[test]
    fn delete_and_prefix_scan_on_both_backends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sled = SledStorage::open(&dir.path().join("db")).expect("open");
        let mem = MemoryStorage::default();
        for s in [&sled as &dyn Storage, &mem] {
            s.put("reg/b", b"2").expect("put");
            s.put("reg/a", b"1").expect("put");
            s.put("reh", b"x").expect("put");
            s.put("re", b"y").expect("put");
            let got = s.scan_prefix("reg/").expect("scan");
            assert_eq!(
                got,
                vec![
                    ("reg/a".into(), b"1".to_vec()),
                    ("reg/b".into(), b"2".to_vec())
                ]
            );
            s.delete("reg/a").expect("delete");
            s.delete("reg/absent").expect("absent is fine");
            assert_eq!(s.scan_prefix("reg/").expect("scan").len(), 1);
            assert_eq!(s.get("reg/a").expect("get"), None);
        }
    }

    #[test]
    fn corrupt_generation_is_an_error() {
        let mem = MemoryStorage::default();
        mem.put(GENERATION_KEY, b"xyz").expect("put");
        assert!(matches!(
            next_generation(&mem),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
