//! Ed25519 node keys as RFC 7250 raw public keys in TLS 1.3 (rustls with the ring provider).
//!
//! The building blocks every raw-key TLS user of the workspace shares — the CA's Raft links
//! (`nexus_trust::raft::TlsTransport`) and NexStream's QUIC handshake. Built with the crate's
//! `tls` feature; it builds configurations and checks keys, and opens no connection:
//!
//! - [`system_provider`]: TLS 1.3 suites only, X25519 only (the default order offers P-384
//!   first, which costs about five times the handshake CPU);
//! - [`certified_key`]: a node's Ed25519 signing key as a raw-public-key "certificate" (the
//!   44-byte SubjectPublicKeyInfo) with its signer;
//! - [`server_config`] / [`client_config`]: both sides present raw public keys and both demand
//!   one from the peer; only Ed25519 handshake signatures are accepted; no session tickets, no
//!   session cache, no resumption and no early data, so every connection runs a full handshake
//!   and every peer key is checked afresh;
//! - [`KeyCheck`]: which peer keys a verifier accepts — [`AnyKey`] (any well-formed Ed25519
//!   key that signs the handshake), [`PinnedKey`] (exactly one), or a live set such as the CA's
//!   `nexus_trust::raft::LinkPolicy`. A refused key fails the handshake with a fatal alert
//!   (`access_denied` for a well-formed key that is not accepted, `bad_certificate` for one
//!   that is not an Ed25519 key) before any application byte is read.
//!
//! What this module does not do: X.509 certificates, TLS 1.2, or binding a MIC to the key (a
//! raw key carries only the key; callers that need a MIC check it after the handshake).

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
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
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A raw key or a TLS configuration could not be built. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration or the key.
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
    /// The key could not be encoded (PKCS#8 / SubjectPublicKeyInfo).
    #[error("key encoding failed: {0}")]
    Encoding(String),
}

/// The crypto provider of raw-key TLS: ring, TLS 1.3 suites, X25519 only; randomness from the
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

/// `key` as a raw-public-key certified key: its SubjectPublicKeyInfo and an Ed25519 signer.
pub fn certified_key(key: &SigningKey) -> Result<Arc<CertifiedKey>, TlsError> {
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| TlsError::Encoding(e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(
        pkcs8.as_bytes().to_vec(),
    ))?;
    let spki = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| TlsError::Encoding(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki.as_bytes().to_vec())],
        signer,
    )))
}

/// Extracts the Ed25519 key from a raw-public-key "certificate" (its SubjectPublicKeyInfo).
/// `None` unless it is exactly the 12-byte Ed25519 prefix followed by a valid curve point.
pub fn ed25519_key_of(spki: &[u8]) -> Option<[u8; 32]> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key: [u8; 32] = key.try_into().ok()?;
    // A valid point; strict checks happen in the handshake signature verification.
    VerifyingKey::from_bytes(&key).ok()?;
    Some(key)
}

/// Which peer keys a verifier accepts. Called during the handshake, after the peer's raw key
/// parsed as Ed25519 and before its handshake signature is checked; an `Err` aborts the
/// handshake.
pub trait KeyCheck: fmt::Debug + Send + Sync {
    /// Accepts or refuses `key`.
    fn check(&self, key: &[u8; 32]) -> Result<(), rustls::Error>;
}

/// Any well-formed Ed25519 key that signs the handshake (authorization happens later).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyKey;

impl KeyCheck for AnyKey {
    fn check(&self, _key: &[u8; 32]) -> Result<(), rustls::Error> {
        Ok(())
    }
}

/// Exactly one key: the client's pin of the node it meant to reach.
#[derive(Debug, Clone, Copy)]
pub struct PinnedKey(pub [u8; 32]);

impl KeyCheck for PinnedKey {
    fn check(&self, key: &[u8; 32]) -> Result<(), rustls::Error> {
        if *key == self.0 {
            Ok(())
        } else {
            Err(refused_key())
        }
    }
}

impl<C: KeyCheck + ?Sized> KeyCheck for Arc<C> {
    fn check(&self, key: &[u8; 32]) -> Result<(), rustls::Error> {
        (**self).check(key)
    }
}

