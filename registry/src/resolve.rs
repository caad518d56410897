//! Intent resolution: filter the live entries of the intent's task by its constraints, score
//! the rest, return the top k. The formula is in `docs/sad.md` ("Scoring").
//!
//! Trust: records whose credentials are pending or were rejected never pass (their index rows
//! are dead); a verified record's MIC is re-checked for expiry, revocation and a still-trusted
//! CA key against the resolving node's trust context when it is about to enter the top k (and
//! for every record in explain mode).

pub(crate) mod constraint;

use nexus_trust_core::verify::{TrustContext, TrustReject, Verified};

use crate::index::{Cover, NodeKind, PackedCoord, Part, Row, Summary, TaskIndex, TaskRows};
use crate::intent::{Intent, K_MAX};
use crate::sad::{Endpoint, Sad};
use crate::store::{Entry, Registry, ServiceKey};
use crate::trust::TrustVerdict;
use crate::trust::unix_ms_at;
use crate::vivaldi::{Coord, estimate_rtt};
use crate::{NodeId, Timestamp};
use constraint::{Constraint, Constraints, RowCheck, Unmet};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// p50 latency at which the latency term is 0.5.
pub const LATENCY_REF_MS: f64 = 100.0;
/// Queue depth at which the queue factor of the load term is 0.5.
pub const QUEUE_REF: f64 = 16.0;
/// Price at which the price term is 0.5 (micro-units per 1k tokens).
pub const PRICE_REF_MICROS: f64 = 1000.0;
/// Estimated RTT at which the proximity term is 0.5.
pub const RTT_REF_MS: f64 = 50.0;
/// Value of a term whose input is unknown (p50 = 0, or no coordinate on either side).
pub const NEUTRAL_TERM: f64 = 0.5;
/// Exclusions listed with `explain` (the rest are only counted).
pub const EXCLUSIONS_MAX: usize = 32;

/// What resolve needs from the resolving node.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResolveContext<'t> {
    /// Now, for leases: an entry whose lease has ended is not a candidate even before
    /// [`Registry::expire`] runs.
    pub now: Timestamp,
    /// The resolving node's Vivaldi coordinate (proximity is neutral without it).
    pub local_coord: Option<Coord>,
    /// The resolving node's trust context: verified MICs are re-checked against its
    /// revocations and CA keys. Without it only their validity window is re-checked.
    pub trust: Option<&'t TrustContext>,
}

/// One ranked endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Service id.
    pub service: String,
    /// Node the service runs on.
    pub node: NodeId,
    /// Where it listens.
    pub endpoint: Endpoint,
    /// Score in `0..=1`; higher is better.
    pub score: f64,
    /// The descriptor (shared with the registry's record: cloning a candidate does not copy it).
    pub sad: Arc<Sad>,
    /// With `explain`: each constraint it met and each score term.
    pub why: Vec<String>,
}

/// A service with the task that a constraint ruled out (with `explain` only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusion {
    /// Service id.
    pub service: String,
    /// Node.
    pub node: NodeId,
    /// The first constraint it failed, e.g. `context_window 32768 < min_context 128000`.
    pub reason: String,
}

/// The answer to an intent.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    /// The intent class's routing key.
    pub routing_key: u128,
    /// Best first; at most `k`.
    pub candidates: Vec<Candidate>,
    /// With `explain`: up to [`EXCLUSIONS_MAX`] exclusions in key order.
    pub excluded: Vec<Exclusion>,
    /// With `explain`: how many were excluded in all.
    pub excluded_total: usize,
    /// Live entries carrying the intent's task.
    pub considered: usize,
}

/// Latency, load and price terms of a SAD.
pub(crate) fn static_terms(sad: &Sad) -> [f64; 3] {
    let latency = if sad.latency_ms_p50 == 0 {
        NEUTRAL_TERM
    } else {
        1.0 / (1.0 + f64::from(sad.latency_ms_p50) / LATENCY_REF_MS)
    };
    let load = (1.0 - f64::from(sad.load.utilization_pct.min(100)) / 100.0)
        / (1.0 + f64::from(sad.load.queue_depth) / QUEUE_REF);
    let price = 1.0 / (1.0 + sad.price_micros_per_1k as f64 / PRICE_REF_MICROS);
    [latency, load, price]
}

/// The proximity term from an estimated RTT in seconds.
fn proximity_term(rtt_s: f64) -> f64 {
    1.0 / (1.0 + rtt_s * 1000.0 / RTT_REF_MS)
}

