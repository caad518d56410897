//! The resolve index. Per task tag:
//!
//! - an ordered map `(context window, key) → slot`, the order explain lists exclusions in and
//!   the way back from a key to its row; a row's [`Slot`] holds its key and where each tree
//!   keeps its copy, once, and trees and groups refer to it by its slot id (a `u32`);
//! - a k-d tree over the rows, split on the three SAD-only score terms (latency, load, price)
//!   and the coordinate's dimensions. Every tree node carries a [`Summary`] of the rows under
//!   it: the largest value of each score term, the bounding box of the coordinates, and the
//!   extremes the numeric constraints compare against (largest context window, smallest known
//!   p50/p99, smallest price, lease end, modality/MIC/region/family/publisher presence, best
//!   attested scores). Resolve walks
//!   the tree best-first by an upper bound of the score (see `resolve.rs`) and stops once the
//!   k-th best candidate beats every bound left; constraints prune whole subtrees;
//! - the same rows again in one tree per [`Part`] (region, context-window bucket, verified
//!   credentials, MIC publisher): an intent constraining one of these searches only the
//!   partition(s) that can meet it, whose bounds are over those rows alone;
//! - the same rows grouped by coordinate ([`Group`]), for intents where proximity outweighs the
//!   other terms: one distance per group gives every row's exact proximity term. Each group
//!   also has a small [`GroupHead`], kept densely: its coordinate, latest lease end and a
//!   [`Cover`] of its rows' static terms (a few points that bound every row's, for any
//!   weights), all the group search reads of a group before it takes it.
//!
//! Each row's fields are copied four to six times (all, region, context, and MIC and publisher
//! when it has verified credentials, plus its group), next to a 4-byte slot id: the search reads
//! a leaf's rows in order without indirection. Its key and locations are held once.
//!
//! The tree is maintained incrementally: an insert descends to a leaf and widens the summaries
//! on its path; a leaf past [`LEAF_ROWS_MAX`] rows splits at the median of its widest feature;
//! a removal takes the row out of its leaf and recomputes the summaries on the path (so bounds
//! stay tight). If inserts arrive in an order that makes the tree too deep, or removals leave
//! too many empty nodes, the task's tree is rebuilt balanced (amortised; bounded by
//! [`DEPTH_SLACK`] and [`LEAF_ROWS_MEAN_MIN`]).
//!
//! String constraints (region, model family, modalities, publishers) compare 64-bit hashes on
//! the row and are confirmed on the full SAD (or the verified MIC) only for a candidate about to
//! enter the top-k.
//!
//! Trust: a row's `expires_at` is the earlier of its lease and its verified MIC's expiry, and zero
//! for a record whose credentials are pending or rejected — so the lease check every intent
//! makes also excludes those, at no extra cost for intents without trust constraints.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use nexus_trust_core::verify::Verified;

use crate::Timestamp;
use crate::resolve::static_terms;
use crate::sad::Sad;
use crate::store::ServiceKey;
use crate::trust::{TrustVerdict, mic_deadline};
use crate::vivaldi::{Coord, VIVALDI_DIMENSIONS};

/// Rows a leaf holds before it splits in two. Checking a row against the bound costs a few ns,
/// expanding an inner node (two child bounds with a square root and divisions, heap work) tens
/// of ns: 64 measured ~10–25 % faster than 32 for the bench's k <= 10 intents at 100k adverts.
pub(crate) const LEAF_ROWS_MAX: usize = 64;
/// A task's tree is rebuilt balanced when an insert lands deeper than
/// `2 · log2(leaves) + DEPTH_SLACK`.
pub(crate) const DEPTH_SLACK: usize = 8;
/// A task's tree is rebuilt when its leaves hold fewer rows than this on average (and it has
/// more than 64 nodes): removals leave near-empty leaves behind.
pub(crate) const LEAF_ROWS_MEAN_MIN: usize = 4;
/// Split features: the three static score terms, then the coordinate's dimensions.
const FEATURES: usize = 3 + VIVALDI_DIMENSIONS;
/// How much a coordinate dimension (seconds) counts against a score term (0..=1) when a leaf
/// picks the feature to split on: the proximity term falls by ~2 per second of RTT near 100 ms.
const COORD_SPLIT_SCALE: f64 = 2.0;
const NO_PARENT: u32 = u32::MAX;

/// A string's hash as the index compares it (0 stands for the empty string).
pub(crate) fn str_hash(s: &str) -> u64 {
    if s.is_empty() {
        0
    } else {
        xxhash_rust::xxh3::xxh3_64(s.as_bytes()) | 1
    }
}

/// The bit of a modality in a row's modality mask.
pub(crate) fn modality_bit(m: &str) -> u64 {
    1u64 << (xxhash_rust::xxh3::xxh3_64(m.as_bytes()) % 64)
}

/// The bit of a string hash in a summary's presence mask.
pub(crate) fn hash_bit(h: u64) -> u64 {
    1u64 << (h % 64)
}

/// A coordinate packed for the row (f32; proximity needs no more).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackedCoord {
    pub(crate) vec: [f32; VIVALDI_DIMENSIONS],
    pub(crate) height: f32,
    pub(crate) adjustment: f32,
}

impl PackedCoord {
    fn of(c: &Coord) -> Self {
        PackedCoord {
            vec: c.vec.map(|x| x as f32),
            height: c.height as f32,
            adjustment: c.adjustment as f32,
        }
    }

    /// Serf's `DistanceTo` from `local`, seconds.
    pub(crate) fn distance_from(&self, local: &Coord) -> f64 {
        let mut sum = 0.0;
        for (a, b) in local.vec.iter().zip(self.vec) {
            let d = a - b as f64;
            sum += d * d;
        }
        let raw = sum.sqrt() + local.height + self.height as f64;
        let adjusted = raw + local.adjustment + self.adjustment as f64;
        if adjusted > 0.0 { adjusted } else { raw }
    }
}

// Lease ends are kept as a u64 newtype: a row is no larger than with bare milliseconds.
const _: () = assert!(size_of::<Timestamp>() == size_of::<u64>());

