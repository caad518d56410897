//! Node configuration: command-line flags over a TOML file over defaults, parsed into a typed
//! [`NodeConfig`] before anything touches the disk or the network.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use nexus_actors::{CaSettings, RegistrySettings, RestartPolicy, StreamSettings};
use nexus_gossip::{MemberMeta, MembershipConfig, MembershipSettings};
use serde::Deserialize;

/// Default admin API address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7700";
/// Default local NexAPI endpoint (UDP, `[api] listen`).
pub const DEFAULT_API: &str = "127.0.0.1:7800";
/// Default gossip bind address.
pub const DEFAULT_BIND: &str = "127.0.0.1:7946";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./nexus-data";
/// Environment variable holding the admin bearer token.
pub const TOKEN_ENV: &str = "NEXUS_ADMIN_TOKEN";
/// Environment variable holding the gossip encryption key; it stands for `[gossip] encrypt_key`
/// (and wins over it), so the key can come from a secret store instead of the config file.
pub const GOSSIP_KEY_ENV: &str = "NEXUS_GOSSIP_KEY";
/// Seeds accepted at most.
pub const SEEDS_MAX: usize = 64;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Which I/O backend the data plane uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataplaneBackend {
    /// std UDP sockets with poll: runs anywhere.
    #[default]
    Portable,
    /// io_uring: multishot receive into a provided buffer ring, batched sends (Linux).
    #[value(name = "io_uring")]
    IoUring,
    /// XDP: the program on `[dataplane] xdp_interface` forwards in the kernel's receive hook;
    /// the portable forwarder serves the frames it passes to the kernel (local delivery, next
    /// hops whose MAC is not known yet). Needs a node built with the `xdp` feature.
    Xdp,
}

/// `nexus node run` flags. Every flag overrides the same key in `--config`.
#[derive(Args, Debug, Default, Clone)]
pub struct NodeRunArgs {
    /// TOML config file (keys as in docs/operations.md). Flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node name shown to operators [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// UDP address the gossip socket binds [default: 127.0.0.1:7946].
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Option<String>,
    /// Address other nodes use to reach this one [default: the bound address].
    #[arg(long, value_name = "IP:PORT")]
    pub advertise: Option<String>,
    /// Admin HTTP API address [default: 127.0.0.1:7700].
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<String>,
    /// UDP address the data plane receives NexLink frames on [default: off].
    #[arg(long, value_name = "IP:PORT")]
    pub dataplane: Option<String>,
    /// The data plane's I/O backend [default: portable].
    #[arg(long, value_enum)]
    pub dataplane_backend: Option<DataplaneBackend>,
    /// Local NexAPI endpoint (binary resolve over UDP), a loopback address, or `off`
    /// [default: 127.0.0.1:7800]. Overrides `[api] listen`.
    #[arg(long, value_name = "IP:PORT|off")]
    pub api: Option<String>,
    /// OpenAI-compatible HTTP gateway address, or `off` [default: off]. Overrides
    /// `[gateway] listen`.
    #[arg(long, value_name = "IP:PORT|off")]
    pub gateway: Option<String>,
    /// The bootstrap management token of the admin API; setting it turns ACLs on (required
    /// when --admin is not loopback).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM certificate chain: the admin API serves HTTPS (with --admin-tls-key; reloaded on
    /// SIGHUP).
    #[arg(long, value_name = "PEM", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of --admin-tls-cert.
    #[arg(long, value_name = "PEM", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
    /// Comma-separated seed addresses to join through.
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Data directory (identity key, sled database) [default: ./nexus-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated roles this node carries (e.g. `ca`).
    #[arg(long, value_delimiter = ',')]
    pub roles: Option<Vec<String>>,
    /// Log filter (`info`, `debug`, `nexus_gossip=trace,info`, …) [default: RUST_LOG, else info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// TCP address of a CA voter's Raft listener (`[ca] raft_listen`) [default: unset].
    #[arg(long, value_name = "IP:PORT")]
    pub ca_raft_listen: Option<String>,
    /// The P4Runtime server of a P4 switch the node feeds its table generations to
    /// (`[p4] target`) [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    pub p4_target: Option<String>,
    /// The gossip encryption key from `NEXUS_GOSSIP_KEY` (no flag: a key on the command line
    /// would show in the process list). [`NodeConfig::load`] reads the environment.
    #[arg(skip)]
    pub gossip_key: Option<String>,
}

/// The config file's shape. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    bind: Option<String>,
    advertise: Option<String>,
    admin: Option<String>,
    admin_token: Option<String>,
    admin_tls_cert: Option<PathBuf>,
    admin_tls_key: Option<PathBuf>,
    #[serde(default)]
    dataplane: DataplaneFile,
    dataplane_backend: Option<DataplaneBackend>,
    seeds: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    roles: Option<Vec<String>>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    gossip: MembershipSettings,
    #[serde(default)]
    supervisor: SupervisorFile,
    #[serde(default)]
    debug: DebugFile,
    #[serde(default)]
    registry: RegistryFile,
    #[serde(default)]
    ca: CaFile,
    #[serde(default)]
    stream: StreamFile,
    #[serde(default)]
    api: ApiFile,
    #[serde(default)]
    gateway: crate::gateway::GatewayFile,
    #[serde(default)]
    upstream: Vec<crate::upstream::UpstreamFile>,
    #[serde(default)]
    telemetry: crate::telemetry::TelemetryFile,
    #[serde(default)]
    p4: crate::targets::P4File,
}

/// `dataplane`: the data plane's address as a string (`dataplane = "IP:PORT"`), or the
/// `[dataplane]` table (`listen`, `source_check`). See docs/operations.md.
#[derive(Debug, Default)]
struct DataplaneFile {
    listen: Option<String>,
    source_check: Option<bool>,
    xdp_interface: Option<String>,
    xdp_mode: Option<crate::targets::XdpModeSetting>,
}

