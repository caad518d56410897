//! Admin API access control: scopes, ACL tokens and the node's token store.
//!
//! A request to the admin API carries `Authorization: Bearer <secret>`. The secret names a
//! token; the token holds a set of [`Scope`]s; every endpoint requires one scope (declared in
//! the admin router's table) or is open. [`Scope::Management`] implies every other scope.
//!
//! Three kinds of token exist:
//! - the **bootstrap management token**: the node's `admin_token` (`--admin-token`,
//!   `NEXUS_ADMIN_TOKEN`). It is never written to the store; configuring it is what turns ACLs
//!   on. Without it the admin API is open (every request is allowed) and no tokens can be made.
//! - **stored tokens**, made with `POST /v1/acl/tokens` (`nexus ctl acl token create`): the store
//!   keeps an accessor id, a description, the scopes, the creation time and the SHA-256 of the
//!   secret, never the secret itself. The secret (32 random bytes as 64 hex digits) is shown once,
//!   in the answer to the creation.
//! - **node-internal tokens**: minted in memory at startup for the node's own users of its admin
//!   API (the gateway's embedded client, upstream services), with only the scopes they need.
//!   They are listed but not stored and cannot be revoked; a restart replaces them.
//!
//! The store is one JSON file, `acl_tokens.json` in the data directory, written atomically
//! (a temporary file in the same directory, fsync, rename, fsync of the directory) with mode
//! 0600. Its format is documented in docs/operations.md ("ACL token store"); [`decode_store`]
//! parses it and refuses anything malformed.
//!
//! This module holds no HTTP: the admin API's middleware calls [`AclStore::authenticate`] and
//! [`Identity::allows`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, RwLock};

use rand_core_06::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the token store inside the data directory.
pub const STORE_FILE: &str = "acl_tokens.json";
/// The store's `format` member.
pub const STORE_FORMAT: &str = "nexus-acl-tokens";
/// The store format version this build reads and writes.
pub const STORE_VERSION: u32 = 1;
/// Stored tokens at most.
pub const TOKENS_MAX: usize = 4096;
/// Largest store file read, bytes.
pub const STORE_BYTES_MAX: usize = 4 << 20;
/// Longest token description, bytes.
pub const DESCRIPTION_BYTES_MAX: usize = 256;
/// Bytes of randomness in a secret (shown as twice as many hex digits).
pub const SECRET_BYTES: usize = 32;
/// Bytes of randomness in an accessor id (shown as twice as many hex digits).
pub const ACCESSOR_BYTES: usize = 16;
/// Accessor id of the bootstrap management token (it is not stored).
pub const BOOTSTRAP_ACCESSOR: &str = "bootstrap";

