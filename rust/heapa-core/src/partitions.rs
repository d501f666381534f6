//! Where every held prompt is: the cold queue, the scored set (its hard and
//! easy ranges), the archive, the cooling set, in flight, and the
//! weighted-draw index.
//!
//! `Partitions` is the only code that changes a slot's state; every move
//! keeps the sets, the state column, the weights and the in-flight count in
//! agreement, and `rebalance` restores the hard/easy split. Bulk changes
//! (a lineage refresh touching much of the pool, loading a snapshot) go
//! through one path, [`Partitions::rebuild`], which builds the sets from
//! sorted keys in O(n).

use std::collections::BTreeSet;

use crate::cold::{ColdQueues, QueueId};
use crate::config::{Boundary, Cold, Config, Sampling};
use crate::draw::{Draw, Weight};
use crate::keys::{key, key_slot, store_score, Key};
use crate::rng::Rng;
use crate::scored::Scored;
use crate::slots::{Slots, State};

/// Where hard ends and easy begins.
#[derive(Clone, Copy, Debug)]
enum Split {
    /// The `q` quantile of scored prompts: hard = the round(q·s) lowest keys.
    Quantile(f64),
    /// Scores below the target (normalised) are hard.
    Absolute(f32),
}

pub(crate) struct Partitions {
    split: Split,
    /// Unscored prompts, FIFO by insertion sequence.
    pub cold: ColdQueues,
    /// Hard and easy prompts, split at the boundary.
    pub scored: Scored,
    /// Reported prompts waiting for on-drain reinsertion or cooling down
    /// (ordered by score: they are eviction candidates).
    pub archive: BTreeSet<Key>,
    /// Archived prompts sitting out `revisit_fraction`: (drawable once
    /// `sampled` reaches this, seq, slot). Entries whose prompt left the
    /// archive or was retrained are stale and skipped.
    pub cooling: BTreeSet<(u64, u64, u32)>,
    /// Hard and easy prompts by sampling weight (uniform / prioritized only).
    draw: Option<Draw>,
    pub in_flight: u64,
}

impl Partitions {
    pub fn new(cfg: &Config) -> Partitions {
        let split = match cfg.boundary {
            Boundary::Quantile => Split::Quantile(cfg.low_fraction),
            Boundary::Absolute => Split::Absolute(store_score(cfg.normalize(cfg.target))),
        };
        let cut = match split {
            // Every key of a lower score sorts below the target's first key.
            Split::Absolute(t) => key(t, 0, 0),
            // Moved by `rebalance`.
            Split::Quantile(_) => 0,
        };
        let weight = match cfg.sampling {
            Sampling::Prioritized => Weight::Prioritized {
                epsilon: cfg.priority_epsilon,
                inv_temperature: 1.0 / cfg.priority_temperature,
            },
            _ => Weight::Uniform,
        };
        let weighted = matches!(cfg.sampling, Sampling::Uniform | Sampling::Prioritized);
        Partitions {
            split,
            cold: ColdQueues::new(cfg.cold == Cold::Prior),
            scored: Scored::new(cut),
            archive: BTreeSet::new(),
            cooling: BTreeSet::new(),
            draw: weighted.then(|| Draw::new(weight)),
            in_flight: 0,
        }
    }

    /// Scored prompts that can be drawn (hard + easy).
    pub fn scored(&self) -> usize {
        self.scored.len()
    }

    /// Prompts that can be drawn (cold + hard + easy).
    pub fn live(&self) -> usize {
        self.cold.len() + self.scored()
    }

    /// Makes room for slots `0..n`.
    pub fn grow(&mut self, n: usize) {
        if let Some(d) = self.draw.as_mut() {
            d.grow(n);
        }
    }

    // ---- single moves -----------------------------------------------------------

    pub fn place_cold(&mut self, slots: &mut Slots, slot: u32) {
        self.cold.insert(slots, slot);
        slots.set_state(slot, State::Cold);
    }

