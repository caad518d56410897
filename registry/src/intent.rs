//! [`Intent`]: what a client asks for (hard constraints plus preferences), its canonical form and
//! its 128-bit routing key.

use std::fmt::Write as _;

use nexus_trust_core::mic::PUBLISHER_BYTES_MAX;
use nexus_trust_core::zk::SCORE_MAX;
use serde::{Deserialize, Serialize};

use crate::sad::{
    MODALITIES_MAX, MODEL_FAMILY_BYTES_MAX, REGION_BYTES_MAX, SadError, check_list, check_modality,
    check_task, check_token,
};

/// Default number of candidates.
pub const K_DEFAULT: u32 = 3;
/// Most candidates one resolve returns.
pub const K_MAX: u32 = 64;
/// Largest preference weight.
pub const WEIGHT_MAX: f64 = 1000.0;
/// Largest intent JSON document [`Intent::from_json`] reads.
pub const INTENT_JSON_BYTES_MAX: usize = 4096;
/// Version tag at the start of the canonical form; bump it when the form changes (which
/// changes every routing key). `nxi2` added the publisher and attestation constraints.
pub const CANONICAL_VERSION: &str = "nxi2";
/// Publishers one intent may list.
pub const PUBLISHERS_MAX: usize = 8;

/// "A verified attestation proves a predicate at least this strong": its proven minimum score
/// is at least `min_score` (per mille, `0..=1000`), and it requires a passed safety evaluation
/// whenever `require_safety` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attested {
    /// Lowest acceptable proven score, per mille.
    #[schema(maximum = 1000)]
    pub min_score: u16,
    /// Whether the proven predicate must include "safety evaluation passed".
    #[serde(default)]
    pub require_safety: bool,
}

/// Weights of the score terms; each finite, `0..=WEIGHT_MAX`. Defaults: latency 1, load 1,
/// price 0.5, proximity 0.5.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Preferences {
    /// Weight of the p50-latency term.
    #[schema(minimum = 0, maximum = 1000)]
    pub latency: f64,
    /// Weight of the load term (utilisation and queue depth).
    #[schema(minimum = 0, maximum = 1000)]
    pub load: f64,
    /// Weight of the price term.
    #[schema(minimum = 0, maximum = 1000)]
    pub price: f64,
    /// Weight of the proximity term (Vivaldi RTT estimate from the resolving node).
    #[schema(minimum = 0, maximum = 1000)]
    pub proximity: f64,
}

impl Default for Preferences {
    fn default() -> Self {
        Preferences {
            latency: 1.0,
            load: 1.0,
            price: 0.5,
            proximity: 0.5,
        }
    }
}

/// The OpenAPI schema of `publishers`: what [`Intent::validate`] accepts, in printable ASCII
/// (a publisher may hold other characters; the schema does not promise them).
fn publishers_schema() -> utoipa::openapi::schema::Array {
    let mut schema = crate::sad::string_list_schema(
        "Publishers, one of which must have issued the verified MIC (empty = any publisher, no \
         MIC needed): at most 8, each 1..=64 bytes without control characters, '|' or ','.",
        0,
        PUBLISHERS_MAX,
        "^[ -+\\--{}~]+$",
        PUBLISHER_BYTES_MAX,
    );
    // Repeating a publisher is allowed.
    schema.unique_items = false;
    schema
}

fn k_default() -> u32 {
    K_DEFAULT
}

