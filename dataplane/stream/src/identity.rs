//! The handshake's identities: Ed25519 node keys as RFC 7250 raw public keys in TLS 1.3.
//!
//! An [`Identity`] is a node's Ed25519 signing key, the credentials (MIC + attestations) it
//! presents in its `Hello`, and the rustls configuration built from them:
//!
//! - TLS 1.3 only, X25519 only (the default order offers P-384 first, which costs about five
//!   times the handshake CPU), the AES-128-GCM / ChaCha20-Poly1305 suites QUIC needs;
//! - both sides present raw public keys (the 44-byte SubjectPublicKeyInfo of the Ed25519 key)
//!   and both sides demand one from the peer; only Ed25519 handshake signatures are accepted;
//! - the client pins the server's key: the handshake fails unless the server proves the key the
//!   client expected (a node id from membership or a resolve answer);
//! - no session tickets, no session cache, no client resumption and no early data, so every
//!   connection runs a full handshake and every session's MIC is checked afresh — resumption
//!   cannot let a revoked peer back in.
//!
//! The raw-key rustls pieces (provider, key encoding, verifiers, configurations) live in
//! [`nexus_trust_core::tls`], shared with the CA's Raft links; this module adds NexStream's choices
//! (any key from a client, a pinned key for a server, the QUIC configurations) and the
//! credentials.
//!
//! The MIC itself is not in the TLS handshake (raw public keys carry only the key): it travels
//! in the `Hello` on each side's control stream ([`crate::wire::Hello`]), and the endpoint
//! checks that it certifies the key this handshake authenticated.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use nexus_trust_core::tls::{AnyKey, PinnedKey, TlsError};
pub use nexus_trust_core::tls::{ED25519_SPKI_PREFIX, ed25519_key_of, system_provider};
use nexus_trust_core::verify::Credentials;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

/// A raw key or configuration could not be built. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rustls refused the configuration or the key.
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
    /// The key could not be encoded (PKCS#8 / SubjectPublicKeyInfo).
    #[error("key encoding failed: {0}")]
    Encoding(String),
    /// quinn refused the rustls configuration (no QUIC-capable cipher suite).
    #[error("QUIC crypto configuration refused: {0}")]
    Quic(String),
    /// A setting of the endpoint's configuration is out of its range (nothing was built).
    #[error("endpoint configuration refused: {0}")]
    Config(String),
}

impl From<TlsError> for IdentityError {
    fn from(e: TlsError) -> Self {
        match e {
            TlsError::Tls(e) => IdentityError::Tls(e),
            TlsError::Encoding(e) => IdentityError::Encoding(e),
        }
    }
}

/// A node's identity on NexStream: its Ed25519 key and the credentials it presents.
pub struct Identity {
    key: SigningKey,
    certified: Arc<CertifiedKey>,
    credentials: Option<Credentials>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &hex_prefix(&self.node_id()))
            .field(
                "mic_serial",
                &self.credentials.as_ref().map(|c| c.mic.body.serial),
            )
            .finish()
    }
}

impl Identity {
    /// An identity for `key`, presenting `credentials` (a MIC for `key`, optionally with
    /// attestations). Without credentials the peer refuses the session unless it accepts
    /// uncertified peers ([`crate::EndpointConfig::require_mic`] = false).
    pub fn new(
        key: SigningKey,
        credentials: Option<Credentials>,
    ) -> Result<Identity, IdentityError> {
        let certified = nexus_trust_core::tls::certified_key(&key)?;
        Ok(Identity {
            key,
            certified,
            credentials,
        })
    }

    /// The node id: the Ed25519 public key.
    pub fn node_id(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The credentials this identity presents in its `Hello`.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Replaces the presented credentials (a renewed MIC). Sessions opened afterwards present
    /// the new ones; established sessions keep what they verified.
    pub fn set_credentials(&mut self, credentials: Option<Credentials>) {
        self.credentials = credentials;
    }

    /// A rustls server configuration with this identity's raw key: TLS 1.3 only, demands an
    /// Ed25519 raw key from every client, no tickets, no session cache, no early data, the
    /// given ALPN ids. NexStream's QUIC configuration is built from it; other TLS users (the
    /// benchmark's TCP and QUIC baselines) can take the same handshake.
    pub fn tls_server_config(
        &self,
        provider: Arc<CryptoProvider>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, IdentityError> {
        Ok(nexus_trust_core::tls::server_config(
            provider,
            self.certified.clone(),
            AnyKey,
            alpn,
        )?)
    }

    /// A rustls client configuration with this identity's raw key that accepts only a server
    /// proving `peer`'s key: TLS 1.3 only, no resumption, no early data, the given ALPN ids.
    pub fn tls_client_config(
        &self,
        provider: Arc<CryptoProvider>,
        peer: [u8; 32],
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig, IdentityError> {
        Ok(nexus_trust_core::tls::client_config(
            provider,
            self.certified.clone(),
            PinnedKey(peer),
            alpn,
        )?)
    }

    /// The quinn server crypto configuration: demands an Ed25519 raw key from every client.
    pub fn server_crypto(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<quinn_proto::crypto::rustls::QuicServerConfig>, IdentityError> {
        let tls = self.tls_server_config(provider, &[crate::ALPN])?;
        let quic = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| IdentityError::Quic(e.to_string()))?;
        Ok(Arc::new(quic))
    }

    /// The quinn client crypto configuration for a connection to the node `peer`: the
    /// handshake fails unless the server proves that key.
    pub fn client_crypto(
        &self,
        provider: Arc<CryptoProvider>,
        peer: [u8; 32],
    ) -> Result<Arc<quinn_proto::crypto::rustls::QuicClientConfig>, IdentityError> {
        let tls = self.tls_client_config(provider, peer, &[crate::ALPN])?;
        let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| IdentityError::Quic(e.to_string()))?;
        Ok(Arc::new(quic))
    }
}

/// Any key of a set: a routed session's accepted peers (the candidates a resolve answer named
/// for the capability class), since the data plane, not the client, picks the one it reaches.
#[derive(Debug, Clone)]
pub struct AnyOfKeys(pub Vec<[u8; 32]>);

impl nexus_trust_core::tls::KeyCheck for AnyOfKeys {
    fn check(&self, key: &[u8; 32]) -> Result<(), rustls::Error> {
        if self.0.contains(key) {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl Identity {
    /// The quinn client crypto configuration for a routed session: the handshake fails unless
    /// the server proves one of the keys in `accept`.
    pub fn client_crypto_any_of(
        &self,
        provider: Arc<CryptoProvider>,
        accept: Vec<[u8; 32]>,
    ) -> Result<Arc<quinn_proto::crypto::rustls::QuicClientConfig>, IdentityError> {
        let tls = nexus_trust_core::tls::client_config(
            provider,
            self.certified.clone(),
            AnyOfKeys(accept),
            &[crate::ALPN],
        )?;
        let quic = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| IdentityError::Quic(e.to_string()))?;
        Ok(Arc::new(quic))
    }
}

/// The first bytes of a key, in hex, for logs.
pub(crate) fn hex_prefix(key: &[u8; 32]) -> String {
    key[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_presents_its_key_as_a_raw_public_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let id = Identity::new(key.clone(), None).expect("identity");
        assert_eq!(id.node_id(), key.verifying_key().to_bytes());
        let spki = id.certified.cert[0].as_ref();
        assert_eq!(spki.len(), 44);
        assert_eq!(ed25519_key_of(spki), Some(id.node_id()));
    }
}