    /// Puts a scored slot into the hard or easy range, by the cut (the
    /// caller rebalances).
    pub fn place_scored(&mut self, slots: &mut Slots, slot: u32) {
        let st = self.scored.insert(slots.key(slot));
        slots.set_state(slot, st);
        if let Some(d) = self.draw.as_mut() {
            d.insert(slot, slots.score[slot as usize]);
        }
    }

    pub fn place_archived(&mut self, slots: &mut Slots, slot: u32) {
        self.archive.insert(slots.key(slot));
        slots.set_state(slot, State::Archived);
    }

    /// Archives a just-trained prompt until `sampled` reaches `ready`.
    pub fn cool(&mut self, slots: &mut Slots, slot: u32, ready: u64) {
        self.place_archived(slots, slot);
        self.cooling.insert((ready, slots.seq[slot as usize], slot));
    }

    /// Whether a cooling entry still describes its prompt.
    pub fn cooling_entry_live(slots: &Slots, seq: u64, slot: u32) -> bool {
        slots.state(slot) == State::Archived && slots.seq[slot as usize] == seq
    }

    /// Returns cooled-down prompts to the heaps before a draw of `k`
    /// (`sampled` prompts drawn so far); when fewer than `k` prompts are
    /// drawable, the earliest-ready ones come back early rather than leave
    /// the batch short.
    pub fn release_cooled(&mut self, slots: &mut Slots, sampled: u64, k: usize) {
        while let Some(&(ready, seq, slot)) = self.cooling.first() {
            if ready > sampled && self.live() >= k {
                break;
            }
            self.cooling.pop_first();
            if Self::cooling_entry_live(slots, seq, slot) {
                self.archive.remove(&slots.key(slot));
                self.place_scored(slots, slot);
            }
        }
        self.rebalance(slots);
    }

    /// Empties the archive (and the cooling set), returning its slots from
    /// the hardest; they are unplaced, waiting to be placed again.
    pub fn take_archive(&mut self, slots: &mut Slots) -> Vec<u32> {
        self.cooling.clear();
        let keys = std::mem::take(&mut self.archive);
        keys.into_iter()
            .map(|k| {
                let slot = key_slot(k);
                slots.set_state(slot, State::Free); // transient: placed by the caller
                slot
            })
            .collect()
    }

    /// Up to `n` prompts from the head of cold queue `queue`, oldest first,
    /// now in flight (appended to `out`); how many.
    pub fn pop_cold(
        &mut self,
        slots: &mut Slots,
        queue: QueueId,
        n: usize,
        out: &mut Vec<u32>,
    ) -> usize {
        let from = out.len();
        let taken = self.cold.pop_many(slots, queue, n, out);
        // A queue's members are scattered over the slots.
        slots.touch(&out[from..]);
        for &slot in &out[from..] {
            slots.set_state(slot, State::InFlight);
        }
        self.in_flight += taken as u64;
        taken
    }

    /// Up to `need` hard or easy prompts drawn by weight (uniform /
    /// prioritized modes), now in flight. Their keys are forgotten, not
    /// removed: they are scattered over the set (see [`Scored`]).
    pub fn draw_weighted(&mut self, slots: &mut Slots, rng: &mut Rng, need: usize) -> Vec<u32> {
        let d = self
            .draw
            .as_mut()
            .expect("weighted modes keep a draw index");
        let out = d.draw(rng, need, |s| slots.score[s as usize]);
        slots.touch(&out);
        // Counted without branching on the state, so that the loads of
        // 512 random slots overlap instead of queueing one by one.
        let mut hard = 0;
        for &slot in &out {
            let st = slots.state(slot);
            debug_assert!(matches!(st, State::Hard | State::Easy), "drawn from {st:?}");
            hard += usize::from(st == State::Hard);
            slots.set_state(slot, State::InFlight);
        }
        self.scored.forget(hard, out.len() - hard);
        self.scored.settle(slots);
        self.in_flight += out.len() as u64;
        out
    }

