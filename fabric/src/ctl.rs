//! `nexus ctl`: a thin client of the admin API. Tables for people, `--json` for scripts (the
//! API's JSON, pretty-printed, alone on stdout); errors on stderr with the exit codes of
//! [`error::CtlExit`].

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

use nexus_registry::{Attested, CredentialsJson, Intent, LoadUpdate, Preferences, Sad};

use crate::api::{
    Actors, Health, LeaveRequest, LeaveResponse, Members, Node, Problem, Registration,
    ResolveResponse, ServiceDto, Services, WithdrawResponse,
};
use crate::config::TOKEN_ENV;

/// `print!` to stdout; a closed pipe (`nexus ctl members | head -1`) ends the process quietly
/// (exit 0) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::ctl::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` with [`out!`]'s handling of a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::ctl::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod acl;
pub mod ca;
pub mod error;
pub mod keyring;
pub mod output;
pub mod send;

pub use error::{CtlError, CtlExit, usage};
pub use output::{Table, print_json};
pub use send::{SendArgs, data_frame};

/// The exit-code table of `nexus ctl`, shown by `--help` and in the man pages.
pub const CTL_EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the node answered with an error (HTTP 4xx/5xx other than 401
     and 403), or the outcome is a failure (a keyring change some
     member did not take, unanswered probe messages)
  2  usage or local input error (bad flag or value, unreadable or
     malformed file)
  3  the node cannot be reached (connection refused, timeout, TLS or
     DNS failure)
  4  the node refused the credentials (HTTP 401 or 403)

Tables show times as RFC 3339 UTC with a relative age; --json prints
the API's JSON. States are coloured only when stdout is a terminal
and NO_COLOR is unset.";

/// Environment variable naming the PEM file `nexus ctl --ca-cert` reads.
pub const CA_CERT_ENV: &str = "NEXUS_CA_CERT";

/// `nexus ctl` flags.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = CTL_EXIT_CODES)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(
        long,
        env = "NEXUS_ADMIN",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    pub admin: String,
    /// Bearer token for the admin API (an ACL token's secret, or the node's admin_token).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM file of the CA certificate(s) to trust for an `https://` admin URL.
    #[arg(long, value_name = "PEM", env = CA_CERT_ENV, global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Print the API's JSON (pretty-printed, nothing else on stdout) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `nexus ctl` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// Show this node (id, addresses, incarnation).
    Node,
    /// Check the node's health (`GET /v1/health`, open without a token): exit 0 when every
    /// actor runs, 1 while one restarts, 3 when the node cannot be reached (container health
    /// checks).
    Health,
    /// List the members this node sees.
    Members,
    /// Show the supervision tree with restart counts.
    Actors,
    /// Make the node leave the fabric gracefully (it then exits).
    Leave {
        /// Reason recorded in the node's log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send NexLink data frames for a routing key to a node's data plane (`--dataplane`).
    Send(SendArgs),
    /// Register, list, update and withdraw services on the node.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Resolve an intent to ranked endpoints.
    Resolve(ResolveArgs),
    /// The certificate authority: status, issue, get, list, renew, revoke, keys, voters.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// ZK attestations: commit to model properties, prove predicates, export for snarkjs.
    #[command(subcommand)]
    Attest(ca::AttestCommand),
    /// ACL tokens: create, list, revoke (needs the management scope).
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// The gossip keyring of the whole fabric: list, install, use, remove (operator scope).
    #[command(subcommand)]
    Keyring(keyring::KeyringCommand),
    /// NexStream sessions: list them (default), or probe a peer over one.
    Sessions {
        /// What to do (default: list).
        #[command(subcommand)]
        command: Option<SessionsCommand>,
    },
}