/// Compiled form of an intent's constraints and weights.
struct Query<'a> {
    intent: &'a Intent,
    /// The intent's hard constraints, one value each.
    constraints: Constraints<'a>,
    /// Their row checks, fused.
    row_check: RowCheck,
    weights: [f64; 4],
    weight_sum: f64,
    now: Timestamp,
    local: Option<&'a Coord>,
    /// Queue a tree node's children with the node's proximity bound and compute their own only
    /// when they come up: when proximity weighs at most half of the score, a child's bound is
    /// mostly its static terms, and most queued children are never expanded. (When proximity
    /// dominates, the parent's bound is too loose to order the search; measured slower.)
    lazy_proximity: bool,
    /// The intent has hard constraints (beyond the lease).
    constrained: bool,
    /// Some constraint compares hashes: a row must be confirmed on the SAD (or the verified
    /// MIC) before it enters the top k.
    needs_exact: bool,
    trust: Option<&'a TrustContext>,
    /// Unix time (ms) of `now`, for MIC validity windows.
    unix_now: u64,
}

impl<'a> Query<'a> {
    fn new(intent: &'a Intent, ctx: &'a ResolveContext<'a>, unix_epoch_ms: u64) -> Self {
        let p = &intent.prefer;
        let weights = [p.latency, p.load, p.price, p.proximity]
            .map(|w| if w.is_finite() && w > 0.0 { w } else { 0.0 });
        let constraints = Constraints::of(intent);
        Query {
            intent,
            weight_sum: weights.iter().sum(),
            lazy_proximity: weights[3] > 0.0 && weights[3] * 2.0 <= weights.iter().sum(),
            constrained: !constraints.is_empty(),
            row_check: constraints.row_check(),
            needs_exact: constraints.hashed(),
            constraints,
            weights,
            now: ctx.now,
            local: ctx.local_coord.as_ref(),
            trust: ctx.trust,
            unix_now: unix_ms_at(ctx.now, unix_epoch_ms),
        }
    }

    /// A verified MIC is still good at resolve time: within its window, its CA key trusted,
    /// not revoked (the last two need the trust context).
    fn mic_current(&self, v: &Verified) -> Result<(), TrustReject> {
        match self.trust {
            Some(t) => t.status(v, self.unix_now),
            None if self.unix_now > v.not_after_ms => Err(TrustReject::Expired {
                serial: v.serial,
                now_ms: self.unix_now,
                not_after_ms: v.not_after_ms,
            }),
            None => Ok(()),
        }
    }

    /// Proximity weighs more than the other terms together, and there is a local coordinate:
    /// the search goes by coordinate group (see [`Registry::search_groups`]).
    fn proximity_first(&self) -> bool {
        self.local.is_some() && self.weights[3] * 2.0 > self.weight_sum
    }

    /// The row-level filter (hash comparisons for strings).
    fn row_passes(&self, row: &Row) -> bool {
        row.expires_at > self.now && self.row_check.pass(row)
    }

    /// Whether some row under `s` may pass [`Query::row_passes`] (`false` = none can).
    fn may_contain(&self, s: &Summary) -> bool {
        s.rows > 0 && s.expires_max > self.now && self.constraints.may_pass(s)
    }

    /// The check a row that passed the filter gets before it enters the top k: its MIC is still
    /// good (cheap lookups; only rows with a verified MIC) and, if hashes were compared, the
    /// exact constraints hold.
    fn confirm(&self, row: &Row) -> bool {
        if let Some(v) = &row.verified
            && self.mic_current(v).is_err()
        {
            return false;
        }
        !self.needs_exact
            || self
                .first_failure(&row.sad, None, row.verified.as_deref(), row.expires_at)
                .is_none()
    }

    /// Whether [`Query::bound`] bounds every score: the weights sum to a finite positive
    /// number and the local coordinate (if any) is finite with a non-negative height, so every
    /// estimated RTT is `>= 0` and every proximity term is in `(0, 1]`.
    fn bounded(&self) -> bool {
        self.weight_sum.is_finite()
            && self.weight_sum > 0.0
            && self.local.is_none_or(|c| {
                c.vec.iter().all(|x| x.is_finite())
                    && c.height.is_finite()
                    && c.height >= 0.0
                    && c.adjustment.is_finite()
            })
    }

    fn proximity(&self, row: &Row) -> f64 {
        self.proximity_of(row.coord.as_ref())
    }

