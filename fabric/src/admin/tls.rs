//! TLS for the admin API: the certificate and key from PEM files, reloaded on SIGHUP without
//! dropping the listener, and a listener for `axum::serve` that completes TLS handshakes off
//! its accept loop.
//!
//! A reload that fails (a missing file, bad PEM, a key that does not match the certificate)
//! keeps the certificate in use, logs a warning and counts
//! `nexus_admin_tls_reloads_total{result="failed"}`. New connections get the certificate
//! current when their handshake starts; established ones keep theirs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake that has not finished in this time is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at most; further connections wait in the kernel's backlog.
pub const HANDSHAKES_MAX: usize = 256;
/// Completed handshakes waiting for the HTTP server at most.
const READY_MAX: usize = 64;
/// Largest PEM file read, bytes.
const PEM_BYTES_MAX: u64 = 1 << 20;

/// The admin API's certificate and key files (`admin_tls_cert`, `admin_tls_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate and key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The certificate file is unreadable or holds no PEM certificate.
    #[error("{0}")]
    Cert(String),
    /// The key file is unreadable, holds no PEM private key, or the key does not match the
    /// certificate.
    #[error("{0}")]
    Key(String),
}

impl LoadError {
    /// The config key the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            LoadError::Cert(_) => "admin_tls_cert",
            LoadError::Key(_) => "admin_tls_key",
        }
    }
}

#[allow(
    deprecated,
    reason = "the ring provider is the workspace's; rustls deprecates it only for lacking post-quantum key exchange"
)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    if meta.len() > PEM_BYTES_MAX {
        return Err(format!("{shown} is larger than {PEM_BYTES_MAX} bytes"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))
}

/// A PEM parse error in words (rustls shows the offending line as a list of byte values).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "the PEM section has no -----END {}----- line",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "a malformed PEM begin line ({})",
            String::from_utf8_lossy(line)
        ),
        Error::NoItemsFound => "no PEM item of the expected kind".into(),
        other => other.to_string(),
    }
}