/// What a token may do. Each admin endpoint requires exactly one scope, or none (open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Every read-only endpoint: node, members, actors, metrics, FIB, routes, services,
    /// resolve, CA reads, sessions.
    Read,
    /// Register, update, withdraw services and report their load.
    ServicesWrite,
    /// Set and delete static routes; roll the forwarding table back.
    RoutesWrite,
    /// Have the CA issue and renew certificates.
    CaIssue,
    /// Have the CA revoke certificates.
    CaRevoke,
    /// Change the CA's voter set.
    CaAdmin,
    /// Operate the node: leave, session probes, fault injection, the gossip keyring.
    Operator,
    /// Everything, including ACL token management.
    Management,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 8] = [
        Scope::Read,
        Scope::ServicesWrite,
        Scope::RoutesWrite,
        Scope::CaIssue,
        Scope::CaRevoke,
        Scope::CaAdmin,
        Scope::Operator,
        Scope::Management,
    ];

    /// The scope's name as tokens, the CLI and the OpenAPI document spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::ServicesWrite => "services:write",
            Scope::RoutesWrite => "routes:write",
            Scope::CaIssue => "ca:issue",
            Scope::CaRevoke => "ca:revoke",
            Scope::CaAdmin => "ca:admin",
            Scope::Operator => "operator",
            Scope::Management => "management",
        }
    }

    /// Whether holding `self` grants `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self == Scope::Management || self == needed
    }

    /// Every scope name, comma-separated (for error messages).
    pub fn names() -> String {
        Scope::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (known scopes: {names})", names = Scope::names())]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `N` random bytes from `rng` as `2 N` lowercase hex digits.
fn random_hex<const N: usize>(rng: &mut (impl RngCore + CryptoRng)) -> String {
    let mut bytes = [0u8; N];
    rng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// An accessor id: names a token in lists and revocations; not a secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccessorId(String);

impl AccessorId {
    /// A fresh random accessor id.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> AccessorId {
        AccessorId(random_hex::<ACCESSOR_BYTES>(rng))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccessorId {
    type Err = String;

    fn from_str(s: &str) -> Result<AccessorId, String> {
        if s.len() == 2 * ACCESSOR_BYTES
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(AccessorId(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not an accessor id ({} lowercase hex digits)",
                2 * ACCESSOR_BYTES
            ))
        }
    }
}

impl fmt::Display for AccessorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token's secret, as presented in `Authorization: Bearer`. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A fresh random secret.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Secret {
        Secret(random_hex::<SECRET_BYTES>(rng))
    }

    /// The secret's text (shown once, at creation).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of a presented secret: what the store keeps and looks tokens up by.
fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// One stored token (no secret: only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's accessor id.
    pub accessor: AccessorId,
    /// SHA-256 of the secret.
    pub secret_sha256: [u8; 32],
    /// Free text saying what the token is for.
    pub description: String,
    /// What the token may do (never empty).
    pub scopes: BTreeSet<Scope>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix_s: u64,
}

impl TokenRecord {
    /// A new token: a fresh secret and accessor id, and the record that holds the secret's hash.
    fn fresh(
        description: &str,
        scopes: BTreeSet<Scope>,
        created_unix_s: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (TokenRecord, Secret) {
        let secret = Secret::generate(rng);
        let record = TokenRecord {
            accessor: AccessorId::generate(rng),
            secret_sha256: secret_hash(secret.expose()),
            description: description.to_owned(),
            scopes,
            created_unix_s,
        };
        (record, secret)
    }
}

/// Who a request's token names, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The accessor id (`bootstrap` for the configured management token).
    pub accessor: String,
    /// The token's scopes.
    pub scopes: BTreeSet<Scope>,
}

impl Identity {
    /// Whether this identity may use an endpoint requiring `needed`.
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| s.grants(needed))
    }
}

/// How a token appears in `GET /v1/acl/tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    /// Accessor id.
    pub accessor: String,
    /// Description.
    pub description: String,
    /// Scopes.
    pub scopes: BTreeSet<Scope>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// `stored`, `bootstrap` or `node-internal`.
    pub kind: &'static str,
}

/// Why the store could not be read, changed or written. Every variant leaves the tokens in
/// memory as they were.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store file is malformed (nothing loaded).
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the file failed (nothing changed).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A request to create a token was invalid (nothing changed).
    #[error("{0}")]
    Invalid(String),
    /// The store already holds [`TOKENS_MAX`] tokens (nothing changed).
    #[error("the store holds {TOKENS_MAX} tokens already; revoke some first")]
    Full,
    /// The token cannot be revoked (the bootstrap or a node-internal token; nothing changed).
    #[error("{0}")]
    NotRevocable(String),
}

// ---- The file format ----

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    format: String,
    version: u32,
    tokens: Vec<StoredToken>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    accessor: String,
    secret_sha256: String,
    description: String,
    scopes: Vec<String>,
    created_unix_s: u64,
}

