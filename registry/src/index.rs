//! The resolve index: per task tag, the live entries that carry it, ordered by context window,
//! each with a compact row of the numbers resolve filters and scores on. A `min_context`
//! constraint is a range scan; the other constraints are checked on the row; string constraints
//! (region, model family, modalities) compare 64-bit hashes on the row and are confirmed on the
//! full SAD only for a candidate about to enter the top-k.

use std::collections::BTreeMap;

use crate::Millis;
use crate::resolve::static_terms;
use crate::sad::Sad;
use crate::store::ServiceKey;
use crate::vivaldi::{Coord, VIVALDI_DIMENSIONS};

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

/// What resolve needs of one live entry, without touching the SAD.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) expires_at: Millis,
    pub(crate) price: u64,
    pub(crate) region: u64,
    pub(crate) family: u64,
    pub(crate) modalities: u64,
    pub(crate) p50: u32,
    pub(crate) p99: u32,
    pub(crate) mic: bool,
    /// Latency, load and price terms of the score (they depend on the SAD alone).
    pub(crate) terms: [f64; 3],
    pub(crate) coord: Option<PackedCoord>,
}

impl Row {
    pub(crate) fn of(sad: &Sad, coord: Option<&Coord>, expires_at: Millis) -> Row {
        Row {
            expires_at,
            price: sad.price_micros_per_1k,
            region: str_hash(&sad.region),
            family: str_hash(&sad.model_family),
            modalities: sad.modalities.iter().fold(0, |m, x| m | modality_bit(x)),
            p50: sad.latency_ms_p50,
            p99: sad.latency_ms_p99,
            mic: sad.trust.mic_serial.is_some(),
            terms: static_terms(sad),
            coord: coord.map(PackedCoord::of),
        }
    }
}

/// Task tag → (context window, key) → row.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_task: BTreeMap<String, BTreeMap<(u32, ServiceKey), Row>>,
    rows: usize,
}

impl Index {
    pub(crate) fn insert(
        &mut self,
        key: &ServiceKey,
        sad: &Sad,
        coord: Option<&Coord>,
        expires_at: Millis,
    ) {
        let row = Row::of(sad, coord, expires_at);
        for task in &sad.tasks {
            let rows = self.by_task.entry(task.clone()).or_default();
            if rows
                .insert((sad.context_window, key.clone()), row.clone())
                .is_none()
            {
                self.rows += 1;
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &ServiceKey, sad: &Sad) {
        for task in &sad.tasks {
            if let Some(rows) = self.by_task.get_mut(task.as_str()) {
                if rows.remove(&(sad.context_window, key.clone())).is_some() {
                    self.rows -= 1;
                }
                if rows.is_empty() {
                    self.by_task.remove(task.as_str());
                }
            }
        }
    }

    pub(crate) fn task(&self, task: &str) -> Option<&BTreeMap<(u32, ServiceKey), Row>> {
        self.by_task.get(task)
    }

    /// Rows over all tasks (an entry with n tags has n rows).
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Distinct task tags indexed.
    pub(crate) fn tasks(&self) -> usize {
        self.by_task.len()
    }
}
