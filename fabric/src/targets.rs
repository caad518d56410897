//! The node's hardware data-plane targets: a P4 switch (`[p4]`, [`nexus_p4`]) and the XDP
//! program on a network interface (`dataplane_backend = "xdp"`, `nexus_nic`, in a node built
//! with the `xdp` feature) that the node keeps on every forwarding-table generation it
//! installs.
//!
//! The table compiler hands each generation to a watch channel
//! ([`nexus_actors::TableArgs::generations`]); [`Targets::start`] spawns one publisher per
//! configured target and a task per target that passes the latest generation on, follows the
//! publisher's status and keeps the target's metrics: the installed generation
//! (`nexus_dataplane_target_generation`), failed pushes
//! (`nexus_dataplane_target_publish_errors_total`) and the time from handing a generation over
//! to the target reporting it installed (`nexus_dataplane_target_publish_seconds`). A target
//! that is slower than the table skips to the latest generation. `GET /v1/dataplane/targets`
//! shows each target's state ([`Targets::view`]).
//!
//! The software forwarder keeps running beside the targets; a target that cannot be reached
//! does not stop the node: its status carries the error and the publisher retries.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_actors::TableGeneration;
use nexus_p4::client::P4Config;
use nexus_p4::publisher::{P4Publisher, PublishStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::watch;

use crate::api::DataplaneTargetDto;
use crate::config::ConfigError;

/// Default P4Runtime device id (`[p4] device_id`).
pub const P4_DEVICE_ID_DEFAULT: u64 = 1;
/// Default election id (`[p4] election_id`).
pub const P4_ELECTION_ID_DEFAULT: u64 = 1;
/// Default deadline of each P4Runtime call (`[p4] rpc_timeout_ms`).
pub const P4_RPC_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Largest `[p4] device_config` file accepted (a BMv2 JSON is a few hundred KiB; gRPC's
/// default message limit is 4 MiB).
pub const P4_DEVICE_CONFIG_BYTES_MAX: u64 = 4 << 20;

/// `[dataplane] xdp_mode`: where the XDP program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// In the driver (needs driver support).
    #[default]
    Native,
    /// In the kernel's generic receive path, on any interface (slower).
    Generic,
}

/// The XDP target as configured (`dataplane_backend = "xdp"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpSettings {
    /// The interface the program is attached to.
    pub interface: String,
    /// Native or generic XDP.
    pub mode: XdpModeSetting,
}

/// Parses the XDP keys of `[dataplane]`: required with `dataplane_backend = "xdp"` (which needs
/// the data plane's address and a node built with the `xdp` feature), refused without it.
pub(crate) fn parse_xdp(
    backend_is_xdp: bool,
    dataplane_on: bool,
    interface: Option<&str>,
    mode: Option<XdpModeSetting>,
) -> Result<Option<XdpSettings>, ConfigError> {
    if !backend_is_xdp {
        if interface.is_some() {
            return config_err(
                "dataplane.xdp_interface",
                "only with dataplane_backend = \"xdp\"",
            );
        }
        if mode.is_some() {
            return config_err(
                "dataplane.xdp_mode",
                "only with dataplane_backend = \"xdp\"",
            );
        }
        return Ok(None);
    }
    if !cfg!(feature = "xdp") {
        return config_err(
            "dataplane_backend",
            "this nexus is built without XDP support (build it with `cargo build --features xdp`, \
             which needs clang, libelf-dev and zlib1g-dev)",
        );
    }
    if !dataplane_on {
        return config_err(
            "dataplane",
            "required with dataplane_backend = \"xdp\" (the UDP address whose port the XDP \
             program takes frames to, and where the software forwarder serves what XDP passes \
             to the kernel)",
        );
    }
    let Some(interface) = interface.map(str::trim) else {
        return config_err(
            "dataplane.xdp_interface",
            "required with dataplane_backend = \"xdp\" (the network interface, e.g. \"eth0\")",
        );
    };
    // IFNAMSIZ is 16 bytes with the terminating NUL.
    if interface.is_empty()
        || interface.len() > 15
        || interface
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return config_err(
            "dataplane.xdp_interface",
            format!("{interface:?} is not an interface name (1-15 bytes, no '/', ':' or spaces)"),
        );
    }
    Ok(Some(XdpSettings {
        interface: interface.to_owned(),
        mode: mode.unwrap_or_default(),
    }))
}