/// Checks a description: at most [`DESCRIPTION_BYTES_MAX`] bytes, no control characters.
pub fn check_description(text: &str) -> Result<(), String> {
    if text.len() > DESCRIPTION_BYTES_MAX {
        return Err(format!(
            "description: at most {DESCRIPTION_BYTES_MAX} bytes (got {})",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("description: control characters are not allowed".into());
    }
    Ok(())
}

/// Parses scope names: at least one, each known, no repeats.
pub fn parse_scopes<S: AsRef<str>>(names: &[S]) -> Result<BTreeSet<Scope>, String> {
    if names.is_empty() {
        return Err(format!(
            "scopes: at least one scope is required (known scopes: {})",
            Scope::names()
        ));
    }
    let mut scopes = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        let scope: Scope = name
            .as_ref()
            .parse()
            .map_err(|e: UnknownScope| format!("scopes[{i}]: {e}"))?;
        if !scopes.insert(scope) {
            return Err(format!("scopes[{i}]: {scope} is listed twice"));
        }
    }
    Ok(scopes)
}

/// Decodes the store file's bytes into its tokens, checking every field: the format name and
/// version, accessor ids (32 lowercase hex digits, unique), hashes (64 hex digits, unique),
/// descriptions, scopes (known, at least one, no repeats) and the limits
/// ([`STORE_BYTES_MAX`], [`TOKENS_MAX`]). The error names the offending field.
pub fn decode_store(bytes: &[u8]) -> Result<Vec<TokenRecord>, String> {
    if bytes.len() > STORE_BYTES_MAX {
        return Err(format!(
            "larger than {STORE_BYTES_MAX} bytes ({} bytes)",
            bytes.len()
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let file: StoreFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        format!("not a token store: {path}: {}", e.into_inner())
    })?;
    if file.format != STORE_FORMAT {
        return Err(format!("format: {:?} is not {STORE_FORMAT:?}", file.format));
    }
    if file.version != STORE_VERSION {
        return Err(format!(
            "version: {} is not supported (this build reads version {STORE_VERSION})",
            file.version
        ));
    }
    if file.tokens.len() > TOKENS_MAX {
        return Err(format!(
            "tokens: {} tokens, at most {TOKENS_MAX}",
            file.tokens.len()
        ));
    }
    let mut accessors = BTreeSet::new();
    let mut hashes = BTreeSet::new();
    let mut out = Vec::with_capacity(file.tokens.len());
    for (i, t) in file.tokens.into_iter().enumerate() {
        let at = |field: &str, reason: String| format!("tokens[{i}].{field}: {reason}");
        let accessor: AccessorId = t.accessor.parse().map_err(|e| at("accessor", e))?;
        if !accessors.insert(accessor.clone()) {
            return Err(at("accessor", format!("{accessor} appears twice")));
        }
        let mut secret_sha256 = [0u8; 32];
        let lower = t
            .secret_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower || hex::decode_to_slice(&t.secret_sha256, &mut secret_sha256).is_err() {
            return Err(at(
                "secret_sha256",
                "not a SHA-256 digest (64 lowercase hex digits)".into(),
            ));
        }
        if !hashes.insert(secret_sha256) {
            return Err(at("secret_sha256", "two tokens share one secret".into()));
        }
        check_description(&t.description).map_err(|e| format!("tokens[{i}].{e}"))?;
        let scopes = parse_scopes(&t.scopes).map_err(|e| format!("tokens[{i}].{e}"))?;
        out.push(TokenRecord {
            accessor,
            secret_sha256,
            description: t.description,
            scopes,
            created_unix_s: t.created_unix_s,
        });
    }
    Ok(out)
}

/// Encodes tokens as the store file's bytes (pretty JSON, tokens in accessor order).
pub fn encode_store<'a>(tokens: impl IntoIterator<Item = &'a TokenRecord>) -> Vec<u8> {
    let file = StoreFile {
        format: STORE_FORMAT.into(),
        version: STORE_VERSION,
        tokens: tokens
            .into_iter()
            .map(|t| StoredToken {
                accessor: t.accessor.to_string(),
                secret_sha256: hex::encode(t.secret_sha256),
                description: t.description.clone(),
                scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
                created_unix_s: t.created_unix_s,
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Writes `bytes` to `path` atomically with mode 0600: a temporary file in the same directory,
/// fsync, rename over `path`, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".acl_tokens")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

// ---- The store ----

#[derive(Debug, Default)]
struct Tokens {
    /// Stored tokens by accessor.
    stored: BTreeMap<AccessorId, TokenRecord>,
    /// Node-internal tokens by accessor (memory only).
    internal: BTreeMap<AccessorId, TokenRecord>,
    /// Secret hash → accessor, over stored and internal tokens.
    by_hash: BTreeMap<[u8; 32], AccessorId>,
}

/// The node's ACL tokens: the bootstrap management token, the stored tokens and the
/// node-internal ones. Shared by the admin API's handlers (it outlives actor restarts).
#[derive(Debug)]
pub struct AclStore {
    path: PathBuf,
    bootstrap_sha256: Option<[u8; 32]>,
    tokens: RwLock<Tokens>,
    /// Serialises writers so that two changes never race on the file.
    write: Mutex<()>,
}

impl AclStore {
    /// Opens the store in `data_dir` (an absent file is an empty store). `bootstrap` is the
    /// configured management token; without it ACLs are off and [`AclStore::enabled`] is false.
    pub fn open(data_dir: &Path, bootstrap: Option<&str>) -> Result<AclStore, StoreError> {
        let path = data_dir.join(STORE_FILE);
        let shown = path.display().to_string();
        let stored = match std::fs::read(&path) {
            Ok(bytes) => decode_store(&bytes).map_err(|reason| StoreError::Malformed {
                path: shown.clone(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let mut tokens = Tokens::default();
        for t in stored {
            tokens.by_hash.insert(t.secret_sha256, t.accessor.clone());
            tokens.stored.insert(t.accessor.clone(), t);
        }
        Ok(AclStore {
            path,
            bootstrap_sha256: bootstrap.map(secret_hash),
            tokens: RwLock::new(tokens),
            write: Mutex::new(()),
        })
    }

    /// Whether ACLs are enforced (a bootstrap management token is configured).
    pub fn enabled(&self) -> bool {
        self.bootstrap_sha256.is_some()
    }

    /// Stored tokens (excluding the bootstrap and node-internal tokens).
    pub fn stored_count(&self) -> usize {
        self.read().stored.len()
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tokens> {
        // A panic while holding the lock cannot leave `Tokens` half-changed: every writer builds
        // the new entries first and inserts them after the file write succeeded.
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Tokens> {
        self.tokens.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The identity a presented secret names, if any.
    pub fn authenticate(&self, secret: &str) -> Option<Identity> {
        let hash = secret_hash(secret);
        if self.bootstrap_sha256 == Some(hash) {
            return Some(Identity {
                accessor: BOOTSTRAP_ACCESSOR.into(),
                scopes: BTreeSet::from([Scope::Management]),
            });
        }
        let tokens = self.read();
        let accessor = tokens.by_hash.get(&hash)?;
        let record = tokens
            .stored
            .get(accessor)
            .or_else(|| tokens.internal.get(accessor))?;
        Some(Identity {
            accessor: accessor.to_string(),
            scopes: record.scopes.clone(),
        })
    }

    /// Creates and stores a token; returns it with its secret (shown once). The file is
    /// written before the token is accepted by [`AclStore::authenticate`].
    pub fn create(
        &self,
        description: &str,
        scopes: BTreeSet<Scope>,
        created_unix_s: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(TokenRecord, Secret), StoreError> {
        check_description(description).map_err(StoreError::Invalid)?;
        if scopes.is_empty() {
            return Err(StoreError::Invalid(
                "scopes: at least one scope is required".into(),
            ));
        }
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        if self.read().stored.len() >= TOKENS_MAX {
            return Err(StoreError::Full);
        }
        let (record, secret) = TokenRecord::fresh(description, scopes, created_unix_s, rng);
        let bytes = {
            let tokens = self.read();
            encode_store(tokens.stored.values().chain(std::iter::once(&record)))
        };
        self.persist(&bytes)?;
        let mut tokens = self.write_lock();
        tokens
            .by_hash
            .insert(record.secret_sha256, record.accessor.clone());
        tokens
            .stored
            .insert(record.accessor.clone(), record.clone());
        Ok((record, secret))
    }

    /// Mints a node-internal token (memory only, not revocable) and returns its secret.
    pub fn mint_internal(
        &self,
        description: &str,
        scopes: BTreeSet<Scope>,
        created_unix_s: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Secret {
        let (record, secret) = TokenRecord::fresh(description, scopes, created_unix_s, rng);
        let mut tokens = self.write_lock();
        tokens
            .by_hash
            .insert(record.secret_sha256, record.accessor.clone());
        tokens.internal.insert(record.accessor.clone(), record);
        secret
    }

    /// Revokes a stored token: rewrites the file without it, then forgets it, so the next
    /// request presenting its secret is refused. `Ok(None)`: no such token.
    pub fn revoke(&self, accessor: &str) -> Result<Option<TokenRecord>, StoreError> {
        if accessor == BOOTSTRAP_ACCESSOR {
            return Err(StoreError::NotRevocable(
                "the bootstrap token is the node's admin_token; change it in the node's config"
                    .into(),
            ));
        }
        let Ok(id) = accessor.parse::<AccessorId>() else {
            return Ok(None);
        };
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = {
            let tokens = self.read();
            if tokens.internal.contains_key(&id) {
                return Err(StoreError::NotRevocable(format!(
                    "{id} is a node-internal token (memory only; it ends with the process)"
                )));
            }
            if !tokens.stored.contains_key(&id) {
                return Ok(None);
            }
            encode_store(tokens.stored.values().filter(|t| t.accessor != id))
        };
        self.persist(&bytes)?;
        let mut tokens = self.write_lock();
        let removed = tokens.stored.remove(&id);
        if let Some(r) = &removed {
            tokens.by_hash.remove(&r.secret_sha256);
        }
        Ok(removed)
    }

    fn persist(&self, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomic(&self.path, bytes).map_err(|source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        })
    }

    /// Every token: the bootstrap token (if configured), then stored and node-internal tokens
    /// by accessor.
    pub fn list(&self) -> Vec<TokenView> {
        let mut out = Vec::new();
        if self.enabled() {
            out.push(TokenView {
                accessor: BOOTSTRAP_ACCESSOR.into(),
                description: "the node's admin_token".into(),
                scopes: BTreeSet::from([Scope::Management]),
                created_unix_s: 0,
                kind: "bootstrap",
            });
        }
        let tokens = self.read();
        let view = |t: &TokenRecord, kind| TokenView {
            accessor: t.accessor.to_string(),
            description: t.description.clone(),
            scopes: t.scopes.clone(),
            created_unix_s: t.created_unix_s,
            kind,
        };
        out.extend(tokens.stored.values().map(|t| view(t, "stored")));
        out.extend(tokens.internal.values().map(|t| view(t, "node-internal")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core_06::SeedableRng as _;

    fn rng() -> rand_08::rngs::StdRng {
        rand_08::rngs::StdRng::seed_from_u64(7)
    }

    fn record(accessor: &str, hash_byte: u8) -> String {
        format!(
            r#"{{"accessor":"{accessor}","secret_sha256":"{}","description":"d","scopes":["read"],"created_unix_s":1}}"#,
            hex::encode([hash_byte; 32])
        )
    }

    fn file(tokens: &[String]) -> String {
        format!(
            r#"{{"format":"nexus-acl-tokens","version":1,"tokens":[{}]}}"#,
            tokens.join(",")
        )
    }

    const A1: &str = "0123456789abcdef0123456789abcdef";
    const A2: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn scope_names_round_trip_and_management_implies_all() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
            assert!(Scope::Management.grants(s));
        }
        assert!(!Scope::Read.grants(Scope::ServicesWrite));
        assert!(Scope::Read.grants(Scope::Read));
        let e = "services:read".parse::<Scope>().expect_err("unknown");
        assert!(e.to_string().contains("services:read"));
        assert!(
            e.to_string().contains("routes:write"),
            "lists the known ones"
        );
    }

    #[test]
    fn parse_scopes_refuses_empty_unknown_and_repeated() {
        assert!(parse_scopes::<&str>(&[]).is_err());
        let e = parse_scopes(&["read", "sudo"]).expect_err("unknown");
        assert!(e.starts_with("scopes[1]: unknown scope \"sudo\""), "{e}");
        assert!(parse_scopes(&["read", "read"]).is_err());
        assert_eq!(
            parse_scopes(&["ca:issue", "read"]).expect("valid"),
            BTreeSet::from([Scope::Read, Scope::CaIssue])
        );
    }

    #[test]
    fn store_round_trips() {
        let mut rng = rng();
        let (a, _) = (
            TokenRecord {
                accessor: AccessorId::generate(&mut rng),
                secret_sha256: secret_hash(Secret::generate(&mut rng).expose()),
                description: "ci".into(),
                scopes: BTreeSet::from([Scope::Read, Scope::CaIssue]),
                created_unix_s: 1_700_000_000,
            },
            (),
        );
        let bytes = encode_store([&a]);
        assert_eq!(decode_store(&bytes).expect("decodes"), vec![a]);
        assert_eq!(decode_store(&encode_store([])).expect("empty"), vec![]);
    }

    #[test]
    fn decoder_refuses_bad_input() {
        let good = file(&[record(A1, 1), record(A2, 2)]);
        assert_eq!(decode_store(good.as_bytes()).expect("valid").len(), 2);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "not a token store"),
            ("{".into(), "not a token store"),
            ("[]".into(), "not a token store"),
            ("\u{0}garbage".into(), "not a token store"),
            (
                good.replace("nexus-acl-tokens", "something-else"),
                "format:",
            ),
            (good.replace("\"version\":1", "\"version\":2"), "version:"),
            (
                good.replace("\"version\":1", "\"version\":-1"),
                "not a token store",
            ),
            (
                good.replace("\"tokens\"", "\"tokenz\""),
                "not a token store",
            ),
            (
                good.replace(
                    "\"created_unix_s\":1}",
                    "\"created_unix_s\":1,\"secret\":\"x\"}",
                ),
                "unknown field",
            ),
            (file(&[record("0123", 1)]), "tokens[0].accessor"),
            (file(&[record(&A1.to_uppercase(), 1)]), "tokens[0].accessor"),
            (file(&[record(A1, 1), record(A1, 2)]), "tokens[1].accessor"),
            (
                file(&[record(A1, 1), record(A2, 1)]),
                "tokens[1].secret_sha256",
            ),
            (
                file(&[record(A1, 1).replace(&hex::encode([1u8; 32]), "zz")]),
                "tokens[0].secret_sha256",
            ),
            (
                file(&[record(A1, 1).replace(&hex::encode([1u8; 32]), &"AB".repeat(32))]),
                "tokens[0].secret_sha256",
            ),
            (
                file(&[record(A1, 1).replace("[\"read\"]", "[]")]),
                "tokens[0].scopes",
            ),
            (
                file(&[record(A1, 1).replace("[\"read\"]", "[\"root\"]")]),
                "tokens[0].scopes[0]",
            ),
            (
                file(&[record(A1, 1).replace("[\"read\"]", "[\"read\",\"read\"]")]),
                "tokens[0].scopes[1]",
            ),
            (
                file(&[record(A1, 1).replace("\"d\"", "\"a\\nb\"")]),
                "tokens[0].description",
            ),
            (
                file(&[record(A1, 1).replace("\"d\"", &format!("\"{}\"", "x".repeat(257)))]),
                "tokens[0].description",
            ),
            (
                file(&[record(A1, 1).replace("\"created_unix_s\":1", "\"created_unix_s\":\"1\"")]),
                "not a token store",
            ),
        ];
        for (text, expected) in cases {
            let e = decode_store(text.as_bytes()).expect_err(&text);
            assert!(
                e.contains(expected),
                "{text}: {e} should mention {expected}"
            );
        }
        let big = vec![b' '; STORE_BYTES_MAX + 1];
        assert!(decode_store(&big).expect_err("too big").contains("larger"));
        let many: Vec<String> = (0..=TOKENS_MAX)
            .map(|i| {
                let a = format!("{i:032x}");
                format!(
                    r#"{{"accessor":"{a}","secret_sha256":"{i:064x}","description":"","scopes":["read"],"created_unix_s":1}}"#
                )
            })
            .collect();
        assert!(
            decode_store(file(&many).as_bytes())
                .expect_err("too many")
                .contains("at most")
        );
    }

    #[test]
    fn store_creates_authenticates_revokes_and_persists() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut rng = rng();
        let store = AclStore::open(dir.path(), Some("bootstrap-secret-0123")).expect("open");
        assert!(store.enabled());
        let boot = store
            .authenticate("bootstrap-secret-0123")
            .expect("bootstrap");
        assert!(boot.allows(Scope::CaAdmin));
        assert_eq!(store.authenticate("bootstrap-secret-0124"), None);

        let (record, secret) = store
            .create(
                "ci reader",
                BTreeSet::from([Scope::Read]),
                1_700_000_000,
                &mut rng,
            )
            .expect("create");
        let who = store.authenticate(secret.expose()).expect("known");
        assert_eq!(who.accessor, record.accessor.to_string());
        assert!(who.allows(Scope::Read));
        assert!(!who.allows(Scope::RoutesWrite));

        // The file holds the hash, never the secret, and is private.
        use std::os::unix::fs::PermissionsExt as _;
        let text = std::fs::read_to_string(store.path()).expect("file");
        assert!(!text.contains(secret.expose()));
        assert!(text.contains(&hex::encode(record.secret_sha256)));
        let mode = std::fs::metadata(store.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A reopened store knows the token; a revoked one is gone at once and after reopening.
        let again = AclStore::open(dir.path(), Some("bootstrap-secret-0123")).expect("reopen");
        assert!(again.authenticate(secret.expose()).is_some());
        let removed = store
            .revoke(record.accessor.as_str())
            .expect("revoke")
            .expect("existed");
        assert_eq!(removed.accessor, record.accessor);
        assert_eq!(store.authenticate(secret.expose()), None);
        assert_eq!(store.revoke(record.accessor.as_str()).expect("gone"), None);
        assert!(matches!(
            store.revoke(BOOTSTRAP_ACCESSOR),
            Err(StoreError::NotRevocable(_))
        ));
        let again = AclStore::open(dir.path(), None).expect("reopen");
        assert_eq!(again.authenticate(secret.expose()), None);
        assert!(!again.enabled());
    }

    #[test]
    fn internal_tokens_are_not_stored_nor_revocable() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = AclStore::open(dir.path(), Some("bootstrap-secret-0123")).expect("open");
        let secret = store.mint_internal(
            "gateway",
            BTreeSet::from([Scope::Read, Scope::ServicesWrite]),
            0,
            &mut rng(),
        );
        let who = store.authenticate(secret.expose()).expect("known");
        assert!(who.allows(Scope::ServicesWrite));
        assert!(!who.allows(Scope::CaRevoke));
        assert!(!store.path().exists(), "nothing written");
        assert!(matches!(
            store.revoke(&who.accessor),
            Err(StoreError::NotRevocable(_))
        ));
        let kinds: Vec<&str> = store.list().iter().map(|t| t.kind).collect();
        assert_eq!(kinds, ["bootstrap", "node-internal"]);
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = AclStore::open(&dir.path().join("missing"), Some("bootstrap-secret-0123"))
            .expect("open: an absent file is an empty store");
        let e = store
            .create("x", BTreeSet::from([Scope::Read]), 0, &mut rng())
            .expect_err("the directory does not exist");
        assert!(matches!(e, StoreError::Io { .. }));
        assert_eq!(store.stored_count(), 0);
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(STORE_FILE), b"{\"format\":1}").expect("write");
        let e = AclStore::open(dir.path(), None).expect_err("malformed");
        assert!(e.to_string().contains(STORE_FILE), "{e}");
    }
}
