//! The hard constraints of an [`Intent`], one value each.
//!
//! A [`Constraint`] knows everything resolve needs of it: its row check (integer compares,
//! 64-bit hashes for strings), which it adds to the fused [`RowCheck`] the search runs on every
//! row it visits (`Constraint::narrow`); [`Constraint::may_pass`], its
//! bound on an index [`Summary`] (whether any row under a tree node can pass, so the search
//! skips the subtree); [`Constraint::check`], the exact check on the descriptor and the verified
//! credentials with the typed reason a record failed it ([`Unmet`]); and [`Constraint::met`],
//! the typed reason a candidate met it ([`Met`]). Adding a constraint is one variant here, its
//! arms in these methods, and its line in [`Constraints::of`] (plus a [`RowCheck`] field if its
//! row check reads a row field no other constraint reads).
//!
//! Reasons are typed; their text (`Display`) is what the admin API's explain output and
//! `nexus ctl resolve --explain` print.

use std::fmt;

use nexus_trust_core::verify::{TrustReject, Verified};

use crate::index::{Row, Summary, hash_bit, modality_bit, str_hash};
use crate::intent::{Intent, PUBLISHERS_MAX};
use crate::sad::Sad;

/// Most constraints one intent compiles to (one per constraint field of [`Intent`]).
pub(crate) const CONSTRAINTS_MAX: usize = 10;