    fn proximity_of(&self, coord: Option<&PackedCoord>) -> f64 {
        match (self.local, coord) {
            (Some(local), Some(c)) => proximity_term(c.distance_from(local)),
            _ => NEUTRAL_TERM,
        }
    }

    /// The largest proximity term of any row under `s`.
    ///
    /// Every step is the row's own computation (`PackedCoord::distance_from`, then
    /// `proximity_term`) applied to a value that is `<=` the row's at that step, in the same
    /// order: the per-dimension gap to the box (0 inside), the sum of squares, the square root,
    /// the heights and adjustments at their minimum. IEEE rounding is monotone, so the result is
    /// `>=` the term any row computes, bit for bit, not just up to rounding.
    fn proximity_max(&self, s: &Summary) -> f64 {
        let Some(local) = self.local else {
            return NEUTRAL_TERM;
        };
        let mut best = if s.uncoordinated { NEUTRAL_TERM } else { 0.0 };
        if s.coords {
            let mut sum = 0.0;
            for ((a, lo), hi) in local.vec.iter().zip(s.coord_lo).zip(s.coord_hi) {
                // The gap to the box, 0 inside it (branch-free; `|a - lo|` below it, as the
                // row's own difference is squared).
                let d = (f64::from(lo) - a).max(a - f64::from(hi)).max(0.0);
                sum += d * d;
            }
            let raw = sum.sqrt() + local.height + f64::from(s.height_min);
            let adjusted = raw + local.adjustment + f64::from(s.adjustment_min);
            // A row's RTT is its adjusted distance if that is > 0, else its raw distance.
            let rtt = raw.min(adjusted.max(0.0));
            if rtt < 0.0 {
                return f64::INFINITY;
            }
            best = best.max(proximity_term(rtt));
        }
        best
    }

    /// `Σ wᵢ·termᵢ / Σ wᵢ` in one fixed order (shared by [`Query::score`] and
    /// [`Query::bound`], so a bound computed from larger terms is never below a score).
    fn combine(&self, terms: [f64; 4]) -> f64 {
        if self.weight_sum == 0.0 {
            return 0.0;
        }
        self.with_proximity(self.static_part([terms[0], terms[1], terms[2]]), terms[3])
    }

    /// The first three steps of [`Query::combine`]: the weighted static terms, summed in order.
    fn static_part(&self, terms: [f64; 3]) -> f64 {
        let mut sum = 0.0;
        for (w, t) in self.weights.iter().zip(terms) {
            sum += w * t;
        }
        sum
    }

    /// The rest of [`Query::combine`] (for a positive weight sum): monotone in `static_part`.
    fn with_proximity(&self, static_part: f64, proximity: f64) -> f64 {
        self.unscaled(static_part, proximity) / self.weight_sum
    }

    /// [`Query::combine`] before its division by the weight sum.
    fn unscaled(&self, static_part: f64, proximity: f64) -> f64 {
        static_part + self.weights[3] * proximity
    }

    /// A value such that an [`Query::unscaled`] sum below it has a score below `threshold`
    /// (for a positive finite weight sum and a score threshold `>= 0`): the scans compare
    /// their bounds with it and save a division per row. It is the threshold times the weight
    /// sum lowered by `8ε` (relative), more than the rounding of the two products and of the
    /// score's division together, so it only prunes what the exact comparison prunes (and may
    /// keep a bound within a few ulps of the threshold, which the exact checks after it handle).
    /// Near the subnormal range relative rounding bounds do not hold: nothing is pruned there.
    fn unscaled_floor(&self, threshold: Option<f64>) -> f64 {
        match threshold {
            Some(t) => {
                let floor = t * self.weight_sum * (1.0 - 8.0 * f64::EPSILON);
                if floor >= 4.0 * f64::MIN_POSITIVE {
                    floor
                } else {
                    f64::NEG_INFINITY
                }
            }
            None => f64::NEG_INFINITY,
        }
    }

    fn score(&self, row: &Row) -> f64 {
        self.combine([
            row.terms[0],
            row.terms[1],
            row.terms[2],
            self.proximity(row),
        ])
    }

    /// An upper bound of the score of every row under `s` (valid when [`Query::bounded`]), and
    /// the proximity term bound used in it.
    fn bound(&self, s: &Summary) -> (f64, f64) {
        // A zero weight multiplies any finite term to 0, as in the score.
        let proximity = if self.weights[3] == 0.0 {
            0.0
        } else {
            self.proximity_max(s)
        };
        (self.bound_with_proximity(s, proximity), proximity)
    }