    /// Moves hard or easy slots to in flight (already-taken slots are skipped).
    pub fn take_scored(&mut self, slots: &mut Slots, picks: &[u32]) {
        for &s in picks {
            if matches!(slots.state(s), State::Hard | State::Easy) {
                self.unplace(slots, s);
                slots.set_state(s, State::InFlight);
                self.in_flight += 1;
            }
        }
    }

    /// An in-flight prompt comes back (reported or released): unplaced,
    /// waiting for the caller to place it.
    pub fn land(&mut self, slots: &mut Slots, slot: u32) {
        debug_assert_eq!(slots.state(slot), State::InFlight);
        self.in_flight -= 1;
        slots.set_state(slot, State::Free); // transient: placed by the caller
    }

    /// Takes a slot out of the pool for good (eviction or drop).
    pub fn remove(&mut self, slots: &mut Slots, slot: u32) {
        self.unplace(slots, slot);
        slots.set_state(slot, State::Free);
    }

    /// Changes a placed prompt's score, keeping its set consistent (the
    /// caller rebalances).
    pub fn rescore(&mut self, slots: &mut Slots, slot: u32, v: f32) {
        match slots.state(slot) {
            State::Archived => {
                self.archive.remove(&slots.key(slot));
                slots.set_score(slot, v);
                self.archive.insert(slots.key(slot));
            }
            State::Hard | State::Easy => {
                self.unplace(slots, slot);
                slots.set_score(slot, v);
                self.place_scored(slots, slot);
            }
            _ => slots.set_score(slot, v),
        }
    }

    /// Takes a slot out of whatever set holds it (its state is left stale).
    fn unplace(&mut self, slots: &Slots, slot: u32) {
        let k = slots.key(slot);
        match slots.state(slot) {
            State::Cold => {
                self.cold.remove(slots, slot);
            }
            State::Hard | State::Easy => {
                self.scored.remove(slots, k);
                if let Some(d) = self.draw.as_mut() {
                    d.remove(slot, slots.score[slot as usize]);
                }
            }
            State::Archived => {
                self.archive.remove(&k);
            }
            State::InFlight => self.in_flight -= 1,
            State::Free => {}
        }
    }

    // ---- the split --------------------------------------------------------------

    /// How many of `live` (sorted scored keys) are hard.
    pub fn split_point(&self, live: &[Key]) -> usize {
        match self.split {
            Split::Quantile(q) => quantile_count(q, live.len()),
            Split::Absolute(_) => live.partition_point(|&k| k < self.scored.cut()),
        }
    }

    /// The absolute boundary (normalised), if that is the split rule.
    pub fn target(&self) -> Option<f32> {
        match self.split {
            Split::Absolute(t) => Some(t),
            Split::Quantile(_) => None,
        }
    }

    /// Restores the exact quantile split: hard = the round(q·s) lowest keys
    /// (under an absolute boundary the cut is fixed and every placement
    /// final).
    pub fn rebalance(&mut self, slots: &mut Slots) {
        if let Split::Quantile(q) = self.split {
            let hard = quantile_count(q, self.scored());
            self.scored.move_cut(slots, hard);
        }
    }

    // ---- bulk -------------------------------------------------------------------

