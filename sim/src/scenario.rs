//! The scenario format (`sim/scenarios/*.toml`, documented in docs/simulator.md): nodes, topology,
//! network faults, a timeline of events, and the invariants' bounds. Parsed into a checked
//! [`Scenario`] before anything runs; every error names the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use nexus_gossip::{MembershipConfig, MembershipSettings};
use nexus_registry::{Intent, LoadUpdate, Sad};
use serde::Deserialize;

mod stream;

pub use stream::{
    STREAM_DATAGRAM_BYTES_MAX, STREAM_FLOWS_MAX, STREAM_MESSAGE_BYTES_MAX, STREAM_NODES_MAX,
    STREAM_RATE_MAX, StreamScenario, StreamTraffic, TimedRevoke,
};

/// Nodes a scenario may have.
pub const NODES_MAX: usize = 100_000;
/// Timeline entries a scenario may have.
pub const TIMELINE_MAX: usize = 10_000;

/// How the simulator runs the nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A discrete-event engine drives the sans-IO cores directly (no tokio): for scale.
    #[default]
    Core,
    /// Every node runs the real actor tree with simulated clock, network and storage.
    Node,
}

/// A parse or validation error, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScenarioError {
    /// The offending key (dotted path, `timeline[3].nodes` for list entries).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError {
        field: field.into(),
        message: message.into(),
    })
}

/// Parses `"1.5s"`, `"250ms"`, `"80us"`, `"2m"`, `"1h"`.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, ScenarioError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = match number.parse() {
        Ok(v) if v >= 0.0 && f64::is_finite(v) => v,
        _ => {
            return err(
                field,
                format!("{text:?} is not a duration like \"500ms\" or \"2s\""),
            );
        }
    };
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return err(field, format!("{text:?}: unit must be us, ms, s, m or h")),
    };
    if seconds > 30.0 * 86_400.0 {
        return err(field, "at most 30 days");
    }
    Ok(Duration::from_secs_f64(seconds))
}

// ---------------------------------------------------------------------------------------------
// File shape (serde), then the checked form.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    mode: Mode,
    nodes: usize,
    duration: String,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    seeds: Option<Vec<String>>,
    #[serde(default)]
    sample_every: Option<String>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    gossip: MembershipSettings,
    #[serde(default)]
    topology: TopologyFile,
    #[serde(default)]
    network: NetworkFile,
    #[serde(default)]
    timeline: Vec<EventFile>,
    #[serde(default)]
    invariants: InvariantsFile,
    #[serde(default)]
    node: NodeFile,
    #[serde(default)]
    registry: Option<RegistryFile>,
    #[serde(default)]
    ca: Option<CaFile>,
    #[serde(default)]
    membership: Option<String>,
    #[serde(default)]
    overlay: Option<OverlayFile>,
    #[serde(default)]
    stream: Option<stream::StreamFile>,
}

/// `[overlay]`: the overlay settings of a `membership = "partial"` scenario.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayFile {
    active_view: Option<usize>,
    passive_view: Option<usize>,
    shuffle_period: Option<String>,
    keepalive_period: Option<String>,
    keepalive_timeout: Option<String>,
    rotate_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaFile {
    clients: Option<usize>,
    think: Option<String>,
    op_timeout: Option<String>,
    retries: Option<u32>,
    settle: Option<String>,
    heartbeat: Option<String>,
    election_min: Option<String>,
    election_max: Option<String>,
    client_timeout: Option<String>,
    snapshot_every: Option<u64>,
    mix: Option<CaMixFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaMixFile {
    issue: Option<u32>,
    renew: Option<u32>,
    revoke: Option<u32>,
    get: Option<u32>,
    list: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    refresh: Option<String>,
    anti_entropy: Option<String>,
    converge_within: Option<String>,
    sample_resolves: Option<bool>,
    #[serde(default)]
    services: BTreeMap<String, toml::Value>,
    #[serde(default)]
    intents: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    tick: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum TopologyFile {
    Mesh {
        #[serde(default)]
        latency: Option<String>,
    },
    Racks {
        pods: usize,
        racks_per_pod: usize,
        intra_rack: String,
        intra_pod: String,
        inter_pod: String,
    },
    Wan {
        regions: Vec<String>,
        rtt_ms: Vec<Vec<f64>>,
        intra_region: String,
    },
}

impl Default for TopologyFile {
    fn default() -> Self {
        TopologyFile::Mesh { latency: None }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    jitter: Option<String>,
    jitter_distribution: Option<JitterDistribution>,
    loss: Option<f64>,
    duplicate: Option<f64>,
    reorder: Option<f64>,
    bandwidth_kbps: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    at: String,
    action: String,
    #[serde(default)]
    nodes: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<Vec<String>>>,
    #[serde(default)]
    from: Option<Vec<String>>,
    #[serde(default)]
    to: Option<Vec<String>>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    drift_ppm: Option<i64>,
    #[serde(default)]
    service: Option<toml::Value>,
    #[serde(default)]
    intent: Option<toml::Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    load: Option<toml::Value>,
    #[serde(default)]
    renew: Option<bool>,
    #[serde(default)]
    delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvariantsFile {
    converge_within: Option<String>,
    false_down_rate_max: Option<f64>,
    registry_convergence: Option<bool>,
    no_stale_endpoints: Option<bool>,
    withdrawn_disappear: Option<bool>,
    stale_bound: Option<String>,
    broadcast_reach_min: Option<f64>,
}

/// Where nodes sit and how far apart they are.
#[derive(Clone, Debug, PartialEq)]
pub enum Topology {
    /// Every pair of nodes at the same one-way latency.
    Mesh {
        /// One-way latency.
        latency: Duration,
    },
    /// Pods of racks; nodes are spread round-robin over racks.
    Racks {
        /// Pods.
        pods: usize,
        /// Racks in each pod.
        racks_per_pod: usize,
        /// One-way latency within a rack.
        intra_rack: Duration,
        /// One-way latency between racks of one pod.
        intra_pod: Duration,
        /// One-way latency between pods.
        inter_pod: Duration,
    },
    /// Regions with an RTT matrix; nodes are spread round-robin over regions.
    Wan {
        /// Region names.
        regions: Vec<String>,
        /// One-way latency between regions (half the configured RTT).
        one_way: Vec<Vec<Duration>>,
        /// One-way latency within a region.
        intra_region: Duration,
    },
}

/// How the extra delay of each datagram is drawn (scaled by `jitter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JitterDistribution {
    /// Uniform in `[0, jitter]`.
    #[default]
    Uniform,
    /// Exponential with mean `jitter`, capped at `10 × jitter`.
    Exponential,
    /// Pareto (shape 2) shifted to start at 0, mean `jitter`, capped at `20 × jitter`: a long
    /// tail of slow datagrams, as on a congested WAN.
    Pareto,
}

/// Random impairments applied to every datagram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Network {
    /// Scale of the extra delay added to each datagram.
    pub jitter: Duration,
    /// How that delay is distributed.
    pub jitter_distribution: JitterDistribution,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back (up to 10 × jitter + 1 ms) and so overtaken.
    pub reorder: f64,
    /// Per-node egress bandwidth, kbit/s (0 = unlimited).
    pub bandwidth_kbps: u64,
}

/// A set of nodes, by index.
pub type NodeSet = BTreeSet<usize>;

/// One timeline action.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Crash: volatile state is lost, durable storage (node id, generation) kept.
    Kill(NodeSet),
    /// Start crashed nodes again from their durable storage.
    Restart(NodeSet),
    /// Cut every link between different groups (both directions).
    Partition(Vec<NodeSet>),
    /// Cut links from `from` to `to` only.
    PartitionOneWay {
        /// Senders whose datagrams are dropped.
        from: NodeSet,
        /// Receivers.
        to: NodeSet,
    },
    /// Remove every partition.
    Heal,
    /// Set the loss rate (of datagrams sent by `nodes`, or all when `None`).
    Loss {
        /// Affected senders (`None` = the whole network).
        nodes: Option<NodeSet>,
        /// New loss probability.
        rate: f64,
    },
    /// Stall processes: they receive (buffered) but run nothing until resumed.
    Pause(NodeSet),
    /// Resume paused processes.
    Resume(NodeSet),
    /// Make the nodes' clocks run fast or slow by `drift_ppm` parts per million.
    Skew {
        /// Affected nodes.
        nodes: NodeSet,
        /// Rate error in parts per million (positive = fast).
        drift_ppm: i64,
    },
}

impl Action {
    /// Whether this action is a fault (starts or continues a disturbance) rather than a repair.
    pub fn is_fault(&self) -> bool {
        !matches!(self, Action::Heal | Action::Restart(_) | Action::Resume(_))
            && !matches!(self, Action::Loss { rate, .. } if *rate == 0.0)
    }

    /// The action's name as written in the scenario.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Kill(_) => "kill",
            Action::Restart(_) => "restart",
            Action::Partition(_) | Action::PartitionOneWay { .. } => "partition",
            Action::Heal => "heal",
            Action::Loss { .. } => "loss",
            Action::Pause(_) => "pause",
            Action::Resume(_) => "resume",
            Action::Skew { .. } => "skew",
        }
    }
}

