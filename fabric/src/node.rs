//! `nexus node run`: the composition root. Binds the sockets, opens the data directory, builds
//! the supervision tree and waits for a signal, a leave request or an escalation.
//!
//! Startup order is chosen so a bad configuration leaves nothing behind: the config is parsed,
//! then the sockets are bound (gossip, admin, data plane, a CA voter's Raft listener, the
//! local NexAPI endpoint and the gateway) (a port in use fails before any file exists), and
//! only then is the data directory created — and removed again if a later step fails.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_actors::env::{SledStorage, Storage};
use nexus_actors::{
    ChildSpec, GossipActor, GossipArgs, GossipMsg, HandoffTcp, NodeExit, NodeKey, NodeMetrics,
    NodeSupervisor, RegistryActor, RegistryArgs, SessionActor, SessionArgs, SupervisorArgs,
    SupervisorMsg, TableArgs, TableCompiler, TrustActor, TrustArgs, registry_inbox, trust_inbox,
};
use nexus_dataplane::fib::{Fib, FibTable, RouteSet, compile};
use nexus_dataplane::forward::{
    Forwarder, ForwarderConfig, ForwarderCounters, ForwarderHandle, LocalEndpoints, UdpIo, UringIo,
};
use nexus_gossip::{MemberMeta, OverlayConfig};
use ractor::Actor;
use ractor::rpc::CallResult;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::admin::{AdminActor, AdminArgs, AdminContext, NodeInfo};
use crate::config::{ConfigError, DataplaneBackend, NodeConfig};
use crate::nexapi::{ApiActor, ApiArgs};

pub mod sd_notify;

/// Socket buffer the data plane asks for in each direction: absorbs the bursts of a QUIC
/// congestion window (NexStream sessions) while the forwarder thread is descheduled.
const DATAPLANE_SOCKET_BYTES: usize = 4 << 20;

/// The data plane's socket wrapped in the chosen backend, built before anything is written so a
/// backend the host cannot run is a configuration error.
enum DataplaneIo {
    Portable(UdpIo),
    // Boxed: the ring's preallocated send headers make it far larger than `UdpIo`.
    IoUring(Box<UringIo>),
}

/// How a node run ended, as a process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Left on request (signal or `POST /v1/leave`).
    Clean = 0,
    /// Stopped by an escalated failure or a runtime error.
    Failed = 1,
    /// Bad configuration (including port in use and unusable data dir); nothing was created.
    Config = 2,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong or unusable; exit code 2.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Something failed after the configuration was accepted; exit code 1.
    #[error("{0}")]
    Runtime(String),
}

/// The gossip encryption the node starts with: the keyring file if it exists, else a keyring of
/// `encrypt_key` (written to the keyring file), else plaintext.
fn gossip_security(config: &NodeConfig) -> Result<nexus_actors::GossipSecurity, StartError> {
    use nexus_gossip::{GuardConfig, Keyring};
    let e = &config.gossip_encryption;
    let file = nexus_actors::read_keyring_file(&e.keyring_file)
        .map_err(|err| config_err("gossip.keyring_file", err))?;
    let keyring = match (file, &e.encrypt_key) {
        (Some(keyring), key) => {
            if let Some(key) = key
                && !keyring.contains(key)
            {
                tracing::warn!(
                    file = %e.keyring_file.display(),
                    "gossip.encrypt_key is not in the keyring file; the keyring file is used"
                );
            }
            Some(keyring)
        }
        (None, Some(key)) => {
            let keyring = Keyring::new(key.clone());
            nexus_actors::persist_keyring_file(&e.keyring_file, &keyring)
                .map_err(|err| config_err("gossip.keyring_file", err))?;
            Some(keyring)
        }
        (None, None) => None,
    };
    if keyring.is_none() && e.verify_set {
        return Err(config_err(
            "gossip.verify_incoming",
            "verify_incoming and verify_outgoing need gossip.encrypt_key or a keyring file",
        )
        .into());
    }
    let enabled = keyring.is_some();
    tracing::info!(
        encryption = enabled,
        verify_incoming = enabled && e.verify_incoming,
        verify_outgoing = enabled && e.verify_outgoing,
        "gossip encryption"
    );
    #[allow(
        clippy::disallowed_methods,
        reason = "the node's IO edge: nonces must never repeat under a key, so they come from the OS"
    )]
    let seed = {
        use rand_core_06::RngCore;
        let mut seed = [0u8; 32];
        rand_core_06::OsRng.fill_bytes(&mut seed);
        seed
    };
    Ok(nexus_actors::GossipSecurity {
        guard: GuardConfig {
            keyring,
            verify_incoming: e.verify_incoming,
            verify_outgoing: e.verify_outgoing,
        },
        keyring_file: enabled.then(|| e.keyring_file.clone()),
        seed,
    })
}