/// The `[dataplane]` table form of [`DataplaneFile`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataplaneTable {
    listen: Option<String>,
    source_check: Option<bool>,
    xdp_interface: Option<String>,
    xdp_mode: Option<crate::targets::XdpModeSetting>,
}

impl<'de> Deserialize<'de> for DataplaneFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = DataplaneFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an \"IP:PORT\" string or a [dataplane] table (listen, source_check)")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<DataplaneFile, E> {
                Ok(DataplaneFile {
                    listen: Some(value.to_owned()),
                    ..DataplaneFile::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DataplaneFile, A::Error> {
                let table =
                    DataplaneTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(DataplaneFile {
                    listen: table.listen,
                    source_check: table.source_check,
                    xdp_interface: table.xdp_interface,
                    xdp_mode: table.xdp_mode,
                })
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// `[api]`: the node's local NexAPI endpoint. See docs/operations.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    listen: Option<String>,
}

/// `[stream]`: the node's NexStream sessions. See docs/operations.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFile {
    idle_close_ms: Option<u64>,
    sessions_max: Option<u64>,
    hello_timeout_ms: Option<u64>,
}

/// `[ca]`: the certificate authority (NexTrust). See docs/operations.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaFile {
    voter: Option<bool>,
    raft_listen: Option<String>,
    bootstrap_expect: Option<u64>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    client_timeout_ms: Option<u64>,
    node_cert_validity_s: Option<u64>,
    revocation_poll_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    refresh_ms: Option<u64>,
    anti_entropy_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SupervisorFile {
    restarts_max: Option<u32>,
    window_s: Option<u64>,
    backoff_min_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DebugFile {
    fault_injection: Option<bool>,
}

/// A bad setting. Displays as one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The setting, as named in the config file (flags use the same names with dashes).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err<T>(field: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        message: message.into(),
    })
}

/// Gossip encryption as configured (`[gossip] encrypt_key`, `keyring_file`, `verify_incoming`,
/// `verify_outgoing`). The keyring file, when it exists, is read at start and wins over
/// `encrypt_key`. `Debug` does not show the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipEncryption {
    /// The fabric key from `encrypt_key`.
    pub encrypt_key: Option<nexus_gossip::SecretKey>,
    /// Where the keyring is kept (default `keyring.json` in the data directory).
    pub keyring_file: PathBuf,
    /// Refuse plaintext datagrams (default true; only with a key).
    pub verify_incoming: bool,
    /// Seal every datagram sent (default true; only with a key).
    pub verify_outgoing: bool,
    /// Whether `verify_incoming` or `verify_outgoing` was written in the file.
    pub verify_set: bool,
}

/// A fully parsed node configuration. Its `Debug` output redacts the admin token.
#[derive(Clone)]
pub struct NodeConfig {
    /// Node name and metadata (without the admin address, filled in once bound).
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Gossip bind address.
    pub bind: SocketAddr,
    /// Advertised gossip address; `None` means "the address actually bound".
    pub advertise: Option<SocketAddr>,
    /// Admin API address.
    pub admin: SocketAddr,
    /// The admin API's bootstrap management token (ACLs are on when it is set).
    pub admin_token: Option<String>,
    /// The admin API's certificate and key files; `None` serves plain HTTP.
    pub admin_tls: Option<crate::admin::tls::TlsFiles>,
    /// Data-plane UDP address; `None` leaves the forwarder off.
    pub dataplane: Option<SocketAddr>,
    /// Data-plane I/O backend.
    pub dataplane_backend: DataplaneBackend,
    /// Whether the data plane drops frames from sources its table generation does not allow
    /// (`[dataplane] source_check`, default true).
    pub dataplane_source_check: bool,
    /// Resolved seed addresses.
    pub seeds: Vec<SocketAddr>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log filter directive, if set by flag or file.
    pub log_level: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Membership timings.
    pub gossip: MembershipConfig,
    /// Gossip encryption settings.
    pub gossip_encryption: GossipEncryption,
    /// Restart policy of the supervision tree.
    pub supervisor: RestartPolicy,
    /// Registry timings (`[registry]`).
    pub registry: RegistrySettings,
    /// Whether `POST /v1/debug/crash/{actor}` is enabled.
    pub fault_injection: bool,
    /// The certificate authority (`[ca]`).
    pub ca: CaSettings,
    /// NexStream sessions (`[stream]`); they run when the data plane does.
    pub stream: StreamSettings,
    /// The local NexAPI endpoint's UDP address (`[api] listen`, a loopback address); `None`
    /// leaves it off.
    pub api: Option<SocketAddr>,
    /// The OpenAI-compatible gateway (`[gateway]`, `--gateway`); `None` leaves it off.
    pub gateway: Option<crate::gateway::GatewaySettings>,
    /// OpenAI-compatible servers the node serves to the fabric (`[[upstream]]`).
    pub upstreams: Vec<crate::upstream::UpstreamSettings>,
    /// Trace export (`[telemetry]`, `OTEL_EXPORTER_OTLP_ENDPOINT`); `None` leaves it off.
    pub telemetry: Option<crate::telemetry::TelemetrySettings>,
    /// The P4 switch fed with every table generation (`[p4]`, `--p4-target`); `None`: none.
    pub p4: Option<crate::targets::P4Settings>,
    /// The XDP target (`dataplane_backend = "xdp"`, `[dataplane] xdp_interface`, `xdp_mode`).
    pub xdp: Option<crate::targets::XdpSettings>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("bind", &self.bind)
            .field("advertise", &self.advertise)
            .field("admin", &self.admin)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_tls", &self.admin_tls)
            .field("dataplane", &self.dataplane)
            .field("dataplane_backend", &self.dataplane_backend)
            .field("dataplane_source_check", &self.dataplane_source_check)
            .field("seeds", &self.seeds)
            .field("data_dir", &self.data_dir)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("gossip", &self.gossip)
            .field("gossip_encryption", &self.gossip_encryption)
            .field("supervisor", &self.supervisor)
            .field("registry", &self.registry)
            .field("fault_injection", &self.fault_injection)
            .field("ca", &self.ca)
            .field("stream", &self.stream)
            .field("api", &self.api)
            .field("gateway", &self.gateway)
            .field("upstreams", &self.upstreams)
            .field("telemetry", &self.telemetry)
            .field("p4", &self.p4)
            .field("xdp", &self.xdp)
            .finish()
    }
}