/// The XDP program attached to its interface, before the node starts feeding it.
#[derive(Debug)]
pub struct XdpAttached {
    #[cfg(feature = "xdp")]
    publisher: nexus_nic::XdpPublisher,
    interface: String,
}

/// Loads the XDP program and attaches it to the configured interface (`port`: the data
/// plane's UDP port). A failure is a configuration error: no such interface, no privileges,
/// or native XDP unsupported by the driver (the message suggests generic mode).
#[cfg(feature = "xdp")]
pub fn attach_xdp(
    settings: &XdpSettings,
    port: u16,
    source_check: bool,
) -> Result<XdpAttached, ConfigError> {
    let mut config = nexus_nic::XdpPublisherConfig::new(settings.interface.clone(), port);
    config.mode = match settings.mode {
        XdpModeSetting::Native => nexus_nic::XdpMode::Native,
        XdpModeSetting::Generic => nexus_nic::XdpMode::Generic,
    };
    config.source_check = source_check;
    match nexus_nic::XdpPublisher::spawn(config) {
        Ok(publisher) => Ok(XdpAttached {
            publisher,
            interface: settings.interface.clone(),
        }),
        Err(e @ nexus_nic::XdpError::Attach { .. }) if settings.mode == XdpModeSetting::Native => {
            config_err(
                "dataplane.xdp_mode",
                format!(
                    "{e}; the driver of {} may not support native XDP: set \
                     [dataplane] xdp_mode = \"generic\"",
                    settings.interface
                ),
            )
        }
        Err(e @ nexus_nic::XdpError::Interface { .. }) => {
            config_err("dataplane.xdp_interface", e.to_string())
        }
        Err(e) => config_err("dataplane_backend", e.to_string()),
    }
}

/// Without the `xdp` feature the configuration refuses the XDP backend before this is reached.
#[cfg(not(feature = "xdp"))]
pub fn attach_xdp(
    settings: &XdpSettings,
    _port: u16,
    _source_check: bool,
) -> Result<XdpAttached, ConfigError> {
    config_err(
        "dataplane_backend",
        format!(
            "this nexus is built without XDP support; {} is not attached",
            settings.interface
        ),
    )
}

/// `[p4]`: the P4 switch the node feeds. See docs/operations.md.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct P4File {
    target: Option<String>,
    device_id: Option<u64>,
    election_id: Option<u64>,
    device_config: Option<PathBuf>,
    rpc_timeout_ms: Option<u64>,
}

/// The P4 target as configured. `Debug` shows the device config's path and size, not its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct P4Settings {
    /// What the publisher connects with (the device config already read).
    pub config: P4Config,
    /// Where the device config was read from, if one was given.
    pub device_config_path: Option<PathBuf>,
}

impl std::fmt::Debug for P4Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P4Settings")
            .field("target", &self.config.target)
            .field("device_id", &self.config.device_id)
            .field("election_id", &self.config.election_id)
            .field("device_config_path", &self.device_config_path)
            .field("device_config_bytes", &self.config.device_config.len())
            .field("rpc_timeout", &self.config.rpc_timeout)
            .finish()
    }
}

fn config_err<T>(field: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        message: message.into(),
    })
}

