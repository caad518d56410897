//! The TLS configuration every baseline uses: the same as NexStream's handshake — TLS 1.3 only,
//! ring, X25519 only, both ends authenticated by Ed25519 raw public keys (RFC 7250), the client
//! pinning the server's key, no resumption, no tickets, no early data. Baselines therefore pay
//! the same handshake cryptography as NexStream; only NexStream adds its `Hello` with a MIC.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use nexus_stream::identity::{ed25519_key_of, system_provider};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(system_provider())
}

fn certified(key: &SigningKey) -> Arc<CertifiedKey> {
    let pkcs8 = key
        .to_pkcs8_der()
        .expect("pkcs8 encoding of an Ed25519 key");
    let signer = rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(
        pkcs8.as_bytes().to_vec(),
    ))
    .expect("ring accepts an Ed25519 PKCS#8 key");
    let spki = key
        .verifying_key()
        .to_public_key_der()
        .expect("SPKI encoding of an Ed25519 key");
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki.as_bytes().to_vec())],
        signer,
    ))
}

/// Server side: presents `key`, demands an Ed25519 raw key from the client.
pub fn server_config(key: &SigningKey, alpn: &[&[u8]]) -> rustls::ServerConfig {
    let provider = provider();
    let verifier = Arc::new(AnyRawKey {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is in the provider")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified(key)),
        ));
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    tls
}

/// Client side: presents `key`, accepts only a server proving `server`.
pub fn client_config(key: &SigningKey, server: [u8; 32], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let provider = provider();
    let verifier = Arc::new(PinnedKey {
        expected: server,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is in the provider")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified(key)),
        ));
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    tls
}

fn bad_key() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

fn verify(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    ed25519_key_of(cert.as_ref()).ok_or_else(bad_key)?;
    rustls::crypto::verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        algorithms,
    )
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

#[derive(Debug)]
struct PinnedKey {
    expected: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match ed25519_key_of(end_entity.as_ref()) {
            Some(key) if key == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(bad_key()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct AnyRawKey {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyRawKey {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ed25519_key_of(end_entity.as_ref()).ok_or_else(bad_key)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}