/// What resolve needs of one live entry, without touching the SAD.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// The lease end, capped by the verified MIC's expiry; 0 while the credentials are pending
    /// or rejected.
    pub(crate) expires_at: Timestamp,
    pub(crate) price: u64,
    pub(crate) region: u64,
    pub(crate) family: u64,
    pub(crate) modalities: u64,
    pub(crate) context_window: u32,
    pub(crate) p50: u32,
    pub(crate) p99: u32,
    /// The verified MIC's serial; 0 without one.
    pub(crate) serial: u64,
    /// [`str_hash`] of the verified MIC's publisher; 0 without one.
    pub(crate) publisher: u64,
    /// 1 + the highest proven minimum score (0: nothing proven); over all predicates, and over
    /// those that require safety.
    pub(crate) attest_any: u32,
    pub(crate) attest_safe: u32,
    /// Latency, load and price terms of the score (they depend on the SAD alone).
    pub(crate) terms: [f64; 3],
    pub(crate) coord: Option<PackedCoord>,
    /// The entry's descriptor (shared with the record): the exact check of a candidate about
    /// to enter the top k and the answer read it without a lookup by key.
    pub(crate) sad: Arc<Sad>,
    /// The verified credentials (the exact publisher check reads them).
    pub(crate) verified: Option<Arc<Verified>>,
}

impl Row {
    pub(crate) fn of(
        sad: &Arc<Sad>,
        coord: Option<&Coord>,
        expires_at: Timestamp,
        trust: &TrustVerdict,
        unix_epoch_ms: u64,
    ) -> Row {
        let verified = trust.verified();
        let expires_at = match trust {
            TrustVerdict::Unclaimed => expires_at,
            TrustVerdict::Pending | TrustVerdict::Rejected(_) => Timestamp::ZERO,
            TrustVerdict::Verified(v) => {
                expires_at.min(mic_deadline(v.not_after_ms, unix_epoch_ms))
            }
        };
        let score = |s: Option<u16>| s.map_or(0, |s| u32::from(s) + 1);
        Row {
            expires_at,
            serial: verified.map_or(0, |v| v.serial),
            publisher: verified.map_or(0, |v| str_hash(&v.publisher)),
            attest_any: score(verified.and_then(|v| v.best_score())),
            attest_safe: score(verified.and_then(|v| v.best_safe_score())),
            verified: verified.cloned(),
            price: sad.price_micros_per_1k,
            region: str_hash(&sad.region),
            family: str_hash(&sad.model_family),
            modalities: sad.modalities.iter().fold(0, |m, x| m | modality_bit(x)),
            context_window: sad.context_window,
            p50: sad.latency_ms_p50,
            p99: sad.latency_ms_p99,
            terms: static_terms(sad),
            coord: coord.map(PackedCoord::of),
            sad: Arc::clone(sad),
        }
    }

    fn feature(&self, d: usize) -> f64 {
        if d < 3 {
            self.terms[d]
        } else {
            self.coord
                .map_or(0.0, |c| f64::from(c.vec[d - 3]) * COORD_SPLIT_SCALE)
        }
    }
}

/// What every row under a tree node has at most / at least: the bounds resolve prunes with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Summary {
    pub(crate) rows: u32,
    /// Largest latency, load and price term.
    pub(crate) term_max: [f64; 3],
    /// Some row has a coordinate; the box below is over those rows.
    pub(crate) coords: bool,
    /// Some row has no coordinate (its proximity is neutral).
    pub(crate) uncoordinated: bool,
    pub(crate) coord_lo: [f32; VIVALDI_DIMENSIONS],
    pub(crate) coord_hi: [f32; VIVALDI_DIMENSIONS],
    pub(crate) height_min: f32,
    pub(crate) adjustment_min: f32,
    pub(crate) expires_max: Timestamp,
    pub(crate) context_max: u32,
    /// Smallest non-zero (known) p50 / p99; `u32::MAX` if none is known.
    pub(crate) p50_min: u32,
    pub(crate) p99_min: u32,
    pub(crate) price_min: u64,
    pub(crate) mic_any: bool,
    /// OR of [`hash_bit`] of the rows' publisher hashes (rows with a verified MIC).
    pub(crate) publishers: u64,
    /// Largest `attest_any` / `attest_safe` of the rows.
    pub(crate) attest_any_max: u32,
    pub(crate) attest_safe_max: u32,
    /// OR of the rows' modality masks.
    pub(crate) modalities: u64,
    /// OR of [`hash_bit`] of the rows' region / family hashes.
    pub(crate) regions: u64,
    pub(crate) families: u64,
}

impl Summary {
    fn empty() -> Summary {
        Summary {
            rows: 0,
            term_max: [f64::NEG_INFINITY; 3],
            coords: false,
            uncoordinated: false,
            coord_lo: [f32::INFINITY; VIVALDI_DIMENSIONS],
            coord_hi: [f32::NEG_INFINITY; VIVALDI_DIMENSIONS],
            height_min: f32::INFINITY,
            adjustment_min: f32::INFINITY,
            expires_max: Timestamp::ZERO,
            context_max: 0,
            p50_min: u32::MAX,
            p99_min: u32::MAX,
            price_min: u64::MAX,
            mic_any: false,
            publishers: 0,
            attest_any_max: 0,
            attest_safe_max: 0,
            modalities: 0,
            regions: 0,
            families: 0,
        }
    }

    fn add(&mut self, row: &Row) {
        self.rows += 1;
        for (m, t) in self.term_max.iter_mut().zip(row.terms) {
            *m = m.max(t);
        }
        match &row.coord {
            Some(c) => {
                self.coords = true;
                for i in 0..VIVALDI_DIMENSIONS {
                    self.coord_lo[i] = self.coord_lo[i].min(c.vec[i]);
                    self.coord_hi[i] = self.coord_hi[i].max(c.vec[i]);
                }
                self.height_min = self.height_min.min(c.height);
                self.adjustment_min = self.adjustment_min.min(c.adjustment);
            }
            None => self.uncoordinated = true,
        }
        self.expires_max = self.expires_max.max(row.expires_at);
        self.context_max = self.context_max.max(row.context_window);
        if row.p50 != 0 {
            self.p50_min = self.p50_min.min(row.p50);
        }
        if row.p99 != 0 {
            self.p99_min = self.p99_min.min(row.p99);
        }
        self.price_min = self.price_min.min(row.price);
        self.mic_any |= row.serial != 0;
        if row.serial != 0 {
            self.publishers |= hash_bit(row.publisher);
        }
        self.attest_any_max = self.attest_any_max.max(row.attest_any);
        self.attest_safe_max = self.attest_safe_max.max(row.attest_safe);
        self.modalities |= row.modalities;
        self.regions |= hash_bit(row.region);
        self.families |= hash_bit(row.family);
    }

