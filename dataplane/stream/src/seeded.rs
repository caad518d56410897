//! Seeded randomness for deterministic runs: every random draw of a NexStream endpoint from one
//! seed.
//!
//! quinn-proto seeds its endpoint RNG from [`quinn_proto::EndpointConfig::rng_seed`], but three
//! other sources read the operating system: the stateless-reset key, the connection-id
//! generator and rustls (its `SecureRandom` and, separately, ring's X25519 ephemeral keys). This
//! module supplies seeded replacements for all of them:
//!
//! - [`provider`]: a rustls `CryptoProvider` (ring's suites and signatures) whose
//!   `secure_random` and X25519 key exchange draw from a ChaCha20 stream seeded from the seed;
//! - [`CidGenerator`]: 8-byte connection ids from a seeded ChaCha20 stream;
//! - [`reset_key`] and [`token_key`]: HMAC / HKDF keys derived from the seed.
//!
//! rustls' `CryptoProvider` holds `&'static` references, so [`provider`] allocates one small
//! RNG state per call and never frees it (a few hundred bytes per seeded endpoint). Seeded
//! endpoints are for simulations and tests; a node draws from the operating system
//! ([`crate::identity::system_provider`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rustls::NamedGroup;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};

/// Derives a 32-byte sub-seed for `label` from `seed` (SHA-256 over a domain-separated input).
pub fn derive(seed: u64, label: &str) -> [u8; 32] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(b"nexstream-seed-v1\0");
    h.update(label.as_bytes());
    h.update(&[0]);
    h.update(&seed.to_be_bytes());
    let digest = h.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A ChaCha20 stream behind a lock: rustls calls `fill` through `&self` from any thread.
struct SharedRng(Mutex<ChaCha20Rng>);

impl SharedRng {
    fn fill(&self, buf: &mut [u8]) {
        // A poisoned lock means a panic while drawing bytes; the stream itself is still valid.
        let mut rng = match self.0.lock() {
            Ok(rng) => rng,
            Err(poisoned) => poisoned.into_inner(),
        };
        rng.fill_bytes(buf);
    }
}

struct SeededRandom(SharedRng);

impl fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededRandom")
    }
}

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.0.fill(buf);
        Ok(())
    }
}

/// X25519 whose ephemeral secrets come from a seeded stream.
struct SeededX25519(SharedRng);

impl fmt::Debug for SeededX25519 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededX25519")
    }
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        self.0.fill(&mut secret);
        let secret = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(ActiveX25519 { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct ActiveX25519 {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl ActiveKeyExchange for ActiveX25519 {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // RFC 7748 §6.1: an all-zero result means a small-order peer key.
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// A rustls provider like [`crate::identity::system_provider`] whose every random draw comes
/// from `seed` (see the module docs for the allocation this makes).
pub fn provider(seed: u64) -> CryptoProvider {
    let random: &'static SeededRandom = Box::leak(Box::new(SeededRandom(SharedRng(Mutex::new(
        ChaCha20Rng::from_seed(derive(seed, "tls-random")),
    )))));
    let kx: &'static SeededX25519 = Box::leak(Box::new(SeededX25519(SharedRng(Mutex::new(
        ChaCha20Rng::from_seed(derive(seed, "tls-x25519")),
    )))));
    let mut provider = crate::identity::system_provider();
    provider.secure_random = random;
    provider.kx_groups = vec![kx];
    provider
}

/// Connection ids from a seeded stream: 8 bytes, no lifetime.
pub struct CidGenerator {
    rng: ChaCha20Rng,
}

impl fmt::Debug for CidGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CidGenerator")
    }
}

/// Length of the connection ids NexStream issues.
pub const CID_LEN: usize = 8;

impl CidGenerator {
    /// A generator whose ids derive from `seed`.
    pub fn new(seed: [u8; 32]) -> CidGenerator {
        CidGenerator {
            rng: ChaCha20Rng::from_seed(seed),
        }
    }
}

impl ConnectionIdGenerator for CidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.rng.fill_bytes(&mut bytes);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The stateless-reset HMAC key derived from `secret`.
pub fn reset_key(secret: [u8; 32]) -> Arc<ring::hmac::Key> {
    Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret))
}

/// The address-validation token key derived from `secret`.
pub fn token_key(secret: [u8; 32]) -> Arc<ring::hkdf::Prk> {
    Arc::new(ring::hkdf::Prk::new_less_safe(
        ring::hkdf::HKDF_SHA256,
        &secret,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_separates_labels_and_seeds() {
        assert_eq!(derive(1, "a"), derive(1, "a"));
        assert_ne!(derive(1, "a"), derive(2, "a"));
        assert_ne!(derive(1, "a"), derive(1, "b"));
    }

    #[test]
    fn seeded_x25519_agrees_and_is_reproducible() {
        let a = SeededX25519(SharedRng(Mutex::new(ChaCha20Rng::from_seed([1; 32]))));
        let b = SeededX25519(SharedRng(Mutex::new(ChaCha20Rng::from_seed([2; 32]))));
        let (ka, kb) = (a.start().expect("start a"), b.start().expect("start b"));
        let (pa, pb) = (ka.pub_key().to_vec(), kb.pub_key().to_vec());
        let sa = ka.complete(&pb).expect("complete a");
        let sb = kb.complete(&pa).expect("complete b");
        assert_eq!(sa.secret_bytes(), sb.secret_bytes());
        let again = SeededX25519(SharedRng(Mutex::new(ChaCha20Rng::from_seed([1; 32]))));
        assert_eq!(again.start().expect("start").pub_key(), &pa[..]);
    }

    #[test]
    fn x25519_refuses_small_order_and_short_keys() {
        let a = SeededX25519(SharedRng(Mutex::new(ChaCha20Rng::from_seed([1; 32]))));
        assert!(a.start().expect("start").complete(&[0u8; 32]).is_err());
        assert!(a.start().expect("start").complete(&[9u8; 31]).is_err());
    }
}