fn config_err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

fn bind_error(field: &str, addr: std::net::SocketAddr, e: &std::io::Error) -> ConfigError {
    let why = match e.kind() {
        std::io::ErrorKind::AddrInUse => "is already in use".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "is not an address of this host".to_owned(),
        std::io::ErrorKind::PermissionDenied => "needs privileges to bind".to_owned(),
        _ => format!("cannot be bound: {e}"),
    };
    config_err(field, format!("{addr} {why}"))
}

/// The opened data directory.
struct DataDir {
    key: NodeKey,
    storage: SledStorage,
}

/// Opens `path`, creating it (mode 0700), the key and the database on first start. If this call
/// created anything and a later step fails, it removes what it created.
fn open_data_dir(path: &Path) -> Result<DataDir, ConfigError> {
    let field = "data_dir";
    let shown = path.display();
    let existed = match fs::metadata(path) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(config_err(
                field,
                format!("{shown} exists and is not a directory"),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(config_err(field, format!("{shown}: {e}"))),
    };
    // The outermost directory this call creates (the data dir or a missing ancestor), removed
    // again if anything after this fails, so a failed first start leaves nothing behind.
    let mut created_root: Option<PathBuf> = None;
    if existed {
        fs::read_dir(path)
            .map_err(|e| config_err(field, format!("{shown} is not readable: {e}")))?;
    } else {
        let absolute = absolute(path);
        created_root = absolute
            .ancestors()
            .take_while(|a| !a.exists())
            .last()
            .map(Path::to_path_buf);
        let made = fs::create_dir_all(path)
            .and_then(|_| fs::set_permissions(path, fs::Permissions::from_mode(0o700)));
        if let Err(e) = made {
            if let Some(root) = &created_root {
                let _ = fs::remove_dir_all(root);
            }
            return Err(config_err(field, format!("cannot create {shown}: {e}")));
        }
    }
    let key_path = path.join(nexus_actors::KEY_FILE);
    let opened = (|| {
        let (key, created) =
            NodeKey::load_or_create(path).map_err(|e| (config_err(field, e.to_string()), false))?;
        let storage = SledStorage::open(&path.join("db"))
            .map_err(|e| (config_err(field, format!("{shown}/db: {e}")), created))?;
        Ok(DataDir { key, storage })
    })();
    match opened {
        Ok(dir) => Ok(dir),
        Err((error, key_created)) => {
            if let Some(root) = &created_root {
                let _ = fs::remove_dir_all(root);
            } else if key_created {
                let _ = fs::remove_file(&key_path);
            }
            Err(error)
        }
    }
}

/// Runs a node until it leaves or fails. Returns the exit code to use.
pub async fn run(config: NodeConfig) -> Result<ExitCode, StartError> {
    let started = tokio::time::Instant::now();

    // 1. Sockets first: a port in use must fail before anything is written.
    let socket = UdpSocket::bind(config.bind)
        .await
        .map_err(|e| bind_error("bind", config.bind, &e))?;
    let bound = socket
        .local_addr()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let listener = std::net::TcpListener::bind(config.admin)
        .map_err(|e| bind_error("admin", config.admin, &e))?;
    let admin_addr = listener
        .local_addr()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let advertise = config.advertise.unwrap_or(bound);
    let dataplane_socket = match config.dataplane {
        Some(addr) => {
            Some(std::net::UdpSocket::bind(addr).map_err(|e| bind_error("dataplane", addr, &e))?)
        }
        None => None,
    };
    let dataplane_addr = dataplane_socket.as_ref().and_then(|s| s.local_addr().ok());
    let dataplane_io = match dataplane_socket {
        None => None,
        Some(socket) => Some(match config.dataplane_backend {
            // With XDP the software forwarder serves what the program passes to the kernel.
            DataplaneBackend::Portable | DataplaneBackend::Xdp => {
                let io = UdpIo::from_socket(socket)
                    .map_err(|e| config_err("dataplane", format!("socket setup: {e}")))?;
                // Best effort: the kernel caps the sizes at net.core.rmem_max / wmem_max.
                let _ = io.set_buffer_sizes(DATAPLANE_SOCKET_BYTES, DATAPLANE_SOCKET_BYTES);
                DataplaneIo::Portable(io)
            }
            DataplaneBackend::IoUring => {
                let io = UringIo::from_socket(socket).map_err(|e| {
                    config_err(
                        "dataplane_backend",
                        format!("io_uring is not usable here: {e}"),
                    )
                })?;
                let _ = io.set_buffer_sizes(DATAPLANE_SOCKET_BYTES, DATAPLANE_SOCKET_BYTES);
                DataplaneIo::IoUring(Box::new(io))
            }
        }),
    };
    // The XDP program, attached now for the same reason (no such interface, no privileges, a
    // driver without native XDP are configuration errors); it is fed once the table runs.
    let xdp = match (&config.xdp, dataplane_addr) {
        (Some(settings), Some(addr)) => Some(crate::targets::attach_xdp(
            settings,
            addr.port(),
            config.dataplane_source_check,
        )?),
        _ => None,
    };
    // The CA voter's Raft listener, bound now for the same reason; the trust actor takes it over.
    let raft = match (config.ca.voter, config.ca.raft_listen) {
        (true, Some(addr)) => {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| bind_error("ca.raft_listen", addr, &e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| StartError::Runtime(e.to_string()))?;
            Some((HandoffTcp::new(listener), bound))
        }
        _ => None,
    };
    let raft_addr = raft.as_ref().map(|(_, a)| *a);
    // The local NexAPI endpoint (binary resolve), bound now for the same reason; the api actor
    // serves it from a thread of its own, so the socket is a plain one the async runtime does
    // not watch.
    let api_socket = match config.api {
        Some(addr) => Some(Arc::new(
            std::net::UdpSocket::bind(addr).map_err(|e| bind_error("api.listen", addr, &e))?,
        )),
        None => None,
    };
    let api_addr = match &api_socket {
        Some(s) => Some(
            s.local_addr()
                .map_err(|e| StartError::Runtime(e.to_string()))?,
        ),
        None => None,
    };
    // The OpenAI-compatible gateway's listener, bound now for the same reason.
    let gateway_listener = match &config.gateway {
        Some(g) => Some(
            std::net::TcpListener::bind(g.listen)
                .map_err(|e| bind_error("gateway.listen", g.listen, &e))?,
        ),
        None => None,
    };
    let gateway_addr = gateway_listener.as_ref().and_then(|l| l.local_addr().ok());
    // Peers are told where the admin API is; an unspecified bind (0.0.0.0) is useless to them,
    // so share the advertised IP with the admin port instead.
    let admin_shared = if admin_addr.ip().is_unspecified() {
        std::net::SocketAddr::new(advertise.ip(), admin_addr.port())
    } else {
        admin_addr
    };

    // SIGHUP reloads what can change without a restart: the admin API's certificate. Installed
    // before "node started" is logged, so a SIGHUP sent after that line never kills the node.
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| StartError::Runtime(format!("installing SIGHUP handler: {e}")))?;
    // SIGTERM likewise: once "node started" is logged (and before READY=1 reaches a service
    // manager) it is a graceful leave, never the default action that kills the process.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| StartError::Runtime(format!("installing SIGTERM handler: {e}")))?;
    // The admin API's certificate (checked when the config was read; read again now).
    let admin_metrics = crate::admin::AdminMetrics::default();
    let admin_tls = match &config.admin_tls {
        Some(files) => Some(
            crate::admin::tls::AdminTls::new(files.clone(), admin_metrics.tls.clone())
                .map_err(|e| config_err(e.field(), e.to_string()))?,
        ),
        None => None,
    };

    // 2. Data directory: identity key and database.
    let data = open_data_dir(&config.data_dir)?;
    let acl = Arc::new(
        crate::acl::AclStore::open(&config.data_dir, config.admin_token.as_deref())
            .map_err(|e| config_err("data_dir", format!("ACL token store: {e}")))?,
    );
    if !acl.enabled() {
        tracing::warn!(
            stored_tokens_ignored = acl.stored_count(),
            "the admin API has no admin_token: ACLs are off and every request is allowed; \
             set admin_token (--admin-token, NEXUS_ADMIN_TOKEN) to require scoped tokens"
        );
    }
    let node_id = data.key.node_id();
    let db = data.storage.db().clone();
    let storage: Arc<dyn Storage> = Arc::new(data.storage);
    let meta = MemberMeta::new(
        config.name.clone(),
        Some(admin_shared),
        env!("CARGO_PKG_VERSION"),
        config.roles.clone(),
    )
    .map_err(|e| config_err("name", e.to_string()))?
    // Peers forward frames here; an unspecified bind is reached at the advertised IP.
    .with_dataplane(dataplane_addr.map(|a| {
        if a.ip().is_unspecified() {
            std::net::SocketAddr::new(advertise.ip(), a.port())
        } else {
            a
        }
    }))
    // CA voters tell peers (and CA clients) where their Raft listener is.
    .with_ca_raft(raft_addr);

    // 3. The supervision tree: gossip first, then the registry, the table compiler, the admin
    //    API, the local NexAPI endpoint and the gateway.
    let gateway_metrics = crate::gateway::GatewayMetrics::default();
    let mut metrics = NodeMetrics::new();
    metrics.register_more(|registry| admin_metrics.register(registry));
    if gateway_listener.is_some() {
        metrics.register_more(|registry| gateway_metrics.register(registry));
    }
    let target_metrics = crate::targets::TargetMetrics::default();
    if config.p4.is_some() || xdp.is_some() {
        metrics.register_more(|registry| target_metrics.register(registry));
    }
    // The node's own SDK users (the gateway's client, upstream services) reach it as any
    // application does: through its admin API (on loopback when it is bound to an unspecified
    // address) and its NexAPI endpoint. With ACLs on they hold a node-internal token with the
    // scopes they need (read the CA's keys and revocations, have their keys certified, register
    // and report load); with TLS they accept exactly the certificate the node serves.
    let sdk_token = acl.enabled().then(|| {
        acl.mint_internal(
            "the node's gateway and upstream services",
            [
                crate::acl::Scope::Read,
                crate::acl::Scope::ServicesWrite,
                crate::acl::Scope::CaIssue,
            ]
            .into(),
            0,
            &mut rand_core_06::OsRng,
        )
        .expose()
        .to_owned()
    });
    let sdk_tls = match &admin_tls {
        Some(tls) => Some(Arc::new(tls.pinned_client_config().map_err(|e| {
            StartError::Runtime(format!("the admin API's TLS client configuration: {e}"))
        })?)),
        None => None,
    };
    let sdk_node = api_addr.map(|api| {
        let admin = match admin_addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                std::net::SocketAddr::from(([127, 0, 0, 1], admin_addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, admin_addr.port()))
            }
            _ => admin_addr,
        };
        let scheme = if admin_tls.is_some() { "https" } else { "http" };
        let mut node = nexus_api::NodeConfig::new(format!("{scheme}://{admin}"), api);
        node.token = sdk_token.clone();
        node.tls = sdk_tls.clone();
        node
    });
    let gateway = match (&config.gateway, gateway_listener, &sdk_node) {
        (Some(settings), Some(listener), Some(node)) => Some(crate::gateway::Gateway::new(
            settings.clone(),
            listener,
            node.clone(),
            gateway_metrics,
        )),
        _ => None,
    };
    let metrics_for_export = metrics.clone();
    let (leave_tx, mut leave_rx) = mpsc::channel::<String>(1);
    let (registry_tx, registry_rx) = registry_inbox();
    let registry_changes = nexus_actors::RegistryChanges::default();
    let registry_args = RegistryArgs {
        key: data.key.signing_key().clone(),
        storage: storage.clone(),
        metrics: metrics.clone(),
        epoch: started,
        inbox: registry_rx,
        settings: config.registry.clone(),
        changes: registry_changes.clone(),
    };
    let (trust_tx, trust_rx) = trust_inbox();
    let node_seed = {
        use rand_core_06::RngCore;
        rand_core_06::OsRng.next_u64()
    };
    let trust_args = TrustArgs {
        key: data.key.signing_key().clone(),
        name: config.name.clone(),
        storage: storage.clone(),
        db: config.ca.voter.then_some(db),
        raft_listener: raft.as_ref().map(|(l, _)| l.clone()),
        raft_addr,
        settings: config.ca.clone(),
        metrics: metrics.clone(),
        inbox: trust_rx,
        // openraft's election-timeout RNG, derived from the node seed.
        raft_seed: node_seed.rotate_left(29) ^ 0x6361_5f72_6166_7421,
        ca_seed: {
            use rand_core_06::RngCore;
            let mut seed = [0u8; 32];
            rand_core_06::OsRng.fill_bytes(&mut seed);
            seed
        },
        clock: nexus_trust::raft::node::CaClock::wall(),
    };
    let gossip_args = GossipArgs {
        socket: Arc::new(socket),
        advertise,
        node_id,
        meta,
        config: config.gossip.clone(),
        seeds: config.seeds.clone(),
        storage,
        metrics: metrics.clone(),
        epoch: started,
        rng_seed: node_seed,
        overlay: OverlayConfig::default(),
        registry: Some(registry_tx),
        trust: Some(trust_tx),
        security: gossip_security(&config)?,
    };
    // The forwarding table: an empty generation 0 until the table compiler installs one. The
    // handle outlives actor restarts; the data plane will read it.
    let empty = compile(&RouteSet::new(0))
        .map_err(|e| e.to_string())
        .and_then(|image| FibTable::load(image).map_err(|e| e.to_string()))
        .map_err(|e| StartError::Runtime(format!("building the empty forwarding table: {e}")))?;
    let fib = Fib::new(empty);
    // The table actor publishes the local-endpoint table (registered services' keys → their
    // ports); the main task below hands each new one to the forwarder.
    let (local_tx, mut local_rx) = watch::channel(LocalEndpoints::new());
    // NexStream sessions run with the data plane: their frames travel through it.
    let (session_tx, session_rx) = watch::channel(None);
    let session_args = dataplane_addr.map(|addr| {
        let reachable = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        SessionArgs {
            key: data.key.signing_key().clone(),
            dataplane: reachable,
            endpoint: session_tx,
            settings: config.stream.clone(),
            metrics: metrics.clone(),
            anchor_unix_ms: nexus_trust::raft::node::CaClock::wall().now_ms(),
            anchor: tokio::time::Instant::now(),
        }
    });
    // Every table generation goes to the hardware targets, when any is configured.
    let (generations_tx, generations_rx) = watch::channel(None);
    let targets =
        crate::targets::Targets::start(config.p4.as_ref(), xdp, &generations_rx, &target_metrics);
    let table_args = TableArgs {
        fib: fib.clone(),
        storage: gossip_args.storage.clone(),
        local: node_id,
        refresh: config.gossip.probe_period / 2,
        metrics: metrics.clone(),
        local_endpoints: dataplane_io.is_some().then_some(local_tx),
        session_endpoint: session_args.is_some().then(|| session_rx.clone()),
        generations: (!targets.is_empty()).then_some(generations_tx),
    };
    let admin_args = AdminArgs {
        listener: Arc::new(listener),
        ctx: AdminContext {
            node: Arc::new(NodeInfo {
                id: node_id.to_hex(),
                name: config.name.clone(),
                addr: advertise,
                bind: bound,
                admin: admin_addr,
                roles: config.roles.clone(),
                data_dir: absolute(&config.data_dir).display().to_string(),
                dataplane: dataplane_addr,
                api: api_addr,
                gateway: gateway_addr,
                sessions: session_args.is_some().then_some(session_rx),
            }),
            metrics: metrics.clone(),
            acl: acl.clone(),
            tls: admin_tls.clone(),
            admin_metrics: admin_metrics.clone(),
            leave: leave_tx,
            fault_injection: config.fault_injection,
            started,
            targets: targets.clone(),
        },
    };
    let (exit_tx, mut exit_rx) = watch::channel(None);
    let mut children = vec![
        ChildSpec::new("gossip", move |_| {
            (GossipActor::<UdpSocket>::default(), gossip_args.clone())
        }),
        ChildSpec::new("registry", move |supervisor| {
            (RegistryActor, (registry_args.clone(), supervisor))
        }),
        ChildSpec::new("trust", move |supervisor| {
            (TrustActor, (trust_args.clone(), supervisor))
        }),
    ];
    if let Some(session_args) = session_args {
        children.push(ChildSpec::new("sessions", move |supervisor| {
            (SessionActor, (session_args.clone(), supervisor))
        }));
    }
    children.push(ChildSpec::new("table", move |supervisor| {
        (TableCompiler, (table_args.clone(), supervisor))
    }));
    children.push(ChildSpec::new("admin", move |supervisor| {
        (AdminActor, (admin_args.clone(), supervisor))
    }));
    if let Some(socket) = api_socket {
        let api_args = ApiArgs {
            socket,
            metrics: metrics.clone(),
            registry_changes: registry_changes.clone(),
        };
        children.push(ChildSpec::new("api", move |supervisor| {
            (ApiActor, (api_args.clone(), supervisor))
        }));
    }
    if let Some(gateway) = &gateway {
        children.push(crate::gateway::child(gateway.clone()));
    }
    let (supervisor, handle) = Actor::spawn(
        None,
        NodeSupervisor,
        SupervisorArgs {
            children,
            policy: config.supervisor.clone(),
            metrics,
            exit: exit_tx,
        },
    )
    .await
    .map_err(|e| StartError::Runtime(format!("starting the supervision tree: {e}")))?;
    if let Some(NodeExit::StartFailed { child, reason }) = exit_rx.borrow().clone() {
        let _ = handle.await;
        return Err(StartError::Runtime(format!(
            "starting the {child} actor: {reason}"
        )));
    }
    // The gateway's client and the upstream services need certificates from the CA; their
    // tasks retry until it issues them.
    let mut sdk_tasks = Vec::new();
    if let Some(gateway) = &gateway {
        sdk_tasks.push(gateway.connect());
    }
    if let Some(node) = &sdk_node {
        sdk_tasks.extend(crate::upstream::start(&config.upstreams, node));
    }

    tracing::info!(
        node = %node_id.short(),
        id = %node_id,
        name = %config.name,
        gossip = %bound,
        advertise = %advertise,
        admin = %admin_addr,
        admin_tls = admin_tls.is_some(),
        acl = acl.enabled(),
        dataplane = %dataplane_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into()),
        dataplane_backend = ?config.dataplane_backend,
        dataplane_source_check = config.dataplane_source_check,
        ca_raft = %raft_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into()),
        api = %api_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into()),
        gateway = %gateway_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into()),
        upstreams = config.upstreams.len(),
        p4 = %config
            .p4
            .as_ref()
            .map(|p| p.config.target.clone())
            .unwrap_or_else(|| "off".into()),
        data_dir = %config.data_dir.display(),
        "node started"
    );

    // 4. Wait for a signal, a leave request or an escalation.
    // The data plane: its own OS thread, reading the table generations the table actor installs.
    // The forwarder is generic over its backend, so each arm spawns its own monomorphisation.
    // With the source check on (the default) it forwards only for the sources the table
    // compiler puts in each generation: members' data planes and this node's own senders.
    if dataplane_io.is_some() && !config.dataplane_source_check {
        tracing::warn!(
            "[dataplane] source_check is off: the data plane forwards frames from any source"
        );
    }
    let config_fwd = || ForwarderConfig {
        source_check: config.dataplane_source_check,
        ..ForwarderConfig::default()
    };
    let forwarder = match dataplane_io {
        None => None,
        Some(DataplaneIo::Portable(io)) => Some(Forwarder::spawn(
            config_fwd(),
            &fib,
            LocalEndpoints::new(),
            io,
        )),
        Some(DataplaneIo::IoUring(io)) => Some(Forwarder::spawn(
            config_fwd(),
            &fib,
            LocalEndpoints::new(),
            *io,
        )),
    }
    .transpose()
    .map_err(|e| StartError::Runtime(format!("starting the forwarder: {e}")))?;
    let exporter = forwarder
        .as_ref()
        .map(|f| spawn_counter_export(f, metrics_for_export.clone()));
    // systemd (Type=notify): READY=1 once every actor runs, then WATCHDOG=1 if asked for.
    let notifier = match sd_notify::Notifier::from_env() {
        Ok(n) => n.map(Arc::new),
        Err(e) => {
            tracing::warn!(%e, "not notifying the service manager");
            None
        }
    };
    let readiness = notifier.clone().map(|n| {
        tokio::spawn(sd_notify::ready_and_watchdog(
            n,
            supervisor.clone(),
            format!("serving; admin {admin_addr}, gossip {bound}"),
        ))
    });
    let mut local_open = true;
    let leave_first = loop {
        tokio::select! {
            biased;
            _ = exit_rx.changed() => break false,
            _ = sigterm.recv() => { tracing::info!("SIGTERM received; leaving"); break true }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT received; leaving"); break true }
            _ = sighup.recv() => match &admin_tls {
                Some(tls) => { tls.reload(); }
                None => tracing::info!("SIGHUP received; nothing to reload (the admin API serves plain HTTP)"),
            },
            reason = leave_rx.recv() => {
                tracing::info!(reason = reason.as_deref().unwrap_or(""), "leave complete; stopping");
                break false
            }
            changed = local_rx.changed(), if local_open => {
                if changed.is_err() {
                    // No data plane (the sender was never handed out), or the tree is stopping.
                    local_open = false;
                    continue;
                }
                let local = local_rx.borrow_and_update().clone();
                if let Some(f) = &forwarder {
                    tracing::info!(endpoints = local.len(), "local endpoints updated");
                    f.set_local_endpoints(local);
                }
            }
        }
    };
    if let Some(task) = readiness {
        task.abort();
    }
    if let Some(n) = &notifier
        && exit_rx.borrow().is_none()
        && let Err(e) = n.notify("STOPPING=1\nSTATUS=leaving")
    {
        tracing::warn!(%e, "could not notify the service manager (STOPPING=1)");
    }
    if leave_first {
        graceful_leave(&supervisor).await;
    }
    for task in sdk_tasks {
        task.abort();
    }
    let escalated = matches!(&*exit_rx.borrow(), Some(NodeExit::Escalated { .. }));
    if !escalated {
        supervisor.stop(Some("node stopping".into()));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    if let Some(task) = exporter {
        task.abort();
    }
    if let Some(f) = forwarder
        && let Err(e) = tokio::task::spawn_blocking(move || f.shutdown())
            .await
            .unwrap_or(Err(nexus_dataplane::forward::ForwarderError::Panicked))
    {
        tracing::warn!(%e, "the forwarder stopped abnormally");
    }
    let exit = exit_rx.borrow().clone();
    match exit {
        Some(NodeExit::Escalated { child, reason }) => {
            tracing::error!(actor = %child, %reason, "node stopped: restart intensity exceeded");
            Ok(ExitCode::Failed)
        }
        Some(NodeExit::StartFailed { child, reason }) => Err(StartError::Runtime(format!(
            "starting the {child} actor: {reason}"
        ))),
        _ => {
            tracing::info!("node stopped");
            Ok(ExitCode::Clean)
        }
    }
}

