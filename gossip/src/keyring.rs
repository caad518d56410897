//! The fabric keyring and sealed gossip datagrams: symmetric 32-byte keys, one *primary* key that
//! seals, every installed key that opens; and [`DatagramGuard`], the sans-IO filter a driver puts
//! between its socket and the gossip cores (seal every outgoing datagram, open every incoming
//! one, drop and count what fails).
//!
//! Sealed datagram (see `docs/protocols/membership.md`, "Sealed datagrams"):
//!
//! ```text
//! +---------+---------------------+----------------------------------+-----------+
//! | 0xE1    | nonce (24 bytes)    | ciphertext (len of the plaintext) | tag (16)  |
//! +---------+---------------------+----------------------------------+-----------+
//! ```
//!
//! The first byte is the sealed format's version. Every plaintext gossip datagram (membership,
//! overlay, keyring operations) starts with `WIRE_MAGIC` (`0x4e`), so a receiver tells sealed
//! from plaintext by that one byte; `0xE0..=0xEF` is reserved for sealed versions. The version
//! byte is the AEAD's associated data.
//!
//! The randomness for nonces is injected (a seed), so a driver with a fixed seed gets the same
//! bytes every run; the node seeds it from the OS at its IO edge.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
// XChaCha20-Poly1305: its 192-bit nonce can be drawn at random for every datagram with no
// counter to keep across restarts, and it runs in constant time without AES hardware.
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::codec::PACKET_BYTES_MAX;

/// Bytes in a keyring key.
pub const KEY_BYTES: usize = 32;
/// Keys a keyring holds at most (the primary included).
pub const KEYS_MAX: usize = 16;
/// First byte of a sealed datagram: the sealed format, version 1.
pub const SEALED_VERSION: u8 = 0xE1;
/// Nonce bytes in a sealed datagram (XChaCha20-Poly1305).
pub const NONCE_BYTES: usize = 24;
/// Authentication tag bytes in a sealed datagram.
pub const TAG_BYTES: usize = 16;
/// Bytes a seal adds to a plaintext datagram: version, nonce and tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_BYTES + TAG_BYTES;
/// Largest sealed datagram: a [`PACKET_BYTES_MAX`] plaintext plus [`SEAL_OVERHEAD`] (1441 bytes,
/// inside a 1500-byte Ethernet MTU with IPv4 or IPv6 and UDP headers).
pub const SEALED_BYTES_MAX: usize = PACKET_BYTES_MAX + SEAL_OVERHEAD;

/// Whether `first` (a datagram's first byte) marks a sealed datagram of any version.
pub fn is_sealed_byte(first: u8) -> bool {
    first & 0xF0 == 0xE0
}

/// A 32-byte keyring key. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey([u8; KEY_BYTES]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Why a text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not standard base64 (with padding).
    #[error("not base64: {0}")]
    Base64(String),
    /// Base64 of the wrong number of bytes.
    #[error("a key is {KEY_BYTES} bytes, this one {0} (make one with `nexus keygen`)")]
    Length(usize),
}

impl SecretKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        SecretKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }

    /// The key as standard base64 (44 characters), as operators write it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses standard base64 of exactly [`KEY_BYTES`] bytes (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        let len = bytes.len();
        <[u8; KEY_BYTES]>::try_from(bytes)
            .map(SecretKey)
            .map_err(|_| KeyError::Length(len))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecretKey::parse(s)
    }
}

/// Why a keyring operation was refused. Each leaves the keyring unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// Installing one more key would exceed [`KEYS_MAX`].
    #[error("the keyring is full ({KEYS_MAX} keys); remove a key first")]
    Full,
    /// `use` or a file named a key that is not installed.
    #[error("key is not installed; install it first")]
    NotInstalled,
    /// `remove` named the primary key.
    #[error("cannot remove the primary key; use another key first")]
    RemovePrimary,
    /// The node runs without encryption, so it has no keyring to change.
    #[error("gossip encryption is not enabled on this node")]
    NotEnabled,
}