/// Checks `host:port` (a name, an IPv4 address or a bracketed IPv6 address, and a port 1..=65535)
/// without resolving it: the publisher resolves and connects, and retries while it cannot.
fn parse_target(value: &str) -> Result<String, ConfigError> {
    let field = "p4.target";
    let value = value.trim();
    let bad = || {
        config_err(
            field,
            format!("{value:?} is not HOST:PORT (e.g. 127.0.0.1:9559 or switch1:9559)"),
        )
    };
    let Some((host, port)) = value.rsplit_once(':') else {
        return bad();
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
        return bad();
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !host_ok {
        return bad();
    }
    Ok(value.to_owned())
}

/// Parses `[p4]` (and `--p4-target`, which wins over `target`). `None` without a target; the
/// other keys without one are an error (they would be ignored silently). Every error names its
/// key as `p4.<key>`.
pub(crate) fn parse_p4(
    flag_target: Option<&str>,
    file: &P4File,
) -> Result<Option<P4Settings>, ConfigError> {
    let Some(target) = flag_target.or(file.target.as_deref()) else {
        if file.device_id.is_some()
            || file.election_id.is_some()
            || file.device_config.is_some()
            || file.rpc_timeout_ms.is_some()
        {
            return config_err(
                "p4.target",
                "required when [p4] has other keys (the P4Runtime server, HOST:PORT)",
            );
        }
        return Ok(None);
    };
    let target = parse_target(target)?;
    let device_id = file.device_id.unwrap_or(P4_DEVICE_ID_DEFAULT);
    let election_id = match file.election_id {
        None => P4_ELECTION_ID_DEFAULT,
        Some(0) => {
            return config_err(
                "p4.election_id",
                "must be at least 1 (P4Runtime reserves 0; the highest live id is primary)",
            );
        }
        Some(id) => id,
    };
    let rpc_timeout = match file.rpc_timeout_ms {
        None => P4_RPC_TIMEOUT_DEFAULT,
        Some(ms @ 100..=600_000) => Duration::from_millis(ms),
        Some(ms) => {
            return config_err(
                "p4.rpc_timeout_ms",
                format!("must be in 100..=600000, got {ms}"),
            );
        }
    };
    let device_config = match &file.device_config {
        None => Vec::new(),
        Some(path) => read_device_config(path)?,
    };
    Ok(Some(P4Settings {
        config: P4Config {
            target,
            device_id,
            election_id: u128::from(election_id),
            device_config,
            rpc_timeout,
        },
        device_config_path: file.device_config.clone(),
    }))
}

/// Reads the compiled pipeline (BMv2: the JSON p4c writes) so that a missing or unreadable file
/// is a configuration error, not a publisher failing forever.
fn read_device_config(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let field = "p4.device_config";
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return config_err(field, format!("cannot read {shown}: {e}")),
    };
    if !meta.is_file() {
        return config_err(field, format!("{shown} is not a file"));
    }
    if meta.len() > P4_DEVICE_CONFIG_BYTES_MAX {
        return config_err(
            field,
            format!(
                "{shown} is {} bytes, above {P4_DEVICE_CONFIG_BYTES_MAX}",
                meta.len()
            ),
        );
    }
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => config_err(
            field,
            format!(
                "{shown} is empty (leave device_config out for a switch that already runs the program)"
            ),
        ),
        Ok(bytes) => Ok(bytes),
        Err(e) => config_err(field, format!("cannot read {shown}: {e}")),
    }
}

/// The `target` label of the targets' metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// `p4` or `xdp`.
    pub target: String,
}

/// The targets' metrics (`nexus_dataplane_target_*`), labelled by target.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    /// The generation the target holds (−1 while it holds none).
    pub generation: Family<TargetLabel, Gauge>,
    /// Pushes the target failed (each undone, or followed by a reconnect and a full install).
    pub publish_errors: Family<TargetLabel, Counter>,
    /// From handing a generation to the target to the target reporting it installed.
    pub publish_seconds: Family<TargetLabel, Histogram>,
}

impl Default for TargetMetrics {
    fn default() -> Self {
        TargetMetrics {
            generation: Family::default(),
            publish_errors: Family::default(),
            // 100 µs doubling to 3.3 s: a diff of a few entries to a full install of 100k routes.
            publish_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
        }
    }
}

impl TargetMetrics {
    /// Registers the metrics (names get the registry's `nexus_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dataplane_target_generation",
            "The forwarding-table generation each hardware target holds (-1: none)",
            self.generation.clone(),
        );
        registry.register(
            "dataplane_target_publish_errors",
            "Generation pushes a hardware target failed",
            self.publish_errors.clone(),
        );
        registry.register(
            "dataplane_target_publish_seconds",
            "Time from handing a generation to a hardware target to its installation",
            self.publish_seconds.clone(),
        );
    }
}

/// The node's running targets. Cloning shares them; dropping the last clone stops them.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// Each target's state as the admin API shows it, kept by the target's task.
    states: Arc<Vec<Arc<Mutex<DataplaneTargetDto>>>>,
    /// The targets' tasks, stopped when the last clone is dropped.
    _tasks: Arc<Vec<Task>>,
}