/// `nexus ctl sessions` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum SessionsCommand {
    /// List the node's sessions (peer, MIC serial, RTT, window, bytes, losses).
    List,
    /// Exchange numbered messages with a peer in one delivery mode and report round trips.
    Probe {
        /// The peer: a node id (64 hex digits) or a member name.
        #[arg(long)]
        peer: String,
        /// Delivery mode: ro (reliable-ordered), ru (reliable-unordered), be (best-effort), pr
        /// (probabilistic).
        #[arg(long, default_value = "ro")]
        mode: String,
        /// Messages to send.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Bytes per message.
        #[arg(long, default_value_t = 1024)]
        bytes: usize,
        /// Delivery probability per direction (mode pr only).
        #[arg(long)]
        probability: Option<f64>,
        /// How long to wait for the answers, ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

/// `nexus ctl service` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum ServiceCommand {
    /// Register (or renew) a service described by a TOML or JSON file (see docs/sad.md),
    /// optionally with its credentials (MIC and attestations, checked by the node).
    Register {
        /// The descriptor file (`.json` is read as JSON, anything else as TOML).
        #[arg(long, value_name = "PATH")]
        file: std::path::PathBuf,
        /// The service's MIC: its binary encoding, or that encoding as hex text.
        #[arg(long, value_name = "PATH")]
        mic_file: Option<std::path::PathBuf>,
        /// An attestation over the MIC's commitment (binary or hex, 133 bytes); repeatable.
        #[arg(long = "attestation-file", value_name = "PATH", requires = "mic_file")]
        attestation_files: Vec<std::path::PathBuf>,
    },
    /// List services: the fabric-wide view, or `--local` for this node's registrations.
    List {
        /// Only services registered on this node.
        #[arg(long)]
        local: bool,
    },
    /// Withdraw a service registered on this node.
    Deregister {
        /// Service id.
        id: String,
    },
    /// Update a service's load and latency (renews its lease).
    Load {
        /// Service id.
        id: String,
        /// Requests queued.
        #[arg(long)]
        queue_depth: Option<u32>,
        /// Utilisation, percent (0–100).
        #[arg(long)]
        utilization_pct: Option<u8>,
        /// Measured median latency, ms.
        #[arg(long)]
        latency_ms_p50: Option<u32>,
        /// Measured 99th-percentile latency, ms.
        #[arg(long)]
        latency_ms_p99: Option<u32>,
    },
}

/// `nexus ctl resolve` flags (the intent's fields; see docs/sad.md).
#[derive(Args, Debug, Clone)]
pub struct ResolveArgs {
    /// Task tag, e.g. `llm.code`.
    #[arg(long)]
    pub task: String,
    /// Smallest acceptable context window, tokens.
    #[arg(long)]
    pub min_context: Option<u32>,
    /// Largest acceptable median latency, ms.
    #[arg(long)]
    pub max_latency_ms: Option<u32>,
    /// Largest acceptable 99th-percentile latency, ms.
    #[arg(long)]
    pub max_latency_p99_ms: Option<u32>,
    /// Largest acceptable price, micro-units per 1k tokens.
    #[arg(long)]
    pub max_price: Option<u64>,
    /// Required modality (repeatable).
    #[arg(long = "modality")]
    pub modalities: Vec<String>,
    /// Required region.
    #[arg(long)]
    pub region: Option<String>,
    /// Required model family.
    #[arg(long)]
    pub model_family: Option<String>,
    /// Only services with a verified, unexpired, unrevoked MIC.
    #[arg(long)]
    pub require_mic: bool,
    /// Accept only MICs from this publisher (repeatable: any of them).
    #[arg(long = "publisher", value_name = "NAME")]
    pub publishers: Vec<String>,
    /// Require a verified attestation proving "score ≥ N" (per mille, 0–1000).
    #[arg(long, value_name = "N")]
    pub attested_min_score: Option<u16>,
    /// With `--attested-min-score`: the proven predicate must include "safety passed".
    #[arg(long, requires = "attested_min_score")]
    pub require_safety: bool,
    /// How many endpoints to return.
    #[arg(long)]
    pub k: Option<u32>,
    /// Preference weights, e.g. `latency=2,price=1,load=1,proximity=0`.
    #[arg(long, value_name = "NAME=WEIGHT,…")]
    pub prefer: Option<String>,
    /// Say why each candidate was chosen or excluded.
    #[arg(long)]
    pub explain: bool,
}