/// Why a keyring file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringFileError {
    /// Not a JSON array of strings.
    #[error("not a JSON array of base64 keys: {0}")]
    Json(String),
    /// An empty array.
    #[error("the keyring holds no key")]
    Empty,
    /// More than [`KEYS_MAX`] keys.
    #[error("more than {KEYS_MAX} keys")]
    TooMany,
    /// One entry is not a key.
    #[error("key {index}: {error}")]
    Key {
        /// Position in the array (0 is the primary).
        index: usize,
        /// What is wrong with it.
        error: KeyError,
    },
    /// A key appears twice.
    #[error("key {0} appears twice")]
    Duplicate(usize),
}

/// An operation on a keyring, as the admin API and the keyring messages carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringOp {
    /// Change nothing; report the keys.
    List,
    /// Add a key (it opens datagrams at once; it seals only once it is used).
    Install(SecretKey),
    /// Make an installed key the primary (the one that seals).
    Use(SecretKey),
    /// Remove a key that is not the primary.
    Remove(SecretKey),
}

impl KeyringOp {
    /// `list`, `install`, `use` or `remove`.
    pub fn name(&self) -> &'static str {
        match self {
            KeyringOp::List => "list",
            KeyringOp::Install(_) => "install",
            KeyringOp::Use(_) => "use",
            KeyringOp::Remove(_) => "remove",
        }
    }

    /// The key the operation names, if any.
    pub fn key(&self) -> Option<&SecretKey> {
        match self {
            KeyringOp::List => None,
            KeyringOp::Install(k) | KeyringOp::Use(k) | KeyringOp::Remove(k) => Some(k),
        }
    }
}

/// The keys a node holds: the primary first, then the others in installation order.
///
/// Invariants: at least one key, at most [`KEYS_MAX`], no key twice.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<SecretKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// A keyring holding one key, the primary.
    pub fn new(primary: SecretKey) -> Self {
        Keyring {
            keys: vec![primary],
        }
    }

    /// The key that seals.
    pub fn primary(&self) -> &SecretKey {
        // Invariant: never empty (every constructor and operation keeps one key).
        &self.keys[0]
    }

    /// Every key, the primary first.
    pub fn keys(&self) -> &[SecretKey] {
        &self.keys
    }

    /// Whether `key` is installed.
    pub fn contains(&self, key: &SecretKey) -> bool {
        self.keys.contains(key)
    }

    /// Applies `op`; `Ok(true)` if the keyring changed. `install` of an installed key, `use` of
    /// the primary and `remove` of a key that is not installed change nothing and succeed, so
    /// an operation can be repeated.
    pub fn apply(&mut self, op: &KeyringOp) -> Result<bool, KeyringError> {
        let changed = match op {
            KeyringOp::List => false,
            KeyringOp::Install(key) => {
                if self.contains(key) {
                    false
                } else if self.keys.len() >= KEYS_MAX {
                    return Err(KeyringError::Full);
                } else {
                    self.keys.push(key.clone());
                    true
                }
            }
            KeyringOp::Use(key) => match self.keys.iter().position(|k| k == key) {
                None => return Err(KeyringError::NotInstalled),
                Some(0) => false,
                Some(i) => {
                    let key = self.keys.remove(i);
                    self.keys.insert(0, key);
                    true
                }
            },
            KeyringOp::Remove(key) => match self.keys.iter().position(|k| k == key) {
                Some(0) => return Err(KeyringError::RemovePrimary),
                None => false,
                Some(i) => {
                    self.keys.remove(i);
                    true
                }
            },
        };
        self.check_invariants();
        Ok(changed)
    }

    /// Panics if an invariant is broken.
    pub fn check_invariants(&self) {
        assert!(!self.keys.is_empty(), "a keyring holds at least one key");
        assert!(
            self.keys.len() <= KEYS_MAX,
            "a keyring holds at most KEYS_MAX"
        );
        for (i, k) in self.keys.iter().enumerate() {
            assert!(!self.keys[..i].contains(k), "key {i} appears twice");
        }
    }

    /// The keyring file's text: a JSON array of base64 keys, the primary first.
    pub fn to_json(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(SecretKey::to_base64).collect();
        let mut text = String::from("[\n");
        for (i, k) in keys.iter().enumerate() {
            let comma = if i + 1 < keys.len() { "," } else { "" };
            text.push_str(&format!("  \"{k}\"{comma}\n"));
        }
        text.push_str("]\n");
        text
    }

    /// Parses a keyring file's text (see [`Keyring::to_json`]).
    pub fn from_json(text: &str) -> Result<Self, KeyringFileError> {
        let entries: Vec<String> =
            serde_json::from_str(text).map_err(|e| KeyringFileError::Json(e.to_string()))?;
        if entries.is_empty() {
            return Err(KeyringFileError::Empty);
        }
        if entries.len() > KEYS_MAX {
            return Err(KeyringFileError::TooMany);
        }
        let mut keys: Vec<SecretKey> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let key =
                SecretKey::parse(entry).map_err(|error| KeyringFileError::Key { index, error })?;
            if keys.contains(&key) {
                return Err(KeyringFileError::Duplicate(index));
            }
            keys.push(key);
        }
        Ok(Keyring { keys })
    }

    /// Seals `plaintext` with the primary key and `nonce`.
    pub fn seal(&self, plaintext: &[u8], nonce: [u8; NONCE_BYTES]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .primary()
            .cipher()
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &[SEALED_VERSION],
                (&mut out[1 + NONCE_BYTES..]).into(),
            )
            // XChaCha20-Poly1305 refuses only messages of 256 GiB and more.
            .expect("a datagram is far below the AEAD's length limit");
        out.extend_from_slice(tag.as_slice());
        out
    }

    /// Opens a sealed datagram with the first installed key (primary first) that authenticates
    /// it.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, DropReason> {
        let (version, rest) = datagram.split_first().ok_or(DropReason::TooShort)?;
        if !is_sealed_byte(*version) {
            return Err(DropReason::PlaintextRefused);
        }
        if *version != SEALED_VERSION {
            return Err(DropReason::UnknownVersion);
        }
        if datagram.len() < SEAL_OVERHEAD {
            return Err(DropReason::TooShort);
        }
        if datagram.len() > SEALED_BYTES_MAX {
            return Err(DropReason::TooLong);
        }
        let (nonce, rest) = rest.split_at(NONCE_BYTES);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| DropReason::TooShort)?;
        let tag: [u8; TAG_BYTES] = tag.try_into().map_err(|_| DropReason::TooShort)?;
        let (nonce, tag) = (XNonce::from(nonce), Tag::from(tag));
        let mut buf = ciphertext.to_vec();
        for key in &self.keys {
            let opened = key.cipher().decrypt_inout_detached(
                &nonce,
                &[SEALED_VERSION],
                buf.as_mut_slice().into(),
                &tag,
            );
            if opened.is_ok() {
                return Ok(buf);
            }
            // A failed check leaves the buffer as it was; copy again so no key ever sees
            // anything but the ciphertext.
            buf.copy_from_slice(ciphertext);
        }
        Err(DropReason::NoKey)
    }
}