    fn merge(&mut self, o: &Summary) {
        self.rows += o.rows;
        for (m, t) in self.term_max.iter_mut().zip(o.term_max) {
            *m = m.max(t);
        }
        self.coords |= o.coords;
        self.uncoordinated |= o.uncoordinated;
        for i in 0..VIVALDI_DIMENSIONS {
            self.coord_lo[i] = self.coord_lo[i].min(o.coord_lo[i]);
            self.coord_hi[i] = self.coord_hi[i].max(o.coord_hi[i]);
        }
        self.height_min = self.height_min.min(o.height_min);
        self.adjustment_min = self.adjustment_min.min(o.adjustment_min);
        self.expires_max = self.expires_max.max(o.expires_max);
        self.context_max = self.context_max.max(o.context_max);
        self.p50_min = self.p50_min.min(o.p50_min);
        self.p99_min = self.p99_min.min(o.p99_min);
        self.price_min = self.price_min.min(o.price_min);
        self.mic_any |= o.mic_any;
        self.publishers |= o.publishers;
        self.attest_any_max = self.attest_any_max.max(o.attest_any_max);
        self.attest_safe_max = self.attest_safe_max.max(o.attest_safe_max);
        self.modalities |= o.modalities;
        self.regions |= o.regions;
        self.families |= o.families;
    }

    pub(crate) fn of_rows(rows: &[Row]) -> Summary {
        let mut s = Summary::empty();
        for r in rows {
            s.add(r);
        }
        s
    }

    /// Whether `self` bounds everything `inner` bounds (for invariant checks).
    fn covers(&self, inner: &Summary) -> bool {
        let mut merged = self.clone();
        merged.merge(inner);
        merged.rows = self.rows;
        merged == *self
    }
}

/// A leaf's rows and their ids in the task's [`Slot`]s (parallel vectors), in descending order
/// of the sum of their static terms (ties: by id), and `suffix_max[i]`, the largest of each
/// static term over `rows[i..]`: a leaf scan stops at the first row whose suffix bound is below
/// the k-th best score, whatever the intent's weights.
#[derive(Debug, Default)]
pub(crate) struct Leaf {
    pub(crate) rows: Vec<Row>,
    pub(crate) ids: Vec<u32>,
    pub(crate) suffix_max: Vec<[f64; 3]>,
}

impl Leaf {
    /// A leaf over `pairs` (any order).
    fn of(mut pairs: Vec<(Row, u32)>) -> Leaf {
        pairs.sort_by(|a, b| row_order((&a.0, a.1), (&b.0, b.1)));
        let (rows, ids): (Vec<Row>, Vec<u32>) = pairs.into_iter().unzip();
        let mut suffix_max = Vec::new();
        suffix_maxima(&rows, &mut suffix_max);
        Leaf {
            rows,
            ids,
            suffix_max,
        }
    }

    /// Where row `id` goes in the order.
    fn position(&self, row: &Row, id: u32) -> usize {
        self.rows
            .iter()
            .zip(&self.ids)
            .take_while(|(r, i)| row_order((r, **i), (row, id)) == Ordering::Less)
            .count()
    }
}

/// The order of rows in a [`Leaf`]: larger static terms sum first, then lower id.
fn row_order(a: (&Row, u32), b: (&Row, u32)) -> Ordering {
    terms_sum(b.0)
        .total_cmp(&terms_sum(a.0))
        .then(a.1.cmp(&b.1))
}

/// `out[i]` = the largest of each static term over `rows[i..]`.
fn suffix_maxima(rows: &[Row], out: &mut Vec<[f64; 3]>) {
    out.clear();
    out.resize(rows.len(), [f64::NEG_INFINITY; 3]);
    let mut max = [f64::NEG_INFINITY; 3];
    for (i, row) in rows.iter().enumerate().rev() {
        for (m, t) in max.iter_mut().zip(row.terms) {
            *m = m.max(t);
        }
        out[i] = max;
    }
}

#[derive(Debug)]
pub(crate) enum NodeKind {
    Leaf(Leaf),
    /// Children; inserts go left when the feature `dim` is below `split`.
    Inner {
        dim: u8,
        split: f64,
        children: [u32; 2],
    },
}

#[derive(Debug)]
pub(crate) struct TreeNode {
    pub(crate) summary: Summary,
    pub(crate) kind: NodeKind,
    parent: u32,
}

/// Where a row lives in one tree: tree node (a leaf) and position in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    node: u32,
    pos: u32,
}

impl Loc {
    /// Not in the tree.
    const NOWHERE: Loc = Loc {
        node: u32::MAX,
        pos: u32::MAX,
    };
}

/// Trees a row can be in: the task's, and one each of its region, context, MIC and publisher
/// partitions ([`Part::tree`]).
const TREES: usize = 5;
/// The task's tree over all its rows.
const TREE_ALL: usize = 0;

/// One row of a task, held once: its key and where the trees hold its copies. Trees and
/// coordinate groups refer to it by id (its index in [`TaskIndex::slots`]).
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) key: ServiceKey,
    /// Per tree (`TREE_ALL`, then [`Part::tree`]); [`Loc::NOWHERE`] where the row is not.
    locs: [Loc; TREES],
}

/// One tree over a task's rows (all of them, or one partition's). Leaves hold copies of the
/// rows (the search reads them in order, without indirection) and the rows' slot ids; the keys
/// and the rows' locations are kept once, in the task's slots.
#[derive(Debug)]
pub(crate) struct TaskRows {
    /// Which of a slot's locations is this tree's.
    tree: usize,
    /// The tree; node 0 is the root.
    pub(crate) nodes: Vec<TreeNode>,
}

impl TaskRows {
    fn new(tree: usize) -> TaskRows {
        TaskRows {
            tree,
            nodes: vec![TreeNode {
                summary: Summary::empty(),
                kind: NodeKind::Leaf(Leaf::default()),
                parent: NO_PARENT,
            }],
        }
    }

    /// Rows in the tree (including those whose lease ended but that
    /// [`crate::Registry::expire`] has not yet removed).
    pub(crate) fn len(&self) -> usize {
        self.nodes[0].summary.rows as usize
    }

    /// Every leaf (in tree order).
    pub(crate) fn leaves(&self) -> impl Iterator<Item = &Leaf> {
        self.nodes.iter().filter_map(|n| match &n.kind {
            NodeKind::Leaf(l) => Some(l),
            NodeKind::Inner { .. } => None,
        })
    }

    fn row(&self, loc: Loc) -> &Row {
        match &self.nodes[loc.node as usize].kind {
            NodeKind::Leaf(l) => &l.rows[loc.pos as usize],
            NodeKind::Inner { .. } => unreachable!("a location points at a leaf"),
        }
    }