    /// An upper bound of the score of every row a [`Cover`] covers, whose proximity term is
    /// `proximity`: [`Query::combine`] of the point with the largest weighted static part. Each
    /// point is `>=` the static terms of the rows it covers and every step of `combine` is
    /// monotone in each term (non-negative weights; IEEE rounding is monotone), so this is `>=`
    /// each such row's score, bit for bit.
    fn cover_bound(&self, cover: &Cover, proximity: f64) -> f64 {
        if self.weight_sum == 0.0 {
            return 0.0;
        }
        let mut best = f64::NEG_INFINITY;
        for p in cover.points() {
            let s = self.static_part(p.map(f64::from));
            // Terms are finite: no NaN to order.
            if s > best {
                best = s;
            }
        }
        self.with_proximity(best, proximity)
    }

    /// [`Query::bound`] with a given proximity term bound (one that is `>=` every row's under
    /// `s`, e.g. an ancestor's).
    fn bound_with_proximity(&self, s: &Summary, proximity: f64) -> f64 {
        self.combine([s.term_max[0], s.term_max[1], s.term_max[2], proximity])
    }
}

impl Query<'_> {
    /// The first reason a record is not a candidate; exact string comparisons. `blocked` is the
    /// verdict of a record whose credentials are pending or rejected, `verified` its verified
    /// credentials, `expires_at` its lease end.
    fn first_failure(
        &self,
        sad: &Sad,
        blocked: Option<&TrustVerdict>,
        verified: Option<&Verified>,
        expires_at: Timestamp,
    ) -> Option<Unmet> {
        if expires_at <= self.now {
            return Some(Unmet::LeaseEnded {
                expires_at_ms: expires_at.as_millis(),
                now_ms: self.now.as_millis(),
            });
        }
        match blocked {
            Some(TrustVerdict::Pending) => return Some(Unmet::CredentialsPending),
            Some(TrustVerdict::Rejected(r)) => return Some(Unmet::CredentialsRejected(r.clone())),
            Some(TrustVerdict::Unclaimed | TrustVerdict::Verified(_)) | None => {}
        }
        if let Some(v) = verified
            && let Err(reason) = self.mic_current(v)
        {
            return Some(Unmet::MicNotCurrent(reason));
        }
        self.constraints.check(sad, verified).err()
    }
}

/// A heap item: better = higher score, then lower (node, service).
struct Ranked<'r> {
    score: f64,
    key: &'r ServiceKey,
    sad: &'r Arc<Sad>,
}

impl Ranked<'_> {
    /// `Greater` = better.
    fn rank(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.key.cmp(self.key))
    }
}

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.rank(other) == Ordering::Equal
    }
}
impl Eq for Ranked<'_> {}
impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked<'_> {
    /// Reversed, so `BinaryHeap` (a max-heap) keeps the worst on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank(self)
    }
}

/// The best `k` seen so far (a bounded heap, worst on top).
struct TopK<'r> {
    k: usize,
    heap: BinaryHeap<Ranked<'r>>,
}

impl<'r> TopK<'r> {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers a candidate that passed the row filter; `confirm` (the exact check) runs only if
    /// it would enter the top k.
    fn offer(
        &mut self,
        score: f64,
        key: &'r ServiceKey,
        sad: &'r Arc<Sad>,
        confirm: impl FnOnce() -> bool,
    ) {
        let item = Ranked { score, key, sad };
        // The heap's top is the worst kept; `>=` there means `item` is not better.
        if self.heap.len() == self.k && self.heap.peek().is_some_and(|worst| item >= *worst) {
            return;
        }
        if !confirm() {
            return;
        }
        self.heap.push(item);
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The k-th best score once k are held: nothing scoring below it can enter.
    fn threshold(&self) -> Option<f64> {
        if self.heap.len() == self.k {
            self.heap.peek().map(|w| w.score)
        } else {
            None
        }
    }

    fn into_sorted(self) -> Vec<Ranked<'r>> {
        self.heap.into_sorted_vec()
    }
}

/// A tree node waiting in the best-first search: its score bound (and the proximity term
/// bound that went into it).
struct Frontier {
    bound: f64,
    proximity: f64,
    /// Which of the searched trees.
    tree: u32,
    node: u32,
    /// The proximity bound is the node's own, not its parent's.
    refined: bool,
}