/// Why an incoming datagram was dropped before any gossip core saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum DropReason {
    /// Empty, or sealed but shorter than [`SEAL_OVERHEAD`].
    #[error("too short")]
    TooShort,
    /// Sealed but longer than [`SEALED_BYTES_MAX`].
    #[error("too long")]
    TooLong,
    /// A sealed datagram of a version this node does not speak (`0xE0..=0xEF` but not
    /// [`SEALED_VERSION`]).
    #[error("unknown sealed version")]
    UnknownVersion,
    /// No installed key authenticates it (wrong key, removed key, tampered bytes).
    #[error("no installed key opens it")]
    NoKey,
    /// Plaintext, and this node verifies incoming datagrams.
    #[error("plaintext refused")]
    PlaintextRefused,
    /// Sealed, and this node has no keyring.
    #[error("sealed, but encryption is not enabled here")]
    NotEnabled,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DropReason; 6] = [
        DropReason::TooShort,
        DropReason::TooLong,
        DropReason::UnknownVersion,
        DropReason::NoKey,
        DropReason::PlaintextRefused,
        DropReason::NotEnabled,
    ];

    /// The metric label: `too_short`, `too_long`, `unknown_version`, `no_key`,
    /// `plaintext_refused`, `not_enabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::NoKey => "no_key",
            DropReason::PlaintextRefused => "plaintext_refused",
            DropReason::NotEnabled => "not_enabled",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// What [`DatagramGuard::incoming`] lets through.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A sealed datagram, opened: the plaintext datagram inside.
    Opened(Vec<u8>),
    /// A plaintext datagram, accepted (encryption off, or `verify_incoming` off).
    Plain(&'a [u8]),
}

