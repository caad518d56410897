//! Sans-IO capability registry for Nexus. Services describe themselves with a Semantic Address
//! Descriptor ([`Sad`]); their node signs it into an [`Advert`] ([`SignedAdvert`] is what gossip
//! carries); every node merges adverts into a [`Registry`] — a CRDT, last-writer-wins by version
//! per (origin node, service), with leases, tombstones and anti-entropy [`Digest`]s — and
//! resolves client [`Intent`]s against an index to ranked [`Candidate`]s. [`Vivaldi`]
//! coordinates give the proximity term; [`RouteTable`] turns resolved intent classes into
//! [`RouteDelta`]s for the table compiler. [`RegistryNode`] is one node's whole registry
//! (leases, persisted versions, anti-entropy, membership reactions, and the timers that run them)
//! with storage injected, as the registry actor and the simulator drive it.
//!
//! It owns no socket, reads no clock and draws no randomness: time comes in as a [`Timestamp`]
//! (the one monotonic time type of the cores, from `nexus-gossip`, in microseconds since the
//! driver's epoch) and lengths of time as [`std::time::Duration`]; every iteration that reaches
//! output is in `BTreeMap` order. The node's registry actor drives it; the
//! gossip overlay (`nexus-gossip`) carries its adverts and digests.
//!
//! Trust: a live advert may carry the service's credentials (MIC + attestations,
//! `nexus_trust_core::verify::Credentials`). Each node verifies them against its own
//! `nexus_trust_core::verify::TrustContext` (batched, once per credential, see [`RegistryNode`]) and
//! keeps a [`TrustVerdict`] per record; intents can require a verified MIC, a publisher or an
//! attested predicate, and records whose credentials fail are excluded with the reason.
//!
//! What it does not do: follow the CA (the TrustActor sends `TrustUpdate`s), send anything (the driver carries out [`Output`]s), choose a storage backend
//! (the driver passes a [`RegistryStore`]), or measure latency/load (the service reports them).
//!
//! Formats, limits and formulas: `docs/sad.md`.
#![deny(missing_docs)]

mod advert;
mod digest;
mod index;
mod intent;
mod node;
mod resolve;
mod route;
mod sad;
mod store;
mod trust;
mod vivaldi;

pub use nexus_gossip::{NodeId, Timestamp};

pub use advert::{
    ADVERT_BYTES_MAX, ADVERT_FLAG_COORD, ADVERT_FLAG_CREDENTIALS, ADVERT_FORMAT_VERSION,
    ADVERT_HEADER_LEN, ADVERT_KIND_LIVE, ADVERT_KIND_WITHDRAWN, ADVERT_MAGIC, ADVERT_SIGNATURE_LEN,
    ADVERT_SIGNING_CONTEXT, Advert, AdvertBody, AdvertError, COORD_WIRE_LEN, SignedAdvert,
    check_advert_fits, live_advert_len, node_id_of,
};
pub use digest::{
    DIGEST_BYTES_MAX, DIGEST_CHUNK_ORIGINS, DIGEST_ENTRY_LEN, DIGEST_FORMAT_VERSION,
    DIGEST_HEADER_LEN, DIGEST_MAGIC, DIGEST_ORIGINS_MAX, Digest, DigestError, OriginSummary,
};
pub use intent::{
    Attested, CANONICAL_VERSION, INTENT_JSON_BYTES_MAX, Intent, IntentError, K_DEFAULT, K_MAX,
    PUBLISHERS_MAX, Preferences, WEIGHT_MAX,
};
/// The trust types the registry's API speaks (re-exported so drivers need no direct
/// `nexus-trust-core` dependency).
pub use nexus_trust_core::verify::{
    Credentials, CredentialsError, CredentialsJson, TrustContext, TrustReject, TrustUpdate,
    UpdateReport, Verified,
};
pub use node::{
    ANTI_ENTROPY_ADVERTS_MAX, LOCAL_SERVICES_MAX, LocalService, MemoryStore, NodeError, NodeInput,
    NodeTimers, Output, RegistryNode, RegistryStore, StepReport, TAG_ADVERT, TAG_DIGEST_PUSH,
    TAG_DIGEST_REPLY, TRUST_BATCH_MAX, VERSION_BLOCK,
};
pub use resolve::{
    Candidate, EXCLUSIONS_MAX, Exclusion, LATENCY_REF_MS, NEUTRAL_TERM, PRICE_REF_MICROS,
    QUEUE_REF, RTT_REF_MS, Resolution, ResolveContext,
};
pub use route::{
    ROUTE_CLASSES_MAX, ROUTE_WEIGHT_SCALE, Route, RouteDelta, RouteHop, RouteTable, service_key,
};
pub use sad::{
    ATTESTATION_BYTES_MAX, ATTESTATIONS_MAX, ArchivedSad, DecodeError, Endpoint, Load, LoadUpdate,
    MODALITIES_MAX, MODALITY_BYTES_MAX, MODEL_FAMILY_BYTES_MAX, REGION_BYTES_MAX,
    SAD_ARCHIVE_ALIGN, SAD_BYTES_MAX, SAD_FORMAT_VERSION, SAD_HEADER_LEN, SAD_JSON_BYTES_MAX,
    SAD_MAGIC, SERVICE_ID_BYTES_MAX, Sad, SadError, TASK_BYTES_MAX, TASKS_MAX, TTL_S_DEFAULT,
    TTL_S_MAX, TTL_S_MIN, TrustRefs, UTILIZATION_PCT_MAX, ZONE_BYTES_MAX, access,
};
pub use store::{
    Applied, Entry, RECORDS_MAX, RecordState, Registry, RegistryStats, SERVICES_PER_NODE_MAX,
    ServiceKey, TOMBSTONE_TTL, version_floor,
};
pub use trust::TrustVerdict;
pub use vivaldi::{
    COORD_ABS_MAX, Coord, VIVALDI_ADJUSTMENT_WINDOW, VIVALDI_CC, VIVALDI_CE, VIVALDI_DIMENSIONS,
    VIVALDI_ERROR_MAX, VIVALDI_GRAVITY_RHO, VIVALDI_HEIGHT_MIN, VIVALDI_RTT_MAX, Vivaldi,
    estimate_rtt,
};
