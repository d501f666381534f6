//! Lineage forest and topology-aware re-estimation (HeaPA's ChildAgg /
//! PathAgg).
//!
//! Each prompt stores its parent's id. The insertion log lists prompts oldest
//! first, and a child is always newer than its parent, so one reverse pass
//! over the log visits every child before its parent: no recursion, no
//! explicit child lists, and a chain a million deep costs the same as a flat
//! forest. A parent that has been evicted no longer resolves, so its children
//! simply become roots (their own values are kept as they are).

use crate::config::{Direction, RefreshMode, RefreshParams, Scope};
use crate::error::Result;
use crate::keys::store_score;
use crate::pool::Pool;
use crate::slots::{State, HAS_SCORE, NO_PARENT};

/// Topology of a batch of prompts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lineage {
    /// Parent id, or `NO_PARENT` (`u64::MAX`) for a root.
    pub parent: Vec<u64>,
    /// Number of (living) ancestors; 0 for a root.
    pub depth: Vec<u32>,
    pub n_children: Vec<u32>,
    /// Descendant leaves; 1 for a leaf.
    pub n_leaves: Vec<u64>,
}

/// Difficulty adjustment of a child's value before it is aggregated into its
/// parent. `Reference` is the reference code's mapping (v/d for v ≥ 0, v·d
/// otherwise: the same map that predicts a child from its parent);
/// `Inverse` maps the child back to the parent's difficulty (v·d for v ≥ 0,
/// v/d otherwise).
pub fn adjust(v: f64, d: f64, direction: Direction) -> f64 {
    let d = d.max(1e-6);
    match (direction, v >= 0.0) {
        (Direction::Reference, true) | (Direction::Inverse, false) => v / d,
        (Direction::Reference, false) | (Direction::Inverse, true) => v * d,
    }
}

impl Pool {
    /// Living (slot, parent slot) pairs in insertion order.
    fn forest(&self) -> Vec<(u32, Option<u32>)> {
        self.log
            .iter()
            .filter_map(|&id| self.slot_of(id))
            .map(|s| {
                let p = self.slots.parent[s as usize];
                (
                    s,
                    if p == NO_PARENT {
                        None
                    } else {
                        self.slot_of(p)
                    },
                )
            })
            .collect()
    }

    /// Bottom-up re-estimation over the whole forest. Returns how many
    /// prompts received a new value.
    pub fn refresh(&mut self, p: &RefreshParams) -> usize {
        self.refresh_via(p, None)
    }

    /// `refresh` with the re-keying strategy forced (`Some(true)`: bulk
    /// rebuild, `Some(false)`: one prompt at a time), so tests can check
    /// that both give the same pool.
    #[doc(hidden)]
    pub fn refresh_via(&mut self, p: &RefreshParams, bulk: Option<bool>) -> usize {
        let n = self.slots.len();
        // One record per slot, so a child's update to its parent touches one
        // cache line instead of three (parents are scattered at 1M prompts).
        let mut acc = vec![Acc::default(); n];
        let inv_t = 1.0 / p.temperature;
        let mut updates: Vec<(u32, f32)> = Vec::new();
        for (slot, parent) in self.forest().into_iter().rev() {
            let s = slot as usize;
            let own =
                (self.slots.flags[s] & HAS_SCORE != 0).then(|| f64::from(self.slots.score[s]));
            let Acc {
                w: sum_w,
                wv: sum_wv,
                leaves,
            } = acc[s];
            let is_leaf = leaves == 0.0;
            let value = if !is_leaf && sum_w > 0.0 {
                let m = sum_wv / sum_w;
                let v = own
                    .map_or(m, |a| p.blend * a + (1.0 - p.blend) * m)
                    .clamp(-1.0, 1.0);
                let writable = match self.state(slot) {
                    State::Archived => true,
                    State::Hard | State::Easy => p.scope == Scope::All,
                    _ => false,
                };
                if writable {
                    updates.push((slot, store_score(v)));
                }
                Some(v)
            } else {
                own
            };
            if let Some(ps) = parent {
                let ell = if is_leaf { 1.0 } else { leaves };
                let pa = &mut acc[ps as usize];
                pa.leaves += ell.max(1.0);
                if let Some(v) = value {
                    let w = match p.mode {
                        // (powf dominates the pass otherwise; x^1 is exact.)
                        RefreshMode::Path if inv_t == 1.0 => ell,
                        RefreshMode::Path => ell.powf(inv_t),
                        RefreshMode::Children => 1.0,
                    };
                    let d = f64::from(self.slots.difficulty[s]);
                    pa.w += w;
                    pa.wv += w * adjust(v, d, p.direction);
                }
            }
        }
        let count = updates.len();
        let placed = self.parts.scored() + self.parts.archive.len();
        if bulk.unwrap_or(count * 8 >= placed) {
            self.parts.rescore_all(&mut self.slots, &updates);
        } else {
            for (slot, v) in updates {
                self.parts.rescore(&mut self.slots, slot, v);
            }
        }
        self.parts.rebalance(&mut self.slots);
        self.counters.refreshes += 1;
        count
    }

    /// Parent, depth, child count and descendant-leaf count of each id.
    pub fn lineage(&self, ids: &[u64]) -> Result<Lineage> {
        let slots: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(index, &id)| {
                self.slot_of(id)
                    .ok_or(crate::error::CoreError::UnknownPrompt { id, index })
            })
            .collect::<Result<_>>()?;
        let n = self.slots.len();
        let forest = self.forest();
        let mut depth = vec![0u32; n];
        for &(s, p) in &forest {
            if let Some(p) = p {
                depth[s as usize] = depth[p as usize] + 1;
            }
        }
        let mut kids = vec![0u32; n];
        let mut leaves = vec![0u64; n];
        for &(s, p) in forest.iter().rev() {
            let ell = leaves[s as usize].max(1);
            if let Some(p) = p {
                kids[p as usize] += 1;
                leaves[p as usize] += ell;
            }
        }
        Ok(Lineage {
            parent: slots.iter().map(|&s| self.live_parent(s)).collect(),
            depth: slots.iter().map(|&s| depth[s as usize]).collect(),
            n_children: slots.iter().map(|&s| kids[s as usize]).collect(),
            n_leaves: slots.iter().map(|&s| leaves[s as usize].max(1)).collect(),
        })
    }
}

/// Per-node accumulators of the bottom-up pass.
#[derive(Clone, Copy, Default)]
struct Acc {
    /// Sum of child weights, and of weight × adjusted child value.
    w: f64,
    wv: f64,
    /// Descendant leaves (0 while no child has been seen: a leaf).
    leaves: f64,
}