impl Incoming<'_> {
    /// The plaintext datagram.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Incoming::Opened(b) => b,
            Incoming::Plain(b) => b,
        }
    }

    /// Whether it arrived sealed (authenticated by an installed key).
    pub fn sealed(&self) -> bool {
        matches!(self, Incoming::Opened(_))
    }
}

/// Counters of a [`DatagramGuard`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardStats {
    /// Datagrams sealed.
    pub sealed: u64,
    /// Sealed datagrams opened.
    pub opened: u64,
    /// Plaintext datagrams sent.
    pub plain_out: u64,
    /// Plaintext datagrams accepted.
    pub plain_in: u64,
    /// Datagrams dropped, indexed like [`DropReason::ALL`].
    pub dropped: [u64; 6],
}

impl GuardStats {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }
}

/// The encryption settings of a node: its keyring (none: plaintext gossip) and the migration
/// switches, as memberlist has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// The keyring; `None` runs gossip in plaintext (and refuses sealed datagrams).
    pub keyring: Option<Keyring>,
    /// Refuse plaintext datagrams (only with a keyring).
    pub verify_incoming: bool,
    /// Seal every outgoing datagram (only with a keyring).
    pub verify_outgoing: bool,
}

impl GuardConfig {
    /// Plaintext gossip.
    pub fn plaintext() -> Self {
        GuardConfig {
            keyring: None,
            verify_incoming: false,
            verify_outgoing: false,
        }
    }

    /// Encryption on: seal everything, refuse plaintext.
    pub fn encrypted(keyring: Keyring) -> Self {
        GuardConfig {
            keyring: Some(keyring),
            verify_incoming: true,
            verify_outgoing: true,
        }
    }
}

/// Sits between a driver's socket and the gossip cores.
///
/// Call order: [`DatagramGuard::outgoing`] on every datagram a core emits, before sending it;
/// [`DatagramGuard::incoming`] on every datagram received, and hand only what it returns to a
/// core. The rules (memberlist's): with a keyring and `verify_outgoing`, every outgoing
/// datagram is sealed with the primary key; a sealed incoming datagram is opened with any
/// installed key or dropped; a plaintext incoming datagram is dropped when `verify_incoming` is
/// on and there is a keyring; without a keyring everything is plaintext and sealed datagrams
/// are dropped.
#[derive(Debug)]
pub struct DatagramGuard {
    config: GuardConfig,
    rng: StdRng,
    stats: GuardStats,
}

impl DatagramGuard {
    /// A guard; `seed` drives the nonces (draw it from the OS in a node, fix it in a test).
    pub fn new(config: GuardConfig, seed: [u8; 32]) -> Self {
        let mut config = config;
        if config.keyring.is_none() {
            config.verify_incoming = false;
            config.verify_outgoing = false;
        }
        DatagramGuard {
            config,
            rng: StdRng::from_seed(seed),
            stats: GuardStats::default(),
        }
    }