fn parse_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.trim().parse().or_else(|_| {
        err(
            field,
            format!("{value:?} is not an IP:PORT address (e.g. 127.0.0.1:7946)"),
        )
    })
}

fn resolve_seed(value: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return err("seeds", format!("{value:?} is not HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return err("seeds", format!("{value:?} is not HOST:PORT"));
    }
    match value.to_socket_addrs() {
        Ok(addrs) => Ok(addrs.collect()),
        Err(e) => err("seeds", format!("cannot resolve {value:?}: {e}")),
    }
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(nexus_gossip::NAME_BYTES_MAX)
        .collect();
    if name.is_empty() {
        "nexus".into()
    } else {
        name
    }
}

fn ms(field: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => err(field, "must be greater than 0"),
        Some(v) if v > 86_400_000 => err(field, "must be at most 86400000 (one day)"),
        Some(v) => Ok(Duration::from_millis(v)),
    }
}

impl NodeConfig {
    /// Reads `args.config` (if any) and merges the flags over it.
    pub fn load(args: &NodeRunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => Self::read_file(path)?,
        };
        let mut args = args.clone();
        if args.gossip_key.is_none() {
            args.gossip_key = std::env::var(GOSSIP_KEY_ENV).ok();
        }
        Self::merge(args, file)
    }

    /// Parses a config file's text (exposed for tests and `nexus node check`).
    pub fn from_toml(text: &str, args: NodeRunArgs) -> Result<Self, ConfigError> {
        let file = toml::from_str::<FileConfig>(text).map_err(toml_error)?;
        Self::merge(args, file)
    }

    fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: "config".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        toml::from_str(&text).map_err(toml_error)
    }

    fn merge(args: NodeRunArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let name = args.name.or(file.name).unwrap_or_else(default_name);
        let roles = args.roles.or(file.roles).unwrap_or_default();
        if let Err(e) = MemberMeta::new(name.clone(), None, "", vec![]) {
            return err("name", e.to_string());
        }
        if let Err(e) = MemberMeta::new("x", None, "", roles.clone()) {
            return err("roles", e.to_string());
        }
        let bind = parse_addr(
            "bind",
            args.bind.or(file.bind).as_deref().unwrap_or(DEFAULT_BIND),
        )?;
        let advertise = match args.advertise.or(file.advertise) {
            Some(a) => {
                let addr = parse_addr("advertise", &a)?;
                if addr.ip().is_unspecified() || addr.port() == 0 {
                    return err(
                        "advertise",
                        "must be a concrete IP and port others can reach",
                    );
                }
                Some(addr)
            }
            None if bind.ip().is_unspecified() => {
                return err(
                    "advertise",
                    format!(
                        "required when bind is {bind} (peers cannot reach an unspecified address)"
                    ),
                );
            }
            None => None,
        };
        let admin = parse_addr(
            "admin",
            args.admin
                .or(file.admin)
                .as_deref()
                .unwrap_or(DEFAULT_ADMIN),
        )?;
        // An empty flag or NEXUS_ADMIN_TOKEN counts as unset, so it does not hide the file's token.
        let admin_token = args
            .admin_token
            .filter(|t| !t.is_empty())
            .or(file.admin_token)
            .filter(|t| !t.is_empty());
        if let Some(token) = &admin_token
            && (token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return err(
                "admin_token",
                "must be at least 16 bytes, without spaces or control characters",
            );
        }
        if !admin.ip().is_loopback() && admin_token.is_none() {
            return err(
                "admin_token",
                format!(
                    "required when admin is not a loopback address ({admin}); set --admin-token or {TOKEN_ENV}"
                ),
            );
        }
        let admin_tls = match (
            args.admin_tls_cert.or(file.admin_tls_cert),
            args.admin_tls_key.or(file.admin_tls_key),
        ) {
            (None, None) => None,
            (Some(_), None) => return err("admin_tls_key", "required with admin_tls_cert"),
            (None, Some(_)) => return err("admin_tls_cert", "required with admin_tls_key"),
            (Some(cert), Some(key)) => {
                let files = crate::admin::tls::TlsFiles { cert, key };
                // Loaded now so that a bad file is a config error; the node loads them again
                // when it starts serving.
                if let Err(e) = crate::admin::tls::load(&files) {
                    return err(e.field(), e.to_string());
                }
                Some(files)
            }
        };
        let seed_specs = args.seeds.or(file.seeds).unwrap_or_default();
        if seed_specs.len() > SEEDS_MAX {
            return err("seeds", format!("at most {SEEDS_MAX} seeds"));
        }
        let mut seeds = Vec::new();
        for spec in seed_specs.iter().filter(|s| !s.trim().is_empty()) {
            seeds.extend(resolve_seed(spec)?);
        }
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return err("data_dir", "must not be empty");
        }

        let log_level = args.log_level.or(file.log_level);
        if let Some(filter) = &log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(filter)
        {
            return err("log_level", format!("{filter:?} is not a log filter: {e}"));
        }

        let gossip = file.gossip.resolve().map_err(|e| ConfigError {
            field: e.field.into(),
            message: e.reason.into(),
        })?;

        let gossip_encryption =
            parse_gossip_encryption(&file.gossip, args.gossip_key.as_deref(), &data_dir)?;

        let p = RestartPolicy::default();
        let s = &file.supervisor;
        let supervisor = RestartPolicy {
            backoff_min: ms("supervisor.backoff_min_ms", s.backoff_min_ms, p.backoff_min)?,
            backoff_max: ms("supervisor.backoff_max_ms", s.backoff_max_ms, p.backoff_max)?,
            restarts_max: s.restarts_max.unwrap_or(p.restarts_max),
            window: match s.window_s {
                None => p.window,
                Some(0) => return err("supervisor.window_s", "must be at least 1"),
                Some(w) => Duration::from_secs(w),
            },
        };
        if supervisor.backoff_min > supervisor.backoff_max {
            return err(
                "supervisor.backoff_min_ms",
                "must be at most supervisor.backoff_max_ms",
            );
        }

        let d = RegistrySettings::default();
        let registry = RegistrySettings {
            refresh: ms("registry.refresh_ms", file.registry.refresh_ms, d.refresh)?,
            anti_entropy: ms(
                "registry.anti_entropy_ms",
                file.registry.anti_entropy_ms,
                d.anti_entropy,
            )?,
        };
        if registry.refresh < Duration::from_millis(50) {
            return err("registry.refresh_ms", "must be at least 50");
        }
        if registry.anti_entropy < Duration::from_millis(100) {
            return err("registry.anti_entropy_ms", "must be at least 100");
        }

        let mut ca_file = file.ca;
        if let Some(listen) = args.ca_raft_listen {
            ca_file.raft_listen = Some(listen);
        }
        let ca = parse_ca(&ca_file)?;
        let stream = parse_stream(&file.stream)?;
        let api = parse_api(args.api.or(file.api.listen).as_deref())?;
        let gateway = crate::gateway::parse_settings(args.gateway.as_deref(), &file.gateway, api)?;
        let upstreams = crate::upstream::parse_settings(&file.upstream, api)?;
        let telemetry = crate::telemetry::parse_settings(
            &file.telemetry,
            std::env::var(crate::telemetry::ENV_ENDPOINT)
                .ok()
                .as_deref(),
            std::env::var(crate::telemetry::ENV_SERVICE_NAME)
                .ok()
                .as_deref(),
        )?;
        let p4 = crate::targets::parse_p4(args.p4_target.as_deref(), &file.p4)?;
        let dataplane = match args.dataplane.or(file.dataplane.listen) {
            Some(d) => Some(parse_addr("dataplane", &d)?),
            None => None,
        };
        let dataplane_backend = args
            .dataplane_backend
            .or(file.dataplane_backend)
            .unwrap_or_default();
        let xdp = crate::targets::parse_xdp(
            dataplane_backend == DataplaneBackend::Xdp,
            dataplane.is_some(),
            file.dataplane.xdp_interface.as_deref(),
            file.dataplane.xdp_mode,
        )?;

        Ok(NodeConfig {
            name,
            roles,
            bind,
            advertise,
            admin,
            admin_token,
            admin_tls,
            dataplane,
            dataplane_source_check: file.dataplane.source_check.unwrap_or(true),
            dataplane_backend,
            seeds,
            data_dir,
            log_level,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            gossip,
            gossip_encryption,
            supervisor,
            registry,
            fault_injection: file.debug.fault_injection.unwrap_or(false),
            ca,
            stream,
            api,
            gateway,
            upstreams,
            telemetry,
            p4,
            xdp,
        })
    }
}

