//! [`LocalEndpoints`]: routing keys served on this node → the local service's UDP address.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::fib::RoutingKey;

/// Most local endpoints one forwarder holds (services attached to this node).
pub const LOCAL_ENDPOINTS_MAX: usize = 4096;

/// The local-delivery table: frames whose routing key is in it go to that address unchanged
/// (no hop-limit decrement: the frame has arrived), before any FIB lookup.
///
/// Handed to [`super::Forwarder::spawn`] and replaced whole at run time with
/// [`super::ForwarderHandle::set_local_endpoints`]; the forwarder reads one version per batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalEndpoints {
    endpoints: BTreeMap<RoutingKey, SocketAddr>,
}

/// Refused: the table already holds [`LOCAL_ENDPOINTS_MAX`] keys. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("local endpoint table full ({LOCAL_ENDPOINTS_MAX} keys); {key} not added")]
pub struct LocalEndpointsFull {
    /// The key that was not added.
    pub key: RoutingKey,
}

impl LocalEndpoints {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Delivers frames for `key` to `addr`, returning the address it replaced.
    pub fn insert(
        &mut self,
        key: RoutingKey,
        addr: SocketAddr,
    ) -> Result<Option<SocketAddr>, LocalEndpointsFull> {
        if !self.endpoints.contains_key(&key) && self.endpoints.len() >= LOCAL_ENDPOINTS_MAX {
            return Err(LocalEndpointsFull { key });
        }
        Ok(self.endpoints.insert(key, addr))
    }

    /// Stops local delivery for `key`, returning its address.
    pub fn remove(&mut self, key: RoutingKey) -> Option<SocketAddr> {
        self.endpoints.remove(&key)
    }

    /// Where frames for `key` are delivered, if it is local.
    #[inline]
    pub fn get(&self, key: RoutingKey) -> Option<SocketAddr> {
        self.endpoints.get(&key).copied()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether no key is local.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (RoutingKey, SocketAddr)> + '_ {
        self.endpoints.iter().map(|(key, addr)| (*key, *addr))
    }
}

impl TryFrom<BTreeMap<RoutingKey, SocketAddr>> for LocalEndpoints {
    type Error = LocalEndpointsFull;

    fn try_from(endpoints: BTreeMap<RoutingKey, SocketAddr>) -> Result<Self, Self::Error> {
        if let Some((key, _)) = endpoints.iter().nth(LOCAL_ENDPOINTS_MAX) {
            return Err(LocalEndpointsFull { key: *key });
        }
        Ok(LocalEndpoints { endpoints })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_is_bounded() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut table = LocalEndpoints::new();
        for key in 0..LOCAL_ENDPOINTS_MAX as u128 {
            assert_eq!(table.insert(RoutingKey(key), addr), Ok(None));
        }
        let over = RoutingKey(u128::MAX);
        assert_eq!(
            table.insert(over, addr),
            Err(LocalEndpointsFull { key: over })
        );
        assert_eq!(
            table.insert(RoutingKey(0), addr),
            Ok(Some(addr)),
            "replacing is allowed"
        );
        assert_eq!(table.get(RoutingKey(1)), Some(addr));
        assert_eq!(table.remove(RoutingKey(1)), Some(addr));
        assert_eq!(table.get(RoutingKey(1)), None);
    }
}