/// Loads a certificate chain and its private key from PEM files, checking that the key
/// matches the leaf certificate.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, LoadError> {
    let cert_pem = read_pem(&files.cert).map_err(LoadError::Cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            LoadError::Cert(format!(
                "{} is not a PEM certificate chain: {}",
                files.cert.display(),
                pem_error(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(LoadError::Cert(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            files.cert.display()
        )));
    }
    let key_pem = read_pem(&files.key).map_err(LoadError::Key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        LoadError::Key(format!(
            "{} holds no usable PEM private key: {}",
            files.key.display(),
            pem_error(&e)
        ))
    })?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| LoadError::Key(format!("{}: {e}", files.key.display())))?;
    let certified = CertifiedKey::new(certs, key);
    certified.keys_match().map_err(|e| {
        LoadError::Key(format!(
            "{} does not match the certificate in {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

/// Counters of the admin API's TLS (`nexus_admin_tls_*`).
#[derive(Debug, Clone, Default)]
pub struct TlsMetrics {
    /// Handshakes that failed or timed out (plain HTTP to the TLS port, bad clients).
    pub handshake_failures: Counter,
    /// Certificate reloads by `result` (`ok`, `failed`).
    pub reloads: Family<Vec<(String, String)>, Counter>,
}

/// The admin API's TLS state: the files and the certificate in use. Outlives admin actor
/// restarts; shared by the listener (through [`AdminTls::server_config`]) and the node's
/// SIGHUP handler.
#[derive(Debug)]
pub struct AdminTls {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    metrics: TlsMetrics,
}

impl AdminTls {
    /// Loads the files (a failure here is a startup error).
    pub fn new(files: TlsFiles, metrics: TlsMetrics) -> Result<Arc<AdminTls>, LoadError> {
        let current = load(&files)?;
        Ok(Arc::new(AdminTls {
            files,
            current: RwLock::new(current),
            metrics,
        }))
    }

    /// The certificate and key in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A writer only swaps an Arc: a poisoned lock still holds a whole value.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on success new connections use the new certificate, on failure
    /// the old one stays (logged, counted). Returns whether the new files were taken.
    pub fn reload(&self) -> bool {
        let (result, ok) = match load(&self.files) {
            Ok(new) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
                tracing::info!(cert = %self.files.cert.display(), "admin TLS certificate reloaded");
                ("ok", true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin TLS certificate reload failed; keeping the certificate in use");
                ("failed", false)
            }
        };
        self.metrics
            .reloads
            .get_or_create(&vec![("result".to_owned(), result.to_owned())])
            .inc();
        ok
    }

    /// A rustls server configuration that picks the current certificate per handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration for the node's own users of its admin API: it accepts exactly
    /// the certificate the node serves at the time of the handshake (checking the handshake's
    /// signature with its key), whatever names it carries. Operators' clients verify the chain
    /// against a CA instead (`nexus ctl --ca-cert`).
    pub fn pinned_client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = provider();
        let verifier = Arc::new(PinnedVerifier {
            tls: self.clone(),
            algorithms: provider.signature_verification_algorithms,
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[derive(Debug)]
struct Resolver(Arc<AdminTls>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

#[derive(Debug)]
struct PinnedVerifier {
    tls: Arc<AdminTls>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let current = self.tls.current();
        if current.end_entity_cert().is_ok_and(|c| c == end_entity) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TCP listener whose connections come out TLS-terminated, for `axum::serve`. A task accepts
/// TCP connections and runs each handshake in its own task (at most [`HANDSHAKES_MAX`] at
/// once, each within [`HANDSHAKE_TIMEOUT`]), so a slow or silent client never holds up the
/// accept loop. Dropping the listener stops that task.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl TlsListener {
    /// Serves TLS on `listener` with `config`.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        metrics: TlsMetrics,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_MAX);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(HANDSHAKES_MAX));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, as axum's own loop does.
                        tracing::warn!(error = %e, "admin API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics.handshake_failures.inc();
                            tracing::debug!(%peer, error = %e, "admin API TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.handshake_failures.inc();
                            tracing::debug!(%peer, "admin API TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            acceptor: task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (only when the listener is dropped): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn pair(dir: &Path, tag: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        TlsFiles {
            cert: write(dir, &format!("{tag}.crt"), &cert.pem()),
            key: write(dir, &format!("{tag}.key"), &key.serialize_pem()),
        }
    }

    #[test]
    fn load_names_the_bad_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = pair(dir.path(), "a");
        let b = pair(dir.path(), "b");
        assert!(load(&a).is_ok());
        let missing = TlsFiles {
            cert: dir.path().join("nope.crt"),
            key: a.key.clone(),
        };
        assert_eq!(
            load(&missing).expect_err("missing").field(),
            "admin_tls_cert"
        );
        let garbage = TlsFiles {
            cert: write(dir.path(), "g.crt", "not pem"),
            key: a.key.clone(),
        };
        assert_eq!(
            load(&garbage).expect_err("garbage").field(),
            "admin_tls_cert"
        );
        let swapped = TlsFiles {
            cert: a.cert.clone(),
            key: a.cert.clone(),
        };
        assert_eq!(load(&swapped).expect_err("no key").field(), "admin_tls_key");
        let mismatch = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load(&mismatch).expect_err("mismatch");
        assert_eq!(e.field(), "admin_tls_key");
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = pair(dir.path(), "a");
        let metrics = TlsMetrics::default();
        let tls = AdminTls::new(a.clone(), metrics.clone()).expect("load");
        let before = tls.current();
        std::fs::write(&a.cert, "broken").expect("write");
        assert!(!tls.reload());
        assert!(Arc::ptr_eq(&before, &tls.current()));
        let b = pair(dir.path(), "b");
        std::fs::copy(&b.cert, &a.cert).expect("copy");
        std::fs::copy(&b.key, &a.key).expect("copy");
        assert!(tls.reload());
        assert!(!Arc::ptr_eq(&before, &tls.current()));
        let count = |result: &str| {
            metrics
                .reloads
                .get_or_create(&vec![("result".to_owned(), result.to_owned())])
                .get()
        };
        assert_eq!((count("ok"), count("failed")), (1, 1));
    }

    /// The node's own client (gateway, upstream services) accepts the certificate the listener
    /// serves, whatever names it carries (`localhost` here, reached as 127.0.0.1), follows a
    /// reload, and refuses another certificate.
    #[tokio::test]
    async fn the_pinned_client_accepts_exactly_the_served_certificate() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = pair(dir.path(), "a");
        let metrics = TlsMetrics::default();
        let tls = AdminTls::new(a.clone(), metrics.clone()).expect("load");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let listener = TlsListener::new(tcp, tls.server_config().expect("config"), metrics.clone())
            .expect("listener");
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = |config: rustls::ClientConfig| {
            reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client")
        };
        let url = format!("https://{addr}/");
        let own = client(tls.pinned_client_config().expect("pinned"));
        let get = |c: &reqwest::Client| c.get(&url).send();
        assert_eq!(
            get(&own).await.expect("served").text().await.expect("body"),
            "ok"
        );

        // A client pinned to another certificate refuses this one; the failure is counted.
        let b = pair(dir.path(), "b");
        let other = AdminTls::new(b.clone(), TlsMetrics::default()).expect("load");
        let stranger = client(other.pinned_client_config().expect("pinned"));
        assert!(get(&stranger).await.is_err());
        // The server sees the client's alert after the client has given up: wait for it.
        for _ in 0..100 {
            if metrics.handshake_failures.get() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.handshake_failures.get(), 1);

        // After a reload the node's own client accepts the new certificate on new connections.
        std::fs::copy(&b.cert, &a.cert).expect("copy");
        std::fs::copy(&b.key, &a.key).expect("copy");
        assert!(tls.reload());
        assert_eq!(get(&own).await.expect("served").status(), 200);
        assert_eq!(get(&stranger).await.expect("now pinned").status(), 200);
        server.abort();
    }
}