/// A client's intent: hard constraints (every candidate satisfies all of them) and preferences
/// (how candidates are ranked).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Required task tag (exact match against a SAD's `tasks`).
    #[schema(
        pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$",
        min_length = 1,
        max_length = 32
    )]
    pub task: String,
    /// Minimum context window, tokens.
    #[serde(default)]
    pub min_context: Option<u32>,
    /// Largest acceptable `latency_ms_p50` (a SAD with unknown p50, 0, does not qualify).
    #[serde(default)]
    pub max_latency_ms: Option<u32>,
    /// Largest acceptable `latency_ms_p99` (unknown p99 does not qualify).
    #[serde(default)]
    pub max_latency_p99_ms: Option<u32>,
    /// Largest acceptable `price_micros_per_1k`.
    #[serde(default)]
    pub max_price_micros_per_1k: Option<u64>,
    /// Modalities the service must all offer.
    #[serde(default)]
    #[schema(schema_with = crate::sad::modalities_schema)]
    pub modalities: Vec<String>,
    /// Required region (exact).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9._-]{1,32}$")]
    pub region: Option<String>,
    /// Required model family (exact).
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9._-]{1,32}$")]
    pub model_family: Option<String>,
    /// The advert must carry a MIC this node verified (CA signature, validity window) and that is
    /// not revoked.
    #[serde(default)]
    pub require_mic: bool,
    /// The verified MIC's publisher must be one of these (exact match; empty = any publisher,
    /// no MIC needed). At most [`PUBLISHERS_MAX`].
    #[serde(default)]
    #[schema(schema_with = publishers_schema)]
    pub publishers: Vec<String>,
    /// A verified attestation must prove a predicate at least this strong.
    #[serde(default)]
    pub attested: Option<Attested>,
    /// Ranking weights.
    #[serde(default)]
    pub prefer: Preferences,
    /// Candidates wanted, 1..=[`K_MAX`], default [`K_DEFAULT`].
    #[serde(default = "k_default")]
    #[schema(minimum = 1, maximum = 64)]
    pub k: u32,
    /// Return reasons: why each candidate matched, its score terms, and why others did not.
    #[serde(default)]
    pub explain: bool,
}

/// An intent broke a rule: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct IntentError {
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl From<SadError> for IntentError {
    fn from(e: SadError) -> Self {
        IntentError {
            field: e.field,
            reason: e.reason,
        }
    }
}

fn check_weight(name: &str, w: f64) -> Result<(), IntentError> {
    if !w.is_finite() || !(0.0..=WEIGHT_MAX).contains(&w) {
        return Err(IntentError {
            field: format!("prefer.{name}"),
            reason: format!("{w} must be a finite number in 0..={WEIGHT_MAX}"),
        });
    }
    Ok(())
}

/// Shortest decimal that reads back as the same f64, with -0 as 0.
fn canonical_f64(w: f64) -> String {
    if w == 0.0 {
        "0".to_string()
    } else {
        format!("{w}")
    }
}

impl Intent {
    /// An intent for `task` with every other field at its default.
    pub fn new(task: impl Into<String>) -> Intent {
        Intent {
            task: task.into(),
            min_context: None,
            max_latency_ms: None,
            max_latency_p99_ms: None,
            max_price_micros_per_1k: None,
            modalities: Vec::new(),
            region: None,
            model_family: None,
            require_mic: false,
            publishers: Vec::new(),
            attested: None,
            prefer: Preferences::default(),
            k: K_DEFAULT,
            explain: false,
        }
    }

    /// Parses JSON and validates; errors name the field.
    pub fn from_json(bytes: &[u8]) -> Result<Intent, IntentError> {
        if bytes.len() > INTENT_JSON_BYTES_MAX {
            return Err(IntentError {
                field: "intent".into(),
                reason: format!(
                    "document is {} bytes, at most {INTENT_JSON_BYTES_MAX}",
                    bytes.len()
                ),
            });
        }
        let intent: Intent = crate::sad::parse_json(bytes)
            .map_err(|(field, reason)| IntentError { field, reason })?;
        intent.validate()?;
        Ok(intent)
    }