impl ResolveArgs {
    /// The intent the API takes (`POST /v1/resolve`).
    pub fn to_intent(&self) -> anyhow::Result<Intent> {
        let mut prefer = Preferences::default();
        if let Some(text) = &self.prefer {
            for part in text.split(',').filter(|p| !p.trim().is_empty()) {
                let (name, weight) = part
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--prefer: {part:?} is not NAME=WEIGHT"))?;
                let weight: f64 = weight.trim().parse().map_err(|_| {
                    anyhow::anyhow!("--prefer: weight {weight:?} of {name:?} is not a number")
                })?;
                let slot = match name.trim() {
                    "latency" => &mut prefer.latency,
                    "load" => &mut prefer.load,
                    "price" => &mut prefer.price,
                    "proximity" => &mut prefer.proximity,
                    other => bail!(
                        "--prefer: unknown weight {other:?} (latency, load, price, proximity)"
                    ),
                };
                *slot = weight;
            }
        }
        Ok(Intent {
            task: self.task.clone(),
            min_context: self.min_context,
            max_latency_ms: self.max_latency_ms,
            max_latency_p99_ms: self.max_latency_p99_ms,
            max_price_micros_per_1k: self.max_price,
            modalities: self.modalities.clone(),
            region: self.region.clone(),
            model_family: self.model_family.clone(),
            require_mic: self.require_mic,
            publishers: self.publishers.clone(),
            attested: self.attested_min_score.map(|min_score| Attested {
                min_score,
                require_safety: self.require_safety,
            }),
            prefer,
            k: self.k.unwrap_or(nexus_registry::K_DEFAULT),
            explain: self.explain,
        })
    }
}

/// Reads a service descriptor file (TOML, or JSON by extension).
pub fn read_service_file(path: &std::path::Path) -> anyhow::Result<Sad> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de)
            .with_context(|| format!("{} is not a service descriptor", path.display()))
    } else {
        toml::from_str(&text)
            .with_context(|| format!("{} is not a service descriptor", path.display()))
    }
}

/// Reads a credential file as hex: text that is all hex digits (surrounding whitespace ignored)
/// is taken as is, anything else as the raw binary encoding.
pub fn read_credential_hex(path: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else if bytes.is_empty() {
        anyhow::bail!("{} is empty", path.display())
    } else {
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// A registration: the descriptor file and, with a MIC file, the service's credentials.
pub fn registration_body(
    file: &std::path::Path,
    mic_file: Option<&std::path::Path>,
    attestation_files: &[std::path::PathBuf],
) -> anyhow::Result<Registration> {
    let sad = read_service_file(file)?;
    let credentials = match mic_file {
        Some(mic) => Some(CredentialsJson {
            mic: read_credential_hex(mic)?,
            attestations: attestation_files
                .iter()
                .map(|p| read_credential_hex(p))
                .collect::<anyhow::Result<Vec<_>>>()?,
        }),
        None => None,
    };
    Ok(Registration { sad, credentials })
}

/// A client for one node's admin API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    ca_cert: Option<Vec<u8>>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7700`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        Client::with_ca_cert(base, token, None)
    }

    /// A client for `base` that trusts the PEM certificates in `ca_cert` for `https://`.
    pub fn with_ca_cert(
        base: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let base = if base.contains("://") {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        let ca_cert = match ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("--ca-cert: reading {}", path.display()))?,
            ),
            None => None,
        };
        let mut client = Client {
            http: reqwest::Client::new(),
            base,
            token,
            ca_cert,
        };
        client.http = client.http_client(Duration::from_secs(5))?;
        Ok(client)
    }

    /// An HTTP client with this client's TLS trust and the given request timeout.
    fn http_client(&self, timeout: Duration) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(pem) = &self.ca_cert {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .context("--ca-cert: not a PEM certificate bundle")?;
            if certs.is_empty() {
                bail!("--ca-cert: the file holds no PEM certificate");
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        } else if self.base.starts_with("https://") {
            bail!(
                "{} is an https:// URL: name the CA certificate that signed the node's admin \
                 certificate with --ca-cert or {CA_CERT_ENV}",
                self.base
            );
        }
        builder.build().context("building HTTP client")
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(T, String)> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            // reqwest's top-level message hides the cause (refused, TLS, timeout).
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            CtlError::Unreachable {
                base: self.base.clone(),
                why,
            }
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| CtlError::Unreachable {
            base: self.base.clone(),
            why: format!("reading the response: {e}"),
        })?;
        if !status.is_success() {
            let message = match serde_json::from_str::<Problem>(&text) {
                Ok(problem) => {
                    format!("{} ({}): {}", problem.title, problem.status, problem.detail)
                }
                Err(_) => format!("HTTP {status}: {text}"),
            };
            return Err(CtlError::from_status(status.as_u16(), message).into());
        }
        let value = serde_json::from_str(&text)
            .with_context(|| format!("unexpected response from {}", self.base))?;
        Ok((value, text))
    }

    /// `GET path`, decoded; also returns the raw JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<(T, String)> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl serde::Serialize + ?Sized),
    ) -> anyhow::Result<(T, String)> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl serde::Serialize + ?Sized),
    ) -> anyhow::Result<(T, String)> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<(T, String)> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}

