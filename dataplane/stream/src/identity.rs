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
//! The MIC itself is not in the TLS handshake (raw public keys carry only the key): it travels
//! in the `Hello` on each side's control stream ([`crate::wire::Hello`]), and the endpoint
//! checks that it certifies the key this handshake authenticated.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use nexus_trust::verify::Credentials;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE, AlgorithmIdentifier
/// id-Ed25519, BIT STRING of 33 bytes (a zero unused-bits byte, then the key).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

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
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|e| IdentityError::Encoding(e.to_string()))?;
        let signer = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(
            pkcs8.as_bytes().to_vec(),
        ))?;
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| IdentityError::Encoding(e.to_string()))?;
        let certified = Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(spki.as_bytes().to_vec())],
            signer,
        ));
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
        let verifier = Arc::new(RawKeyClientVerifier {
            algorithms: provider.signature_verification_algorithms,
        });
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(
                rustls::server::AlwaysResolvesServerRawPublicKeys::new(self.certified.clone()),
            ));
        tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
        tls.max_early_data_size = 0;
        Ok(tls)
    }

    /// A rustls client configuration with this identity's raw key that accepts only a server
    /// proving `peer`'s key: TLS 1.3 only, no resumption, no early data, the given ALPN ids.
    pub fn tls_client_config(
        &self,
        provider: Arc<CryptoProvider>,
        peer: [u8; 32],
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig, IdentityError> {
        let verifier = Arc::new(PinnedServerVerifier {
            expected: peer,
            algorithms: provider.signature_verification_algorithms,
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(
                rustls::client::AlwaysResolvesClientRawPublicKeys::new(self.certified.clone()),
            ));
        tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        tls.resumption = rustls::client::Resumption::disabled();
        tls.enable_early_data = false;
        Ok(tls)
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

/// The crypto provider NexStream uses: ring, TLS 1.3 suites, X25519 only; randomness from the
/// operating system.
#[allow(
    deprecated,
    reason = "ring's provider without post-quantum groups is what X25519-only pinning wants"
)]
pub fn system_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    provider
        .cipher_suites
        .retain(|s| s.version() == &rustls::version::TLS13);
    provider
}

/// Extracts the Ed25519 key from a raw-public-key "certificate" (its SubjectPublicKeyInfo).
pub fn ed25519_key_of(spki: &[u8]) -> Option<[u8; 32]> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key: [u8; 32] = key.try_into().ok()?;
    // A valid point; strict checks happen in the handshake signature verification.
    VerifyingKey::from_bytes(&key).ok()?;
    Some(key)
}

fn bad_key() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

fn verify_ed25519(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    ed25519_key_of(cert.as_ref()).ok_or_else(bad_key)?;
    rustls::crypto::verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        algorithms,
    )
}

/// The trait methods both verifiers share: TLS 1.2 refused (QUIC is TLS 1.3 only), Ed25519
/// handshake signatures over raw keys, raw public keys required.
macro_rules! raw_ed25519_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls13RequiredForQuic,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_ed25519(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }

        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    };
}

/// Client side: the server must prove exactly the expected node key.
#[derive(Debug)]
struct PinnedServerVerifier {
    expected: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(bad_key());
        }
        match ed25519_key_of(end_entity.as_ref()) {
            Some(key) if key == self.expected => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            None => Err(bad_key()),
        }
    }

    raw_ed25519_signatures!();
}

/// Server side: any well-formed Ed25519 raw key that signs the handshake; whether it is
/// certified is decided by the `Hello` that follows.
#[derive(Debug)]
struct RawKeyClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RawKeyClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(bad_key());
        }
        ed25519_key_of(end_entity.as_ref()).ok_or_else(bad_key)?;
        Ok(ClientCertVerified::assertion())
    }

    raw_ed25519_signatures!();
}

/// The first bytes of a key, in hex, for logs.
pub(crate) fn hex_prefix(key: &[u8; 32]) -> String {
    key[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trip_and_refusals() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .expect("encode spki");
        assert_eq!(spki.as_bytes().len(), 44);
        assert_eq!(
            ed25519_key_of(spki.as_bytes()),
            Some(key.verifying_key().to_bytes())
        );
        assert_eq!(ed25519_key_of(&spki.as_bytes()[..43]), None);
        let mut wrong_alg = spki.as_bytes().to_vec();
        wrong_alg[8] = 0x71; // id-Ed448
        assert_eq!(ed25519_key_of(&wrong_alg), None);
        assert_eq!(ed25519_key_of(&[]), None);
    }
}