    fn leaf_mut(&mut self, node: u32) -> &mut Leaf {
        match &mut self.nodes[node as usize].kind {
            NodeKind::Leaf(l) => l,
            NodeKind::Inner { .. } => unreachable!("a location points at a leaf"),
        }
    }

    /// Adds row `id` (not in the tree yet).
    fn insert(&mut self, id: u32, row: Row, slots: &mut [Slot]) {
        // Descend, widening summaries on the way.
        let mut at = 0u32;
        let mut depth = 0usize;
        loop {
            let node = &mut self.nodes[at as usize];
            node.summary.add(&row);
            match &node.kind {
                NodeKind::Inner {
                    dim,
                    split,
                    children,
                } => {
                    at = if row.feature(usize::from(*dim)) < *split {
                        children[0]
                    } else {
                        children[1]
                    };
                    depth += 1;
                }
                NodeKind::Leaf(_) => break,
            }
        }
        let tree = self.tree;
        let leaf = self.leaf_mut(at);
        let pos = leaf.position(&row, id);
        leaf.rows.insert(pos, row);
        leaf.ids.insert(pos, id);
        suffix_maxima(&leaf.rows, &mut leaf.suffix_max);
        for (p, moved) in leaf.ids.iter().enumerate().skip(pos) {
            slots[*moved as usize].locs[tree] = Loc {
                node: at,
                pos: p as u32,
            };
        }
        if self.leaf_mut(at).rows.len() > LEAF_ROWS_MAX {
            // ~2 nodes per leaf: log2(nodes) ≈ log2(leaves) + 1.
            let log2_nodes = (usize::BITS - self.nodes.len().leading_zeros()) as usize;
            if depth > 2 * log2_nodes + DEPTH_SLACK {
                self.rebuild(slots);
            } else {
                self.split_leaf(at, slots);
            }
        }
    }

    /// Takes row `id` (in the tree) out.
    fn remove(&mut self, id: u32, slots: &mut [Slot]) {
        let tree = self.tree;
        let loc = std::mem::replace(&mut slots[id as usize].locs[tree], Loc::NOWHERE);
        let leaf = self.leaf_mut(loc.node);
        leaf.rows.remove(loc.pos as usize);
        leaf.ids.remove(loc.pos as usize);
        suffix_maxima(&leaf.rows, &mut leaf.suffix_max);
        for (p, moved) in leaf.ids.iter().enumerate().skip(loc.pos as usize) {
            slots[*moved as usize].locs[tree] = Loc {
                node: loc.node,
                pos: p as u32,
            };
        }
        // Recompute the leaf's summary, then each ancestor's from its children.
        let leaf_summary = match &self.nodes[loc.node as usize].kind {
            NodeKind::Leaf(l) => Summary::of_rows(&l.rows),
            NodeKind::Inner { .. } => unreachable!("a location points at a leaf"),
        };
        self.nodes[loc.node as usize].summary = leaf_summary;
        let mut at = self.nodes[loc.node as usize].parent;
        while at != NO_PARENT {
            let NodeKind::Inner { children, .. } = &self.nodes[at as usize].kind else {
                unreachable!("a parent is an inner node")
            };
            let mut s = self.nodes[children[0] as usize].summary.clone();
            s.merge(&self.nodes[children[1] as usize].summary);
            self.nodes[at as usize].summary = s;
            at = self.nodes[at as usize].parent;
        }
        if self.nodes.len() > 2 * self.len() / LEAF_ROWS_MEAN_MIN + 64 {
            self.rebuild(slots);
        }
    }

    /// Splits a leaf at the median of its widest feature into two new leaves.
    fn split_leaf(&mut self, at: u32, slots: &mut [Slot]) {
        let NodeKind::Leaf(leaf) = std::mem::replace(
            &mut self.nodes[at as usize].kind,
            NodeKind::Leaf(Leaf::default()),
        ) else {
            unreachable!("only leaves split")
        };
        let pairs: Vec<(Row, u32)> = leaf.rows.into_iter().zip(leaf.ids).collect();
        self.build_into(at, pairs, slots);
    }

    /// Turns node `at` (whose summary and parent are already right) into a balanced subtree
    /// over `pairs`, and points the rows' locations at their leaves.
    fn build_into(&mut self, at: u32, mut pairs: Vec<(Row, u32)>, slots: &mut [Slot]) {
        if pairs.len() <= LEAF_ROWS_MAX {
            let leaf = Leaf::of(pairs);
            for (pos, id) in leaf.ids.iter().enumerate() {
                slots[*id as usize].locs[self.tree] = Loc {
                    node: at,
                    pos: pos as u32,
                };
            }
            self.nodes[at as usize].kind = NodeKind::Leaf(leaf);
            return;
        }
        let dim = widest_feature(&pairs);
        let mid = pairs.len() / 2;
        pairs.select_nth_unstable_by(mid, |a, b| {
            a.0.feature(dim)
                .total_cmp(&b.0.feature(dim))
                .then_with(|| a.1.cmp(&b.1))
        });
        let split = pairs[mid].0.feature(dim);
        let right = pairs.split_off(mid);
        let mut children = [0u32; 2];
        for (i, half) in [pairs, right].into_iter().enumerate() {
            let id = self.nodes.len() as u32;
            self.nodes.push(TreeNode {
                summary: Summary::of_rows_pairs(&half),
                kind: NodeKind::Leaf(Leaf::default()),
                parent: at,
            });
            children[i] = id;
            self.build_into(id, half, slots);
        }
        self.nodes[at as usize].kind = NodeKind::Inner {
            dim: dim as u8,
            split,
            children,
        };
    }

    /// Rebuilds the whole tree balanced.
    fn rebuild(&mut self, slots: &mut [Slot]) {
        let mut pairs = Vec::with_capacity(self.len());
        for node in std::mem::take(&mut self.nodes) {
            if let NodeKind::Leaf(l) = node.kind {
                pairs.extend(l.rows.into_iter().zip(l.ids));
            }
        }
        self.nodes.push(TreeNode {
            summary: Summary::of_rows_pairs(&pairs),
            kind: NodeKind::Leaf(Leaf::default()),
            parent: NO_PARENT,
        });
        self.build_into(0, pairs, slots);
    }