/// A timeline entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedAction {
    /// Its position in the scenario file (`timeline[index]` in error messages); the timeline
    /// itself is sorted by time.
    pub index: usize,
    /// When, in virtual time since the start.
    pub at: Duration,
    /// What.
    pub action: Action,
}

/// Bounds the invariant checkers hold the run to.
#[derive(Clone, Debug, PartialEq)]
pub struct Bounds {
    /// All alive, connected nodes must agree on membership this long after the last fault.
    pub converge_within: Duration,
    /// Largest allowed fraction of "down" verdicts about nodes that were up and reachable.
    pub false_down_rate_max: f64,
}

/// A checked scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Name (used in reports and output paths).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Fidelity level.
    pub mode: Mode,
    /// Node names, `n1` … `nN`; index i is node `n{i+1}`.
    pub nodes: usize,
    /// Virtual time to run.
    pub duration: Duration,
    /// Seed used when the command line gives none.
    pub seed: u64,
    /// Nodes every node joins through.
    pub seeds: Vec<usize>,
    /// How often invariants are sampled and the convergence curve recorded.
    pub sample_every: Duration,
    /// Membership timings.
    pub gossip: MembershipConfig,
    /// Placement and latencies.
    pub topology: Topology,
    /// Random impairments.
    pub network: Network,
    /// Events, ordered by time.
    pub timeline: Vec<TimedAction>,
    /// Invariant bounds.
    pub bounds: Bounds,
    /// Node mode's network step (`[node] tick`); `None` picks a default from the timings.
    pub node_tick: Option<Duration>,
    /// The Raft-replicated CA, when the scenario has a `[ca]` table: the nodes are CA voters
    /// running the real `CaNode` in turmoil hosts, driven by client hosts (`crate::ca`).
    pub ca: Option<CaScenario>,
    /// The capability registry, when the scenario uses it (a `[registry]` table or any registry
    /// action); `None` keeps a run membership-only (and its trace what it always was).
    pub registry: Option<RegistryScenario>,
    /// Partial-view membership (`membership = "partial"`): the nodes run the HyParView +
    /// Plumtree overlay core alone, without SWIM (`crate::partial_view`). `None`: SWIM.
    pub partial: Option<PartialScenario>,
    /// NexStream sessions between the nodes (`[stream]`, `crate::stream`): the nodes run
    /// NexStream endpoints instead of membership.
    pub stream: Option<StreamScenario>,
}

/// Settings of a partial-view membership run (`membership = "partial"`, `[overlay]`).
#[derive(Clone, Debug, PartialEq)]
pub struct PartialScenario {
    /// The overlay core's settings on every node (keepalive always on: it is the only failure
    /// detector in this mode).
    pub overlay: nexus_gossip::OverlayConfig,
    /// When set, one broadcast from a random healthy node is started at every sample of the
    /// liveness phase and must reach at least this share of the healthy nodes of its network
    /// component (`[invariants] broadcast_reach_min`).
    pub broadcast_reach_min: Option<f64>,
}

/// Most CA voters a `[ca]` scenario may have.
pub const CA_VOTERS_MAX: usize = 7;
/// Most CA client hosts.
pub const CA_CLIENTS_MAX: usize = 16;

/// The CA settings of a scenario (`[ca]`; docs/simulator.md, "The CA in the simulator").
#[derive(Clone, Debug, PartialEq)]
pub struct CaScenario {
    /// Client hosts (`c1..cK`), each with one operation outstanding at a time.
    pub clients: usize,
    /// Mean pause between a client's operations (drawn uniformly in `[think/2, 3·think/2]`).
    pub think: Duration,
    /// How long a client waits for one attempt's answer before it gives up on it (outcome
    /// unknown) and retries elsewhere.
    pub op_timeout: Duration,
    /// Further attempts after a failed one (issues keep their request id; renews are never
    /// retried: they carry no request id, so a retry could renew twice).
    pub retries: u32,
    /// After `duration`: every cut is healed and every killed voter restarted, clients stop,
    /// and the final read of every voter waits this long.
    pub settle: Duration,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft election timeout range.
    pub election_min: Duration,
    /// Raft election timeout range (exclusive upper bound).
    pub election_max: Duration,
    /// Deadline of one CA operation inside a voter (`CaTimings::client_timeout_ms`).
    pub client_timeout: Duration,
    /// Snapshot after this many applied entries (small values exercise snapshot install).
    pub snapshot_every: u64,
    /// Relative weights of issue, renew, revoke, get and list.
    pub mix: [u32; 5],
}

/// Registry settings, actions and bounds of a scenario (`[registry]` and the registry actions
/// of `[[timeline]]`).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryScenario {
    /// How often each node's registry checks leases, expiry and the member list (default 500 ms).
    pub refresh: Duration,
    /// How often each node sends a digest to a random overlay neighbour; `None` = disabled
    /// (`anti_entropy = "off"`).
    pub anti_entropy: Option<Duration>,
    /// All alive, mutually reachable nodes must hold the same live entries this long after the
    /// last registry change or fault (and a withdrawn service must be gone everywhere).
    pub converge_within: Duration,
    /// Whether every sample also resolves every task tag in use on every healthy node.
    pub sample_resolves: bool,
    /// Registry actions, ordered by time (file order at one instant).
    pub actions: Vec<TimedRegistryAction>,
    /// Task tags of every registered service, sorted (what sample resolves ask for).
    pub tasks: Vec<String>,
    /// Which registry checkers run, and their bounds.
    pub checks: RegistryChecks,
}