impl PartialEq for Frontier {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Frontier {}
impl PartialOrd for Frontier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Frontier {
    /// Higher bound first, then lower tree and node index.
    fn cmp(&self, other: &Self) -> Ordering {
        self.bound
            .total_cmp(&other.bound)
            .then_with(|| (other.tree, other.node).cmp(&(self.tree, self.node)))
    }
}

/// A coordinate group waiting in [`Registry::search_groups`]: its score bound and exact
/// proximity term.
struct GroupBound {
    bound: f64,
    proximity: f64,
    /// Index in [`TaskIndex::groups`].
    group: u32,
}

impl PartialEq for GroupBound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for GroupBound {}
impl PartialOrd for GroupBound {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GroupBound {
    /// Higher bound first, then lower group index.
    fn cmp(&self, other: &Self) -> Ordering {
        self.bound
            .total_cmp(&other.bound)
            .then_with(|| other.group.cmp(&self.group))
    }
}

/// Frontier entries allocated up front (the bench's k <= 10 searches at 100k adverts hold a few
/// dozen; the heap grows past this if needed).
const FRONTIER_CAPACITY: usize = 64;

/// Context-window buckets ([`crate::index::ctx_bucket`]: bit lengths 0..=32).
const CONTEXT_BUCKETS: usize = u32::BITS as usize + 1;

/// The values of `hashes` without repeats (first occurrence order).
fn distinct(hashes: &[u64]) -> impl Iterator<Item = u64> + '_ {
    hashes
        .iter()
        .enumerate()
        .filter(|(i, h)| !hashes[..*i].contains(h))
        .map(|(_, h)| *h)
}

/// Whether a score `bound` is below the top-k threshold (so nothing under it can enter).
fn below(bound: f64, threshold: Option<f64>) -> bool {
    threshold.is_some_and(|t| bound.total_cmp(&t) == Ordering::Less)
}

impl Registry {
    /// Resolves an intent to at most `k` ranked candidates (see `docs/sad.md`). Call
    /// [`Intent::validate`] first; `k` outside `1..=K_MAX` is clamped here.
    pub fn resolve(&self, intent: &Intent, ctx: &ResolveContext) -> Resolution {
        let k = intent.k.clamp(1, K_MAX) as usize;
        let query = Query::new(intent, ctx, self.unix_epoch_ms());
        let mut resolution = Resolution {
            routing_key: intent.routing_key(),
            candidates: Vec::new(),
            excluded: Vec::new(),
            excluded_total: 0,
            considered: 0,
        };
        let Some(rows) = self.index.task(&intent.task) else {
            return resolution;
        };
        resolution.considered = rows.len();
        let mut top = TopK::new(k);
        if intent.explain {
            // Exact checks on every SAD, in (context window, key) order for `excluded`.
            for (key, row) in rows.ordered() {
                let Some(entry) = self.get(key) else {
                    continue;
                };
                let trust = entry.trust();
                if let Some(reason) = query.first_failure(
                    &row.sad,
                    Some(trust),
                    trust.verified().map(AsRef::as_ref),
                    entry.expires_at(),
                ) {
                    resolution.excluded_total += 1;
                    if resolution.excluded.len() < EXCLUSIONS_MAX {
                        resolution.excluded.push(Exclusion {
                            service: key.service.clone(),
                            node: key.node,
                            reason: reason.to_string(),
                        });
                    }
                    continue;
                }
                top.offer(query.score(row), key, &row.sad, || true);
            }
        } else if query.bounded() {
            Self::search_task(&query, rows, &mut top);
        } else {
            // Scores that cannot be bounded (weights summing to 0 or overflowing, an invalid
            // local coordinate): scan every row.
            for leaf in rows.all.leaves() {
                for (row, id) in leaf.rows.iter().zip(&leaf.ids) {
                    Self::offer_row(&query, row, rows.key(*id), &mut top);
                }
            }
        }
        self.finish(&query, ctx, resolution, top.into_sorted())
    }

    /// Row filter, score, and the exact check for a row about to enter the top k.
    fn offer_row<'r>(query: &Query<'_>, row: &'r Row, key: &'r ServiceKey, top: &mut TopK<'r>) {
        if query.row_passes(row) {
            top.offer(query.score(row), key, &row.sad, || query.confirm(row));
        }
    }