    /// Checks every field's rules.
    pub fn validate(&self) -> Result<(), IntentError> {
        check_task("task", &self.task)?;
        check_list(
            "modalities",
            &self.modalities,
            MODALITIES_MAX,
            check_modality,
        )?;
        if let Some(region) = &self.region {
            check_token("region", region, REGION_BYTES_MAX, true)?;
        }
        if let Some(family) = &self.model_family {
            check_token("model_family", family, MODEL_FAMILY_BYTES_MAX, true)?;
        }
        if self.publishers.len() > PUBLISHERS_MAX {
            return Err(IntentError {
                field: "publishers".into(),
                reason: format!("{} given, at most {PUBLISHERS_MAX}", self.publishers.len()),
            });
        }
        for (i, p) in self.publishers.iter().enumerate() {
            if p.is_empty()
                || p.len() > PUBLISHER_BYTES_MAX
                || p.chars().any(|c| c.is_control() || c == '|' || c == ',')
            {
                return Err(IntentError {
                    field: format!("publishers[{i}]"),
                    reason: format!(
                        "{p:?} must be 1..={PUBLISHER_BYTES_MAX} bytes without control \
                         characters, '|' or ','"
                    ),
                });
            }
        }
        if let Some(a) = &self.attested
            && a.min_score > SCORE_MAX
        {
            return Err(IntentError {
                field: "attested.min_score".into(),
                reason: format!(
                    "{} is above {SCORE_MAX} (scores are per mille)",
                    a.min_score
                ),
            });
        }
        check_weight("latency", self.prefer.latency)?;
        check_weight("load", self.prefer.load)?;
        check_weight("price", self.prefer.price)?;
        check_weight("proximity", self.prefer.proximity)?;
        if !(1..=K_MAX).contains(&self.k) {
            return Err(IntentError {
                field: "k".into(),
                reason: format!("{} is outside 1..={K_MAX}", self.k),
            });
        }
        Ok(())
    }

    /// The canonical form of the intent's class: every constraint and weight in a fixed order,
    /// absent values as `-`, modalities and publishers sorted and deduplicated, the attestation
    /// requirement as `<min_score>` or `<min_score>+safety`; `k` and `explain` are not part of
    /// it. Two intents with the same canonical form are the same class and share a routing key.
    ///
    /// `nxi2|task=llm.chat|ctx=128000|p50=200|p99=-|price=-|mod=image,text|region=-|family=-|mic=0|pub=-|att=-|w=1,1,0.5,0.5`
    pub fn canonical(&self) -> String {
        fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "-".to_string(), |x| x.to_string())
        }
        let mut modalities: Vec<&str> = self.modalities.iter().map(String::as_str).collect();
        modalities.sort_unstable();
        modalities.dedup();
        let mut publishers: Vec<&str> = self.publishers.iter().map(String::as_str).collect();
        publishers.sort_unstable();
        publishers.dedup();
        let mut out = String::with_capacity(180);
        let _ = write!(
            out,
            "{CANONICAL_VERSION}|task={}|ctx={}|p50={}|p99={}|price={}|mod={}|region={}|family={}|mic={}|pub={}|att={}|w={},{},{},{}",
            self.task,
            opt(&self.min_context),
            opt(&self.max_latency_ms),
            opt(&self.max_latency_p99_ms),
            opt(&self.max_price_micros_per_1k),
            if modalities.is_empty() {
                "-".to_string()
            } else {
                modalities.join(",")
            },
            opt(&self.region),
            opt(&self.model_family),
            u8::from(self.require_mic),
            if publishers.is_empty() {
                "-".to_string()
            } else {
                publishers.join(",")
            },
            match &self.attested {
                None => "-".to_string(),
                Some(a) if a.require_safety => format!("{}+safety", a.min_score),
                Some(a) => a.min_score.to_string(),
            },
            canonical_f64(self.prefer.latency),
            canonical_f64(self.prefer.load),
            canonical_f64(self.prefer.price),
            canonical_f64(self.prefer.proximity),
        );
        out
    }

    /// xxh3-128 of [`Intent::canonical`]: the fixed-width key the data plane looks up.
    ///
    /// Computed without building the string: the canonical form is streamed into the hasher
    /// (the same bytes, so the same key; `tests/intent.rs` checks it against
    /// `xxh3_128(canonical())`).
    pub fn routing_key(&self) -> u128 {
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        self.write_canonical(&mut |bytes: &[u8]| hasher.update(bytes));
        hasher.digest128()
    }

    /// The bytes of [`Intent::canonical`], streamed into `out` piece by piece, without
    /// allocating (unless more than [`MODALITIES_MAX`] modalities need sorting).
    #[doc(hidden)]
    pub fn write_canonical(&self, out: &mut impl FnMut(&[u8])) {
        out(CANONICAL_VERSION.as_bytes());
        out(b"|task=");
        out(self.task.as_bytes());
        out(b"|ctx=");
        write_opt_u64(out, self.min_context.map(u64::from));
        out(b"|p50=");
        write_opt_u64(out, self.max_latency_ms.map(u64::from));
        out(b"|p99=");
        write_opt_u64(out, self.max_latency_p99_ms.map(u64::from));
        out(b"|price=");
        write_opt_u64(out, self.max_price_micros_per_1k);
        out(b"|mod=");
        if self.modalities.is_empty() {
            out(b"-");
        } else if self.modalities.len() <= MODALITIES_MAX {
            let mut sorted = [""; MODALITIES_MAX];
            for (slot, m) in sorted.iter_mut().zip(&self.modalities) {
                *slot = m.as_str();
            }
            write_sorted_list(out, &mut sorted[..self.modalities.len()]);
        } else {
            let mut sorted: Vec<&str> = self.modalities.iter().map(String::as_str).collect();
            write_sorted_list(out, &mut sorted);
        }
        out(b"|region=");
        out(self.region.as_deref().unwrap_or("-").as_bytes());
        out(b"|family=");
        out(self.model_family.as_deref().unwrap_or("-").as_bytes());
        out(b"|mic=");
        out(if self.require_mic { b"1" } else { b"0" });
        out(b"|pub=");
        if self.publishers.is_empty() {
            out(b"-");
        } else if self.publishers.len() <= PUBLISHERS_MAX {
            let mut sorted = [""; PUBLISHERS_MAX];
            for (slot, p) in sorted.iter_mut().zip(&self.publishers) {
                *slot = p.as_str();
            }
            write_sorted_list(out, &mut sorted[..self.publishers.len()]);
        } else {
            let mut sorted: Vec<&str> = self.publishers.iter().map(String::as_str).collect();
            write_sorted_list(out, &mut sorted);
        }
        out(b"|att=");
        match &self.attested {
            None => out(b"-"),
            Some(a) => {
                write_u64(out, u64::from(a.min_score));
                if a.require_safety {
                    out(b"+safety");
                }
            }
        }
        out(b"|w=");
        write_f64(out, self.prefer.latency);
        out(b",");
        write_f64(out, self.prefer.load);
        out(b",");
        write_f64(out, self.prefer.price);
        out(b",");
        write_f64(out, self.prefer.proximity);
    }
}