/// Copies the forwarder's counters into the node's Prometheus metrics once a second. The
/// forwarder publishes plain snapshots (no shared counters on its hot path); this adds the
/// deltas.
fn spawn_counter_export(
    forwarder: &ForwarderHandle,
    metrics: NodeMetrics,
) -> tokio::task::JoinHandle<()> {
    let counters = forwarder.counters_reader();
    tokio::spawn(async move {
        let mut last = ForwarderCounters::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = counters.snapshot();
            metrics
                .dataplane_forwarded
                .inc_by(now.forwarded.saturating_sub(last.forwarded));
            metrics
                .dataplane_delivered_local
                .inc_by(now.delivered_local.saturating_sub(last.delivered_local));
            for ((reason, n), (_, before)) in now.drops().zip(last.drops()) {
                metrics
                    .dataplane_dropped
                    .get_or_create(&nexus_actors::metrics::ReasonLabel {
                        reason: reason.to_owned(),
                    })
                    .inc_by(n.saturating_sub(before));
            }
            last = now;
        }
    })
}

async fn graceful_leave(supervisor: &ractor::ActorRef<SupervisorMsg>) {
    let lookup = supervisor
        .call(
            |r| SupervisorMsg::Lookup("gossip".into(), r),
            Some(Duration::from_secs(2)),
        )
        .await;
    if let Ok(CallResult::Success(Some(cell))) = lookup {
        let gossip: ractor::ActorRef<GossipMsg> = cell.into();
        if !matches!(
            gossip
                .call(GossipMsg::Leave, Some(Duration::from_secs(2)))
                .await,
            Ok(CallResult::Success(()))
        ) {
            tracing::warn!("gossip actor did not confirm the leave; stopping anyway");
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_is_created_once_and_reused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("d");
        let first = open_data_dir(&dir).expect("create").key.node_id();
        let mode = fs::metadata(&dir).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let second = open_data_dir(&dir).expect("reuse").key.node_id();
        assert_eq!(first, second);
    }

    #[test]
    fn a_file_in_place_of_the_data_dir_is_rejected() {
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("f");
        fs::write(&file, b"x").expect("write");
        let e = open_data_dir(&file).err().expect("not a dir");
        assert_eq!(e.field, "data_dir");
        assert!(e.message.contains("not a directory"));
    }

    #[test]
    fn a_locked_database_fails_and_removes_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("d");
        let held = open_data_dir(&dir).expect("first");
        let e = open_data_dir(&dir).err().expect("locked by the first");
        assert_eq!(e.field, "data_dir");
        assert!(
            dir.join(nexus_actors::KEY_FILE).exists(),
            "existing key kept"
        );
        drop(held);
    }

    #[test]
    fn missing_parents_created_for_a_failed_start_are_removed_too() {
        let tmp = tempfile::tempdir().expect("tmp");
        let outer = tmp.path().join("a");
        // create_dir_all makes a/ and a/b/, then fails on a name the OS rejects (NUL byte).
        let e = open_data_dir(&outer.join("b").join("bad\u{0}name"))
            .err()
            .expect("fails");
        assert_eq!(e.field, "data_dir");
        assert!(
            !outer.exists(),
            "a/ and a/b/, created by the failed start, are removed"
        );
        assert!(
            tmp.path().exists(),
            "directories that existed before are untouched"
        );
    }

    #[test]
    fn an_unusable_new_dir_is_removed_again() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("d");
        // A file where sled wants its directory makes the database open fail after the dir and
        // key were created.
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("db"), b"not a directory").expect("write");
        let e = open_data_dir(&dir).err().expect("db cannot open");
        assert_eq!(e.field, "data_dir");
        assert!(
            !dir.join(nexus_actors::KEY_FILE).exists(),
            "key created now is removed"
        );
    }
}