    /// Checks the tree's structure and that every row's slot points at it; returns the rows.
    fn check_invariants(&self, task: &str, slots: &[Slot]) -> usize {
        let mut rows = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            match &node.kind {
                NodeKind::Leaf(l) => {
                    assert_eq!(l.rows.len(), l.ids.len(), "{task}: leaf vectors");
                    assert!(
                        l.rows
                            .iter()
                            .zip(&l.ids)
                            .collect::<Vec<_>>()
                            .windows(2)
                            .all(|w| row_order((w[0].0, *w[0].1), (w[1].0, *w[1].1))
                                == Ordering::Less),
                        "{task}: leaf {i} order"
                    );
                    let mut suffix = Vec::new();
                    suffix_maxima(&l.rows, &mut suffix);
                    assert_eq!(l.suffix_max, suffix, "{task}: leaf {i} suffix bounds");
                    assert_eq!(
                        node.summary,
                        Summary::of_rows(&l.rows),
                        "{task}: leaf {i} summary"
                    );
                    for (pos, id) in l.ids.iter().enumerate() {
                        let slot = &slots[*id as usize];
                        assert_eq!(
                            slot.locs[self.tree],
                            Loc {
                                node: i as u32,
                                pos: pos as u32
                            },
                            "{task}: location of {:?}",
                            slot.key
                        );
                    }
                    rows += l.rows.len();
                }
                NodeKind::Inner { children, .. } => {
                    let [a, b] = children.map(|c| &self.nodes[c as usize]);
                    assert_eq!(a.parent, i as u32, "{task}: parent link");
                    assert_eq!(b.parent, i as u32, "{task}: parent link");
                    assert_eq!(
                        node.summary.rows,
                        a.summary.rows + b.summary.rows,
                        "{task}: node {i} row count"
                    );
                    assert!(
                        node.summary.covers(&a.summary) && node.summary.covers(&b.summary),
                        "{task}: node {i} bounds its children"
                    );
                }
            }
        }
        assert_eq!(rows, self.len(), "{task}: rows in leaves");
        assert_eq!(self.nodes[0].parent, NO_PARENT, "{task}: root");
        rows
    }
}

impl Summary {
    fn of_rows_pairs(pairs: &[(Row, u32)]) -> Summary {
        let mut s = Summary::empty();
        for (r, _) in pairs {
            s.add(r);
        }
        s
    }
}

/// The feature with the largest spread over `pairs` (ties: the lowest feature).
fn widest_feature(pairs: &[(Row, u32)]) -> usize {
    let mut lo = [f64::INFINITY; FEATURES];
    let mut hi = [f64::NEG_INFINITY; FEATURES];
    for (row, _) in pairs {
        for d in 0..FEATURES {
            let f = row.feature(d);
            lo[d] = lo[d].min(f);
            hi[d] = hi[d].max(f);
        }
    }
    let mut best = 0;
    for d in 1..FEATURES {
        if hi[d] - lo[d] > hi[best] - lo[best] {
            best = d;
        }
    }
    best
}

/// A subset of a task's rows kept in a tree of its own, so a selective intent searches only
/// the rows that can meet its most selective constraint and the tree's bounds are over those
/// rows alone (a node's score bound over all rows is loose when few pass).
///
/// Every row is in one `Region` and one `Context` partition; rows with verified credentials are
/// also in `Mic` and in the `Publisher` partition of their MIC's publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    /// Rows whose region has this [`str_hash`].
    Region(u64),
    /// Rows whose context window has this bit length (`u32::BITS - leading_zeros`): a bucket
    /// `2^(b-1) ..= 2^b - 1`, so `context_window >= min` only holds in buckets `>= ctx_bucket(min)`.
    Context(u8),
    /// Rows with verified credentials (every credentials constraint needs them).
    Mic,
    /// Rows with verified credentials from a publisher with this [`str_hash`].
    Publisher(u64),
}

/// The [`Part::Context`] bucket of a context window.
pub(crate) fn ctx_bucket(context_window: u32) -> u8 {
    (u32::BITS - context_window.leading_zeros()) as u8
}

impl Part {
    /// The partitions a row belongs to (2 or 4).
    fn of(row: &Row) -> ([Part; 4], usize) {
        let mut parts = [
            Part::Region(row.region),
            Part::Context(ctx_bucket(row.context_window)),
            Part::Mic,
            Part::Mic,
        ];
        let len = if row.verified.is_some() {
            parts[3] = Part::Publisher(row.publisher);
            4
        } else {
            2
        };
        (parts, len)
    }

    /// The partition's index in a [`Slot`]'s locations.
    fn tree(self) -> usize {
        match self {
            Part::Region(_) => 1,
            Part::Context(_) => 2,
            Part::Mic => 3,
            Part::Publisher(_) => 4,
        }
    }
}

/// A coordinate's bits (the key rows are grouped by; `None`: no coordinate).
type CoordBits = Option<[u32; VIVALDI_DIMENSIONS + 2]>;

fn coord_bits(c: Option<&PackedCoord>) -> CoordBits {
    c.map(|c| {
        let mut bits = [0u32; VIVALDI_DIMENSIONS + 2];
        for (b, x) in bits.iter_mut().zip(c.vec) {
            *b = x.to_bits();
        }
        bits[VIVALDI_DIMENSIONS] = c.height.to_bits();
        bits[VIVALDI_DIMENSIONS + 1] = c.adjustment.to_bits();
        bits
    })
}

/// A task's rows that share one coordinate (usually one origin node's services): one distance
/// gives the exact proximity term of every row in it.
///
/// Rows are kept in descending order of the sum of their static terms, and `suffix_max[i]` is
/// the largest of each static term over `rows[i..]`: a scan can stop at the first row whose
/// suffix bound is below the k-th best score, whatever the intent's weights.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) coord: Option<PackedCoord>,
    /// Of the rows below.
    pub(crate) summary: Summary,
    pub(crate) rows: Vec<Row>,
    /// The rows' slot ids.
    pub(crate) ids: Vec<u32>,
    pub(crate) suffix_max: Vec<[f64; 3]>,
}

impl Group {
    fn new(coord: Option<PackedCoord>) -> Group {
        Group {
            coord,
            summary: Summary::empty(),
            rows: Vec::new(),
            ids: Vec::new(),
            suffix_max: Vec::new(),
        }
    }

    /// Where a row goes: after every row with a larger terms sum (ties: by key).
    fn position(&self, row: &Row, key: &ServiceKey, slots: &[Slot]) -> usize {
        let sum = terms_sum(row);
        let start = self.rows.partition_point(|r| terms_sum(r) > sum);
        start
            + self.rows[start..]
                .iter()
                .zip(&self.ids[start..])
                .take_while(|(r, id)| terms_sum(r) == sum && slots[**id as usize].key < *key)
                .count()
    }

    /// Recomputes `suffix_max` and the summary after a change (O(rows): a group is one origin's
    /// services carrying the task, bounded by the per-origin capacity).
    fn refresh(&mut self) {
        self.summary = Summary::of_rows(&self.rows);
        suffix_maxima(&self.rows, &mut self.suffix_max);
    }