/// `v` in decimal, or `-` for `None` (as `Display` writes it).
fn write_opt_u64(out: &mut impl FnMut(&[u8]), v: Option<u64>) {
    match v {
        None => out(b"-"),
        Some(v) => write_u64(out, v),
    }
}

fn write_u64(out: &mut impl FnMut(&[u8]), mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out(&buf[at..]);
}

/// Sorted, deduplicated, comma-separated (as `sort_unstable` + `dedup` + `join(",")`).
fn write_sorted_list(out: &mut impl FnMut(&[u8]), items: &mut [&str]) {
    items.sort_unstable();
    let mut previous: Option<&str> = None;
    for m in items.iter() {
        if previous == Some(*m) {
            continue;
        }
        if previous.is_some() {
            out(b",");
        }
        out(m.as_bytes());
        previous = Some(*m);
    }
}

/// [`canonical_f64`] without allocating: whole numbers and halves below 2^50 are written
/// directly (for those, `Display`'s shortest round-trip form is exactly the integer digits, or
/// the digits and `.5`); anything else goes through `Display`.
fn write_f64(out: &mut impl FnMut(&[u8]), w: f64) {
    const DIRECT_MAX: f64 = (1u64 << 50) as f64;
    if w == 0.0 {
        out(b"0");
        return;
    }
    let a = w.abs();
    let twice = a * 2.0;
    if a < DIRECT_MAX && twice.fract() == 0.0 {
        if w < 0.0 {
            out(b"-");
        }
        write_u64(out, a.trunc() as u64);
        if a.fract() != 0.0 {
            out(b".5");
        }
        return;
    }
    struct Sink<'a, F: FnMut(&[u8])>(&'a mut F);
    impl<F: FnMut(&[u8])> std::fmt::Write for Sink<'_, F> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            (self.0)(s.as_bytes());
            Ok(())
        }
    }
    let _ = write!(Sink(out), "{w}");
}
