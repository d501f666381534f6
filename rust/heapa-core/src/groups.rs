//! Groups of prompts (source dataset, level, topic…) and what reports have
//! shown about each: the evidence behind the estimates that rank
//! never-scored prompts (`cold = "prior"`).
//!
//! A group's estimate is its observed pass rate shrunk toward the pool-wide
//! rate by `prior_strength` pseudo-observations (empirical Bayes with a
//! Beta prior centred on the pool): a group seen a few times stays near the
//! pool, one seen often speaks for itself. With `prior_half_life` > 0 an
//! observation's weight halves every that many steps, so an estimate from
//! step 20 says less at step 2,000.

use std::collections::{BTreeMap, HashMap};

use crate::digest;

/// Decayed count and sum of pass-rate observations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    pub n: f64,
    pub sum: f64,
    /// The step `n` and `sum` are expressed at.
    pub step: u64,
}

impl Evidence {
    /// This evidence seen from `step` (older observations weigh less).
    pub fn at(self, step: u64, half_life: f64) -> Evidence {
        if half_life <= 0.0 || step <= self.step {
            return self;
        }
        let f = (-((step - self.step) as f64) / half_life).exp2();
        Evidence {
            n: self.n * f,
            sum: self.sum * f,
            step,
        }
    }

    pub fn observe(&mut self, p: f64, step: u64, half_life: f64) {
        *self = self.at(step, half_life);
        self.n += 1.0;
        self.sum += p;
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Groups {
    pub names: Vec<String>,
    index: HashMap<String, u32>,
    pub evidence: Vec<Evidence>,
    /// Every observation of the pool, grouped or not.
    pub pool: Evidence,
    /// Per (group, prior band) queue id: what prompts that came with a prior
    /// in that band actually did, so a miscalibrated predictor is corrected
    /// band by band as evidence accrues. The band index alone (group
    /// `NO_GROUP` ignored: id `u64::MAX << 8 | band`) pools every group's, to
    /// calibrate the predictor across the pool.
    pub bands: BTreeMap<u64, Evidence>,
}

impl Groups {
    /// Rebuilds from stored names and evidence (names must be distinct).
    pub fn from_parts(
        names: Vec<String>,
        evidence: Vec<Evidence>,
        pool: Evidence,
        bands: BTreeMap<u64, Evidence>,
    ) -> Groups {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Groups {
            names,
            index,
            evidence,
            pool,
            bands,
        }
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// The index of a group, registering it on first use.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(g) = self.get(name) {
            return g;
        }
        let g = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), g);
        self.evidence.push(Evidence::default());
        g
    }

    /// The pool-wide pass rate at `step` (0.5 before any report).
    pub fn pool_rate(&self, step: u64, half_life: f64) -> f64 {
        let e = self.pool.at(step, half_life);
        if e.n > 0.0 {
            e.sum / e.n
        } else {
            0.5
        }
    }

    /// A group's pass-rate estimate at `step`, shrunk toward the pool-wide
    /// rate (`NO_GROUP`: the pool-wide rate itself).
    pub fn estimate(&self, g: u32, step: u64, half_life: f64, strength: f64) -> f64 {
        let pool = self.pool_rate(step, half_life);
        match self.evidence.get(g as usize) {
            Some(e) => {
                let e = e.at(step, half_life);
                (e.sum + strength * pool) / (e.n + strength)
            }
            None => pool,
        }
    }

    /// A prior band's own evidence at `step` (none yet: zero).
    pub fn band(&self, id: u64, step: u64, half_life: f64) -> Evidence {
        self.bands
            .get(&id)
            .map_or_else(Evidence::default, |e| e.at(step, half_life))
    }

    /// A digest of names and evidence (for the fingerprint; O(groups + bands)).
    pub fn digest(&self) -> u64 {
        let mut d = digest::small(u64::MAX, &self.pool.n.to_bits())
            ^ digest::small(u64::MAX - 1, &self.pool.sum.to_bits())
            ^ digest::small(u64::MAX - 2, &self.pool.step);
        for (i, (name, e)) in self.names.iter().zip(&self.evidence).enumerate() {
            let i = i as u64 * 4;
            d = d
                .wrapping_add(digest::element(i, name.as_bytes()))
                .wrapping_add(digest::small(i + 1, &e.n.to_bits()))
                .wrapping_add(digest::small(i + 2, &e.sum.to_bits()))
                .wrapping_add(digest::small(i + 3, &e.step));
        }
        for (&id, e) in &self.bands {
            let i = (1u64 << 62) | id << 2;
            d = d
                .wrapping_add(digest::small(i, &e.n.to_bits()))
                .wrapping_add(digest::small(i + 1, &e.sum.to_bits()))
                .wrapping_add(digest::small(i + 2, &e.step));
        }
        d
    }
}