    /// Searches the task's rows that can meet the intent's most selective partitioned
    /// constraint (the one whose partitions hold the fewest rows: region, context window,
    /// verified credentials, publishers; see [`Part`]), or all of them. Every row the others
    /// hold fails that constraint's row check, so the answer is the same; the partition trees'
    /// bounds are over the rows that can pass it alone.
    fn search_task<'r>(query: &Query<'_>, task: &'r TaskIndex, top: &mut TopK<'r>) {
        enum Choice {
            All,
            Part(Part),
            Publishers([u64; crate::intent::PUBLISHERS_MAX], usize),
            ContextFrom(u32),
        }
        let len = |p: Part| task.part(p).map_or(0, TaskRows::len);
        let mut best = (task.len(), Choice::All);
        for c in query.constraints.iter() {
            let (rows, choice) = match *c {
                Constraint::Region { hash, .. } => {
                    (len(Part::Region(hash)), Choice::Part(Part::Region(hash)))
                }
                Constraint::RequireMic | Constraint::Attested { .. } => {
                    (len(Part::Mic), Choice::Part(Part::Mic))
                }
                Constraint::Publishers { hashes, len: n, .. } => {
                    let rows = distinct(&hashes[..n])
                        .map(|h| len(Part::Publisher(h)))
                        .sum();
                    (rows, Choice::Publishers(hashes, n))
                }
                Constraint::MinContext(min) => (
                    task.context_from(min).map(TaskRows::len).sum(),
                    Choice::ContextFrom(min),
                ),
                _ => continue,
            };
            if rows < best.0 {
                best = (rows, choice);
            }
        }
        match best.1 {
            Choice::All if query.proximity_first() => Self::search_groups(query, task, top),
            Choice::All => Self::search(query, task, &[&task.all], top),
            Choice::Part(p) => {
                if let Some(rows) = task.part(p) {
                    Self::search(query, task, &[rows], top);
                }
            }
            // Several partitions: one best-first search over all their trees, so the k-th best
            // score found in one prunes the others from the start.
            Choice::Publishers(hashes, n) => {
                let mut trees = [&task.all; crate::intent::PUBLISHERS_MAX];
                let mut len = 0;
                for rows in distinct(&hashes[..n]).filter_map(|h| task.part(Part::Publisher(h))) {
                    trees[len] = rows;
                    len += 1;
                }
                Self::search(query, task, &trees[..len], top);
            }
            Choice::ContextFrom(min) => {
                let mut trees = [&task.all; CONTEXT_BUCKETS];
                let mut len = 0;
                for rows in task.context_from(min) {
                    trees[len] = rows;
                    len += 1;
                }
                Self::search(query, task, &trees[..len], top);
            }
        }
    }

    /// Best-first search over the task's coordinate groups, for intents where proximity weighs
    /// more than the other terms together: one distance per group gives the exact proximity
    /// term of its rows, so a group's bound is the best of its cover's points (see
    /// [`crate::index::Cover`]) with that term, and a row's score costs a few multiplications.
    /// One pass over the groups' heads computes every bound; groups are then taken by bound,
    /// best first, until the k-th best score beats the next one.
    fn search_groups<'r>(query: &Query<'_>, task: &'r TaskIndex, top: &mut TopK<'r>) {
        let mut bounds: Vec<GroupBound> = Vec::with_capacity(task.heads.len());
        for (i, head) in task.heads.iter().enumerate() {
            if head.expires_max <= query.now
                || (query.constrained && !query.constraints.may_pass(&task.groups[i].summary))
            {
                continue;
            }
            let proximity = query.proximity_of(head.coord.as_ref());
            bounds.push(GroupBound {
                bound: query.cover_bound(&head.cover, proximity),
                proximity,
                group: i as u32,
            });
        }
        // Heapify in place (O(groups)); only the groups that are taken pay for ordering.
        let mut heap = BinaryHeap::from(bounds);
        while let Some(next) = heap.pop() {
            if below(next.bound, top.threshold()) {
                break;
            }
            let group = &task.groups[next.group as usize];
            let mut floor = query.unscaled_floor(top.threshold());
            for ((row, id), suffix) in group.rows.iter().zip(&group.ids).zip(&group.suffix_max) {
                // Rows are in descending order of their terms' sum; `suffix` bounds each static
                // term from here on, so once it is below the k-th best score no later row of
                // the group can enter.
                if query.unscaled(query.static_part(*suffix), next.proximity) < floor {
                    break;
                }
                if !query.row_passes(row) {
                    continue;
                }
                // Exact: the same terms and proximity the row's own score combines.
                let score =
                    query.combine([row.terms[0], row.terms[1], row.terms[2], next.proximity]);
                if below(score, top.threshold()) {
                    continue;
                }
                top.offer(score, task.key(*id), &row.sad, || query.confirm(row));
                floor = query.unscaled_floor(top.threshold());
            }
        }
    }

    /// Best-first search of one or more trees of the task (the task's, or the partitions that
    /// can meet a constraint; each row is in at most one of them): pop the node with the
    /// highest score bound over all of them, stop when it is below the k-th best score held
    /// (every row left scores at most its bound). Subtrees whose summary rules out every
    /// constraint are skipped.
    fn search<'r>(
        query: &Query<'_>,
        task: &'r TaskIndex,
        trees: &[&'r TaskRows],
        top: &mut TopK<'r>,
    ) {
        let mut frontier: BinaryHeap<Frontier> = BinaryHeap::with_capacity(FRONTIER_CAPACITY);
        // The node to expand next: the best of the frontier. Expanding an inner node keeps its
        // better child here instead of pushing and popping it when nothing in the heap ranks
        // above it (the order of expansion is the same as popping every node).
        let mut current = None;
        for (tree, rows) in trees.iter().enumerate() {
            let root = &rows.nodes[0].summary;
            if !query.may_contain(root) {
                continue;
            }
            let (bound, proximity) = query.bound(root);
            frontier.push(Frontier {
                bound,
                proximity,
                tree: tree as u32,
                node: 0,
                refined: true,
            });
        }
        while let Some(mut next) = current.take().or_else(|| frontier.pop()) {
            if below(next.bound, top.threshold()) {
                break;
            }
            let rows = trees[next.tree as usize];
            if !next.refined {
                // Its own proximity bound (the one it was queued with is its parent's).
                let (bound, proximity) = query.bound(&rows.nodes[next.node as usize].summary);
                next = Frontier {
                    bound,
                    proximity,
                    tree: next.tree,
                    node: next.node,
                    refined: true,
                };
                if below(bound, top.threshold()) {
                    continue;
                }
                if frontier.peek().is_some_and(|best| *best > next) {
                    frontier.push(next);
                    continue;
                }
            }
            match &rows.nodes[next.node as usize].kind {
                NodeKind::Leaf(leaf) => {
                    let proximity = next.proximity;
                    // Bounds are compared before the division by the weight sum.
                    let mut floor = query.unscaled_floor(top.threshold());
                    for ((row, id), suffix) in leaf.rows.iter().zip(&leaf.ids).zip(&leaf.suffix_max)
                    {
                        // Rows are in descending order of their terms' sum; `suffix` bounds each
                        // static term from here on, so once it is below the k-th best score no
                        // later row of the leaf can enter.
                        if query.unscaled(query.static_part(*suffix), proximity) < floor {
                            break;
                        }
                        // The row's static terms with the leaf's proximity bound: an upper bound
                        // of its score that needs no distance. With constraints, the row check
                        // (integer compares, rejecting most rows) goes first.
                        if query.constrained && !query.row_passes(row) {
                            continue;
                        }
                        if query.unscaled(query.static_part(row.terms), proximity) < floor {
                            continue;
                        }
                        let key = task.key(*id);
                        if query.constrained {
                            top.offer(query.score(row), key, &row.sad, || query.confirm(row));
                        } else {
                            Self::offer_row(query, row, key, top);
                        }
                        floor = query.unscaled_floor(top.threshold());
                    }
                }
                NodeKind::Inner { children, .. } => {
                    for &child in children {
                        let summary = &rows.nodes[child as usize].summary;
                        if !query.may_contain(summary) {
                            continue;
                        }
                        // With `lazy_proximity`, queued with the parent's proximity bound (its
                        // box contains the child's, so that bound holds for the child's rows
                        // too): no square root or division per child here; the child's own
                        // proximity bound is computed when it comes up (children left in the
                        // queue never need it).
                        let (bound, proximity, refined) = if query.lazy_proximity {
                            let bound = query.bound_with_proximity(summary, next.proximity);
                            (bound, next.proximity, false)
                        } else {
                            let (bound, proximity) = query.bound(summary);
                            (bound, proximity, true)
                        };
                        if below(bound, top.threshold()) {
                            continue;
                        }
                        let item = Frontier {
                            bound,
                            proximity,
                            tree: next.tree,
                            node: child,
                            refined,
                        };
                        match current.take() {
                            None => current = Some(item),
                            Some(held) => {
                                let (better, worse) = if item > held {
                                    (item, held)
                                } else {
                                    (held, item)
                                };
                                current = Some(better);
                                frontier.push(worse);
                            }
                        }
                    }
                    // Only keep the child in hand if it is the frontier's best.
                    if let (Some(held), Some(top_of_heap)) = (&current, frontier.peek())
                        && *top_of_heap > *held
                        && let Some(held) = current.take()
                    {
                        frontier.push(held);
                    }
                }
            }
        }
    }

    /// Builds the candidates (best first) from the ranked keys.
    fn finish(
        &self,
        query: &Query<'_>,
        ctx: &ResolveContext,
        mut resolution: Resolution,
        ranked: Vec<Ranked<'_>>,
    ) -> Resolution {
        let intent = query.intent;
        resolution.candidates.reserve_exact(ranked.len());
        for item in ranked {
            let sad = item.sad;
            let why = if intent.explain {
                // The coordinate for the explained proximity term is the record's (the index
                // keeps it packed as f32).
                let entry = self.get(item.key);
                let coord = entry.and_then(Entry::coord);
                let verified = entry.and_then(|e| e.trust().verified()).map(AsRef::as_ref);
                let mut why: Vec<String> = query
                    .constraints
                    .met(&intent.task, sad, verified)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                why.extend(score_terms(query, sad, coord, ctx));
                why
            } else {
                Vec::new()
            };
            resolution.candidates.push(Candidate {
                service: item.key.service.clone(),
                node: item.key.node,
                endpoint: sad.endpoint,
                score: item.score,
                sad: Arc::clone(sad),
                why,
            });
        }
        resolution
    }

    /// The plain definition of [`Registry::resolve`], for differential tests: every live
    /// record carrying the task, in `(context window, key)` order, checked exactly against the
    /// SAD, scored, fully sorted. O(records); not for production use.
    #[doc(hidden)]
    pub fn resolve_reference(&self, intent: &Intent, ctx: &ResolveContext) -> Resolution {
        let k = intent.k.clamp(1, K_MAX) as usize;
        let query = Query::new(intent, ctx, self.unix_epoch_ms());
        let mut resolution = Resolution {
            routing_key: intent.routing_key(),
            candidates: Vec::new(),
            excluded: Vec::new(),
            excluded_total: 0,
            considered: 0,
        };
        let mut carrying: Vec<(u32, &ServiceKey, &Arc<Sad>, &Entry, Row)> = self
            .iter()
            .filter_map(|(key, entry)| {
                let sad = entry.shared_sad()?;
                sad.tasks.contains(&intent.task).then(|| {
                    let row = Row::of(
                        sad,
                        entry.coord(),
                        entry.expires_at(),
                        entry.trust(),
                        self.unix_epoch_ms(),
                    );
                    (sad.context_window, key, sad, entry, row)
                })
            })
            .collect();
        carrying.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        resolution.considered = carrying.len();
        let mut passing: Vec<Ranked<'_>> = Vec::new();
        for (_, key, sad, entry, row) in &carrying {
            let trust = entry.trust();
            if let Some(reason) = query.first_failure(
                sad,
                Some(trust),
                trust.verified().map(AsRef::as_ref),
                entry.expires_at(),
            ) {
                if intent.explain {
                    resolution.excluded_total += 1;
                    if resolution.excluded.len() < EXCLUSIONS_MAX {
                        resolution.excluded.push(Exclusion {
                            service: key.service.clone(),
                            node: key.node,
                            reason: reason.to_string(),
                        });
                    }
                }
                continue;
            }
            passing.push(Ranked {
                score: query.score(row),
                key,
                sad,
            });
        }
        // `Ranked`'s order is reversed (worst last after a descending sort = best first).
        passing.sort();
        passing.truncate(k);
        self.finish(&query, ctx, resolution, passing)
    }
}

/// The score terms of a candidate, for explain.
fn score_terms(
    query: &Query<'_>,
    sad: &Sad,
    coord: Option<&Coord>,
    ctx: &ResolveContext,
) -> Vec<String> {
    let [latency, load, price] = static_terms(sad);
    let proximity = match (ctx.local_coord.as_ref(), coord) {
        (Some(a), Some(b)) => {
            let rtt = estimate_rtt(a, b);
            format!(
                "proximity {:.3} (est. rtt {:.1} ms) x {}",
                proximity_term(rtt.as_secs_f64()),
                rtt.as_secs_f64() * 1000.0,
                query.weights[3]
            )
        }
        _ => format!(
            "proximity {NEUTRAL_TERM} (no coordinate) x {}",
            query.weights[3]
        ),
    };
    vec![
        format!("latency {latency:.3} x {}", query.weights[0]),
        format!("load {load:.3} x {}", query.weights[1]),
        format!("price {price:.3} x {}", query.weights[2]),
        proximity,
    ]
}