/// Renders rows as an aligned text table without colour (see [`Table`] for the renderer).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = Table::new(headers);
    t.extend(rows.iter().cloned());
    t.render(false)
}

/// The members table `nexus ctl members` and `nexus demo` print.
pub fn members_table(members: &Members) -> Table {
    let rows: Vec<Vec<String>> = members
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{}{}", m.name, if m.local { " *" } else { "" }),
                m.id.chars().take(12).collect(),
                m.addr.clone(),
                m.state.clone(),
                m.incarnation.to_string(),
                m.meta.admin.clone().unwrap_or_else(|| "-".into()),
                if m.meta.roles.is_empty() {
                    "-".into()
                } else {
                    m.meta.roles.join(",")
                },
            ]
        })
        .collect();
    let mut t = Table::new(&[
        "NAME",
        "ID",
        "ADDR",
        "STATE",
        "INCARNATION",
        "ADMIN",
        "ROLES",
    ])
    .state_column("STATE");
    t.extend(rows);
    t
}

/// The services table `nexus ctl service list` prints; EXPIRES is when the lease (or this
/// node's copy of a remote advert) runs out unless renewed.
pub fn services_table(services: &[ServiceDto]) -> Table {
    let now = output::now_ms();
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let v = &s.service;
            vec![
                v.id.clone(),
                format!(
                    "{}{}",
                    s.node_name
                        .clone()
                        .unwrap_or_else(|| s.node.chars().take(12).collect()),
                    if s.local { " *" } else { "" }
                ),
                v.tasks.join(","),
                v.model_family.clone(),
                v.context_window.to_string(),
                format!("{}/{}", v.latency_ms_p50, v.latency_ms_p99),
                v.price_micros_per_1k.to_string(),
                format!("{}%/{}", v.load.utilization_pct, v.load.queue_depth),
                v.version.to_string(),
                output::time_ms(now.saturating_add(s.expires_in_ms), now),
            ]
        })
        .collect();
    let mut t = Table::new(&[
        "ID",
        "NODE",
        "TASKS",
        "FAMILY",
        "CONTEXT",
        "P50/P99 MS",
        "PRICE",
        "LOAD",
        "VERSION",
        "EXPIRES",
    ]);
    t.extend(rows);
    t
}

/// The ranked table `nexus ctl resolve` and `nexus demo` print.
pub fn resolve_table(r: &ResolveResponse) -> String {
    let rows: Vec<Vec<String>> = r
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                (i + 1).to_string(),
                c.id.clone(),
                c.node_name
                    .clone()
                    .unwrap_or_else(|| c.node.chars().take(12).collect()),
                // The service listens on its node's host: that host's IP, the service's port.
                match c
                    .endpoint
                    .node_addr
                    .as_deref()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                {
                    Some(addr) => std::net::SocketAddr::new(addr.ip(), c.endpoint.port).to_string(),
                    None => format!("?:{}", c.endpoint.port),
                },
                format!("{:.3}", c.score),
                c.service.context_window.to_string(),
                format!("{}/{}", c.service.latency_ms_p50, c.service.latency_ms_p99),
                c.service.price_micros_per_1k.to_string(),
            ]
        })
        .collect();
    let mut out = format!(
        "routing key {}  ({} adverts considered)\n",
        r.routing_key, r.considered
    );
    let mut t = Table::new(&[
        "RANK",
        "ID",
        "NODE",
        "ENDPOINT",
        "SCORE",
        "CONTEXT",
        "P50/P99 MS",
        "PRICE",
    ]);
    t.extend(rows);
    out.push_str(&t.to_string());
    for c in &r.candidates {
        for why in &c.why {
            let _ = writeln!(out, "  {}: {why}", c.id);
        }
    }
    if let Some(excluded) = &r.excluded {
        for e in excluded {
            let _ = writeln!(
                out,
                "  excluded {} on {}: {}",
                e.id,
                e.node.chars().take(12).collect::<String>(),
                e.reason
            );
        }
    }
    out
}