    /// The keyring, if encryption is on.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.config.keyring.as_ref()
    }

    /// The settings in force.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// Replaces the keyring (after an operation was applied and persisted). Encryption cannot
    /// be turned on or off this way: a guard without a keyring keeps none.
    pub fn set_keyring(&mut self, keyring: Keyring) -> Result<(), KeyringError> {
        match &mut self.config.keyring {
            Some(k) => {
                *k = keyring;
                Ok(())
            }
            None => Err(KeyringError::NotEnabled),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// Whether outgoing datagrams are sealed.
    pub fn seals(&self) -> bool {
        self.config.verify_outgoing && self.config.keyring.is_some()
    }

    /// The datagram to send for a core's `plaintext` datagram: sealed with the primary key, or
    /// the plaintext itself.
    pub fn outgoing(&mut self, plaintext: &[u8]) -> Vec<u8> {
        match (&self.config.keyring, self.config.verify_outgoing) {
            (Some(keyring), true) => {
                let mut nonce = [0u8; NONCE_BYTES];
                self.rng.fill_bytes(&mut nonce);
                self.stats.sealed += 1;
                keyring.seal(plaintext, nonce)
            }
            _ => {
                self.stats.plain_out += 1;
                plaintext.to_vec()
            }
        }
    }

    /// Seals `plaintext` with the primary key whatever `verify_outgoing` says (keyring
    /// operations travel only sealed); `None` without a keyring.
    pub fn seal_always(&mut self, plaintext: &[u8]) -> Option<Vec<u8>> {
        let keyring = self.config.keyring.as_ref()?;
        let mut nonce = [0u8; NONCE_BYTES];
        self.rng.fill_bytes(&mut nonce);
        self.stats.sealed += 1;
        Some(keyring.seal(plaintext, nonce))
    }

    /// What a received datagram holds for the cores, or why it is dropped (counted).
    pub fn incoming<'a>(&mut self, datagram: &'a [u8]) -> Result<Incoming<'a>, DropReason> {
        let result = self.classify(datagram);
        match &result {
            Ok(Incoming::Opened(_)) => self.stats.opened += 1,
            Ok(Incoming::Plain(_)) => self.stats.plain_in += 1,
            Err(reason) => self.stats.dropped[reason.index()] += 1,
        }
        result
    }

    fn classify<'a>(&self, datagram: &'a [u8]) -> Result<Incoming<'a>, DropReason> {
        let first = *datagram.first().ok_or(DropReason::TooShort)?;
        if !is_sealed_byte(first) {
            // Anything else is for the plaintext decoders, which check WIRE_MAGIC themselves.
            return if self.config.verify_incoming {
                Err(DropReason::PlaintextRefused)
            } else {
                Ok(Incoming::Plain(datagram))
            };
        }
        let keyring = self.config.keyring.as_ref().ok_or(DropReason::NotEnabled)?;
        let opened = keyring.open(datagram)?;
        // A sealed datagram holds exactly one plaintext datagram; a sealed seal is not opened
        // twice (the cores would refuse it anyway, this keeps the count honest).
        if opened.first().is_some_and(|b| is_sealed_byte(*b)) {
            return Err(DropReason::UnknownVersion);
        }
        Ok(Incoming::Opened(opened))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::WIRE_MAGIC;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes([b; KEY_BYTES])
    }

    fn guard(config: GuardConfig) -> DatagramGuard {
        DatagramGuard::new(config, [7; 32])
    }

    const PLAIN: &[u8] = &[WIRE_MAGIC, 2, 1, 0, 9, 9, 9];

    #[test]
    fn seal_then_open_round_trips_and_hides_the_plaintext() {
        let mut a = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        let mut b = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        let sealed = a.outgoing(PLAIN);
        assert_eq!(sealed.len(), PLAIN.len() + SEAL_OVERHEAD);
        assert_eq!(sealed[0], SEALED_VERSION);
        assert!(!sealed.windows(3).any(|w| w == [9, 9, 9]));
        assert_eq!(b.incoming(&sealed), Ok(Incoming::Opened(PLAIN.to_vec())));
        assert_eq!((a.stats().sealed, b.stats().opened), (1, 1));
        // Fresh nonce each time.
        assert_ne!(a.outgoing(PLAIN), sealed);
    }

    #[test]
    fn same_seed_same_bytes() {
        let mut a = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        let mut b = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        assert_eq!(a.outgoing(PLAIN), b.outgoing(PLAIN));
        let mut c = DatagramGuard::new(GuardConfig::encrypted(Keyring::new(key(1))), [8; 32]);
        assert_ne!(a.outgoing(PLAIN), c.outgoing(PLAIN));
    }

    #[test]
    fn wrong_key_and_tampering_are_dropped_as_no_key() {
        let mut a = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        let mut b = guard(GuardConfig::encrypted(Keyring::new(key(2))));
        let sealed = a.outgoing(PLAIN);
        assert_eq!(b.incoming(&sealed), Err(DropReason::NoKey));
        let mut same = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(same.incoming(&bad), Err(DropReason::NoKey), "byte {i}");
        }
        assert_eq!(
            same.stats().dropped(DropReason::NoKey),
            sealed.len() as u64 - 1
        );
        assert_eq!(b.stats().dropped(DropReason::NoKey), 1);
    }

    #[test]
    fn primary_seals_and_every_installed_key_opens() {
        let mut ring = Keyring::new(key(1));
        assert_eq!(ring.apply(&KeyringOp::Install(key(2))), Ok(true));
        // Sealed under 1 (primary) and under 2 (after use): a ring holding both opens both.
        let old = guard(GuardConfig::encrypted(Keyring::new(key(1)))).outgoing(PLAIN);
        let new = guard(GuardConfig::encrypted(Keyring::new(key(2)))).outgoing(PLAIN);
        let mut g = guard(GuardConfig::encrypted(ring.clone()));
        assert!(g.incoming(&old).is_ok());
        assert!(g.incoming(&new).is_ok());
        // It still seals with 1 until 2 is used.
        let sealed = g.outgoing(PLAIN);
        assert!(Keyring::new(key(1)).open(&sealed).is_ok());
        assert_eq!(Keyring::new(key(2)).open(&sealed), Err(DropReason::NoKey));
        assert_eq!(ring.apply(&KeyringOp::Use(key(2))), Ok(true));
        assert_eq!(ring.keys(), &[key(2), key(1)]);
        g.set_keyring(ring.clone()).expect("enabled");
        let sealed = g.outgoing(PLAIN);
        assert!(Keyring::new(key(2)).open(&sealed).is_ok());
        // Removing 1 makes datagrams sealed under it unreadable.
        assert_eq!(ring.apply(&KeyringOp::Remove(key(1))), Ok(true));
        g.set_keyring(ring).expect("enabled");
        assert_eq!(g.incoming(&old), Err(DropReason::NoKey));
    }

    #[test]
    fn keyring_operations_and_refusals() {
        let mut ring = Keyring::new(key(1));
        assert_eq!(ring.apply(&KeyringOp::List), Ok(false));
        assert_eq!(ring.apply(&KeyringOp::Install(key(1))), Ok(false));
        assert_eq!(ring.apply(&KeyringOp::Use(key(1))), Ok(false));
        assert_eq!(ring.apply(&KeyringOp::Remove(key(9))), Ok(false));
        assert_eq!(
            ring.apply(&KeyringOp::Remove(key(1))),
            Err(KeyringError::RemovePrimary)
        );
        assert_eq!(
            ring.apply(&KeyringOp::Use(key(2))),
            Err(KeyringError::NotInstalled)
        );
        for b in 2..=KEYS_MAX as u8 {
            assert_eq!(ring.apply(&KeyringOp::Install(key(b))), Ok(true));
        }
        assert_eq!(
            ring.apply(&KeyringOp::Install(key(99))),
            Err(KeyringError::Full)
        );
        assert_eq!(ring.keys().len(), KEYS_MAX);
        assert_eq!(ring.primary(), &key(1));
    }

    #[test]
    fn migration_rules() {
        let sealed = guard(GuardConfig::encrypted(Keyring::new(key(1)))).outgoing(PLAIN);
        // Plaintext node: accepts plaintext, refuses sealed, sends plaintext.
        let mut plain = guard(GuardConfig::plaintext());
        assert_eq!(plain.incoming(PLAIN), Ok(Incoming::Plain(PLAIN)));
        assert_eq!(plain.incoming(&sealed), Err(DropReason::NotEnabled));
        assert_eq!(plain.outgoing(PLAIN), PLAIN);
        // verify_incoming off: both accepted.
        let mut lenient = guard(GuardConfig {
            keyring: Some(Keyring::new(key(1))),
            verify_incoming: false,
            verify_outgoing: false,
        });
        assert!(lenient.incoming(PLAIN).is_ok_and(|i| !i.sealed()));
        assert!(lenient.incoming(&sealed).is_ok_and(|i| i.sealed()));
        // verify_outgoing off: sends plaintext.
        assert_eq!(lenient.outgoing(PLAIN), PLAIN);
        assert!(!lenient.seals());
        // ... but keyring operations are still sealed.
        let op = lenient.seal_always(PLAIN).expect("keyring");
        assert_eq!(op[0], SEALED_VERSION);
        assert_eq!(plain.seal_always(PLAIN), None);
        // verify_incoming on: plaintext refused.
        let mut strict = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        assert_eq!(strict.incoming(PLAIN), Err(DropReason::PlaintextRefused));
        assert_eq!(strict.stats().dropped(DropReason::PlaintextRefused), 1);
        // Verify switches mean nothing without a keyring.
        let g = guard(GuardConfig {
            keyring: None,
            verify_incoming: true,
            verify_outgoing: true,
        });
        assert!(!g.seals());
        assert!(!g.config().verify_incoming);
    }

    #[test]
    fn every_drop_reason() {
        let mut g = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        assert_eq!(g.incoming(&[]), Err(DropReason::TooShort));
        assert_eq!(
            g.incoming(&[SEALED_VERSION; SEAL_OVERHEAD - 1]),
            Err(DropReason::TooShort)
        );
        assert_eq!(g.incoming(&[0xE2; 64]), Err(DropReason::UnknownVersion));
        assert_eq!(g.incoming(&[0xE0]), Err(DropReason::UnknownVersion));
        assert_eq!(
            g.incoming(&vec![SEALED_VERSION; SEALED_BYTES_MAX + 1]),
            Err(DropReason::TooLong)
        );
        assert_eq!(
            g.incoming(&[SEALED_VERSION; SEAL_OVERHEAD]),
            Err(DropReason::NoKey)
        );
        assert_eq!(g.incoming(PLAIN), Err(DropReason::PlaintextRefused));
        let mut plain = guard(GuardConfig::plaintext());
        assert_eq!(
            plain.incoming(&[SEALED_VERSION; 64]),
            Err(DropReason::NotEnabled)
        );
        assert_eq!(g.stats().dropped, [2, 1, 2, 1, 1, 0]);
        // A sealed seal is not a datagram for the cores.
        let inner = g.outgoing(PLAIN);
        let outer = g.outgoing(&inner);
        assert_eq!(g.incoming(&outer), Err(DropReason::UnknownVersion));
        // Sealing an empty datagram is fine and opens to empty.
        let empty = g.outgoing(&[]);
        assert_eq!(g.incoming(&empty), Ok(Incoming::Opened(vec![])));
        for r in DropReason::ALL {
            assert!(!r.as_str().is_empty());
        }
    }

    #[test]
    fn largest_datagram_fits_and_one_more_byte_does_not() {
        let mut g = guard(GuardConfig::encrypted(Keyring::new(key(1))));
        let big = vec![WIRE_MAGIC; PACKET_BYTES_MAX];
        let sealed = g.outgoing(&big);
        assert_eq!(sealed.len(), SEALED_BYTES_MAX);
        assert!(g.incoming(&sealed).is_ok());
    }

    #[test]
    fn keys_parse_from_base64_with_clear_errors() {
        let k = key(3);
        let text = k.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(SecretKey::parse(&format!(" {text}\n")), Ok(k.clone()));
        assert_eq!(text.parse::<SecretKey>(), Ok(k.clone()));
        assert!(matches!(
            SecretKey::parse("not base64!"),
            Err(KeyError::Base64(_))
        ));
        assert_eq!(SecretKey::parse("AAAA"), Err(KeyError::Length(3)));
        assert_eq!(SecretKey::parse(""), Err(KeyError::Length(0)));
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
        assert!(!format!("{:?}", Keyring::new(k)).contains(&text));
    }

    #[test]
    fn keyring_file_round_trips_and_bad_files_are_refused() {
        let mut ring = Keyring::new(key(1));
        ring.apply(&KeyringOp::Install(key(2))).expect("install");
        let text = ring.to_json();
        assert_eq!(Keyring::from_json(&text), Ok(ring));
        assert!(matches!(
            Keyring::from_json("{"),
            Err(KeyringFileError::Json(_))
        ));
        assert!(matches!(
            Keyring::from_json("{\"a\":1}"),
            Err(KeyringFileError::Json(_))
        ));
        assert_eq!(Keyring::from_json("[]"), Err(KeyringFileError::Empty));
        assert!(matches!(
            Keyring::from_json("[\"AAAA\"]"),
            Err(KeyringFileError::Key { index: 0, .. })
        ));
        let k = key(1).to_base64();
        assert_eq!(
            Keyring::from_json(&format!("[\"{k}\", \"{k}\"]")),
            Err(KeyringFileError::Duplicate(1))
        );
        let many: Vec<String> = (0..=KEYS_MAX as u8)
            .map(|b| format!("\"{}\"", key(b).to_base64()))
            .collect();
        assert_eq!(
            Keyring::from_json(&format!("[{}]", many.join(","))),
            Err(KeyringFileError::TooMany)
        );
    }
}