/// Parses the encryption keys of `[gossip]`; `env_key` (`NEXUS_GOSSIP_KEY`) stands for
/// `encrypt_key` and wins over it, an empty one counting as unset.
fn parse_gossip_encryption(
    gossip: &MembershipSettings,
    env_key: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<GossipEncryption, ConfigError> {
    let (text, source) = match env_key.filter(|k| !k.is_empty()) {
        Some(k) => (Some(k), format!("{GOSSIP_KEY_ENV}: ")),
        None => (gossip.encrypt_key.as_deref(), String::new()),
    };
    let encrypt_key = match text {
        Some(text) => Some(
            nexus_gossip::SecretKey::parse(text).map_err(|e| ConfigError {
                field: "gossip.encrypt_key".into(),
                message: format!("{source}{e}"),
            })?,
        ),
        None => None,
    };
    let keyring_file = match &gossip.keyring_file {
        Some(p) if p.as_os_str().is_empty() => {
            return err("gossip.keyring_file", "must not be empty");
        }
        Some(p) => p.clone(),
        None => data_dir.join("keyring.json"),
    };
    Ok(GossipEncryption {
        encrypt_key,
        keyring_file,
        verify_incoming: gossip.verify_incoming.unwrap_or(true),
        verify_outgoing: gossip.verify_outgoing.unwrap_or(true),
        verify_set: gossip.verify_incoming.is_some() || gossip.verify_outgoing.is_some(),
    })
}

/// Parses `[api] listen` (or `--api`): a loopback `IP:PORT`, or `off`. The endpoint answers
/// anyone who can reach it, without authentication, so only loopback addresses are accepted.
fn parse_api(value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    let field = "api.listen";
    let value = value.unwrap_or(DEFAULT_API).trim();
    if value == "off" {
        return Ok(None);
    }
    let Ok(addr) = value.parse::<SocketAddr>() else {
        return err(
            field,
            format!("{value:?} is neither an IP:PORT address (e.g. {DEFAULT_API}) nor \"off\""),
        );
    };
    if !addr.ip().is_loopback() {
        return err(
            field,
            format!(
                "{addr} is not a loopback address; the local NexAPI endpoint answers without \
                 authentication, so it listens on 127.0.0.1 or [::1] only (or set \"off\")"
            ),
        );
    }
    Ok(Some(addr))
}

/// Parses and checks `[stream]`. Every error names its key as `stream.<key>`.
fn parse_stream(file: &StreamFile) -> Result<StreamSettings, ConfigError> {
    let d = StreamSettings::default();
    let sessions_max = match file.sessions_max {
        None => d.sessions_max,
        Some(n @ 1..=65_536) => n as usize,
        Some(_) => return err("stream.sessions_max", "must be between 1 and 65536"),
    };
    let hello_timeout = ms(
        "stream.hello_timeout_ms",
        file.hello_timeout_ms,
        d.hello_timeout,
    )?;
    if hello_timeout < Duration::from_millis(100) {
        return err("stream.hello_timeout_ms", "must be at least 100");
    }
    let idle_close = ms("stream.idle_close_ms", file.idle_close_ms, d.idle_close)?;
    if idle_close < Duration::from_secs(1) {
        return err("stream.idle_close_ms", "must be at least 1000");
    }
    Ok(StreamSettings {
        idle_close,
        sessions_max,
        hello_timeout,
    })
}

/// Parses and checks `[ca]`. Every error names its key as `ca.<key>`.
fn parse_ca(file: &CaFile) -> Result<CaSettings, ConfigError> {
    let d = CaSettings::default();
    let voter = file.voter.unwrap_or(d.voter);
    let raft_listen = match &file.raft_listen {
        Some(a) => Some(parse_addr("ca.raft_listen", a)?),
        None => None,
    };
    match (voter, raft_listen) {
        (true, None) => {
            return err(
                "ca.raft_listen",
                "required when ca.voter = true (the address the CA's Raft listener binds, e.g. 127.0.0.1:7800)",
            );
        }
        (false, Some(_)) => {
            return err(
                "ca.raft_listen",
                "only CA voters listen for Raft; set ca.voter = true or remove this key",
            );
        }
        _ => {}
    }
    if let Some(a) = raft_listen
        && a.ip().is_unspecified()
    {
        // Peers dial the address a voter advertises; an unspecified one is useless to them.
        return err(
            "ca.raft_listen",
            format!("{a} is unspecified; give the IP peers reach this node's Raft listener at"),
        );
    }
    let bootstrap_expect = match file.bootstrap_expect {
        None => d.bootstrap_expect,
        Some(n @ (3 | 5)) => n as usize,
        Some(n) => {
            return err(
                "ca.bootstrap_expect",
                format!("must be 3 or 5 (the CA group's voter count), got {n}"),
            );
        }
    };
    let bounded = |field: &str, value: Option<u64>, default: u64, min: u64, max: u64| match value {
        None => Ok(default),
        Some(v) if v < min || v > max => err(field, format!("must be in {min}..={max}, got {v}")),
        Some(v) => Ok(v),
    };
    let heartbeat_ms = bounded(
        "ca.heartbeat_ms",
        file.heartbeat_ms,
        d.heartbeat_ms,
        5,
        10_000,
    )?;
    let election_timeout_min_ms = bounded(
        "ca.election_timeout_min_ms",
        file.election_timeout_min_ms,
        d.election_timeout_min_ms,
        10,
        60_000,
    )?;
    let election_timeout_max_ms = bounded(
        "ca.election_timeout_max_ms",
        file.election_timeout_max_ms,
        d.election_timeout_max_ms,
        11,
        120_000,
    )?;
    if election_timeout_min_ms <= heartbeat_ms {
        return err(
            "ca.election_timeout_min_ms",
            format!(
                "must be greater than ca.heartbeat_ms ({heartbeat_ms}); a follower would campaign between heartbeats"
            ),
        );
    }
    if election_timeout_max_ms <= election_timeout_min_ms {
        return err(
            "ca.election_timeout_max_ms",
            format!("must be greater than ca.election_timeout_min_ms ({election_timeout_min_ms})"),
        );
    }
    let client_timeout_ms = bounded(
        "ca.client_timeout_ms",
        file.client_timeout_ms,
        d.client_timeout_ms,
        100,
        600_000,
    )?;
    if client_timeout_ms <= election_timeout_max_ms {
        return err(
            "ca.client_timeout_ms",
            format!(
                "must be greater than ca.election_timeout_max_ms ({election_timeout_max_ms}) so an operation survives one election"
            ),
        );
    }
    let validity_s_max = nexus_trust::ca::VALIDITY_MS_MAX / 1000;
    let validity_s_min = nexus_trust::ca::VALIDITY_MS_MIN.div_ceil(1000);
    let node_cert_validity_s = bounded(
        "ca.node_cert_validity_s",
        file.node_cert_validity_s,
        d.node_cert_validity.as_secs(),
        validity_s_min,
        validity_s_max,
    )?;
    let revocation_poll_ms = bounded(
        "ca.revocation_poll_ms",
        file.revocation_poll_ms,
        u64::try_from(d.revocation_poll.as_millis()).unwrap_or(u64::MAX),
        100,
        3_600_000,
    )?;
    Ok(CaSettings {
        voter,
        raft_listen,
        bootstrap_expect,
        heartbeat_ms,
        election_timeout_min_ms,
        election_timeout_max_ms,
        client_timeout_ms,
        node_cert_validity: Duration::from_secs(node_cert_validity_s),
        revocation_poll: Duration::from_millis(revocation_poll_ms),
    })
}

fn toml_error(e: toml::de::Error) -> ConfigError {
    // toml's message names the offending key (e.g. "unknown field `bnd`"); keep it on one line.
    let message = e.message().replace('\n', " ");
    let field = if message.contains("unknown field") {
        message
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| "config".into())
    } else {
        "config".into()
    };
    let location = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    ConfigError {
        field,
        message: format!("{message}{location}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::from_toml(text, NodeRunArgs::default())
    }

    fn field_of(text: &str) -> String {
        parse(text).expect_err("should fail").field
    }

    #[test]
    fn gossip_encryption_keys() {
        let c = parse("").expect("defaults");
        assert_eq!(c.gossip_encryption.encrypt_key, None);
        assert_eq!(
            c.gossip_encryption.keyring_file,
            PathBuf::from(DEFAULT_DATA_DIR).join("keyring.json")
        );
        assert!(c.gossip_encryption.verify_incoming && c.gossip_encryption.verify_outgoing);
        assert!(!c.gossip_encryption.verify_set);
        let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let c = parse(&format!(
            "[gossip]\nencrypt_key = \"{key}\"\nkeyring_file = \"/k.json\"\nverify_incoming = false"
        ))
        .expect("encryption");
        let e = &c.gossip_encryption;
        assert_eq!(
            e.encrypt_key.as_ref().map(|k| k.to_base64()),
            Some(key.into())
        );
        assert_eq!(e.keyring_file, PathBuf::from("/k.json"));
        assert!(!e.verify_incoming && e.verify_outgoing && e.verify_set);
        assert!(!format!("{c:?}").contains(key), "the key is not printed");
        let e = parse("[gossip]\nencrypt_key = \"c2hvcnQ=\"").expect_err("short key");
        assert_eq!(e.field, "gossip.encrypt_key");
        assert!(
            e.message.contains("32 bytes") && e.message.contains("nexus keygen"),
            "{e}"
        );
        let e = parse("[gossip]\nencrypt_key = \"!!\"").expect_err("not base64");
        assert_eq!(e.field, "gossip.encrypt_key");
        assert_eq!(
            field_of("[gossip]\nkeyring_file = \"\""),
            "gossip.keyring_file"
        );
        // Type errors inside [gossip] are reported like the timings' (field "config").
        let e = parse("[gossip]\nverify_incoming = 1").expect_err("not a bool");
        assert!(e.message.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn gossip_key_from_the_environment_and_raft_listen_flag() {
        let file_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let env_key = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
        let with = |key: &str| NodeRunArgs {
            gossip_key: Some(key.into()),
            ..NodeRunArgs::default()
        };
        let file = format!("[gossip]\nencrypt_key = \"{file_key}\"");
        let c = NodeConfig::from_toml(&file, with(env_key)).expect("env key");
        let shown = c
            .gossip_encryption
            .encrypt_key
            .as_ref()
            .map(|k| k.to_base64());
        assert_eq!(shown.as_deref(), Some(env_key), "the environment wins");
        let c = NodeConfig::from_toml(&file, with("")).expect("empty env");
        let shown = c
            .gossip_encryption
            .encrypt_key
            .as_ref()
            .map(|k| k.to_base64());
        assert_eq!(shown.as_deref(), Some(file_key), "empty counts as unset");
        let e = NodeConfig::from_toml("", with("c2hvcnQ=")).expect_err("short");
        assert_eq!(e.field, "gossip.encrypt_key");
        assert!(e.message.starts_with("NEXUS_GOSSIP_KEY: "), "{e}");

        let args = NodeRunArgs {
            ca_raft_listen: Some("127.0.0.1:7801".into()),
            ..NodeRunArgs::default()
        };
        let c = NodeConfig::from_toml("[ca]\nvoter = true\nraft_listen = \"127.0.0.1:9\"", args)
            .expect("flag over file");
        assert_eq!(
            c.ca.raft_listen,
            Some("127.0.0.1:7801".parse().expect("addr"))
        );
        let args = NodeRunArgs {
            ca_raft_listen: Some("0.0.0.0:7801".into()),
            ..NodeRunArgs::default()
        };
        let e = NodeConfig::from_toml("[ca]\nvoter = true", args).expect_err("unspecified");
        assert_eq!(e.field, "ca.raft_listen");
    }

    #[test]
    fn defaults() {
        let c = parse("").expect("defaults");
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.admin.to_string(), DEFAULT_ADMIN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.seeds.is_empty());
        assert!(!c.fault_injection);
        assert_eq!(c.gossip, MembershipConfig::default());
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
            name = "n1"
            bind = "127.0.0.1:9000"
            advertise = "127.0.0.1:9000"
            admin = "127.0.0.1:9100"
            seeds = ["127.0.0.1:9001", "localhost:9002"]
            data_dir = "/tmp/x"
            roles = ["ca"]
            log_level = "debug"
            log_format = "json"
            [gossip]
            probe_period_ms = 200
            probe_rtt_ms = 50
            suspect_to_down_ms = 600
            [supervisor]
            restarts_max = 3
            window_s = 10
            [debug]
            fault_injection = true
            "#,
        )
        .expect("valid");
        assert_eq!(c.name, "n1");
        assert!(c.seeds.len() >= 2, "{:?}", c.seeds);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.gossip.probe_period, Duration::from_millis(200));
        assert_eq!(c.supervisor.restarts_max, 3);
        assert!(c.fault_injection);
    }

    #[test]
    fn flags_override_the_file() {
        let args = NodeRunArgs {
            name: Some("from-flag".into()),
            bind: Some("127.0.0.1:1234".into()),
            ..NodeRunArgs::default()
        };
        let c = NodeConfig::from_toml("name = \"from-file\"\nbind = \"127.0.0.1:1\"", args)
            .expect("valid");
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.bind.port(), 1234);
    }

    #[test]
    fn malformed_addresses_name_their_field() {
        assert_eq!(field_of("bind = \"nope\""), "bind");
        assert_eq!(field_of("bind = \"127.0.0.1\""), "bind");
        assert_eq!(field_of("advertise = \"1.2.3.4:99999\""), "advertise");
        assert_eq!(field_of("admin = \"localhost\""), "admin");
        assert_eq!(field_of("dataplane = \"127.0.0.1\""), "dataplane");
        assert_eq!(field_of("dataplane_backend = \"dpdk\""), "config");
        assert_eq!(
            parse("dataplane_backend = \"io_uring\"")
                .expect("valid")
                .dataplane_backend,
            DataplaneBackend::IoUring
        );
        assert_eq!(field_of("seeds = [\"no-port\"]"), "seeds");
        assert_eq!(field_of("seeds = [\"host:notaport\"]"), "seeds");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = parse("bnd = \"127.0.0.1:1\"").expect_err("unknown");
        assert_eq!(e.field, "bnd");
        assert!(e.message.contains("unknown field"), "{e}");
        assert_eq!(field_of("[gossip]\nprobe_perod_ms = 5"), "probe_perod_ms");
        assert_eq!(field_of("[nope]\nx = 1"), "nope");
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert_eq!(field_of("seeds = \"127.0.0.1:1\""), "config");
        assert_eq!(field_of("[gossip]\nprobe_period_ms = -1"), "config");
        assert_eq!(field_of("log_format = \"xml\""), "config");
    }

    #[test]
    fn non_loopback_admin_needs_a_token() {
        let e = parse("admin = \"0.0.0.0:7700\"").expect_err("token");
        assert_eq!(e.field, "admin_token");
        assert!(e.to_string().contains(TOKEN_ENV));
        assert!(parse("admin = \"0.0.0.0:7700\"\nadmin_token = \"0123456789abcdef\"").is_ok());
        assert_eq!(
            field_of("admin = \"0.0.0.0:7700\"\nadmin_token = \"short\""),
            "admin_token"
        );
    }

    #[test]
    fn unspecified_bind_needs_advertise() {
        assert_eq!(field_of("bind = \"0.0.0.0:7946\""), "advertise");
        assert!(parse("bind = \"0.0.0.0:7946\"\nadvertise = \"10.0.0.1:7946\"").is_ok());
        assert_eq!(
            field_of("bind = \"0.0.0.0:7946\"\nadvertise = \"0.0.0.0:7946\""),
            "advertise"
        );
    }

    #[test]
    fn bad_names_roles_and_timings() {
        assert_eq!(field_of("name = \"has space\""), "name");
        assert_eq!(field_of("roles = [\"CA\"]"), "roles");
        assert_eq!(
            field_of("[gossip]\nprobe_period_ms = 0"),
            "gossip.probe_period_ms"
        );
        assert_eq!(
            field_of("[gossip]\nprobe_period_ms = 100\nprobe_rtt_ms = 200"),
            "gossip.probe_rtt_ms"
        );
        assert_eq!(
            field_of("[gossip]\nsuspect_to_down_ms = 10"),
            "gossip.suspect_to_down_ms"
        );
        assert_eq!(
            field_of("[supervisor]\nbackoff_min_ms = 9000"),
            "supervisor.backoff_min_ms"
        );
    }

    #[test]
    fn bad_log_filter_and_empty_env_token() {
        assert_eq!(field_of("log_level = \"info,=bad=\""), "log_level");
        let args = NodeRunArgs {
            admin_token: Some(String::new()),
            ..NodeRunArgs::default()
        };
        let c = NodeConfig::from_toml(
            "admin = \"0.0.0.0:7700\"\nadmin_token = \"0123456789abcdef\"",
            args,
        )
        .expect("an empty flag does not hide the file's token");
        assert_eq!(c.admin_token.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let c = parse("admin_token = \"0123456789abcdef\"").expect("valid");
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn dataplane_is_an_address_or_a_table_with_the_source_check() {
        let c = parse("dataplane = \"127.0.0.1:7000\"").expect("string form");
        assert_eq!(c.dataplane, Some("127.0.0.1:7000".parse().expect("addr")));
        assert!(c.dataplane_source_check, "on by default");
        assert!(parse("").expect("defaults").dataplane_source_check);
        let c = parse("[dataplane]\nlisten = \"127.0.0.1:7001\"\nsource_check = false")
            .expect("table form");
        assert_eq!(c.dataplane, Some("127.0.0.1:7001".parse().expect("addr")));
        assert!(!c.dataplane_source_check);
        let c = parse("[dataplane]\nsource_check = true").expect("table without listen");
        assert_eq!(c.dataplane, None);
        assert!(c.dataplane_source_check);
        let args = NodeRunArgs {
            dataplane: Some("127.0.0.1:7002".into()),
            ..NodeRunArgs::default()
        };
        let c = NodeConfig::from_toml("[dataplane]\nlisten = \"127.0.0.1:1\"", args)
            .expect("flag over table");
        assert_eq!(c.dataplane, Some("127.0.0.1:7002".parse().expect("addr")));
        assert_eq!(field_of("[dataplane]\nlisten = \"127.0.0.1\""), "dataplane");
        let e = parse("[dataplane]\nsource_chek = false").expect_err("unknown key");
        assert_eq!(e.field, "source_chek", "{e}");
        let e = parse("[dataplane]\nsource_check = \"no\"").expect_err("not a bool");
        assert!(e.message.contains("invalid type"), "{e}");
        let e = parse("dataplane = \"127.0.0.1:1\"\n[dataplane]\nsource_check = false")
            .expect_err("both forms");
        assert!(e.message.contains("duplicate key"), "{e}");
        let e = parse("dataplane = 7000").expect_err("neither form");
        assert!(
            e.message
                .contains("an \"IP:PORT\" string or a [dataplane] table"),
            "{e}"
        );
    }

    #[test]
    fn ca_defaults_and_a_voter() {
        let c = parse("").expect("defaults");
        assert!(!c.ca.voter);
        assert_eq!(c.ca.raft_listen, None);
        assert_eq!(c.ca.bootstrap_expect, 3);
        assert_eq!(c.ca.node_cert_validity, Duration::from_secs(86_400));
        assert_eq!(c.ca.revocation_poll, Duration::from_millis(5_000));
        let v = parse(
            "[ca]\nvoter = true\nraft_listen = \"127.0.0.1:7800\"\nbootstrap_expect = 5\n\
             heartbeat_ms = 20\nelection_timeout_min_ms = 100\nelection_timeout_max_ms = 200\n\
             client_timeout_ms = 2000\nnode_cert_validity_s = 600\nrevocation_poll_ms = 250",
        )
        .expect("valid voter");
        assert!(v.ca.voter);
        assert_eq!(
            v.ca.raft_listen,
            Some("127.0.0.1:7800".parse().expect("addr"))
        );
        assert_eq!(v.ca.bootstrap_expect, 5);
        assert_eq!(
            (
                v.ca.heartbeat_ms,
                v.ca.election_timeout_min_ms,
                v.ca.election_timeout_max_ms
            ),
            (20, 100, 200)
        );
        assert_eq!(v.ca.node_cert_validity, Duration::from_secs(600));
        assert_eq!(v.ca.revocation_poll, Duration::from_millis(250));
    }

    #[test]
    fn bad_ca_settings_name_their_key() {
        assert_eq!(field_of("[ca]\nvoter = true"), "ca.raft_listen");
        assert_eq!(
            field_of("[ca]\nraft_listen = \"127.0.0.1:7800\""),
            "ca.raft_listen"
        );
        assert_eq!(
            field_of("[ca]\nvoter = true\nraft_listen = \"nope\""),
            "ca.raft_listen"
        );
        assert_eq!(
            field_of("[ca]\nvoter = true\nraft_listen = \"0.0.0.0:7800\""),
            "ca.raft_listen"
        );
        assert_eq!(
            field_of("[ca]\nbootstrap_expect = 4"),
            "ca.bootstrap_expect"
        );
        assert_eq!(
            field_of("[ca]\nbootstrap_expect = 1"),
            "ca.bootstrap_expect"
        );
        assert_eq!(field_of("[ca]\nheartbeat_ms = 0"), "ca.heartbeat_ms");
        assert_eq!(
            field_of("[ca]\nheartbeat_ms = 100\nelection_timeout_min_ms = 100"),
            "ca.election_timeout_min_ms"
        );
        assert_eq!(
            field_of("[ca]\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 400"),
            "ca.election_timeout_max_ms"
        );
        assert_eq!(
            field_of("[ca]\nclient_timeout_ms = 500"),
            "ca.client_timeout_ms"
        );
        assert_eq!(
            field_of("[ca]\nnode_cert_validity_s = 10"),
            "ca.node_cert_validity_s"
        );
        assert_eq!(
            field_of("[ca]\nnode_cert_validity_s = 99999999999"),
            "ca.node_cert_validity_s"
        );
        assert_eq!(
            field_of("[ca]\nrevocation_poll_ms = 5"),
            "ca.revocation_poll_ms"
        );
        assert_eq!(field_of("[ca]\nvoter = \"yes\""), "config");
        assert_eq!(field_of("[ca]\nvotr = true"), "votr");
    }

    #[test]
    fn stream_settings_parse_and_bad_values_name_the_key() {
        let c = parse("[stream]\nidle_close_ms = 5000\nsessions_max = 7\nhello_timeout_ms = 2000")
            .expect("valid");
        assert_eq!(c.stream.idle_close, Duration::from_secs(5));
        assert_eq!(c.stream.sessions_max, 7);
        assert_eq!(c.stream.hello_timeout, Duration::from_secs(2));
        for (text, key) in [
            ("[stream]\nsessions_max = 0", "stream.sessions_max"),
            ("[stream]\nsessions_max = 100000", "stream.sessions_max"),
            ("[stream]\nhello_timeout_ms = 50", "stream.hello_timeout_ms"),
            ("[stream]\nidle_close_ms = 0", "stream.idle_close_ms"),
            ("[stream]\nidle_close_ms = 500", "stream.idle_close_ms"),
        ] {
            assert_eq!(field_of(text), key, "{text}");
        }
        assert_eq!(field_of("[stream]\nidle = 1"), "idle");
    }

    #[test]
    fn api_listen_defaults_to_loopback_and_can_be_turned_off() {
        let c = parse("").expect("defaults");
        assert_eq!(c.api.map(|a| a.to_string()).as_deref(), Some(DEFAULT_API));
        let c = parse("[api]\nlisten = \"127.0.0.1:0\"").expect("port 0");
        assert_eq!(c.api, Some("127.0.0.1:0".parse().expect("addr")));
        let c = parse("[api]\nlisten = \"[::1]:7800\"").expect("v6 loopback");
        assert_eq!(c.api, Some("[::1]:7800".parse().expect("addr")));
        assert_eq!(parse("[api]\nlisten = \"off\"").expect("off").api, None);
        // The flag overrides the file, both ways.
        let args = NodeRunArgs {
            api: Some("off".into()),
            ..NodeRunArgs::default()
        };
        let c = NodeConfig::from_toml("[api]\nlisten = \"127.0.0.1:9\"", args).expect("valid");
        assert_eq!(c.api, None);
        let args = NodeRunArgs {
            api: Some("127.0.0.1:9".into()),
            ..NodeRunArgs::default()
        };
        let c = NodeConfig::from_toml("[api]\nlisten = \"off\"", args).expect("valid");
        assert_eq!(c.api, Some("127.0.0.1:9".parse().expect("addr")));
    }

    #[test]
    fn api_listen_must_be_loopback_and_well_formed() {
        for text in [
            "[api]\nlisten = \"0.0.0.0:7800\"",
            "[api]\nlisten = \"10.0.0.1:7800\"",
            "[api]\nlisten = \"[::]:7800\"",
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.field, "api.listen", "{text}");
            assert!(e.message.contains("loopback"), "{e}");
        }
        let e = parse("[api]\nlisten = \"127.0.0.1\"").expect_err("no port");
        assert_eq!(e.field, "api.listen");
        assert!(e.message.contains("off"), "{e}");
        assert_eq!(field_of("[api]\nlisten = \"OFF\""), "api.listen");
        assert_eq!(field_of("[api]\nport = 1"), "port");
        let args = NodeRunArgs {
            api: Some("0.0.0.0:1".into()),
            ..NodeRunArgs::default()
        };
        let e = NodeConfig::from_toml("", args).expect_err("flag checked too");
        assert_eq!(e.field, "api.listen");
    }

    #[test]
    fn unreadable_file_is_a_config_error() {
        let args = NodeRunArgs {
            config: Some("/nonexistent/nexus.toml".into()),
            ..NodeRunArgs::default()
        };
        let e = NodeConfig::load(&args).expect_err("missing file");
        assert_eq!(e.field, "config");
        assert!(e.message.contains("/nonexistent/nexus.toml"));
    }
}