/// A spawned task, aborted when dropped.
#[derive(Debug)]
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Targets {
    /// Spawns a publisher and its task for each configured target, on the current runtime.
    /// `generations` is the table compiler's channel.
    pub fn start(
        p4: Option<&P4Settings>,
        xdp: Option<XdpAttached>,
        generations: &watch::Receiver<Option<Arc<TableGeneration>>>,
        metrics: &TargetMetrics,
    ) -> Targets {
        let mut states = Vec::new();
        let mut tasks = Vec::new();
        if let Some(xdp) = xdp {
            let state = Arc::new(Mutex::new(DataplaneTargetDto {
                target: "xdp".to_owned(),
                address: xdp.interface.clone(),
                connected: true,
                published: None,
                installed: None,
                failures: 0,
                last_error: None,
                counters: None,
            }));
            #[cfg(feature = "xdp")]
            tasks.push(Task(tokio::spawn(feed(
                "xdp",
                xdp.publisher,
                generations.clone(),
                state.clone(),
                metrics.clone(),
            ))));
            states.push(state);
        }
        if let Some(p4) = p4 {
            let state = Arc::new(Mutex::new(DataplaneTargetDto {
                target: "p4".to_owned(),
                address: p4.config.target.clone(),
                connected: false,
                published: None,
                installed: None,
                failures: 0,
                last_error: None,
                counters: None,
            }));
            let publisher = P4Publisher::spawn(p4.config.clone());
            tasks.push(Task(tokio::spawn(feed(
                "p4",
                publisher,
                generations.clone(),
                state.clone(),
                metrics.clone(),
            ))));
            states.push(state);
        }
        Targets {
            states: Arc::new(states),
            _tasks: Arc::new(tasks),
        }
    }

    /// Whether any target is configured.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Each target's state, in configuration order.
    pub fn view(&self) -> Vec<DataplaneTargetDto> {
        self.states
            .iter()
            .map(|s| match s.lock() {
                Ok(state) => state.clone(),
                // A task that panicked while holding the lock left a complete copy behind.
                Err(poisoned) => poisoned.into_inner().clone(),
            })
            .collect()
    }
}

fn update(state: &Mutex<DataplaneTargetDto>, change: impl FnOnce(&mut DataplaneTargetDto)) {
    let mut guard = match state.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    change(&mut guard);
}

/// What feeding a target takes from its publisher: handing it a generation and following its
/// status. The P4 and the XDP publisher differ only in what their status shows.
trait TargetPublisher: Send + 'static {
    /// The publisher's status (a watch channel's value).
    type Status: Clone + Send + Sync + 'static;

    /// Hands a generation over; the publisher installs the latest one it was handed.
    fn publish(&self, generation: &TableGeneration);

    /// The status channel.
    fn subscribe(&self) -> watch::Receiver<Self::Status>;

    /// The generation the target holds, if any.
    fn installed(status: &Self::Status) -> Option<u64>;

    /// Pushes that failed so far.
    fn failures(status: &Self::Status) -> u64;

    /// Copies the status into the admin API's view of the target (`published` is kept by
    /// [`feed`]).
    fn show(status: &Self::Status, dto: &mut DataplaneTargetDto);
}

impl TargetPublisher for P4Publisher {
    type Status = PublishStatus;

    fn publish(&self, generation: &TableGeneration) {
        P4Publisher::publish(self, generation.routes.clone(), generation.local.clone());
    }

    fn subscribe(&self) -> watch::Receiver<PublishStatus> {
        P4Publisher::subscribe(self)
    }

    fn installed(status: &PublishStatus) -> Option<u64> {
        status.installed
    }

    fn failures(status: &PublishStatus) -> u64 {
        status.failures
    }

    fn show(status: &PublishStatus, dto: &mut DataplaneTargetDto) {
        dto.connected = status.connected;
        dto.installed = status.installed;
        dto.failures = status.failures;
        dto.last_error = status.last_error.clone();
    }
}

/// The XDP program is attached for as long as the publisher runs, so the target stays
/// `connected`; its status adds the program's counters.
#[cfg(feature = "xdp")]
impl TargetPublisher for nexus_nic::XdpPublisher {
    type Status = nexus_nic::XdpPublishStatus;