/// The error a [`KeyCheck`] returns for a well-formed key it does not accept.
pub fn refused_key() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

/// A rustls server configuration presenting `certified` as a raw key: TLS 1.3 only, demands an
/// Ed25519 raw key from every client and accepts it only if `clients` does, no tickets, no
/// session cache, no early data, the given ALPN ids.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    clients: impl KeyCheck + 'static,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = Arc::new(RawKeyVerifier {
        check: clients,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified),
        ));
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    Ok(tls)
}

/// A rustls client configuration presenting `certified` as a raw key that accepts a server
/// only if `servers` accepts its key: TLS 1.3 only, no resumption, no early data, the given
/// ALPN ids.
pub fn client_config(
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    servers: impl KeyCheck + 'static,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let verifier = Arc::new(RawKeyVerifier {
        check: servers,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified),
        ));
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    Ok(tls)
}

/// The Ed25519 key a peer proved on an established rustls connection (`None` before the
/// handshake or if the peer presented something else).
pub fn peer_key_of(conn: &rustls::CommonState) -> Option<[u8; 32]> {
    match conn.peer_certificates()? {
        [only] => ed25519_key_of(only.as_ref()),
        _ => None,
    }
}

fn bad_key() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

/// The peer's raw key, checked: exactly one SubjectPublicKeyInfo, Ed25519, accepted by `check`.
fn checked_key(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    check: &dyn KeyCheck,
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(bad_key());
    }
    let key = ed25519_key_of(end_entity.as_ref()).ok_or_else(bad_key)?;
    check.check(&key)
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

/// Both sides' verifier: raw Ed25519 keys only, accepted by `check`, TLS 1.3 signatures only.
#[derive(Debug)]
struct RawKeyVerifier<C> {
    check: C,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The trait methods both verifier roles share.
macro_rules! raw_ed25519_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            // Unreachable with a TLS 1.3-only configuration; refused all the same.
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

impl<C: KeyCheck> ServerCertVerifier for RawKeyVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        checked_key(end_entity, intermediates, &self.check)?;
        Ok(ServerCertVerified::assertion())
    }

    raw_ed25519_signatures!();
}

impl<C: KeyCheck> ClientCertVerifier for RawKeyVerifier<C> {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        checked_key(end_entity, intermediates, &self.check)?;
        Ok(ClientCertVerified::assertion())
    }

    raw_ed25519_signatures!();
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
        assert_eq!(&spki.as_bytes()[..12], &ED25519_SPKI_PREFIX);
        assert_eq!(
            ed25519_key_of(spki.as_bytes()),
            Some(key.verifying_key().to_bytes())
        );
        assert_eq!(ed25519_key_of(&spki.as_bytes()[..43]), None);
        let mut long = spki.as_bytes().to_vec();
        long.push(0);
        assert_eq!(ed25519_key_of(&long), None);
        let mut wrong_alg = spki.as_bytes().to_vec();
        wrong_alg[8] = 0x71; // id-Ed448
        assert_eq!(ed25519_key_of(&wrong_alg), None);
        assert_eq!(ed25519_key_of(&[]), None);
    }

    #[test]
    fn checks_accept_and_refuse() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert!(AnyKey.check(&a).is_ok());
        assert!(PinnedKey(a).check(&a).is_ok());
        assert_eq!(PinnedKey(a).check(&b), Err(refused_key()));
        let shared: Arc<dyn KeyCheck> = Arc::new(PinnedKey(b));
        assert!(shared.check(&b).is_ok());
        assert!(shared.check(&a).is_err());
    }

    #[test]
    fn configs_build_tls13_only_without_resumption() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let certified = certified_key(&key).expect("certified key");
        let provider = Arc::new(system_provider());
        let server =
            server_config(provider.clone(), certified.clone(), AnyKey, &[b"x"]).expect("server");
        assert_eq!(server.send_tls13_tickets, 0);
        assert_eq!(server.max_early_data_size, 0);
        assert_eq!(server.alpn_protocols, vec![b"x".to_vec()]);
        let client = client_config(provider, certified, PinnedKey([0; 32]), &[]).expect("client");
        assert!(!client.enable_early_data);
    }
}