/// One hard constraint of an intent, compiled for the index (hashes of its strings).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Constraint<'a> {
    /// `context_window >= min`.
    MinContext(u32),
    /// A known p50 (not 0) `<= max`.
    MaxLatencyP50(u32),
    /// A known p99 (not 0) `<= max`.
    MaxLatencyP99(u32),
    /// `price_micros_per_1k <= max`.
    MaxPrice(u64),
    /// Every listed modality offered; `mask` ORs their [`modality_bit`]s.
    Modalities { names: &'a [String], mask: u64 },
    /// The SAD's region is `name` ([`str_hash`] `hash`).
    Region { name: &'a str, hash: u64 },
    /// The SAD's model family is `name` ([`str_hash`] `hash`).
    ModelFamily { name: &'a str, hash: u64 },
    /// A verified MIC.
    RequireMic,
    /// A verified MIC whose publisher is listed; `hashes[..len]` are their [`str_hash`]es,
    /// `mask` ORs their [`hash_bit`]s.
    Publishers {
        names: &'a [String],
        hashes: [u64; PUBLISHERS_MAX],
        len: usize,
        mask: u64,
    },
    /// A verified attestation proving at least `min_score`, with safety if `require_safety`.
    Attested {
        min_score: u16,
        require_safety: bool,
    },
}

impl Constraint<'_> {
    /// Adds the constraint's row check to `check` (its fields, compared with hashes for
    /// strings: a string constraint is confirmed with [`Constraint::check`] before a row is
    /// answered).
    fn narrow(&self, check: &mut RowCheck) {
        match *self {
            Constraint::MinContext(min) => check.min_context = Some(min),
            Constraint::MaxLatencyP50(max) => check.max_p50 = Some(max),
            Constraint::MaxLatencyP99(max) => check.max_p99 = Some(max),
            Constraint::MaxPrice(max) => check.max_price = Some(max),
            Constraint::Modalities { mask, .. } => check.modalities = mask,
            Constraint::Region { hash, .. } => check.region = Some(hash),
            Constraint::ModelFamily { hash, .. } => check.family = Some(hash),
            Constraint::RequireMic => check.mic = true,
            Constraint::Publishers { hashes, len, .. } => check.publishers = Some((hashes, len)),
            Constraint::Attested {
                min_score,
                require_safety,
            } => check.attested = Some((u32::from(min_score) + 1, require_safety)),
        }
    }

    /// The bound the index prunes with: `false` if no row under a node with summary `s` can
    /// pass its row check.
    #[inline]
    pub(crate) fn may_pass(&self, s: &Summary) -> bool {
        match *self {
            Constraint::MinContext(min) => s.context_max >= min,
            Constraint::MaxLatencyP50(max) => s.p50_min <= max,
            Constraint::MaxLatencyP99(max) => s.p99_min <= max,
            Constraint::MaxPrice(max) => s.price_min <= max,
            Constraint::Modalities { mask, .. } => s.modalities & mask == mask,
            Constraint::Region { hash, .. } => s.regions & hash_bit(hash) != 0,
            Constraint::ModelFamily { hash, .. } => s.families & hash_bit(hash) != 0,
            Constraint::RequireMic => s.mic_any,
            Constraint::Publishers { mask, .. } => s.publishers & mask != 0,
            Constraint::Attested {
                min_score,
                require_safety,
            } => {
                let proven = if require_safety {
                    s.attest_safe_max
                } else {
                    s.attest_any_max
                };
                proven > u32::from(min_score)
            }
        }
    }

    /// Whether [`Constraint::passes`] compares hashes, so a passing row must be confirmed with
    /// [`Constraint::check`].
    pub(crate) fn hashed(&self) -> bool {
        matches!(
            self,
            Constraint::Modalities { .. }
                | Constraint::Region { .. }
                | Constraint::ModelFamily { .. }
                | Constraint::Publishers { .. }
        )
    }

    /// Whether the constraint is on the credentials (it needs a verified MIC).
    pub(crate) fn on_credentials(&self) -> bool {
        matches!(
            self,
            Constraint::RequireMic | Constraint::Publishers { .. } | Constraint::Attested { .. }
        )
    }

    /// The exact check on the descriptor and the record's verified credentials (if any).
    pub(crate) fn check(&self, sad: &Sad, verified: Option<&Verified>) -> Result<(), Unmet> {
        match *self {
            Constraint::MinContext(min) => {
                if sad.context_window < min {
                    return Err(Unmet::ContextWindow {
                        context_window: sad.context_window,
                        min,
                    });
                }
            }
            Constraint::MaxLatencyP50(max) => {
                if sad.latency_ms_p50 == 0 {
                    return Err(Unmet::LatencyP50Unknown { max });
                }
                if sad.latency_ms_p50 > max {
                    return Err(Unmet::LatencyP50 {
                        p50_ms: sad.latency_ms_p50,
                        max,
                    });
                }
            }
            Constraint::MaxLatencyP99(max) => {
                if sad.latency_ms_p99 == 0 {
                    return Err(Unmet::LatencyP99Unknown { max });
                }
                if sad.latency_ms_p99 > max {
                    return Err(Unmet::LatencyP99 {
                        p99_ms: sad.latency_ms_p99,
                        max,
                    });
                }
            }
            Constraint::MaxPrice(max) => {
                if sad.price_micros_per_1k > max {
                    return Err(Unmet::Price {
                        price: sad.price_micros_per_1k,
                        max,
                    });
                }
            }
            Constraint::Modalities { names, .. } => {
                if let Some(m) = names.iter().find(|m| !sad.modalities.contains(*m)) {
                    return Err(Unmet::Modality(m.clone()));
                }
            }
            Constraint::Region { name, .. } => {
                if sad.region != name {
                    return Err(Unmet::Region {
                        region: sad.region.clone(),
                        wanted: name.to_string(),
                    });
                }
            }
            Constraint::ModelFamily { name, .. } => {
                if sad.model_family != name {
                    return Err(Unmet::ModelFamily {
                        family: sad.model_family.clone(),
                        wanted: name.to_string(),
                    });
                }
            }
            Constraint::RequireMic => {
                verified_mic(sad, verified)?;
            }
            Constraint::Publishers { names, .. } => {
                let v = verified_mic(sad, verified)?;
                if !names.contains(&v.publisher) {
                    return Err(Unmet::Publisher {
                        publisher: v.publisher.clone(),
                        serial: v.serial,
                        allowed: names.to_vec(),
                    });
                }
            }
            Constraint::Attested {
                min_score,
                require_safety,
            } => {
                let v = verified_mic(sad, verified)?;
                if !v.proves(min_score, require_safety) {
                    return Err(Unmet::NotAttested {
                        wanted: Proof {
                            min_score,
                            require_safety,
                        },
                        serial: v.serial,
                        proven: v
                            .predicates
                            .iter()
                            .map(|p| Proof {
                                min_score: p.min_score,
                                require_safety: p.require_safety,
                            })
                            .collect(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Why a record that passed [`Constraint::check`] met the constraint (`None`: the
    /// [`Met::MicVerified`] line says it).
    pub(crate) fn met(&self, sad: &Sad, verified: Option<&Verified>) -> Option<Met> {
        match *self {
            Constraint::MinContext(min) => Some(Met::ContextWindow {
                context_window: sad.context_window,
                min,
            }),
            Constraint::MaxLatencyP50(max) => Some(Met::LatencyP50 {
                p50_ms: sad.latency_ms_p50,
                max,
            }),
            Constraint::MaxLatencyP99(max) => Some(Met::LatencyP99 {
                p99_ms: sad.latency_ms_p99,
                max,
            }),
            Constraint::MaxPrice(max) => Some(Met::Price {
                price: sad.price_micros_per_1k,
                max,
            }),
            Constraint::Modalities { names, .. } => Some(Met::Modalities(names.to_vec())),
            Constraint::Region { name, .. } => Some(Met::Region(name.to_string())),
            Constraint::ModelFamily { name, .. } => Some(Met::ModelFamily(name.to_string())),
            Constraint::RequireMic => None,
            Constraint::Publishers { names, .. } => verified.map(|v| Met::Publisher {
                publisher: v.publisher.clone(),
                allowed: names.to_vec(),
            }),
            Constraint::Attested {
                min_score,
                require_safety,
            } => Some(Met::Attested(Proof {
                min_score,
                require_safety,
            })),
        }
    }
}

/// The row checks of an intent's constraints fused into one test (the search's inner loop
/// runs it on most rows it visits): each constraint sets its fields in `Constraint::narrow`;
/// unset fields pass every row.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RowCheck {
    min_context: Option<u32>,
    max_p50: Option<u32>,
    max_p99: Option<u32>,
    max_price: Option<u64>,
    /// Modality bits every row must have (0: none).
    modalities: u64,
    region: Option<u64>,
    family: Option<u64>,
    mic: bool,
    /// Publisher hashes (the first `len`).
    publishers: Option<([u64; PUBLISHERS_MAX], usize)>,
    /// `(1 + min_score, require_safety)`.
    attested: Option<(u32, bool)>,
}

impl RowCheck {
    /// Whether the row passes every constraint's row check.
    #[inline]
    pub(crate) fn pass(&self, row: &Row) -> bool {
        self.min_context.is_none_or(|m| row.context_window >= m)
            && self.max_p50.is_none_or(|m| row.p50 != 0 && row.p50 <= m)
            && self.max_p99.is_none_or(|m| row.p99 != 0 && row.p99 <= m)
            && self.max_price.is_none_or(|m| row.price <= m)
            && (!self.mic || row.serial != 0)
            && self.region.is_none_or(|h| row.region == h)
            && self.family.is_none_or(|h| row.family == h)
            && row.modalities & self.modalities == self.modalities
            && self.publishers.as_ref().is_none_or(|(hashes, len)| {
                row.serial != 0 && hashes[..*len].contains(&row.publisher)
            })
            && self.attested.is_none_or(|(min, safe)| {
                (if safe {
                    row.attest_safe
                } else {
                    row.attest_any
                }) >= min
            })
    }
}

/// The verified MIC a credentials constraint needs.
fn verified_mic<'v>(sad: &Sad, verified: Option<&'v Verified>) -> Result<&'v Verified, Unmet> {
    verified.ok_or(Unmet::NoVerifiedMic {
        named_serial: sad.trust.mic_serial,
    })
}

/// An intent's constraints, in the order they are checked and explained (the order of the
/// fields of [`Intent`], credentials last). No allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Constraints<'a> {
    list: [Constraint<'a>; CONSTRAINTS_MAX],
    len: usize,
}

impl<'a> Constraints<'a> {
    /// Compiles the constraints of `intent`.
    pub(crate) fn of(intent: &'a Intent) -> Self {
        let mut c = Constraints {
            list: [Constraint::RequireMic; CONSTRAINTS_MAX],
            len: 0,
        };
        if let Some(min) = intent.min_context {
            c.push(Constraint::MinContext(min));
        }
        if let Some(max) = intent.max_latency_ms {
            c.push(Constraint::MaxLatencyP50(max));
        }
        if let Some(max) = intent.max_latency_p99_ms {
            c.push(Constraint::MaxLatencyP99(max));
        }
        if let Some(max) = intent.max_price_micros_per_1k {
            c.push(Constraint::MaxPrice(max));
        }
        if !intent.modalities.is_empty() {
            c.push(Constraint::Modalities {
                names: &intent.modalities,
                mask: intent.modalities.iter().fold(0, |m, x| m | modality_bit(x)),
            });
        }
        if let Some(name) = &intent.region {
            c.push(Constraint::Region {
                name,
                hash: str_hash(name),
            });
        }
        if let Some(name) = &intent.model_family {
            c.push(Constraint::ModelFamily {
                name,
                hash: str_hash(name),
            });
        }
        if intent.require_mic {
            c.push(Constraint::RequireMic);
        }
        if !intent.publishers.is_empty() {
            let mut hashes = [0u64; PUBLISHERS_MAX];
            let mut len = 0;
            let mut mask = 0;
            for p in intent.publishers.iter().take(PUBLISHERS_MAX) {
                let h = str_hash(p);
                hashes[len] = h;
                len += 1;
                mask |= hash_bit(h);
            }
            c.push(Constraint::Publishers {
                names: &intent.publishers,
                hashes,
                len,
                mask,
            });
        }
        if let Some(a) = intent.attested {
            c.push(Constraint::Attested {
                min_score: a.min_score,
                require_safety: a.require_safety,
            });
        }
        c
    }

    fn push(&mut self, c: Constraint<'a>) {
        self.list[self.len] = c;
        self.len += 1;
    }

    /// The constraints in check order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Constraint<'a>> {
        self.list[..self.len].iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Their row checks, fused.
    pub(crate) fn row_check(&self) -> RowCheck {
        let mut check = RowCheck::default();
        for c in self.iter() {
            c.narrow(&mut check);
        }
        check
    }

    /// Every constraint may pass some row under `s`.
    #[inline]
    pub(crate) fn may_pass(&self, s: &Summary) -> bool {
        self.iter().all(|c| c.may_pass(s))
    }

    /// Some constraint compares hashes.
    pub(crate) fn hashed(&self) -> bool {
        self.iter().any(Constraint::hashed)
    }

    /// The first constraint the record fails, exactly.
    pub(crate) fn check(&self, sad: &Sad, verified: Option<&Verified>) -> Result<(), Unmet> {
        self.iter().try_for_each(|c| c.check(sad, verified))
    }

    /// Why a record that passed [`Constraints::check`] meets them, task first, the verified MIC
    /// (if any) before the credentials constraints.
    pub(crate) fn met(&self, task: &str, sad: &Sad, verified: Option<&Verified>) -> Vec<Met> {
        let mut why = vec![Met::Task(task.to_string())];
        why.extend(
            self.iter()
                .filter(|c| !c.on_credentials())
                .filter_map(|c| c.met(sad, verified)),
        );
        if let Some(v) = verified {
            why.push(Met::MicVerified {
                serial: v.serial,
                publisher: v.publisher.clone(),
                kind: v.kind.to_string(),
                not_after_ms: v.not_after_ms,
            });
        }
        why.extend(
            self.iter()
                .filter(|c| c.on_credentials())
                .filter_map(|c| c.met(sad, verified)),
        );
        why
    }
}

/// A predicate an attestation proves or an intent asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    /// Lowest proven score, per mille.
    pub min_score: u16,
    /// Whether a passed safety evaluation is part of it.
    pub require_safety: bool,
}

impl fmt::Display for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "score >= {}", self.min_score)?;
        if self.require_safety {
            f.write_str(" and safety passed")?;
        }
        Ok(())
    }
}

/// Why a record is not a candidate for an intent (the first reason found: lease, then
/// credentials, then the intent's constraints in order). Its `Display` text is the explain
/// output's `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmet {
    /// The lease (capped by the verified MIC's expiry) ended.
    LeaseEnded {
        /// Lease end, ms since the node's epoch.
        expires_at_ms: u64,
        /// Now, same clock.
        now_ms: u64,
    },
    /// The record's credentials are waiting for verification.
    CredentialsPending,
    /// The record's credentials failed verification.
    CredentialsRejected(TrustReject),
    /// The verified MIC is no longer good (expired, revoked, CA key no longer trusted).
    MicNotCurrent(TrustReject),
    /// `context_window < min_context`.
    ContextWindow {
        /// The SAD's.
        context_window: u32,
        /// The intent's.
        min: u32,
    },
    /// p50 unknown with a p50 bound.
    LatencyP50Unknown {
        /// The intent's `max_latency_ms`.
        max: u32,
    },
    /// p50 above the bound.
    LatencyP50 {
        /// The SAD's.
        p50_ms: u32,
        /// The intent's.
        max: u32,
    },
    /// p99 unknown with a p99 bound.
    LatencyP99Unknown {
        /// The intent's `max_latency_p99_ms`.
        max: u32,
    },
    /// p99 above the bound.
    LatencyP99 {
        /// The SAD's.
        p99_ms: u32,
        /// The intent's.
        max: u32,
    },
    /// Price above the bound.
    Price {
        /// The SAD's.
        price: u64,
        /// The intent's.
        max: u64,
    },
    /// A wanted modality the service does not offer.
    Modality(String),
    /// Another region.
    Region {
        /// The SAD's.
        region: String,
        /// The intent's.
        wanted: String,
    },
    /// Another model family.
    ModelFamily {
        /// The SAD's.
        family: String,
        /// The intent's.
        wanted: String,
    },
    /// A credentials constraint without a verified MIC.
    NoVerifiedMic {
        /// The serial the SAD names, if any.
        named_serial: Option<u64>,
    },
    /// The MIC's publisher is not listed.
    Publisher {
        /// The MIC's.
        publisher: String,
        /// The MIC's serial.
        serial: u64,
        /// The intent's list.
        allowed: Vec<String>,
    },
    /// No verified attestation proves the wanted predicate.
    NotAttested {
        /// The intent's.
        wanted: Proof,
        /// The MIC's serial.
        serial: u64,
        /// What the MIC's attestations prove.
        proven: Vec<Proof>,
    },
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::LeaseEnded {
                expires_at_ms,
                now_ms,
            } => write!(f, "lease ended at {expires_at_ms} ms (now {now_ms} ms)"),
            Unmet::CredentialsPending => f.write_str("credentials not verified yet"),
            Unmet::CredentialsRejected(r) => write!(f, "credentials rejected: {r}"),
            Unmet::MicNotCurrent(r) => write!(f, "{r}"),
            Unmet::ContextWindow {
                context_window,
                min,
            } => write!(f, "context_window {context_window} < min_context {min}"),
            Unmet::LatencyP50Unknown { max } => {
                write!(f, "latency_ms_p50 unknown, max_latency_ms {max}")
            }
            Unmet::LatencyP50 { p50_ms, max } => {
                write!(f, "latency_ms_p50 {p50_ms} > max_latency_ms {max}")
            }
            Unmet::LatencyP99Unknown { max } => {
                write!(f, "latency_ms_p99 unknown, max_latency_p99_ms {max}")
            }
            Unmet::LatencyP99 { p99_ms, max } => {
                write!(f, "latency_ms_p99 {p99_ms} > max_latency_p99_ms {max}")
            }
            Unmet::Price { price, max } => {
                write!(
                    f,
                    "price_micros_per_1k {price} > max_price_micros_per_1k {max}"
                )
            }
            Unmet::Modality(m) => write!(f, "modality {m:?} not offered"),
            Unmet::Region { region, wanted } => write!(f, "region {region:?} != {wanted:?}"),
            Unmet::ModelFamily { family, wanted } => {
                write!(f, "model_family {family:?} != {wanted:?}")
            }
            Unmet::NoVerifiedMic {
                named_serial: Some(serial),
            } => write!(
                f,
                "no verified MIC: the SAD names MIC {serial} but the advert carries no credentials"
            ),
            Unmet::NoVerifiedMic { named_serial: None } => {
                f.write_str("no verified MIC (the advert carries no credentials)")
            }
            Unmet::Publisher {
                publisher,
                serial,
                allowed,
            } => write!(
                f,
                "publisher {publisher:?} (MIC {serial}) not in {allowed:?}"
            ),
            Unmet::NotAttested {
                wanted,
                serial,
                proven,
            } => {
                if proven.is_empty() {
                    write!(f, "no attestation proves {wanted} (MIC {serial} has none)")
                } else {
                    write!(f, "no attestation proves {wanted} (MIC {serial} proves: ")?;
                    for (i, p) in proven.iter().enumerate() {
                        if i > 0 {
                            f.write_str("; ")?;
                        }
                        write!(f, "{p}")?;
                    }
                    f.write_str(")")
                }
            }
        }
    }
}