    /// What the group search reads of this group before it takes it.
    fn head(&self) -> GroupHead {
        GroupHead {
            coord: self.coord,
            expires_max: self.summary.expires_max,
            cover: Cover::of(&self.rows),
        }
    }
}

/// Points of a [`Cover`] at most (a group's front is larger only when many of its rows trade
/// one static term for another; measured on the bench's groups of ~32 rows: median 9, at most
/// 18, 16 or fewer for 99 % of them).
pub(crate) const COVER_MAX: usize = 16;

/// A few points, each at least as large in every static term as some of a group's rows, such
/// that every row is covered by one (`point >= row.terms` in all three terms): for any
/// non-negative weights, the largest weighted sum over the points bounds every row's, so the
/// group search bounds a group by its best point rather than by the largest of each term over
/// all rows (which no single row may reach).
///
/// The points are the rows' Pareto front (the rows no other row beats or equals in all three
/// terms); past [`COVER_MAX`] the last two (in the rows' order, so the smallest sums) are
/// merged into their termwise maximum until they fit (still covering, a little looser). Stored as `f32` rounded up, so a
/// point is `>=` the `f64` terms it covers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cover {
    points: [[f32; 3]; COVER_MAX],
    len: u8,
}

impl Cover {
    /// The cover of `rows`, given in descending order of their terms' sum (a [`Group`]'s
    /// order): a row can only be covered by a row at least as large in sum, so each row is
    /// compared with the front kept so far.
    fn of(rows: &[Row]) -> Cover {
        let mut front: Vec<[f64; 3]> = Vec::new();
        for row in rows {
            if !front.iter().any(|p| dominates(p, &row.terms)) {
                front.push(row.terms);
            }
        }
        while front.len() > COVER_MAX
            && let Some(last) = front.pop()
            && let Some(prev) = front.last_mut()
        {
            for (p, l) in prev.iter_mut().zip(last) {
                *p = p.max(l);
            }
        }
        let mut cover = Cover {
            points: [[0.0; 3]; COVER_MAX],
            len: front.len() as u8,
        };
        for (out, p) in cover.points.iter_mut().zip(&front) {
            *out = p.map(f32_up);
        }
        cover
    }

    /// The points (each `>=` the terms of the rows it covers).
    pub(crate) fn points(&self) -> &[[f32; 3]] {
        &self.points[..usize::from(self.len)]
    }

    /// Whether some point is `>=` `terms` in all three terms.
    pub(crate) fn covers(&self, terms: &[f64; 3]) -> bool {
        self.points()
            .iter()
            .any(|p| dominates(&p.map(f64::from), terms))
    }
}

/// `a >= b` in every term.
fn dominates(a: &[f64; 3], b: &[f64; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x >= y)
}

/// The smallest `f32` that is `>= x` (for a finite `x` within `f32`'s range).
fn f32_up(x: f64) -> f32 {
    let f = x as f32;
    if f64::from(f) < x { f.next_up() } else { f }
}

/// What the group search reads of each group of a task before it takes any: kept densely, in
/// the order of [`TaskIndex::groups`], so the pass over all groups that computes their bounds
/// reads a few contiguous cache lines per group.
#[derive(Clone, Debug)]
pub(crate) struct GroupHead {
    pub(crate) coord: Option<PackedCoord>,
    /// The latest lease end of the group's rows.
    pub(crate) expires_max: Timestamp,
    pub(crate) cover: Cover,
}

/// The order key of a row in its [`Group`] and [`Leaf`].
fn terms_sum(row: &Row) -> f64 {
    row.terms[0] + row.terms[1] + row.terms[2]
}

/// One task's rows: each row's key once (its [`Slot`]), the tree over all of them, the same
/// rows again in one tree per [`Part`] they belong to, and once more grouped by coordinate (for
/// intents where proximity weighs more than the other terms together).
#[derive(Debug)]
pub(crate) struct TaskIndex {
    /// `(context window, key)` → the row's slot id; explain's order.
    order: BTreeMap<(u32, ServiceKey), u32>,
    /// Slot id → key and locations. Ids of removed rows are reused (`free`).
    slots: Vec<Slot>,
    free: Vec<u32>,
    pub(crate) all: TaskRows,
    pub(crate) parts: BTreeMap<Part, TaskRows>,
    /// The rows grouped by coordinate, and each group's head (parallel vectors; a group that
    /// empties is swapped out with the last).
    pub(crate) groups: Vec<Group>,
    pub(crate) heads: Vec<GroupHead>,
    /// Coordinate → its group's index in `groups`.
    group_at: BTreeMap<CoordBits, u32>,
}

impl TaskIndex {
    fn new() -> TaskIndex {
        TaskIndex {
            order: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            all: TaskRows::new(TREE_ALL),
            parts: BTreeMap::new(),
            groups: Vec::new(),
            heads: Vec::new(),
            group_at: BTreeMap::new(),
        }
    }

    /// Live entries carrying the task (including those whose lease ended but that
    /// [`crate::Registry::expire`] has not yet removed).
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// The key of row `id` (an id from a leaf or group of this task).
    pub(crate) fn key(&self, id: u32) -> &ServiceKey {
        &self.slots[id as usize].key
    }

    /// The rows in `(context window, key)` order.
    pub(crate) fn ordered(&self) -> impl Iterator<Item = (&ServiceKey, &Row)> {
        self.order
            .iter()
            .map(|((_, key), id)| (key, self.all.row(self.slots[*id as usize].locs[TREE_ALL])))
    }

    /// The partition's rows, if any row belongs to it.
    pub(crate) fn part(&self, part: Part) -> Option<&TaskRows> {
        self.parts.get(&part)
    }

    /// The context partitions holding windows `>= min` (and some below it in the first one).
    pub(crate) fn context_from(&self, min: u32) -> impl Iterator<Item = &TaskRows> {
        self.parts
            .range(Part::Context(ctx_bucket(min))..=Part::Context(u8::MAX))
            .map(|(_, rows)| rows)
    }