async fn service(client: &Client, command: ServiceCommand, json: bool) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Register {
            file,
            mic_file,
            attestation_files,
        } => {
            let body =
                registration_body(&file, mic_file.as_deref(), &attestation_files).map_err(usage)?;
            let (s, raw): (ServiceDto, _) = client.post("/v1/services", &body).await?;
            if json {
                print_json(&raw);
            } else {
                outln!(
                    "registered {} (version {}, lease {} s)",
                    s.service.id,
                    s.service.version,
                    s.expires_in_ms / 1000
                );
            }
        }
        ServiceCommand::List { local } => {
            let path = if local {
                "/v1/services?scope=local"
            } else {
                "/v1/services"
            };
            let (s, raw): (Services, _) = client.get(path).await?;
            if json {
                print_json(&raw);
            } else {
                out!("{}", services_table(&s.services));
            }
        }
        ServiceCommand::Deregister { id } => {
            let (w, raw): (WithdrawResponse, _) =
                client.delete(&format!("/v1/services/{id}")).await?;
            if json {
                print_json(&raw);
            } else {
                outln!("{} {}", w.id, w.status);
            }
        }
        ServiceCommand::Load {
            id,
            queue_depth,
            utilization_pct,
            latency_ms_p50,
            latency_ms_p99,
        } => {
            let body = LoadUpdate {
                queue_depth,
                utilization_pct,
                latency_ms_p50,
                latency_ms_p99,
            };
            let (s, raw): (ServiceDto, _) = client
                .patch(&format!("/v1/services/{id}/load"), &body)
                .await?;
            if json {
                print_json(&raw);
            } else {
                outln!("{} updated (version {})", s.service.id, s.service.version);
            }
        }
    }
    Ok(())
}

async fn sessions(
    client: &Client,
    command: Option<SessionsCommand>,
    json: bool,
) -> anyhow::Result<()> {
    use crate::admin::sessions::{PROBE_TIMEOUT_MS_MAX, ProbeRequestDto, ProbeResponse, Sessions};
    match command.unwrap_or(SessionsCommand::List) {
        SessionsCommand::List => {
            let (s, raw): (Sessions, _) = client.get("/v1/sessions").await?;
            if json {
                print_json(&raw);
                return Ok(());
            }
            let now = output::now_ms();
            let rows: Vec<Vec<String>> = s
                .sessions
                .iter()
                .map(|x| {
                    let peer = x
                        .peer_name
                        .clone()
                        .or_else(|| x.peer.as_ref().map(|p| p[..16].to_owned()))
                        .unwrap_or_else(|| "-".into());
                    let msgs: Vec<String> = x
                        .modes
                        .iter()
                        .map(|(m, c)| format!("{m}:{}/{}", c.sent, c.delivered))
                        .collect();
                    vec![
                        x.id.to_string(),
                        peer,
                        if x.client { "out" } else { "in" }.into(),
                        if x.established {
                            "established"
                        } else {
                            "handshake"
                        }
                        .into(),
                        x.mic_serial.map_or("-".into(), |s| s.to_string()),
                        format!("{:.2}", x.rtt_us as f64 / 1000.0),
                        x.cwnd_bytes.to_string(),
                        format!("{}/{}", x.packets_lost, x.packets_sent),
                        output::relative_ms(now.saturating_sub(x.idle_ms), now),
                        msgs.join(" "),
                    ]
                })
                .collect();
            let mut t = Table::new(&[
                "ID",
                "PEER",
                "DIR",
                "STATE",
                "MIC",
                "RTT MS",
                "CWND",
                "LOST/SENT",
                "LAST ACTIVE",
                "MESSAGES SENT/DELIVERED",
            ])
            .state_column("STATE");
            t.extend(rows);
            out!("{t}");
        }
        SessionsCommand::Probe {
            peer,
            mode,
            count,
            bytes,
            probability,
            timeout_ms,
        } => {
            // The answer waits for the probe: give the request its timeout and a handshake.
            let mut client = client.clone();
            client.http = client
                .http_client(
                    Duration::from_millis(timeout_ms.min(PROBE_TIMEOUT_MS_MAX))
                        + Duration::from_secs(20),
                )
                .map_err(usage)?;
            let body = ProbeRequestDto {
                peer,
                mode,
                count: Some(count),
                bytes: Some(bytes),
                probability,
                timeout_ms: Some(timeout_ms),
            };
            let (answer, raw): (ProbeResponse, _) =
                client.post("/v1/sessions/probe", &body).await?;
            let r = &answer.probe;
            if json {
                print_json(&raw);
            } else {
                outln!(
                    "{} {}: {}/{} answered, rtt p50 {:.3} ms p99 {:.3} ms max {:.3} ms, {:.1} ms in all (session {}{})",
                    answer.mode,
                    &answer.peer[..16],
                    r.received,
                    r.sent,
                    r.rtt_ms_p50,
                    r.rtt_ms_p99,
                    r.rtt_ms_max,
                    r.elapsed_ms,
                    r.session,
                    if r.opened {
                        format!(", opened in {:.3} ms", r.connect_ms)
                    } else {
                        String::new()
                    }
                );
            }
            if r.received < r.sent && answer.mode != "be" && answer.mode != "pr" {
                bail!("{} of {} messages unanswered", r.sent - r.received, r.sent);
            }
        }
    }
    Ok(())
}