/// Why a candidate qualified: the task, each constraint it met, its verified MIC. Its `Display`
/// text is one line of the explain output's `why`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Met {
    /// It carries the task.
    Task(String),
    /// `context_window >= min_context`.
    ContextWindow {
        /// The SAD's.
        context_window: u32,
        /// The intent's.
        min: u32,
    },
    /// p50 within the bound.
    LatencyP50 {
        /// The SAD's.
        p50_ms: u32,
        /// The intent's.
        max: u32,
    },
    /// p99 within the bound.
    LatencyP99 {
        /// The SAD's.
        p99_ms: u32,
        /// The intent's.
        max: u32,
    },
    /// Price within the bound.
    Price {
        /// The SAD's.
        price: u64,
        /// The intent's.
        max: u64,
    },
    /// Every wanted modality offered.
    Modalities(Vec<String>),
    /// The wanted region.
    Region(String),
    /// The wanted model family.
    ModelFamily(String),
    /// A verified MIC.
    MicVerified {
        /// Its serial.
        serial: u64,
        /// Its publisher.
        publisher: String,
        /// Its subject kind, as displayed.
        kind: String,
        /// End of validity, Unix ms.
        not_after_ms: u64,
    },
    /// A listed publisher.
    Publisher {
        /// The MIC's.
        publisher: String,
        /// The intent's list.
        allowed: Vec<String>,
    },
    /// An attestation proves the wanted predicate.
    Attested(Proof),
}