    fn insert(&mut self, key: &ServiceKey, row: Row) -> bool {
        let ordered = (row.context_window, key.clone());
        if self.order.contains_key(&ordered) {
            return false;
        }
        let slot = Slot {
            key: key.clone(),
            locs: [Loc::NOWHERE; TREES],
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.order.insert(ordered, id);
        let (parts, len) = Part::of(&row);
        for part in &parts[..len] {
            self.parts
                .entry(*part)
                .or_insert_with(|| TaskRows::new(part.tree()))
                .insert(id, row.clone(), &mut self.slots);
        }
        let bits = coord_bits(row.coord.as_ref());
        let g = match self.group_at.get(&bits) {
            Some(g) => *g as usize,
            None => {
                let group = Group::new(row.coord);
                self.heads.push(group.head());
                self.groups.push(group);
                self.group_at.insert(bits, (self.groups.len() - 1) as u32);
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[g];
        let at = group.position(&row, key, &self.slots);
        group.rows.insert(at, row.clone());
        group.ids.insert(at, id);
        group.refresh();
        self.heads[g] = group.head();
        self.all.insert(id, row, &mut self.slots);
        true
    }

    fn remove(&mut self, key: &ServiceKey, context_window: u32) -> bool {
        let Some(id) = self.order.remove(&(context_window, key.clone())) else {
            return false;
        };
        let row = self.all.row(self.slots[id as usize].locs[TREE_ALL]);
        let (parts, len) = Part::of(row);
        let bits = coord_bits(row.coord.as_ref());
        if let Some(&g) = self.group_at.get(&bits) {
            let g = g as usize;
            let group = &mut self.groups[g];
            if let Some(i) = group.ids.iter().position(|x| *x == id) {
                group.rows.remove(i);
                group.ids.remove(i);
                group.refresh();
            }
            if group.rows.is_empty() {
                self.group_at.remove(&bits);
                self.groups.swap_remove(g);
                self.heads.swap_remove(g);
                if let Some(moved) = self.groups.get(g) {
                    self.group_at
                        .insert(coord_bits(moved.coord.as_ref()), g as u32);
                }
            } else {
                self.heads[g] = group.head();
            }
        }
        for part in &parts[..len] {
            if let Some(rows) = self.parts.get_mut(part) {
                rows.remove(id, &mut self.slots);
                if rows.len() == 0 {
                    self.parts.remove(part);
                }
            }
        }
        self.all.remove(id, &mut self.slots);
        self.free.push(id);
        true
    }

    fn check_invariants(&self, task: &str) {
        let live = self.slots.len() - self.free.len();
        assert_eq!(self.order.len(), live, "{task}: slots in use");
        for ((context_window, key), id) in &self.order {
            let slot = &self.slots[*id as usize];
            assert_eq!(&slot.key, key, "{task}: slot {id} key");
            assert!(!self.free.contains(id), "{task}: slot {id} in use and free");
            let row = self.all.row(slot.locs[TREE_ALL]);
            assert_eq!(row.context_window, *context_window, "{task}: {key:?} row");
        }
        let rows = self.all.check_invariants(task, &self.slots);
        assert_eq!(rows, self.len(), "{task}: rows in the task's tree");
        let mut in_parts = BTreeMap::<usize, usize>::new();
        for (part, rows) in &self.parts {
            assert_eq!(rows.tree, part.tree(), "{task}: {part:?} tree index");
            rows.check_invariants(&format!("{task} {part:?}"), &self.slots);
            assert!(rows.len() > 0, "{task}: empty partition {part:?} kept");
            for leaf in rows.leaves() {
                for (row, id) in leaf.rows.iter().zip(&leaf.ids) {
                    let key = &self.slots[*id as usize].key;
                    let (parts, len) = Part::of(row);
                    assert!(parts[..len].contains(part), "{task}: {key:?} in {part:?}");
                    assert!(
                        self.order.get(&(row.context_window, key.clone())) == Some(id),
                        "{task}: {key:?} in {part:?} but not in the task"
                    );
                }
            }
            *in_parts.entry(part.tree()).or_default() += rows.len();
        }
        let mut grouped = 0;
        assert_eq!(self.groups.len(), self.heads.len(), "{task}: group heads");
        assert_eq!(self.groups.len(), self.group_at.len(), "{task}: group map");
        for (bits, g) in &self.group_at {
            let group = &self.groups[*g as usize];
            let head = &self.heads[*g as usize];
            assert_eq!(
                coord_bits(head.coord.as_ref()),
                *bits,
                "{task}: group head key"
            );
            assert_eq!(
                head.expires_max, group.summary.expires_max,
                "{task}: group head lease"
            );
            assert_eq!(head.cover, Cover::of(&group.rows), "{task}: group cover");
            for row in &group.rows {
                assert!(
                    head.cover.covers(&row.terms),
                    "{task}: group cover misses a row"
                );
            }
            assert!(
                !group.rows.is_empty(),
                "{task}: empty coordinate group kept"
            );
            assert_eq!(group.rows.len(), group.ids.len(), "{task}: group vectors");
            assert_eq!(
                group.summary,
                Summary::of_rows(&group.rows),
                "{task}: group summary"
            );
            assert_eq!(coord_bits(group.coord.as_ref()), *bits, "{task}: group key");
            assert!(
                group
                    .rows
                    .windows(2)
                    .all(|w| terms_sum(&w[0]) >= terms_sum(&w[1])),
                "{task}: group order"
            );
            let mut max = [f64::NEG_INFINITY; 3];
            for (i, row) in group.rows.iter().enumerate().rev() {
                for (m, t) in max.iter_mut().zip(row.terms) {
                    *m = m.max(t);
                }
                assert_eq!(
                    group.suffix_max.get(i),
                    Some(&max),
                    "{task}: suffix bound {i}"
                );
            }
            assert_eq!(
                group.suffix_max.len(),
                group.rows.len(),
                "{task}: suffix bounds"
            );
            for (row, id) in group.rows.iter().zip(&group.ids) {
                let key = &self.slots[*id as usize].key;
                assert_eq!(
                    coord_bits(row.coord.as_ref()),
                    *bits,
                    "{task}: {key:?} group"
                );
                assert!(
                    self.order.get(&(row.context_window, key.clone())) == Some(id),
                    "{task}: {key:?} grouped but not in the task"
                );
            }
            grouped += group.rows.len();
        }
        assert_eq!(grouped, self.len(), "{task}: rows over coordinate groups");
        let verified = self.ordered().filter(|(_, r)| r.verified.is_some()).count();
        let count = |t| in_parts.get(&t).copied().unwrap_or(0);
        assert_eq!(count(1), self.len(), "{task}: rows over region partitions");
        assert_eq!(count(2), self.len(), "{task}: rows over context partitions");
        assert_eq!(count(3), verified, "{task}: rows in the MIC partition");
        assert_eq!(count(4), verified, "{task}: rows over publisher partitions");
    }
}

/// Task tag → that task's rows.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_task: BTreeMap<String, TaskIndex>,
    rows: usize,
}

impl Index {
    pub(crate) fn insert(
        &mut self,
        key: &ServiceKey,
        sad: &Arc<Sad>,
        coord: Option<&Coord>,
        expires_at: Timestamp,
        trust: &TrustVerdict,
        unix_epoch_ms: u64,
    ) {
        let row = Row::of(sad, coord, expires_at, trust, unix_epoch_ms);
        for task in &sad.tasks {
            let rows = self
                .by_task
                .entry(task.clone())
                .or_insert_with(TaskIndex::new);
            if rows.insert(key, row.clone()) {
                self.rows += 1;
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &ServiceKey, sad: &Sad) {
        for task in &sad.tasks {
            if let Some(rows) = self.by_task.get_mut(task.as_str()) {
                if rows.remove(key, sad.context_window) {
                    self.rows -= 1;
                }
                if rows.len() == 0 {
                    self.by_task.remove(task.as_str());
                }
            }
        }
    }

    pub(crate) fn task(&self, task: &str) -> Option<&TaskIndex> {
        self.by_task.get(task)
    }

    /// Whether `key` is indexed under `task` with this context window.
    pub(crate) fn contains(&self, task: &str, context_window: u32, key: &ServiceKey) -> bool {
        self.by_task
            .get(task)
            .is_some_and(|t| t.order.contains_key(&(context_window, key.clone())))
    }

    /// Rows over all tasks (an entry with n tags has n rows; partition copies not counted).
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Distinct task tags indexed.
    pub(crate) fn tasks(&self) -> usize {
        self.by_task.len()
    }

    /// Asserts the trees' structure: every row in exactly one leaf at its recorded location,
    /// every summary exact at the leaves and covering its children above; each partition holds
    /// exactly the task's rows that belong to it.
    pub(crate) fn check_invariants(&self) {
        let mut rows = 0;
        for (task, t) in &self.by_task {
            t.check_invariants(task);
            rows += t.len();
        }
        assert_eq!(rows, self.rows, "index rows over tasks");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    /// A row with these static terms (the rest from a default descriptor, one coordinate).
    fn row(terms: [f64; 3]) -> Row {
        let sad = Arc::new(Sad::new("svc", "llm.chat"));
        let coord = Coord::default();
        let mut row = Row::of(
            &sad,
            Some(&coord),
            Timestamp::from_millis(10),
            &TrustVerdict::Unclaimed,
            0,
        );
        row.terms = terms;
        row
    }

    /// Rows in a group's order (descending terms sum).
    fn ordered(terms: &[[f64; 3]]) -> Vec<Row> {
        let mut rows: Vec<Row> = terms.iter().map(|t| row(*t)).collect();
        rows.sort_by(|a, b| terms_sum(b).total_cmp(&terms_sum(a)));
        rows
    }

    #[test]
    fn a_cover_is_the_front_of_the_rows_static_terms() {
        let rows = ordered(&[
            [0.9, 0.1, 0.1],
            [0.1, 0.9, 0.1],
            [0.5, 0.5, 0.5],
            // Beaten in every term by the row above: not a point of its own.
            [0.4, 0.5, 0.3],
            [0.1, 0.1, 0.9],
            // Equal to a point: covered by it.
            [0.9, 0.1, 0.1],
        ]);
        let cover = Cover::of(&rows);
        let mut points: Vec<[f32; 3]> = cover.points().to_vec();
        points.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
        assert_eq!(
            points,
            vec![
                [0.1, 0.1, 0.9].map(f32_up),
                [0.1, 0.9, 0.1].map(f32_up),
                [0.5, 0.5, 0.5].map(f32_up),
                [0.9, 0.1, 0.1].map(f32_up),
            ]
        );
        for r in &rows {
            assert!(cover.covers(&r.terms), "{:?}", r.terms);
        }
        // A row above every point is not covered.
        assert!(!cover.covers(&[0.6, 0.6, 0.6]));
    }

    #[test]
    fn a_large_front_is_merged_down_to_cover_max_points_that_still_cover_every_row() {
        // 40 rows on a plane: none beats another, so all 40 are on the front.
        let terms: Vec<[f64; 3]> = (0..40)
            .map(|i| {
                let a = f64::from(i) / 40.0;
                [a, 1.0 - a, 0.3]
            })
            .collect();
        let rows = ordered(&terms);
        let cover = Cover::of(&rows);
        assert_eq!(cover.points().len(), COVER_MAX);
        for r in &rows {
            assert!(cover.covers(&r.terms), "{:?}", r.terms);
        }
    }

    #[test]
    fn points_are_rounded_up_to_f32() {
        // 0.7's nearest f32 is below it; the cover's point must not be.
        let x = 0.7f64;
        assert!(f64::from(x as f32) < x);
        assert!(f64::from(f32_up(x)) >= x);
        assert!(f64::from(f32_up(x).next_down()) < x);
        assert_eq!(f32_up(0.5), 0.5);
        let cover = Cover::of(&ordered(&[[x, x, x]]));
        assert!(cover.covers(&[x, x, x]));
    }

    #[test]
    fn group_heads_follow_inserts_and_removals() {
        let mut task = TaskIndex::new();
        let node = |i: u8| NodeId([i; 32]);
        let mut keys = Vec::new();
        for i in 0..30u8 {
            let mut r = row([f64::from(i) / 30.0, 0.5, 1.0 - f64::from(i) / 30.0]);
            // Three coordinates: three groups.
            if let Some(c) = r.coord.as_mut() {
                c.vec[0] = f32::from(i % 3);
            }
            let key = ServiceKey::new(node(i), format!("svc-{i}"));
            assert!(task.insert(&key, r));
            keys.push(key);
        }
        task.check_invariants("t");
        assert_eq!(task.heads.len(), 3);
        // Empty the first group: the last is swapped into its place.
        for (i, key) in keys.iter().enumerate() {
            if i % 3 == 0 {
                assert!(task.remove(key, 0));
            }
        }
        task.check_invariants("t");
        assert_eq!(task.heads.len(), 2);
    }

    #[test]
    #[should_panic(expected = "group cover")]
    fn invariants_catch_a_cover_that_misses_a_row() {
        let mut task = TaskIndex::new();
        for i in 0..5u8 {
            let key = ServiceKey::new(NodeId([i; 32]), "svc");
            assert!(task.insert(&key, row([0.2 * f64::from(i), 0.5, 0.5])));
        }
        task.check_invariants("t");
        // A cover without its best point no longer bounds the best row.
        let mut rows = task.groups[0].rows.clone();
        rows.remove(0);
        task.heads[0].cover = Cover::of(&rows);
        task.check_invariants("t");
    }
}