/// Which registry invariants run (`[invariants]`).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryChecks {
    /// `registry_convergence` runs.
    pub convergence: bool,
    /// `no_stale_endpoints` runs.
    pub no_stale_endpoints: bool,
    /// `withdrawn_disappear` runs.
    pub withdrawn_disappear: bool,
    /// How long a node may be down (crashed, paused, or cut off from a resolver) before no
    /// resolve may return its services; default the membership detection bound for the
    /// scenario's size plus the registry refresh period.
    pub stale_bound: Duration,
}

/// A registry timeline entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedRegistryAction {
    /// Its position in the scenario file (`timeline[index]`).
    pub index: usize,
    /// When, in virtual time since the start.
    pub at: Duration,
    /// What.
    pub action: RegistryAction,
}

/// What a registry timeline entry does, on every node of its set.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryAction {
    /// Register (or re-register) a service; its process renews it every `ttl_s / 2` while
    /// `renew` holds (otherwise its lease runs out after `ttl_s`).
    Register {
        /// Nodes the service is registered on (one copy each).
        nodes: NodeSet,
        /// The descriptor.
        sad: Box<Sad>,
        /// Whether the service keeps renewing its lease.
        renew: bool,
    },
    /// Report new load/latency for a local service (renews its lease).
    UpdateLoad {
        /// Nodes holding the service.
        nodes: NodeSet,
        /// Service id.
        id: String,
        /// The fields that change.
        update: LoadUpdate,
    },
    /// Withdraw a local service (its process stops renewing it).
    Withdraw {
        /// Nodes holding the service.
        nodes: NodeSet,
        /// Service id.
        id: String,
    },
    /// Resolve an intent on every node of the set; the results are traced and checked.
    Resolve {
        /// Resolving nodes.
        nodes: NodeSet,
        /// The intent.
        intent: Box<Intent>,
    },
}

impl RegistryAction {
    /// The action's name as written in the scenario.
    pub fn name(&self) -> &'static str {
        match self {
            RegistryAction::Register { .. } => "register",
            RegistryAction::UpdateLoad { .. } => "update_load",
            RegistryAction::Withdraw { .. } => "withdraw",
            RegistryAction::Resolve { .. } => "resolve",
        }
    }

    /// How the action reads in the trace.
    pub fn describe(&self) -> String {
        let set = |s: &NodeSet| {
            s.iter()
                .map(|&i| Scenario::node_name(i))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            RegistryAction::Register { nodes, sad, renew } => format!(
                "register {} tasks={} ttl={}s renew={renew} on [{}]",
                sad.id,
                sad.tasks.join(","),
                sad.ttl_s,
                set(nodes)
            ),
            RegistryAction::UpdateLoad { nodes, id, update } => {
                format!("update_load {id} {update:?} on [{}]", set(nodes))
            }
            RegistryAction::Withdraw { nodes, id } => format!("withdraw {id} on [{}]", set(nodes)),
            RegistryAction::Resolve { nodes, intent } => {
                format!("resolve {} on [{}]", intent.canonical(), set(nodes))
            }
        }
    }
}

/// Converts a TOML value to JSON bytes for the registry's own validating parsers.
fn toml_json(field: &str, v: &toml::Value) -> Result<Vec<u8>, ScenarioError> {
    serde_json::to_vec(v).map_err(|e| ScenarioError {
        field: field.into(),
        message: format!("not representable as JSON: {e}"),
    })
}

/// A service descriptor: an inline table (checked by `Sad::from_json`) or the name of one in
/// `[registry.services]`.
fn parse_service(
    field: &str,
    v: &toml::Value,
    named: &BTreeMap<String, Sad>,
) -> Result<Sad, ScenarioError> {
    match v {
        toml::Value::String(name) => named.get(name).cloned().ok_or_else(|| ScenarioError {
            field: field.into(),
            message: format!("no service {name:?} in [registry.services]"),
        }),
        toml::Value::Table(_) => Sad::from_json(&toml_json(field, v)?).map_err(|e| ScenarioError {
            field: format!("{field}.{}", e.field),
            message: e.reason,
        }),
        _ => err(
            field,
            "must be a table (a descriptor) or the name of one in [registry.services]",
        ),
    }
}

/// An intent: an inline table (checked by `Intent::from_json`), the name of one in
/// `[registry.intents]`, or a bare task tag.
fn parse_intent(
    field: &str,
    v: &toml::Value,
    named: &BTreeMap<String, Intent>,
) -> Result<Intent, ScenarioError> {
    match v {
        toml::Value::String(name) => match named.get(name) {
            Some(i) => Ok(i.clone()),
            None => {
                let i = Intent::new(name.clone());
                i.validate().map_err(|e| ScenarioError {
                    field: field.into(),
                    message: format!(
                        "{name:?} is neither an intent in [registry.intents] nor a task tag: {}",
                        e.reason
                    ),
                })?;
                Ok(i)
            }
        },
        toml::Value::Table(_) => {
            Intent::from_json(&toml_json(field, v)?).map_err(|e| ScenarioError {
                field: format!("{field}.{}", e.field),
                message: e.reason,
            })
        }
        _ => err(
            field,
            "must be a table (an intent), an intent name or a task tag",
        ),
    }
}

