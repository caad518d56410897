//! The CA fixture of a stream run: a CA key, every node's Ed25519 key and node MIC, all derived
//! from the run seed, and the revocations the timeline's `revoke` entries sign.

use ed25519_dalek::SigningKey;
use nexus_trust::mic::{CaKeys, MicBody, SubjectKind};
use nexus_trust::revocation::{RevocationReason, SignedRevocation};
use nexus_trust::verify::{Credentials, TrustContext, TrustUpdate};

use crate::engine::derive_seed;

/// Unix milliseconds at virtual time zero (2024-01-01T00:00:00Z, as in CA runs).
pub const ANCHOR_UNIX_MS: u64 = 1_704_067_200_000;
/// MICs are valid from a day before virtual time zero to a day after.
pub const MIC_VALIDITY_MS: u64 = 86_400_000;
/// The CA key id the fixture signs with.
pub const CA_KEY_ID: u32 = 1;

/// 32 bytes from the seed, for keys.
fn secret(seed: u64, a: u64, b: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (k, chunk) in out.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&derive_seed(seed, a, b * 4 + k as u64).to_le_bytes());
    }
    out
}

/// The CA and the nodes' identities.
#[derive(Debug)]
pub struct Fixture {
    ca: SigningKey,
    /// Node keys, by node index.
    pub keys: Vec<SigningKey>,
    /// Node credentials; node `i`'s MIC has serial `i + 1`.
    pub credentials: Vec<Credentials>,
    revocations: Vec<SignedRevocation>,
}

impl Fixture {
    /// `n` nodes, everything derived from `seed`.
    pub fn new(seed: u64, n: usize) -> Fixture {
        let ca = SigningKey::from_bytes(&secret(seed, 31, 0));
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&secret(seed, 32, i as u64)))
            .collect();
        let credentials = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Credentials {
                mic: MicBody {
                    serial: i as u64 + 1,
                    subject_key: k.verifying_key().to_bytes(),
                    kind: SubjectKind::Node,
                    model: None,
                    publisher: "nexus-sim".into(),
                    provenance: vec![],
                    claims: vec![],
                    zk_commitment: None,
                    not_before_ms: ANCHOR_UNIX_MS - MIC_VALIDITY_MS,
                    not_after_ms: ANCHOR_UNIX_MS + MIC_VALIDITY_MS,
                    ca_key_id: CA_KEY_ID,
                }
                .sign(&ca),
                attestations: vec![],
            })
            .collect();
        Fixture {
            ca,
            keys,
            credentials,
            revocations: Vec::new(),
        }
    }

    /// Node `i`'s id (its public key).
    pub fn node_id(&self, i: usize) -> [u8; 32] {
        self.keys[i].verifying_key().to_bytes()
    }

    fn ca_keys(&self) -> CaKeys {
        let mut keys = CaKeys::new();
        keys.insert(CA_KEY_ID, self.ca.verifying_key());
        keys
    }

    /// The trust every node starts with: the CA key, no revocations.
    pub fn initial_trust(&self) -> TrustContext {
        let mut ctx = TrustContext::new();
        ctx.apply_update(
            &TrustUpdate {
                ca_keys: self.ca_keys(),
                circuits: vec![],
                revocations: vec![],
            },
            ANCHOR_UNIX_MS,
        );
        ctx
    }

    /// Revokes node `i`'s MIC at Unix time `unix_ms`.
    pub fn revoke(&mut self, i: usize, unix_ms: u64) {
        let seq = self.revocations.len() as u64 + 1;
        self.revocations.push(SignedRevocation::sign(
            &self.ca,
            CA_KEY_ID,
            seq,
            i as u64 + 1,
            ANCHOR_UNIX_MS + MIC_VALIDITY_MS,
            unix_ms,
            RevocationReason::KeyCompromise,
        ));
    }

    /// The update carrying the first `count` revocations.
    pub fn update(&self, count: usize) -> TrustUpdate {
        TrustUpdate {
            ca_keys: self.ca_keys(),
            circuits: vec![],
            revocations: self.revocations[..count.min(self.revocations.len())].to_vec(),
        }
    }

    /// Revocations signed so far.
    pub fn revocations(&self) -> usize {
        self.revocations.len()
    }
}