/// Runs one `nexus ctl` command, printing its result.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let client = Client::with_ca_cert(&args.admin, args.token.clone(), args.ca_cert.as_deref())
        .map_err(usage)?;
    if let CtlCommand::Send(send_args) = &args.command {
        let key = send::send_key(send_args, &client, args.json).await?;
        return send::send(send_args, key, args.json);
    }
    match args.command {
        CtlCommand::Node => {
            let (n, raw): (Node, _) = client.get("/v1/node").await?;
            if args.json {
                print_json(&raw);
            } else {
                let now = output::now_ms();
                let started = now.saturating_sub(n.uptime_s.saturating_mul(1000));
                let t = Table::fields(vec![
                    ("id", n.id),
                    ("name", n.name),
                    ("state", n.state),
                    ("incarnation", n.incarnation.to_string()),
                    ("gossip", format!("{} (bound {})", n.addr, n.bind)),
                    ("admin", n.admin),
                    ("version", n.version),
                    ("roles", n.roles.join(",")),
                    ("data dir", n.data_dir),
                    ("started", output::time_ms(started, now)),
                ])
                .state_column("VALUE");
                out!("{t}");
            }
        }
        CtlCommand::Health => {
            // 503 (an actor restarting) is an error answer, so the exit code is the health.
            let (h, raw): (Health, _) = client.get("/v1/health").await?;
            if args.json {
                print_json(&raw);
            } else {
                let mut t = Table::new(&["ACTOR", "STATUS"]).state_column("STATUS");
                t.extend(h.actors.into_iter().map(|a| vec![a.name, a.status]));
                outln!("{}", h.status);
                out!("{t}");
            }
        }
        CtlCommand::Members => {
            let (m, raw): (Members, _) = client.get("/v1/members").await?;
            if args.json {
                print_json(&raw);
            } else {
                out!("{}", members_table(&m));
            }
        }
        CtlCommand::Actors => {
            let (a, raw): (Actors, _) = client.get("/v1/actors").await?;
            if args.json {
                print_json(&raw);
            } else {
                let rows: Vec<Vec<String>> = a
                    .children
                    .iter()
                    .map(|c| {
                        vec![
                            format!("{}/{}", a.name, c.name),
                            c.status.clone(),
                            c.restarts.to_string(),
                            format!("{}/{}", c.recent_failures, a.restarts_max),
                            c.last_failure.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                let mut t =
                    Table::new(&["ACTOR", "STATUS", "RESTARTS", "RECENT/MAX", "LAST FAILURE"])
                        .state_column("STATUS");
                t.extend(rows);
                out!("{t}");
            }
        }
        CtlCommand::Send(_) => {
            unreachable!("handled above: send talks to the data plane, not the admin API")
        }
        CtlCommand::Service(command) => service(&client, command, args.json).await?,
        CtlCommand::Resolve(resolve) => {
            let intent = resolve.to_intent().map_err(usage)?;
            let (r, raw): (ResolveResponse, _) = client.post("/v1/resolve", &intent).await?;
            if args.json {
                print_json(&raw);
            } else {
                out!("{}", resolve_table(&r));
            }
        }
        CtlCommand::Ca(command) => ca::ca(&client, command, args.json).await?,
        CtlCommand::Attest(command) => ca::attest(&client, command, args.json).await?,
        CtlCommand::Acl(command) => acl::acl(&client, command, args.json).await?,
        CtlCommand::Keyring(command) => keyring::keyring(&client, command, args.json).await?,
        CtlCommand::Sessions { command } => sessions(&client, command, args.json).await?,
        CtlCommand::Leave { reason } => {
            let body = LeaveRequest { reason };
            let (r, raw): (LeaveResponse, _) = client.post("/v1/leave", &body).await?;
            if args.json {
                print_json(&raw);
            } else {
                outln!("node {}; it will exit shortly", r.status);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_helper_aligns_columns() {
        let t = table(
            &["A", "LONG HEADER"],
            &[
                vec!["xxxxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A      LONG HEADER\nxxxxx  1\ny      22\n");
    }
}
