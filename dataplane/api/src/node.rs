//! What the SDK asks of its local node: trust material and certificates over the admin HTTP
//! API, service registration and load reports, and intent resolution over the node's binary
//! NexAPI endpoint (one UDP datagram each way).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use nexus_registry::{Intent, LoadUpdate, Sad};
use nexus_trust_core::mic::{CaKeys, IssueRequest, Mic};
use nexus_trust_core::revocation::SignedRevocation;
use nexus_trust_core::verify::{Credentials, TrustUpdate};
use serde::Deserialize;
use tokio::net::UdpSocket;

use crate::error::Error;
use crate::wire::{ErrorCode, Limits, Message, ResolveAnswer};

/// The largest UDP payload: the receive buffer of a resolve answer.
const DATAGRAM_BYTES_MAX: usize = 65_535;

/// How to reach the local node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's admin API base URL, e.g. `http://127.0.0.1:7700` or `https://…` when the
    /// node serves TLS.
    pub admin: String,
    /// Bearer token (an ACL token's secret) of the admin API, if it requires one. The SDK needs
    /// the scopes `read`, `ca:issue` and, for services, `services:write`.
    pub token: Option<String>,
    /// PEM certificates trusted for an `https://` admin URL (the CA that signed the node's
    /// admin certificate). Without it and without `tls` no certificate is trusted.
    pub ca_cert: Option<Vec<u8>>,
    /// A complete TLS client configuration for the admin API; takes precedence over `ca_cert`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The node's local NexAPI endpoint (binary resolve), e.g. `127.0.0.1:7800`.
    pub api: SocketAddr,
    /// How long one resolve datagram waits for its answer before it is sent again.
    pub resolve_timeout: Duration,
    /// Resolve datagrams sent before giving up.
    pub resolve_attempts: u32,
}

impl NodeConfig {
    /// The node whose admin API is at `admin`: asks it (`GET /v1/node`) where its NexAPI
    /// endpoint listens.
    pub async fn discover(admin: &str, token: Option<String>) -> Result<NodeConfig, Error> {
        NodeConfig::discover_with_ca(admin, token, None).await
    }