    fn publish(&self, generation: &TableGeneration) {
        nexus_nic::XdpPublisher::publish(self, generation.routes.clone(), generation.local.clone());
    }

    fn subscribe(&self) -> watch::Receiver<Self::Status> {
        nexus_nic::XdpPublisher::subscribe(self)
    }

    fn installed(status: &Self::Status) -> Option<u64> {
        status.installed
    }

    fn failures(status: &Self::Status) -> u64 {
        status.failures
    }

    fn show(status: &Self::Status, dto: &mut DataplaneTargetDto) {
        dto.installed = status.installed;
        dto.failures = status.failures;
        dto.last_error = status.last_error.clone();
        dto.counters = Some(crate::api::TargetCountersDto {
            forwarded: status.counters.forwarded,
            delivered_local: status.counters.delivered_local,
            dropped: status.counters.dropped.iter().sum(),
            passed_to_kernel: status.passed_to_kernel,
        });
    }
}

/// Feeds one target's publisher: every generation from the table compiler goes to it, and its
/// status goes to the target's state and metrics (labelled `target`). Ends when the publisher
/// or the table compiler's channel does.
async fn feed<P: TargetPublisher>(
    target: &str,
    publisher: P,
    mut generations: watch::Receiver<Option<Arc<TableGeneration>>>,
    state: Arc<Mutex<DataplaneTargetDto>>,
    metrics: TargetMetrics,
) {
    let label = TargetLabel {
        target: target.to_owned(),
    };
    let gauge = metrics.generation.get_or_create(&label).clone();
    gauge.set(-1);
    let errors = metrics.publish_errors.get_or_create(&label).clone();
    let seconds = metrics.publish_seconds.get_or_create(&label).clone();
    let mut status = publisher.subscribe();
    let mut failures = 0u64;
    // The generation handed over and not yet reported installed, with when it was handed over.
    let mut pending: Option<(u64, tokio::time::Instant)> = None;
    // A generation already in the channel goes out at once, and the status as it is now shows.
    generations.mark_changed();
    status.mark_changed();
    loop {
        tokio::select! {
            biased;
            changed = status.changed() => {
                if changed.is_err() {
                    return; // The publisher ended.
                }
                let now = status.borrow_and_update().clone();
                let now_failures = P::failures(&now);
                errors.inc_by(now_failures.saturating_sub(failures));
                failures = now_failures;
                let installed = P::installed(&now);
                gauge.set(installed.map_or(-1, |g| i64::try_from(g).unwrap_or(i64::MAX)));
                if let (Some((generation, since)), Some(installed)) = (pending, installed)
                    && installed == generation
                {
                    seconds.observe(since.elapsed().as_secs_f64());
                    pending = None;
                }
                update(&state, |dto| P::show(&now, dto));
            }
            changed = generations.changed() => {
                if changed.is_err() {
                    return; // The node is stopping.
                }
                let Some(generation) = generations.borrow_and_update().clone() else {
                    continue;
                };
                let number = generation.generation();
                publisher.publish(&generation);
                pending = Some((number, tokio::time::Instant::now()));
                update(&state, |dto| dto.published = Some(number));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<P4Settings>, ConfigError> {
        let file: P4File = toml::from_str(text).expect("valid TOML");
        parse_p4(None, &file)
    }

    #[test]
    fn p4_settings_and_their_errors() {
        assert_eq!(parse(""), Ok(None));
        let s = parse("target = \"127.0.0.1:9559\"")
            .expect("valid")
            .expect("on");
        assert_eq!(s.config.target, "127.0.0.1:9559");
        assert_eq!(s.config.device_id, P4_DEVICE_ID_DEFAULT);
        assert_eq!(s.config.election_id, 1);
        assert!(s.config.device_config.is_empty());
        assert_eq!(s.config.rpc_timeout, P4_RPC_TIMEOUT_DEFAULT);
        let s =
            parse("target = \"[::1]:50051\"\ndevice_id = 0\nelection_id = 7\nrpc_timeout_ms = 250")
                .expect("valid")
                .expect("on");
        assert_eq!(
            (
                s.config.device_id,
                s.config.election_id,
                s.config.rpc_timeout
            ),
            (0, 7, Duration::from_millis(250))
        );
        assert!(parse("target = \"switch-1.lab:9559\"").is_ok());
        // The flag wins over the file.
        let file: P4File = toml::from_str("target = \"a:1\"").expect("toml");
        let s = parse_p4(Some("b:2"), &file).expect("valid").expect("on");
        assert_eq!(s.config.target, "b:2");

        let field = |text: &str| parse(text).expect_err("refused").field;
        for bad in [
            "target = \"9559\"",
            "target = \"host:\"",
            "target = \":9559\"",
            "target = \"host:0\"",
            "target = \"host:99999\"",
            "target = \"a b:1\"",
            "target = \"[nope]:1\"",
            "target = \"http://h:1\"",
        ] {
            assert_eq!(field(bad), "p4.target", "{bad}");
        }
        assert_eq!(field("device_id = 2"), "p4.target");
        assert_eq!(field("target = \"h:1\"\nelection_id = 0"), "p4.election_id");
        assert_eq!(
            field("target = \"h:1\"\nrpc_timeout_ms = 5"),
            "p4.rpc_timeout_ms"
        );
        assert_eq!(
            field("target = \"h:1\"\nrpc_timeout_ms = 600001"),
            "p4.rpc_timeout_ms"
        );
        let e = parse("target = \"h:1\"\ndevice_config = \"/nonexistent/nexus.json\"")
            .expect_err("missing file");
        assert_eq!(e.field, "p4.device_config");
        assert!(e.message.contains("/nonexistent/nexus.json"), "{e}");
    }

    #[test]
    fn xdp_settings_and_their_errors() {
        let native = Some(XdpModeSetting::Native);
        assert_eq!(parse_xdp(false, true, None, None), Ok(None));
        let field = |r: Result<Option<XdpSettings>, ConfigError>| r.expect_err("refused").field;
        assert_eq!(
            field(parse_xdp(false, true, Some("eth0"), None)),
            "dataplane.xdp_interface"
        );
        assert_eq!(
            field(parse_xdp(false, true, None, native)),
            "dataplane.xdp_mode"
        );
        if !cfg!(feature = "xdp") {
            let e = parse_xdp(true, true, Some("eth0"), None).expect_err("not built in");
            assert_eq!(e.field, "dataplane_backend");
            assert!(e.message.contains("--features xdp"), "{e}");
            return;
        }
        assert_eq!(
            parse_xdp(true, true, Some("eth0"), None),
            Ok(Some(XdpSettings {
                interface: "eth0".to_owned(),
                mode: XdpModeSetting::Native
            }))
        );
        assert_eq!(
            parse_xdp(true, true, Some("veth1"), Some(XdpModeSetting::Generic))
                .expect("valid")
                .map(|s| s.mode),
            Some(XdpModeSetting::Generic)
        );
        assert_eq!(
            field(parse_xdp(true, false, Some("eth0"), None)),
            "dataplane"
        );
        assert_eq!(
            field(parse_xdp(true, true, None, None)),
            "dataplane.xdp_interface"
        );
        for bad in ["", "a/b", "eth0:1", "a b", "sixteen-bytes-xx"] {
            assert_eq!(
                field(parse_xdp(true, true, Some(bad), None)),
                "dataplane.xdp_interface",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_device_config_is_read_and_not_printed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("nexus.json");
        std::fs::write(&path, b"{\"program\": \"nexus.p4\"}").expect("write");
        let text = format!("target = \"h:1\"\ndevice_config = \"{}\"", path.display());
        let s = parse(&text).expect("valid").expect("on");
        assert_eq!(s.config.device_config, b"{\"program\": \"nexus.p4\"}");
        assert_eq!(s.device_config_path.as_deref(), Some(path.as_path()));
        assert!(!format!("{s:?}").contains("program"), "{s:?}");

        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, b"").expect("write");
        let e = parse(&format!(
            "target = \"h:1\"\ndevice_config = \"{}\"",
            empty.display()
        ))
        .expect_err("empty");
        assert!(e.message.contains("empty"), "{e}");
        let e = parse(&format!(
            "target = \"h:1\"\ndevice_config = \"{}\"",
            dir.path().display()
        ))
        .expect_err("a directory");
        assert!(e.message.contains("not a file"), "{e}");
    }
}
