//! The TLS configuration every baseline uses: the same as NexStream's handshake — TLS 1.3 only,
//! ring, X25519 only, both ends authenticated by Ed25519 raw public keys (RFC 7250), the client
//! pinning the server's key, no resumption, no tickets, no early data. Baselines therefore pay
//! the same handshake cryptography as NexStream; only NexStream adds its `Hello` with a MIC.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use nexus_stream::identity::{Identity, system_provider};

fn identity(key: &SigningKey) -> Identity {
    Identity::new(key.clone(), None).expect("an Ed25519 key makes an identity")
}

/// Server side: presents `key`, demands an Ed25519 raw key from the client.
pub fn server_config(key: &SigningKey, alpn: &[&[u8]]) -> rustls::ServerConfig {
    identity(key)
        .tls_server_config(Arc::new(system_provider()), alpn)
        .expect("NexStream's TLS configuration builds")
}

/// Client side: presents `key`, accepts only a server proving `server`'s key.
pub fn client_config(key: &SigningKey, server: [u8; 32], alpn: &[&[u8]]) -> rustls::ClientConfig {
    identity(key)
        .tls_client_config(Arc::new(system_provider()), server, alpn)
        .expect("NexStream's TLS configuration builds")
}