impl fmt::Display for Met {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Met::Task(task) => write!(f, "task {task:?}"),
            Met::ContextWindow {
                context_window,
                min,
            } => write!(f, "context_window {context_window} >= {min}"),
            Met::LatencyP50 { p50_ms, max } => write!(f, "latency_p50 {p50_ms} ms <= {max}"),
            Met::LatencyP99 { p99_ms, max } => write!(f, "latency_p99 {p99_ms} ms <= {max}"),
            Met::Price { price, max } => write!(f, "price {price} <= {max}"),
            Met::Modalities(m) => write!(f, "modalities {m:?} offered"),
            Met::Region(r) => write!(f, "region {r:?}"),
            Met::ModelFamily(m) => write!(f, "model_family {m:?}"),
            Met::MicVerified {
                serial,
                publisher,
                kind,
                not_after_ms,
            } => write!(
                f,
                "MIC {serial} verified (publisher {publisher:?}, {kind}, valid until {not_after_ms} ms)"
            ),
            Met::Publisher { publisher, allowed } => {
                write!(f, "publisher {publisher:?} in {allowed:?}")
            }
            Met::Attested(p) => write!(f, "attested {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;
    use crate::intent::Attested;
    use crate::trust::TrustVerdict;
    use nexus_trust_core::mic::SubjectKind;
    use nexus_trust_core::zk::Predicate;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;

    const REGIONS: [&str; 3] = ["eu-west", "us-east", ""];
    const FAMILIES: [&str; 3] = ["llama-3", "qwen-2", ""];
    const MODALITIES: [&str; 3] = ["text", "image", "audio"];
    const PUBLISHERS: [&str; 3] = ["acme", "beta", "cortex"];

    fn record(rng: &mut StdRng) -> (Arc<Sad>, TrustVerdict) {
        let mut sad = Sad::new("svc", "llm.chat");
        sad.context_window = [4096, 32_768, 128_000][rng.random_range(0..3)];
        sad.latency_ms_p50 = [0, 50, 200, 800][rng.random_range(0..4)];
        sad.latency_ms_p99 = [0, 300, 2000][rng.random_range(0..3)];
        sad.price_micros_per_1k = [0, 500, 5000][rng.random_range(0..3)];
        sad.region = REGIONS[rng.random_range(0..3)].into();
        sad.model_family = FAMILIES[rng.random_range(0..3)].into();
        sad.modalities = MODALITIES
            .iter()
            .filter(|_| rng.random_bool(0.5))
            .map(|m| (*m).to_string())
            .collect();
        let verdict = if rng.random_bool(0.5) {
            sad.trust.mic_serial = Some(rng.random_range(1..100));
            TrustVerdict::Verified(Arc::new(Verified {
                serial: sad.trust.mic_serial.unwrap_or(1),
                kind: SubjectKind::Model,
                publisher: PUBLISHERS[rng.random_range(0..3)].into(),
                subject_key: [1; 32],
                ca_key_id: 1,
                not_before_ms: 0,
                not_after_ms: u64::MAX,
                predicates: (0..rng.random_range(0..3))
                    .map(|_| Predicate {
                        min_score: [500, 800, 950][rng.random_range(0..3)],
                        require_safety: rng.random_bool(0.5),
                    })
                    .collect(),
            }))
        } else {
            TrustVerdict::Unclaimed
        };
        (Arc::new(sad), verdict)
    }

    fn intent(rng: &mut StdRng) -> Intent {
        let mut i = Intent::new("llm.chat");
        let pick = |rng: &mut StdRng| rng.random_bool(0.4);
        if pick(rng) {
            i.min_context = Some([8192, 128_000][rng.random_range(0..2)]);
        }
        if pick(rng) {
            i.max_latency_ms = Some([50, 500][rng.random_range(0..2)]);
        }
        if pick(rng) {
            i.max_latency_p99_ms = Some([300, 1000][rng.random_range(0..2)]);
        }
        if pick(rng) {
            i.max_price_micros_per_1k = Some([0, 1000][rng.random_range(0..2)]);
        }
        if pick(rng) {
            i.modalities = vec![MODALITIES[rng.random_range(0..3)].into()];
        }
        if pick(rng) {
            i.region = Some(REGIONS[rng.random_range(0..2)].into());
        }
        if pick(rng) {
            i.model_family = Some(FAMILIES[rng.random_range(0..2)].into());
        }
        i.require_mic = pick(rng);
        if pick(rng) {
            i.publishers = vec![PUBLISHERS[rng.random_range(0..3)].into()];
        }
        if pick(rng) {
            i.attested = Some(Attested {
                min_score: [500, 900][rng.random_range(0..2)],
                require_safety: rng.random_bool(0.5),
            });
        }
        i
    }

    /// For every constraint of random intents over random records: the exact check implies the
    /// row check (equal unless the row check compares hashes), and a summary of rows of which
    /// one passes the row check may pass (the index never prunes a subtree holding a passing
    /// row).
    #[test]
    fn check_row_check_and_bound_agree() {
        let mut rng = StdRng::seed_from_u64(14);
        let mut exact_passes = 0;
        for _ in 0..300 {
            let records: Vec<(Arc<Sad>, TrustVerdict)> = (0..rng.random_range(1..6))
                .map(|_| record(&mut rng))
                .collect();
            let rows: Vec<Row> = records
                .iter()
                .map(|(sad, verdict)| Row::of(sad, None, Timestamp::from_millis(1000), verdict, 0))
                .collect();
            let summary = Summary::of_rows(&rows);
            let i = intent(&mut rng);
            for c in Constraints::of(&i).iter() {
                let mut check = RowCheck::default();
                c.narrow(&mut check);
                let mut any_row_passes = false;
                for ((sad, verdict), row) in records.iter().zip(&rows) {
                    let exact = c.check(sad, verdict.verified().map(AsRef::as_ref)).is_ok();
                    let row_passes = check.pass(row);
                    assert!(
                        !exact || row_passes,
                        "{c:?} on {sad:?}: exact without row check"
                    );
                    if !c.hashed() {
                        assert_eq!(exact, row_passes, "{c:?} on {sad:?}");
                    }
                    exact_passes += usize::from(exact);
                    any_row_passes |= row_passes;
                }
                assert!(
                    !any_row_passes || c.may_pass(&summary),
                    "{c:?}: bound prunes a passing row"
                );
            }
        }
        assert!(
            exact_passes > 100,
            "the generator exercises passing records"
        );
    }
}