    /// Rebuilds the scored set (its hard/easy split) and the archive from
    /// sorted keys (O(n)): `live` are every drawable scored prompt,
    /// `archived` every archived one. States and weights of the live prompts
    /// follow the split.
    pub fn rebuild(&mut self, slots: &mut Slots, live: Vec<Key>, archived: Vec<Key>) {
        let split = self.split_point(&live);
        for (i, &k) in live.iter().enumerate() {
            let st = if i < split { State::Hard } else { State::Easy };
            slots.set_state(key_slot(k), st);
        }
        for &k in &archived {
            slots.set_state(key_slot(k), State::Archived);
        }
        if let Some(d) = self.draw.as_mut() {
            d.clear();
            for &k in &live {
                d.insert(key_slot(k), slots.score[key_slot(k) as usize]);
            }
        }
        let cut = match self.split {
            Split::Absolute(_) => self.scored.cut(),
            // Just above the last hard key, so the easy range starts at `split`.
            Split::Quantile(_) => live[..split].last().map_or(0, |&k| k + 1),
        };
        self.scored.set_sorted(&live, cut);
        self.archive = archived.into_iter().collect();
    }

    /// Bulk [`Self::rescore`] for a large share of the pool: new keys are
    /// sorted once and merged with the unchanged ones, then the sets are
    /// rebuilt, instead of a random B-tree remove + insert per prompt.
    pub fn rescore_all(&mut self, slots: &mut Slots, updates: &[(u32, f32)]) {
        let mut changed = vec![false; slots.len()];
        let (mut scored, mut archived): (Vec<Key>, Vec<Key>) = (Vec::new(), Vec::new());
        for &(slot, v) in updates {
            let st = slots.state(slot);
            slots.set_score(slot, v);
            match st {
                State::Hard | State::Easy => scored.push(slots.key(slot)),
                State::Archived => archived.push(slots.key(slot)),
                _ => continue,
            }
            changed[slot as usize] = true;
        }
        let unchanged = |k: &Key| !changed[key_slot(*k) as usize];
        let mut live = self.scored.take(slots);
        live.retain(unchanged);
        let mut archive: Vec<Key> = std::mem::take(&mut self.archive).into_iter().collect();
        archive.retain(unchanged);
        self.rebuild(
            slots,
            merge_sorted(live, scored),
            merge_sorted(archive, archived),
        );
    }

    /// Bytes of the sets and weights. B-tree overhead is estimated from std's
    /// node layout (11 keys per node at roughly 70% fill).
    pub fn memory_bytes(&self) -> usize {
        (self.scored.entries() + self.archive.len() + self.cold.len()) * 26
            + self.cooling.len() * 40
            + self.draw.as_ref().map_or(0, Draw::bytes)
    }

    /// Panics if the sets disagree with the state column (tests; O(n)).
    pub fn check(&self, slots: &Slots, revisit: bool) {
        if let Split::Quantile(q) = self.split {
            assert_eq!(self.scored.hard_len(), quantile_count(q, self.scored()));
        }
        self.scored.check(slots);
        if let Some(d) = &self.draw {
            assert_eq!(d.len(), self.scored(), "drawable = hard + easy");
        }
        let mut counts = [0usize; 6];
        for s in 0..slots.len() {
            counts[slots.state[s] as usize] += 1;
        }
        assert_eq!(counts[State::Cold as usize], self.cold.len());
        self.cold.check(slots);
        assert_eq!(counts[State::Hard as usize], self.scored.hard_len());
        assert_eq!(counts[State::Easy as usize], self.scored.easy_len());
        assert_eq!(counts[State::Archived as usize], self.archive.len());
        assert_eq!(counts[State::InFlight as usize] as u64, self.in_flight);
        if revisit {
            let live = self
                .cooling
                .iter()
                .filter(|&&(_, q, s)| Self::cooling_entry_live(slots, q, s))
                .count();
            assert_eq!(live, self.archive.len(), "every archived prompt is cooling");
        }
    }
}

/// round(q·s): how many of `s` scored prompts the hard side holds.
fn quantile_count(q: f64, s: usize) -> usize {
    (q * s as f64 + 0.5).floor() as usize
}

/// Merges a sorted vector with an unsorted one (sorted here).
fn merge_sorted(a: Vec<Key>, mut b: Vec<Key>) -> Vec<Key> {
    b.sort_unstable();
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] < b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}