    /// [`NodeConfig::discover`] for an `https://` admin URL: `ca_cert` holds the PEM
    /// certificates to trust.
    pub async fn discover_with_ca(
        admin: &str,
        token: Option<String>,
        ca_cert: Option<Vec<u8>>,
    ) -> Result<NodeConfig, Error> {
        let admin = admin.trim_end_matches('/');
        let probe = NodeConfig {
            ca_cert: ca_cert.clone(),
            ..NodeConfig::new(admin, SocketAddr::from(([127, 0, 0, 1], 0)))
        };
        let http = probe.http_client(Duration::from_secs(10))?;
        let mut request = http.get(format!("{admin}/v1/node"));
        if let Some(t) = &token {
            request = request.bearer_auth(t);
        }
        let node: serde_json::Value = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| Error::Node(format!("GET {admin}/v1/node: {e}")))?
            .json()
            .await
            .map_err(|e| Error::Node(format!("GET {admin}/v1/node: {e}")))?;
        let api = node["api"]
            .as_str()
            .ok_or_else(|| {
                Error::Node(format!(
                    "the node at {admin} has no NexAPI endpoint (its [api] listen is off)"
                ))
            })?
            .parse()
            .map_err(|e| Error::Node(format!("the node's NexAPI address: {e}")))?;
        Ok(NodeConfig {
            token,
            ca_cert,
            ..NodeConfig::new(admin, api)
        })
    }

    /// An HTTP client for the admin API with this configuration's TLS trust.
    pub fn http_client(&self, timeout: Duration) -> Result<reqwest::Client, Error> {
        self.http_builder(reqwest::Client::builder().timeout(timeout))
    }

    /// `builder` with this configuration's TLS trust.
    fn http_builder(&self, mut builder: reqwest::ClientBuilder) -> Result<reqwest::Client, Error> {
        if let Some(tls) = &self.tls {
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(tls));
        } else if let Some(pem) = &self.ca_cert {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Node(format!("the admin CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Node(
                    "the admin CA certificate holds no PEM certificate".into(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
            .build()
            .map_err(|e| Error::Node(format!("HTTP client: {e}")))
    }

    /// The node at `admin` with its NexAPI endpoint at `api`, no token.
    pub fn new(admin: impl Into<String>, api: SocketAddr) -> NodeConfig {
        NodeConfig {
            admin: admin.into().trim_end_matches('/').to_owned(),
            token: None,
            ca_cert: None,
            tls: None,
            api,
            resolve_timeout: Duration::from_millis(250),
            resolve_attempts: 4,
        }
    }
}

/// How long a service's link waits for its first answer (the node's admin API is local).
const LINK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A service link that has carried nothing for this many of the node's heartbeat periods is
/// taken for dead.
const LINK_SILENT_HEARTBEATS: u32 = 5;
/// The least time a service link may stay silent before it is taken for dead.
const LINK_SILENCE_MIN: Duration = Duration::from_secs(1);
/// Longest heartbeat period a node may announce on a service link, milliseconds.
const LINK_HEARTBEAT_MS_MAX: u64 = 60_000;
/// Longest first line of a service link.
const LINK_FIRST_LINE_BYTES_MAX: usize = 4096;

/// A service's open link to its node (`GET /v1/services/{id}/link`): while it is open the node
/// knows the service's process is alive, and when the connection closes (the process died) the
/// node withdraws the service. The node writes a heartbeat line every `heartbeat`.
#[derive(Debug)]
pub struct ServiceLink {
    response: reqwest::Response,
    heartbeat: Duration,
}

impl ServiceLink {
    /// The node's heartbeat period on this link.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Waits until the link ends: the node closed it, the connection failed, or nothing
    /// arrived for [`LINK_SILENT_HEARTBEATS`] heartbeats (at least [`LINK_SILENCE_MIN`]).
    /// Says why.
    pub async fn closed(mut self) -> Error {
        let silence = (self.heartbeat * LINK_SILENT_HEARTBEATS).max(LINK_SILENCE_MIN);
        loop {
            match tokio::time::timeout(silence, self.response.chunk()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Error::Node("the node closed the service link".into()),
                Ok(Err(e)) => return Error::Node(format!("service link: {e}")),
                Err(_) => {
                    return Error::Node(format!(
                        "service link: no heartbeat from the node for {silence:?}"
                    ));
                }
            }
        }
    }
}

/// A connection to the local node.
#[derive(Debug)]
pub struct NodeClient {
    config: NodeConfig,
    http: reqwest::Client,
    /// For service links: no overall timeout (a link stays open while the service runs).
    link_http: reqwest::Client,
    resolver: UdpSocket,
    call: AtomicU64,
    revocations_after: AtomicU64,
}

#[derive(Deserialize)]
struct CaKeyEntry {
    ca_key_id: u32,
    public_key: String,
}

#[derive(Deserialize)]
struct CaKeysDto {
    keys: Vec<CaKeyEntry>,
}

#[derive(Deserialize)]
struct RevocationList {
    revocations: Vec<SignedRevocation>,
    next_after: Option<u64>,
}

#[derive(Deserialize)]
struct MicDto {
    mic: Mic,
}

#[derive(Deserialize)]
struct ProblemDto {
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: String,
}

impl NodeClient {
    /// A client of the node `config` names. Nothing is sent yet.
    pub async fn new(config: NodeConfig) -> Result<NodeClient, Error> {
        let http = config.http_client(Duration::from_secs(10))?;
        let link_http = config
            .http_builder(reqwest::Client::builder().connect_timeout(LINK_CONNECT_TIMEOUT))?;
        let bind: SocketAddr = if config.api.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        }
        .parse()
        .map_err(|e| Error::Node(format!("{e}")))?;
        let resolver = UdpSocket::bind(bind)
            .await
            .map_err(|e| Error::Node(format!("resolve socket: {e}")))?;
        resolver
            .connect(config.api)
            .await
            .map_err(|e| Error::Node(format!("resolve socket to {}: {e}", config.api)))?;
        Ok(NodeClient {
            config,
            http,
            link_http,
            resolver,
            call: AtomicU64::new(1),
            revocations_after: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.config.admin));
        match &self.config.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Error> {
        let response = request
            .send()
            .await
            .map_err(|e| Error::Node(format!("{what}: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Node(format!("{what}: {e}")))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ProblemDto>(&body)
                .map(|p| format!("{}: {}", p.title, p.detail))
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(Error::Node(format!("{what}: HTTP {status}: {detail}")));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Node(format!("{what}: answer: {e}")))
    }

    /// The CA keys and every revocation the node holds (the first call), or the revocations
    /// issued since the previous call.
    pub async fn trust_update(&self) -> Result<TrustUpdate, Error> {
        let keys: CaKeysDto = self
            .send("CA keys", self.request(reqwest::Method::GET, "/v1/ca/keys"))
            .await?;
        let mut ca_keys = CaKeys::new();
        for k in keys.keys {
            let bytes: [u8; 32] = hex::decode(&k.public_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    Error::Node(format!("CA key {} is not 32 hex bytes", k.ca_key_id))
                })?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|e| Error::Node(format!("CA key {}: {e}", k.ca_key_id)))?;
            ca_keys.insert(k.ca_key_id, key);
        }
        let mut revocations = Vec::new();
        let mut after = self.revocations_after.load(Ordering::Relaxed);
        loop {
            let page: RevocationList = self
                .send(
                    "revocations",
                    self.request(
                        reqwest::Method::GET,
                        &format!("/v1/ca/revocations?after={after}&limit=1000"),
                    ),
                )
                .await?;
            if let Some(last) = page.revocations.last() {
                after = after.max(last.seq);
            }
            revocations.extend(page.revocations);
            match page.next_after {
                Some(next) => after = next,
                None => break,
            }
        }
        self.revocations_after.store(after, Ordering::Relaxed);
        Ok(TrustUpdate {
            ca_keys,
            circuits: Vec::new(),
            revocations,
        })
    }

    /// Has the fabric's CA certify `request.subject_key`.
    pub async fn issue(&self, request: &IssueRequest) -> Result<Credentials, Error> {
        let dto: MicDto = self
            .send(
                "certificate issuance",
                self.request(reqwest::Method::POST, "/v1/ca/certs")
                    .json(request),
            )
            .await?;
        Ok(Credentials {
            mic: dto.mic,
            attestations: Vec::new(),
        })
    }

    /// Waits until the node's own trust context holds CA key `ca_key_id` (right after the CA
    /// bootstraps, a node may not have fetched it yet and would refuse credentials it signed).
    pub async fn wait_for_ca_key(&self, ca_key_id: u32, within: Duration) -> Result<(), Error> {
        #[derive(Deserialize)]
        struct TrustDto {
            ca_keys: Vec<CaKeyEntry>,
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let trust: Result<TrustDto, Error> = self
                .send(
                    "node trust",
                    self.request(reqwest::Method::GET, "/v1/node/trust"),
                )
                .await;
            match trust {
                Ok(t) if t.ca_keys.iter().any(|k| k.ca_key_id == ca_key_id) => return Ok(()),
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(_) => {
                    return Err(Error::Node(format!(
                        "the node does not trust CA key {ca_key_id} after {within:?}"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Registers (or renews) a service on the node with `credentials` advertised.
    pub async fn register(&self, sad: &Sad, credentials: &Credentials) -> Result<(), Error> {
        let mut body = serde_json::to_value(sad).map_err(|e| Error::Node(format!("{e}")))?;
        let creds = serde_json::json!({
            "mic": hex::encode(credentials.mic.encode()),
            "attestations": credentials
                .attestations
                .iter()
                .map(|a| hex::encode(a.encode()))
                .collect::<Vec<_>>(),
        });
        if let Some(o) = body.as_object_mut() {
            o.insert("credentials".into(), creds);
        }
        let _: serde_json::Value = self
            .send(
                "service registration",
                self.request(reqwest::Method::POST, "/v1/services")
                    .json(&body),
            )
            .await?;
        Ok(())
    }

    /// Reports a service's load.
    pub async fn report_load(&self, service: &str, load: &LoadUpdate) -> Result<(), Error> {
        let _: serde_json::Value = self
            .send(
                "load report",
                self.request(
                    reqwest::Method::PATCH,
                    &format!("/v1/services/{service}/load"),
                )
                .json(load),
            )
            .await?;
        Ok(())
    }

    /// Opens the link of `service`, registered on this node: the node withdraws the service
    /// when the link's connection closes (see [`ServiceLink`]). Fails if the node does not know
    /// the service (register it first).
    pub async fn link(&self, service: &str) -> Result<ServiceLink, Error> {
        #[derive(Deserialize)]
        struct First {
            heartbeat_ms: u64,
        }
        let what = "service link";
        let mut request = self
            .link_http
            .get(format!("{}/v1/services/{service}/link", self.config.admin));
        if let Some(t) = &self.config.token {
            request = request.bearer_auth(t);
        }
        let response = tokio::time::timeout(LINK_CONNECT_TIMEOUT, request.send())
            .await
            .map_err(|_| Error::Node(format!("{what}: no answer in {LINK_CONNECT_TIMEOUT:?}")))?
            .map_err(|e| Error::Node(format!("{what}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Node(format!("{what}: HTTP {status}")));
        }
        let mut response = response;
        let mut line = Vec::new();
        while !line.contains(&b'\n') {
            let chunk = tokio::time::timeout(LINK_CONNECT_TIMEOUT, response.chunk())
                .await
                .map_err(|_| {
                    Error::Node(format!("{what}: no first line in {LINK_CONNECT_TIMEOUT:?}"))
                })?
                .map_err(|e| Error::Node(format!("{what}: {e}")))?
                .ok_or_else(|| Error::Node(format!("{what}: closed before its first line")))?;
            line.extend_from_slice(&chunk);
            if line.len() > LINK_FIRST_LINE_BYTES_MAX {
                return Err(Error::Node(format!(
                    "{what}: a first line longer than {LINK_FIRST_LINE_BYTES_MAX} bytes"
                )));
            }
        }
        let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
        let first: First = serde_json::from_slice(&line[..end])
            .map_err(|e| Error::Node(format!("{what}: first line: {e}")))?;
        if first.heartbeat_ms == 0 || first.heartbeat_ms > LINK_HEARTBEAT_MS_MAX {
            return Err(Error::Node(format!(
                "{what}: a heartbeat of {} ms (1..={LINK_HEARTBEAT_MS_MAX} expected)",
                first.heartbeat_ms
            )));
        }
        Ok(ServiceLink {
            response,
            heartbeat: Duration::from_millis(first.heartbeat_ms),
        })
    }

    /// Withdraws a service.
    pub async fn withdraw(&self, service: &str) -> Result<(), Error> {
        let response = self
            .request(reqwest::Method::DELETE, &format!("/v1/services/{service}"))
            .send()
            .await
            .map_err(|e| Error::Node(format!("withdraw: {e}")))?;
        if response.status().is_success() || response.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Error::Node(format!("withdraw: HTTP {}", response.status())))
        }
    }

    /// Resolves `intent` over the node's binary NexAPI endpoint: one datagram each way, sent
    /// again after [`NodeConfig::resolve_timeout`] up to [`NodeConfig::resolve_attempts`]
    /// times.
    pub async fn resolve(&self, intent: &Intent) -> Result<ResolveAnswer, Error> {
        let call = self.call.fetch_add(1, Ordering::Relaxed);
        let request = Message::Resolve {
            call,
            intent: Box::new(intent.clone()),
        }
        .encode();
        // Filled by `recv_buf`, so it is not zeroed first (64 KiB per resolve).
        let mut buf = Vec::with_capacity(DATAGRAM_BYTES_MAX);
        for _ in 0..self.config.resolve_attempts.max(1) {
            self.resolver
                .send(&request)
                .await
                .map_err(|e| Error::Node(format!("resolve to {}: {e}", self.config.api)))?;
            let deadline = tokio::time::Instant::now() + self.config.resolve_timeout;
            loop {
                buf.clear();
                let received =
                    tokio::time::timeout_at(deadline, self.resolver.recv_buf(&mut buf)).await;
                let n = match received {
                    Err(_) => break,
                    // ICMP port unreachable: nothing listens there.
                    Ok(Err(e)) => {
                        return Err(Error::Node(format!(
                            "resolve at {}: {e} (is the node's [api] listener on?)",
                            self.config.api
                        )));
                    }
                    Ok(Ok(n)) => n,
                };
                let answer =
                    Message::decode(&Bytes::copy_from_slice(&buf[..n]), &Limits::default());
                match answer {
                    Ok(Message::Answer(a)) if a.call == call => return Ok(a),
                    Ok(Message::Error(e)) if e.call == call || e.call == 0 => {
                        return Err(Error::Api(e));
                    }
                    // A late answer to an earlier attempt, or noise: keep waiting.
                    _ => {}
                }
            }
        }
        Err(Error::Api(crate::wire::ApiError::new(
            call,
            ErrorCode::Unavailable,
            format!(
                "no resolve answer from {} after {} attempts",
                self.config.api, self.config.resolve_attempts
            ),
        )))
    }
}