/// What checking the timeline needs from the sections checked before it.
#[derive(Clone, Copy)]
struct TimelineContext<'a> {
    n: usize,
    topology: &'a Topology,
    named: &'a BTreeMap<String, NodeSet>,
    duration: Duration,
    mode: Mode,
    /// Whether the scenario has a `[stream]` section.
    stream: bool,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            field: "file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Parses and checks a scenario's text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let syntax = |e: toml::de::Error| ScenarioError {
            field: "scenario".into(),
            message: e.message().replace('\n', " "),
        };
        let de = toml::Deserializer::parse(text).map_err(syntax)?;
        // The path serde reached names the field: `timeline[2].at`, or an unknown key itself.
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "scenario".to_owned(),
                p => p,
            };
            ScenarioError {
                field,
                message: e.into_inner().message().replace('\n', " "),
            }
        })?;
        Self::check(file)
    }

    fn check(f: File) -> Result<Self, ScenarioError> {
        if f.name.is_empty()
            || !f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err("name", "must be non-empty [A-Za-z0-9_-]");
        }
        if f.nodes == 0 || f.nodes > NODES_MAX {
            return err("nodes", format!("must be 1..={NODES_MAX}"));
        }
        let n = f.nodes;
        let duration = parse_duration("duration", &f.duration)?;
        if duration.is_zero() {
            return err("duration", "must be above 0");
        }
        let sample_every = match &f.sample_every {
            Some(s) => parse_duration("sample_every", s)?,
            None => Duration::from_secs(1),
        };
        if sample_every < Duration::from_millis(10) {
            return err("sample_every", "must be at least 10ms");
        }

        let settings = MembershipSettings {
            cluster_size_hint: f
                .gossip
                .cluster_size_hint
                .or(Some(u32::try_from(n).unwrap_or(u32::MAX))),
            ..f.gossip.clone()
        };
        let gossip = settings.resolve().map_err(|e| ScenarioError {
            field: e.field.into(),
            message: e.reason.into(),
        })?;

        let topology = Self::check_topology(f.topology)?;

        let named = Self::check_groups(n, &topology, &f.groups)?;
        let seeds = Self::check_seeds(n, &topology, &named, f.seeds.as_deref())?;
        let network = Self::check_network(&f.network)?;

        let reg_file = f.registry;
        let cx = TimelineContext {
            n,
            topology: &topology,
            named: &named,
            duration,
            mode: f.mode,
            stream: f.stream.is_some(),
        };
        let (timeline, mut reg_actions, revocations) =
            Self::check_timeline(f.timeline, reg_file.as_ref(), &cx)?;

        let bounds = Self::check_bounds(&f.invariants, &gossip)?;
        let last = timeline.last().map(|t| t.at).unwrap_or(Duration::ZERO);
        reg_actions.sort_by_key(|t| t.at);
        let registry = if reg_file.is_some() || !reg_actions.is_empty() {
            if f.stream.is_some() {
                return err("stream", "a scenario runs either [stream] or the registry");
            }
            if f.mode == Mode::Node {
                return err("registry", "the registry is simulated in core mode only");
            }
            let rf = reg_file.unwrap_or_default();
            Some(Self::check_registry(
                rf,
                &f.invariants,
                reg_actions,
                &gossip,
                &bounds,
                n,
                last,
                duration,
            )?)
        } else {
            for (k, v) in [
                (
                    "registry_convergence",
                    f.invariants.registry_convergence.is_some(),
                ),
                (
                    "no_stale_endpoints",
                    f.invariants.no_stale_endpoints.is_some(),
                ),
                (
                    "withdrawn_disappear",
                    f.invariants.withdrawn_disappear.is_some(),
                ),
                ("stale_bound", f.invariants.stale_bound.is_some()),
            ] {
                if v {
                    return err(
                        format!("invariants.{k}"),
                        "a registry invariant, but the scenario does not use the registry",
                    );
                }
            }
            None
        };
        let ca = match f.ca {
            Some(c) => {
                if registry.is_some() {
                    return err(
                        "ca",
                        "a scenario runs either the CA or the registry, not both",
                    );
                }
                Some(Self::check_ca(
                    c, f.mode, n, &topology, &network, &timeline,
                )?)
            }
            None => None,
        };
        let stream = match f.stream {
            Some(sf) => {
                let other = if registry.is_some() {
                    Some("the registry")
                } else if ca.is_some() {
                    Some("[ca]")
                } else if f.membership.is_some() || f.overlay.is_some() {
                    Some("a membership setting (stream nodes run no membership)")
                } else {
                    None
                };
                Some(stream::check(
                    sf,
                    f.mode,
                    n,
                    &timeline,
                    revocations,
                    other,
                    duration,
                )?)
            }
            None => None,
        };
        // A partial-view run's default bound is its own (set below), checked there.
        let partial_default =
            f.membership.as_deref() == Some("partial") && f.invariants.converge_within.is_none();
        if ca.is_none()
            && stream.is_none()
            && !partial_default
            && last + bounds.converge_within > duration
        {
            return err(
                "invariants.converge_within",
                format!(
                    "the last timeline event ({:?}) plus converge_within ({:?}) is past the end of the run ({:?}): \
                     agreement could never be checked; lengthen `duration` or shorten the bound",
                    last, bounds.converge_within, duration
                ),
            );
        }
        let partial = Self::check_partial(
            f.membership.as_deref(),
            f.overlay,
            f.invariants.broadcast_reach_min,
            f.mode,
            &timeline,
            registry.is_some() || ca.is_some(),
        )?;
        let mut bounds = bounds;
        if let Some(p) = &partial
            && f.invariants.converge_within.is_none()
        {
            // Detection (a keepalive timeout and a period) plus a few rotation periods to bridge
            // a healed cut.
            let rotate = p.overlay.rotate_period.unwrap_or(Duration::ZERO);
            let keepalive = p.overlay.keepalive_period.unwrap_or(Duration::ZERO);
            bounds.converge_within =
                (p.overlay.keepalive_timeout + keepalive + rotate * 3).max(Duration::from_secs(10));
            if last + bounds.converge_within > duration {
                return err(
                    "invariants.converge_within",
                    format!(
                        "the last timeline event ({last:?}) plus the partial-view default converge_within ({:?}) \
                         is past the end of the run ({duration:?}); lengthen `duration` or set the bound",
                        bounds.converge_within
                    ),
                );
            }
        }
        Ok(Scenario {
            name: f.name,
            description: f.description,
            mode: f.mode,
            nodes: n,
            duration,
            seed: f.seed.unwrap_or(1),
            seeds,
            sample_every,
            gossip,
            topology,
            network,
            timeline,
            bounds,
            node_tick: match &f.node.tick {
                Some(t) => Some(parse_duration("node.tick", t)?),
                None => None,
            },
            registry,
            ca,
            partial,
            stream,
        })
    }

    /// `timeline`: network actions, registry actions and revocations, each in time order
    /// (file order at one instant).
    #[allow(clippy::type_complexity)]
    fn check_timeline(
        events: Vec<EventFile>,
        registry: Option<&RegistryFile>,
        cx: &TimelineContext<'_>,
    ) -> Result<(Vec<TimedAction>, Vec<TimedRegistryAction>, Vec<TimedRevoke>), ScenarioError> {
        let TimelineContext {
            n,
            topology,
            named,
            duration,
            mode,
            stream,
        } = *cx;
        if events.len() > TIMELINE_MAX {
            return err("timeline", format!("at most {TIMELINE_MAX} entries"));
        }
        let mut named_services = BTreeMap::new();
        let mut named_intents = BTreeMap::new();
        if let Some(rf) = registry {
            for (name, v) in &rf.services {
                let field = format!("registry.services.{name}");
                named_services.insert(name.clone(), parse_service(&field, v, &BTreeMap::new())?);
            }
            for (name, v) in &rf.intents {
                let field = format!("registry.intents.{name}");
                if !matches!(v, toml::Value::Table(_)) {
                    return err(field, "must be a table (an intent)");
                }
                named_intents.insert(name.clone(), parse_intent(&field, v, &BTreeMap::new())?);
            }
        }
        let registered_ids: BTreeSet<String> = events
            .iter()
            .filter(|e| e.action == "register")
            .filter_map(|e| match &e.service {
                Some(toml::Value::Table(t)) => {
                    t.get("id").and_then(|v| v.as_str()).map(str::to_owned)
                }
                Some(toml::Value::String(name)) => named_services.get(name).map(|s| s.id.clone()),
                _ => None,
            })
            .collect();
        let mut timeline = Vec::with_capacity(events.len());
        let mut reg_actions = Vec::new();
        let mut revocations = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            let field = |k: &str| format!("timeline[{i}].{k}");
            let at = parse_duration(&field("at"), &e.at)?;
            if at > duration {
                return err(field("at"), "after the end of the run");
            }
            let nodes = |e: &EventFile| -> Result<NodeSet, ScenarioError> {
                match &e.nodes {
                    Some(list) => select(n, topology, named, &field("nodes"), list),
                    None => err(field("nodes"), format!("{} needs `nodes`", e.action)),
                }
            };
            let service_id = |e: &EventFile| -> Result<String, ScenarioError> {
                match &e.id {
                    None => err(
                        field("id"),
                        format!("{} needs `id` (a service id)", e.action),
                    ),
                    Some(id) if !registered_ids.contains(id) => err(
                        field("id"),
                        format!("no `register` action in this scenario registers {id:?}"),
                    ),
                    Some(id) => Ok(id.clone()),
                }
            };
            let registry_action = match e.action.as_str() {
                "register" => Some(RegistryAction::Register {
                    nodes: nodes(&e)?,
                    sad: Box::new(match &e.service {
                        Some(v) => parse_service(&field("service"), v, &named_services)?,
                        None => return err(field("service"), "register needs `service`"),
                    }),
                    renew: e.renew.unwrap_or(true),
                }),
                "update_load" => {
                    let Some(v) = &e.load else {
                        return err(
                            field("load"),
                            "update_load needs `load` (queue_depth, utilization_pct, latency_ms_p50, latency_ms_p99)",
                        );
                    };
                    let update: LoadUpdate = serde_json::from_slice(&toml_json(&field("load"), v)?)
                        .map_err(|e| ScenarioError {
                            field: field("load"),
                            message: e.to_string(),
                        })?;
                    // The same checks a node applies (utilisation range, p99 ≥ p50).
                    Sad::new("check", "check")
                        .apply_load(&update)
                        .map_err(|e| ScenarioError {
                            field: format!("{}.{}", field("load"), e.field),
                            message: e.reason,
                        })?;
                    Some(RegistryAction::UpdateLoad {
                        nodes: nodes(&e)?,
                        id: service_id(&e)?,
                        update,
                    })
                }
                "withdraw" => Some(RegistryAction::Withdraw {
                    nodes: nodes(&e)?,
                    id: service_id(&e)?,
                }),
                "resolve" => Some(RegistryAction::Resolve {
                    nodes: nodes(&e)?,
                    intent: Box::new(match &e.intent {
                        Some(v) => parse_intent(&field("intent"), v, &named_intents)?,
                        None => return err(field("intent"), "resolve needs `intent`"),
                    }),
                }),
                _ => None,
            };
            if e.action == "revoke" {
                revocations.push(stream::revoke(
                    i,
                    at,
                    nodes(&e)?,
                    e.delay.as_deref(),
                    stream,
                )?);
                continue;
            }
            if let Some(action) = registry_action {
                if mode == Mode::Node {
                    return err(
                        field("action"),
                        format!("{} is a registry action: core mode only", e.action),
                    );
                }
                reg_actions.push(TimedRegistryAction {
                    index: i,
                    at,
                    action,
                });
                continue;
            }
            let action = match e.action.as_str() {
                "kill" => Action::Kill(nodes(&e)?),
                "restart" => Action::Restart(nodes(&e)?),
                "pause" => Action::Pause(nodes(&e)?),
                "resume" => Action::Resume(nodes(&e)?),
                "heal" => Action::Heal,
                "partition" => match (&e.groups, &e.from, &e.to) {
                    (Some(groups), None, None) => {
                        if groups.len() < 2 {
                            return err(field("groups"), "needs at least two groups");
                        }
                        let sets = groups
                            .iter()
                            .map(|g| select(n, topology, named, &field("groups"), g))
                            .collect::<Result<Vec<_>, _>>()?;
                        Action::Partition(sets)
                    }
                    (None, Some(from), Some(to)) => Action::PartitionOneWay {
                        from: select(n, topology, named, &field("from"), from)?,
                        to: select(n, topology, named, &field("to"), to)?,
                    },
                    _ => {
                        return err(
                            field("action"),
                            "partition needs either `groups` or both `from` and `to`",
                        );
                    }
                },
                "loss" => Action::Loss {
                    nodes: match &e.nodes {
                        Some(list) => Some(select(n, topology, named, &field("nodes"), list)?),
                        None => None,
                    },
                    rate: match e.rate {
                        Some(r) if (0.0..=1.0).contains(&r) => r,
                        _ => return err(field("rate"), "loss needs `rate` in 0..=1"),
                    },
                },
                "skew" => Action::Skew {
                    nodes: nodes(&e)?,
                    drift_ppm: match e.drift_ppm {
                        Some(p) if p.abs() <= 500_000 => p,
                        _ => {
                            return err(
                                field("drift_ppm"),
                                "skew needs `drift_ppm` within ±500000",
                            );
                        }
                    },
                },
                other => {
                    return err(
                        field("action"),
                        format!(
                            "unknown action {other:?} (kill, restart, partition, heal, loss, pause, resume, skew, \
                             register, update_load, withdraw, resolve, revoke)"
                        ),
                    );
                }
            };
            timeline.push(TimedAction {
                index: i,
                at,
                action,
            });
        }
        // Stable sort keeps the file's order for actions at the same instant.
        timeline.sort_by_key(|t| t.at);
        Ok((timeline, reg_actions, revocations))
    }

    /// `[topology]`.
    fn check_topology(topology: TopologyFile) -> Result<Topology, ScenarioError> {
        Ok(match topology {
            TopologyFile::Mesh { latency } => Topology::Mesh {
                latency: match latency {
                    Some(l) => parse_duration("topology.latency", &l)?,
                    None => Duration::from_millis(1),
                },
            },
            TopologyFile::Racks {
                pods,
                racks_per_pod,
                intra_rack,
                intra_pod,
                inter_pod,
            } => {
                if pods == 0 || racks_per_pod == 0 {
                    return err("topology", "pods and racks_per_pod must be at least 1");
                }
                Topology::Racks {
                    pods,
                    racks_per_pod,
                    intra_rack: parse_duration("topology.intra_rack", &intra_rack)?,
                    intra_pod: parse_duration("topology.intra_pod", &intra_pod)?,
                    inter_pod: parse_duration("topology.inter_pod", &inter_pod)?,
                }
            }
            TopologyFile::Wan {
                regions,
                rtt_ms,
                intra_region,
            } => {
                let r = regions.len();
                if r == 0 || rtt_ms.len() != r || rtt_ms.iter().any(|row| row.len() != r) {
                    return err(
                        "topology.rtt_ms",
                        format!("must be a {r}×{r} matrix, one row per region"),
                    );
                }
                if rtt_ms.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
                    return err("topology.rtt_ms", "entries must be finite and non-negative");
                }
                Topology::Wan {
                    one_way: rtt_ms
                        .iter()
                        .map(|row| {
                            row.iter()
                                .map(|ms| Duration::from_secs_f64(ms / 2e3))
                                .collect()
                        })
                        .collect(),
                    regions,
                    intra_region: parse_duration("topology.intra_region", &intra_region)?,
                }
            }
        })
    }

    /// `groups`: named node sets (made of plain selectors; a group cannot name another).
    fn check_groups(
        n: usize,
        topology: &Topology,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Result<BTreeMap<String, NodeSet>, ScenarioError> {
        let mut named = BTreeMap::new();
        for (name, list) in groups {
            let field = format!("groups.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return err(field, "group names are [A-Za-z0-9_-]+");
            }
            // Groups are made of plain selectors; a group cannot name another group.
            let set = select(n, topology, &BTreeMap::new(), &field, list)?;
            named.insert(name.clone(), set);
        }
        Ok(named)
    }

    /// `seeds`: the nodes every node joins through (default: the first).
    fn check_seeds(
        n: usize,
        topology: &Topology,
        named: &BTreeMap<String, NodeSet>,
        seeds: Option<&[String]>,
    ) -> Result<Vec<usize>, ScenarioError> {
        Ok(match seeds {
            None => vec![0],
            Some(list) => {
                let set = select(n, topology, named, "seeds", list)?;
                if set.is_empty() {
                    return err("seeds", "must name at least one node");
                }
                set.into_iter().collect()
            }
        })
    }

    /// `[network]`.
    fn check_network(network: &NetworkFile) -> Result<Network, ScenarioError> {
        let prob = |field: &str, v: Option<f64>| -> Result<f64, ScenarioError> {
            match v {
                None => Ok(0.0),
                Some(p) if (0.0..=1.0).contains(&p) => Ok(p),
                Some(_) => err(field, "must be a probability in 0..=1"),
            }
        };
        Ok(Network {
            jitter: match &network.jitter {
                Some(j) => parse_duration("network.jitter", j)?,
                None => Duration::ZERO,
            },
            jitter_distribution: network.jitter_distribution.unwrap_or_default(),
            loss: prob("network.loss", network.loss)?,
            duplicate: prob("network.duplicate", network.duplicate)?,
            reorder: prob("network.reorder", network.reorder)?,
            bandwidth_kbps: network.bandwidth_kbps.unwrap_or(0),
        })
    }

    /// The membership bounds of `[invariants]` (defaults from the gossip settings).
    fn check_bounds(
        invariants: &InvariantsFile,
        gossip: &MembershipConfig,
    ) -> Result<Bounds, ScenarioError> {
        Ok(Bounds {
            converge_within: match &invariants.converge_within {
                Some(c) => parse_duration("invariants.converge_within", c)?,
                // Detection (suspicion + a few probe periods) plus a few anti-entropy rounds;
                // independent of N, unlike the worst-case detection bound.
                None => (gossip.suspect_to_down
                    + gossip.probe_period * (4 * nexus_gossip::ANTI_ENTROPY_PERIODS + 2))
                    .max(Duration::from_secs(10)),
            },
            false_down_rate_max: match invariants.false_down_rate_max {
                None => 0.01,
                Some(r) if (0.0..=1.0).contains(&r) => r,
                Some(_) => return err("invariants.false_down_rate_max", "must be in 0..=1"),
            },
        })
    }

    /// `membership` and `[overlay]`: partial-view membership is core mode only, without the
    /// registry or the CA (both need SWIM's member list), and without `skew` (the partial-view
    /// engine runs every node on virtual time).
    fn check_partial(
        membership: Option<&str>,
        overlay: Option<OverlayFile>,
        reach_min: Option<f64>,
        mode: Mode,
        timeline: &[TimedAction],
        registry_or_ca: bool,
    ) -> Result<Option<PartialScenario>, ScenarioError> {
        match membership {
            None | Some("swim") => {
                if overlay.is_some() {
                    return err("overlay", "only with membership = \"partial\"");
                }
                if reach_min.is_some() {
                    return err(
                        "invariants.broadcast_reach_min",
                        "only with membership = \"partial\"",
                    );
                }
                return Ok(None);
            }
            Some("partial") => {}
            Some(other) => {
                return err(
                    "membership",
                    format!(
                        "{other:?}: must be \"swim\" (full membership) or \"partial\" (HyParView views)"
                    ),
                );
            }
        }
        if mode != Mode::Core {
            return err(
                "membership",
                "partial-view membership runs in core mode only",
            );
        }
        if registry_or_ca {
            return err(
                "membership",
                "partial-view membership runs without the registry and the CA (they need SWIM's member list)",
            );
        }
        if let Some(t) = timeline
            .iter()
            .find(|t| matches!(t.action, Action::Skew { .. }))
        {
            return err(
                format!("timeline[{}].action", t.index),
                "skew is not simulated with partial-view membership",
            );
        }
        let o = overlay.unwrap_or_default();
        let dur = |field: &str, v: &Option<String>, default: Duration| match v {
            Some(text) => parse_duration(&format!("overlay.{field}"), text),
            None => Ok(default),
        };
        let base = nexus_gossip::OverlayConfig::default();
        let overlay = nexus_gossip::OverlayConfig {
            active_view: o.active_view.unwrap_or(base.active_view),
            passive_view: o.passive_view.unwrap_or(base.passive_view),
            shuffle_period: dur("shuffle_period", &o.shuffle_period, base.shuffle_period)?,
            keepalive_period: Some(dur(
                "keepalive_period",
                &o.keepalive_period,
                Duration::from_secs(1),
            )?),
            keepalive_timeout: dur(
                "keepalive_timeout",
                &o.keepalive_timeout,
                Duration::from_secs(4),
            )?,
            rotate_period: Some(dur(
                "rotate_period",
                &o.rotate_period,
                Duration::from_secs(10),
            )?),
            ..base
        };
        overlay.check().map_err(|e| ScenarioError {
            // `overlay.keepalive_timeout_ms` → `overlay.keepalive_timeout` (the file's key).
            field: e.field.trim_end_matches("_ms").to_owned(),
            message: e.reason.into(),
        })?;
        let broadcast_reach_min = match reach_min {
            None => None,
            Some(r) if r > 0.0 && r <= 1.0 => Some(r),
            Some(_) => return err("invariants.broadcast_reach_min", "must be in (0, 1]"),
        };
        Ok(Some(PartialScenario {
            overlay,
            broadcast_reach_min,
        }))
    }

    fn check_ca(
        c: CaFile,
        mode: Mode,
        n: usize,
        topology: &Topology,
        network: &Network,
        timeline: &[TimedAction],
    ) -> Result<CaScenario, ScenarioError> {
        if mode != Mode::Node {
            return err(
                "mode",
                "a [ca] scenario runs the real CaNode in turmoil hosts: set mode = \"node\"",
            );
        }
        if n > CA_VOTERS_MAX {
            return err(
                "nodes",
                format!("a [ca] scenario has 1..={CA_VOTERS_MAX} nodes (the CA voters)"),
            );
        }
        if !matches!(topology, Topology::Mesh { .. }) {
            return err(
                "topology",
                "a [ca] scenario supports the mesh topology only",
            );
        }
        for (field, set) in [
            ("network.jitter", !network.jitter.is_zero()),
            ("network.loss", network.loss > 0.0),
            ("network.duplicate", network.duplicate > 0.0),
            ("network.reorder", network.reorder > 0.0),
            ("network.bandwidth_kbps", network.bandwidth_kbps > 0),
        ] {
            if set {
                return err(
                    field,
                    "not supported with [ca]: the CA runs over turmoil TCP, which has no \
                     per-segment impairments; use partitions and kills",
                );
            }
        }
        for t in timeline {
            if !matches!(
                t.action,
                Action::Kill(_) | Action::Restart(_) | Action::Partition(_) | Action::Heal
            ) {
                let what = match t.action {
                    Action::PartitionOneWay { .. } => {
                        "a one-way partition is not supported with [ca]: turmoil's TCP does not \
                         retransmit, so a cut that drops segments would kill connections for good \
                         instead of stalling them (two-way partitions hold segments until the heal)"
                            .to_string()
                    }
                    _ => format!(
                        "{} is not supported with [ca] (kill, restart, two-way partition and heal \
                         are)",
                        t.action.name()
                    ),
                };
                return err(format!("timeline[{}].action", t.index), what);
            }
        }
        let dur = |field: &str, v: &Option<String>, default_ms: u64| match v {
            Some(text) => parse_duration(field, text),
            None => Ok(Duration::from_millis(default_ms)),
        };
        let clients = c.clients.unwrap_or(3);
        if clients == 0 || clients > CA_CLIENTS_MAX {
            return err("ca.clients", format!("must be 1..={CA_CLIENTS_MAX}"));
        }
        let think = dur("ca.think", &c.think, 100)?;
        if think < Duration::from_millis(2) {
            return err("ca.think", "must be at least 2ms");
        }
        let heartbeat = dur("ca.heartbeat", &c.heartbeat, 50)?;
        let election_min = dur("ca.election_min", &c.election_min, 300)?;
        let election_max = dur("ca.election_max", &c.election_max, 600)?;
        if heartbeat.is_zero() || heartbeat >= election_min {
            return err("ca.heartbeat", "must be above 0 and below election_min");
        }
        if election_min >= election_max {
            return err("ca.election_max", "must be above election_min");
        }
        let client_timeout = dur("ca.client_timeout", &c.client_timeout, 2_000)?;
        if client_timeout < election_max {
            return err(
                "ca.client_timeout",
                "must be at least election_max (an operation must outlive an election)",
            );
        }
        let op_timeout = dur("ca.op_timeout", &c.op_timeout, 3_000)?;
        if op_timeout <= client_timeout {
            return err(
                "ca.op_timeout",
                "must exceed ca.client_timeout (the voter answers before the client gives up)",
            );
        }
        let settle = dur("ca.settle", &c.settle, 10_000)?;
        if settle < election_max * 4 {
            return err("ca.settle", "must be at least 4 × election_max");
        }
        let snapshot_every = c.snapshot_every.unwrap_or(100);
        if snapshot_every == 0 {
            return err("ca.snapshot_every", "must be at least 1");
        }
        let m = c.mix.unwrap_or_default();
        let mix = [
            m.issue.unwrap_or(40),
            m.renew.unwrap_or(10),
            m.revoke.unwrap_or(15),
            m.get.unwrap_or(30),
            m.list.unwrap_or(5),
        ];
        if mix[0] == 0 {
            return err(
                "ca.mix.issue",
                "must be above 0 (everything else needs certificates)",
            );
        }
        Ok(CaScenario {
            clients,
            think,
            op_timeout,
            retries: c.retries.unwrap_or(3).min(20),
            settle,
            heartbeat,
            election_min,
            election_max,
            client_timeout,
            snapshot_every,
            mix,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn check_registry(
        rf: RegistryFile,
        inv: &InvariantsFile,
        actions: Vec<TimedRegistryAction>,
        gossip: &MembershipConfig,
        bounds: &Bounds,
        n: usize,
        last_fault: Duration,
        duration: Duration,
    ) -> Result<RegistryScenario, ScenarioError> {
        let refresh = match &rf.refresh {
            Some(r) => parse_duration("registry.refresh", r)?,
            None => Duration::from_millis(500),
        };
        if refresh < Duration::from_millis(10) {
            return err("registry.refresh", "must be at least 10ms");
        }
        let anti_entropy = match rf.anti_entropy.as_deref() {
            Some("off") => None,
            Some(a) => {
                let d = parse_duration("registry.anti_entropy", a)?;
                if d < Duration::from_millis(10) {
                    return err(
                        "registry.anti_entropy",
                        "must be at least 10ms (or \"off\")",
                    );
                }
                Some(d)
            }
            None => Some(Duration::from_secs(2)),
        };
        let mut tasks = BTreeSet::new();
        let mut republish_max = Duration::from_secs(1);
        for a in &actions {
            if let RegistryAction::Register { sad, .. } = &a.action {
                tasks.extend(sad.tasks.iter().cloned());
                republish_max =
                    republish_max.max(Duration::from_millis(u64::from(sad.ttl_s) * 1000 / 3));
            }
        }
        let converge_within = match &rf.converge_within {
            Some(c) => parse_duration("registry.converge_within", c)?,
            // Membership must settle, then a re-publish (every ttl_s / 3) revives entries a
            // member-down verdict deactivated, plus two anti-entropy rounds for lost datagrams.
            None => {
                bounds.converge_within
                    + republish_max
                    + 2 * anti_entropy.unwrap_or(Duration::from_secs(2))
            }
        };
        let last_change = actions
            .iter()
            .filter(|a| !matches!(a.action, RegistryAction::Resolve { .. }))
            .map(|a| a.at)
            .max()
            .unwrap_or(Duration::ZERO)
            .max(last_fault);
        if last_change + converge_within > duration {
            return err(
                "registry.converge_within",
                format!(
                    "the last registry change or fault ({last_change:?}) plus converge_within ({converge_within:?}) \
                     is past the end of the run ({duration:?}): convergence could never be checked"
                ),
            );
        }
        let stale_bound = match &inv.stale_bound {
            Some(b) => parse_duration("invariants.stale_bound", b)?,
            None => gossip.detection_bound(n) + refresh,
        };
        Ok(RegistryScenario {
            refresh,
            anti_entropy,
            converge_within,
            sample_resolves: rf.sample_resolves.unwrap_or(true),
            actions,
            tasks: tasks.into_iter().collect(),
            checks: RegistryChecks {
                convergence: inv.registry_convergence.unwrap_or(true),
                no_stale_endpoints: inv.no_stale_endpoints.unwrap_or(true),
                withdrawn_disappear: inv.withdrawn_disappear.unwrap_or(true),
                stale_bound,
            },
        })
    }

    /// Virtual time of the last fault (or repair) in the timeline; zero if none.
    pub fn last_disturbance(&self) -> Duration {
        self.timeline.last().map(|t| t.at).unwrap_or(Duration::ZERO)
    }

    /// The name of node `i`.
    pub fn node_name(i: usize) -> String {
        format!("n{}", i + 1)
    }
}

/// Resolves selectors: `n3`, `n1..n10` (inclusive), `all`, `group:NAME` (from `[groups]`),
/// `rack:R`, `pod:P`, `region:NAME`
/// (placement as [`Topology::placement`] assigns it).
fn select(
    n: usize,
    topology: &Topology,
    groups: &BTreeMap<String, NodeSet>,
    field: &str,
    list: &[String],
) -> Result<NodeSet, ScenarioError> {
    let mut out = NodeSet::new();
    let index = |s: &str| -> Result<usize, ScenarioError> {
        let i: usize = s
            .strip_prefix('n')
            .and_then(|d| d.parse().ok())
            .filter(|i| (1..=n).contains(i))
            .ok_or_else(|| ScenarioError {
                field: field.into(),
                message: format!("{s:?} is not a node (n1..n{n})"),
            })?;
        Ok(i - 1)
    };
    for sel in list {
        let sel = sel.trim();
        if sel == "all" {
            out.extend(0..n);
        } else if let Some((a, b)) = sel.split_once("..") {
            let (a, b) = (index(a)?, index(b)?);
            if a > b {
                return err(field, format!("{sel:?}: empty range"));
            }
            out.extend(a..=b);
        } else if let Some(name) = sel.strip_prefix("group:") {
            match groups.get(name) {
                Some(set) => out.extend(set),
                None => return err(field, format!("no group {name:?} in [groups]")),
            }
        } else if let Some((kind, value)) = sel.split_once(':') {
            out.extend(topology.group(n, field, kind, value)?);
        } else {
            out.insert(index(sel)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "name = \"t\"\nnodes = 4\nduration = \"60s\"\n";

    fn field_of(extra: &str) -> String {
        Scenario::parse(&format!("{MIN}{extra}"))
            .expect_err("invalid")
            .field
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("f", "250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("f", "1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("f", "80us"), Ok(Duration::from_micros(80)));
        assert_eq!(parse_duration("f", "2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("f", "5").is_err());
        assert!(parse_duration("f", "-1s").is_err());
        assert!(parse_duration("f", "1 fortnight").is_err());
    }

    #[test]
    fn minimal_scenario_has_defaults() {
        let s = Scenario::parse(MIN).expect("valid");
        assert_eq!(s.mode, Mode::Core);
        assert_eq!(s.seeds, vec![0]);
        assert_eq!(
            s.topology,
            Topology::Mesh {
                latency: Duration::from_millis(1)
            }
        );
        assert!(s.timeline.is_empty());
        assert_eq!(s.bounds.false_down_rate_max, 0.01);
    }

    #[test]
    fn timeline_and_selectors() {
        let s = Scenario::parse(&format!(
            "{MIN}[[timeline]]\nat = \"5s\"\naction = \"heal\"\n\
             [[timeline]]\nat = \"2s\"\naction = \"partition\"\ngroups = [[\"n1..n2\"], [\"n3\", \"n4\"]]\n\
             [[timeline]]\nat = \"3s\"\naction = \"kill\"\nnodes = [\"all\"]\n"
        ))
        .expect("valid");
        assert_eq!(s.timeline[0].at, Duration::from_secs(2), "sorted by time");
        assert_eq!(
            s.timeline[0].action,
            Action::Partition(vec![[0, 1].into(), [2, 3].into()])
        );
        assert_eq!(s.timeline[1].action, Action::Kill((0..4).collect()));
        assert_eq!(s.last_disturbance(), Duration::from_secs(5));
    }

    #[test]
    fn named_groups() {
        let s = Scenario::parse(&format!(
            "{MIN}[groups]\neast = [\"n1\", \"n2\"]\nwest = [\"n3..n4\"]\n\
             [[timeline]]\nat = \"1s\"\naction = \"partition\"\ngroups = [[\"group:east\"], [\"group:west\"]]\n"
        ))
        .expect("valid");
        assert_eq!(
            s.timeline[0].action,
            Action::Partition(vec![[0, 1].into(), [2, 3].into()])
        );
        assert_eq!(
            field_of("[[timeline]]\nat = \"1s\"\naction = \"kill\"\nnodes = [\"group:nope\"]\n"),
            "timeline[0].nodes"
        );
        assert_eq!(
            field_of("[groups]\na = [\"group:b\"]\nb = [\"n1\"]\n"),
            "groups.a"
        );
    }

    #[test]
    fn liveness_window_must_fit_in_the_run() {
        assert_eq!(
            field_of("[invariants]\nconverge_within = \"61s\"\n"),
            "invariants.converge_within"
        );
    }

    #[test]
    fn partial_membership_and_its_bad_values() {
        let s = Scenario::parse(&format!("{MIN}membership = \"swim\"\n")).expect("valid");
        assert!(s.partial.is_none());
        let s = Scenario::parse(&format!(
            "{MIN}membership = \"partial\"\n[overlay]\nkeepalive_period = \"500ms\"\n\
             keepalive_timeout = \"2s\"\nactive_view = 4\n[invariants]\nbroadcast_reach_min = 0.99\n"
        ))
        .expect("valid");
        let p = s.partial.expect("partial");
        assert_eq!(p.overlay.active_view, 4);
        assert_eq!(p.overlay.keepalive_period, Some(Duration::from_millis(500)));
        assert_eq!(p.overlay.rotate_period, Some(Duration::from_secs(10)));
        assert_eq!(p.broadcast_reach_min, Some(0.99));
        // Keepalive timeout 4 s + period 1 s + 3 rotations of 10 s.
        let s = Scenario::parse(&format!("{MIN}membership = \"partial\"\n")).expect("valid");
        assert_eq!(s.bounds.converge_within, Duration::from_secs(35));

        assert_eq!(field_of("membership = \"gossip\"\n"), "membership");
        // A wrong type is named by the path serde reached.
        assert_eq!(field_of("membership = 3\n"), "membership");
        assert_eq!(field_of("[network]\nloss = \"x\"\n"), "network.loss");
        assert_eq!(
            field_of("[[timeline]]\nat = \"1s\"\naction = \"kill\"\nnodes = 3\n"),
            "timeline[0].nodes"
        );
        assert_eq!(
            field_of("name = \"t\"\n"),
            "scenario",
            "a duplicate key is a syntax error"
        );
        assert_eq!(
            field_of("[overlay]\nactive_view = 4\n"),
            "overlay",
            "[overlay] without partial membership"
        );
        assert_eq!(
            field_of("[invariants]\nbroadcast_reach_min = 0.5\n"),
            "invariants.broadcast_reach_min"
        );
        let partial = |extra: &str| field_of(&format!("membership = \"partial\"\n{extra}"));
        assert_eq!(partial("mode = \"node\"\n"), "membership");
        assert_eq!(
            partial("[overlay]\nkeepalive_timeout = \"1s\"\n"),
            "overlay.keepalive_timeout"
        );
        assert_eq!(
            partial("[overlay]\nkeepalive_period = \"soon\"\n"),
            "overlay.keepalive_period"
        );
        assert_eq!(
            partial("[overlay]\nactive_view = 0\n"),
            "overlay.active_view"
        );
        assert_eq!(partial("[overlay]\nfanout = 3\n"), "overlay.fanout");
        assert_eq!(
            partial("[invariants]\nbroadcast_reach_min = 1.5\n"),
            "invariants.broadcast_reach_min"
        );
        assert_eq!(
            partial(
                "[[timeline]]\nat = \"1s\"\naction = \"skew\"\nnodes = [\"n1\"]\ndrift_ppm = 5\n"
            ),
            "timeline[0].action"
        );
        assert_eq!(partial("[registry]\n"), "membership");
        assert_eq!(
            partial("[[timeline]]\nat = \"50s\"\naction = \"heal\"\n"),
            "invariants.converge_within",
            "the default liveness window must fit"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("nodez = 3\n"), "nodez");
        assert_eq!(field_of("[network]\nloss = 2.0\n"), "network.loss");
        assert_eq!(
            field_of("[[timeline]]\nat = \"1s\"\naction = \"explode\"\n"),
            "timeline[0].action"
        );
        assert_eq!(
            field_of("[[timeline]]\nat = \"1s\"\naction = \"kill\"\nnodes = [\"n9\"]\n"),
            "timeline[0].nodes"
        );
        assert_eq!(
            field_of("[[timeline]]\nat = \"99s\"\naction = \"heal\"\n"),
            "timeline[0].at"
        );
        assert_eq!(
            field_of(
                "[topology]\nkind = \"wan\"\nregions = [\"a\", \"b\"]\nrtt_ms = [[0]]\nintra_region = \"1ms\"\n"
            ),
            "topology.rtt_ms"
        );
        assert_eq!(
            field_of("[gossip]\nprobe_rtt_ms = 5000\n"),
            "gossip.probe_rtt_ms"
        );
    }
}
