//! The HeaPA prompt pool.
//!
//! Per-prompt state lives in struct-of-arrays columns indexed by a dense `u32`
//! slot. A prompt's public id is `generation * (capacity + 1) + slot`, so an id
//! resolves to its slot in O(1) without a hash map, and a stale id (evicted,
//! slot reused) is detected by its generation.
//!
//! Partitions:
//! - *cold*: unscored prompts, FIFO by insertion sequence;
//! - *hard* / *easy*: scored live prompts in two ordered sets keyed by
//!   (score, seq, slot) -- equal scores least recently trained first -- split
//!   at the `low_fraction` quantile (kept exact after every call) or at an
//!   absolute score;
//! - *archive*: reported prompts waiting for on-drain reinsertion or sitting
//!   out `revisit_fraction` (ordered by score too: eviction candidates);
//! - *in flight*: sampled, waiting for `report` or `release`.
//!
//! Every operation is O(log n) per prompt touched; ordered sets are B-trees,
//! so boundary sampling reads the 2·need nearest candidates without popping
//! them and removes only the chosen ones.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use crate::config::{
    check_difficulty, clamp_difficulty, Boundary, Config, Eviction, Reinsert, Sampling, Stat,
};
use crate::error::{invalid, CoreError, Result};
use crate::fenwick::Fenwick;
use crate::inbox::{Inbox, InboxItem};
use crate::rng::Rng;

/// `parent` of a prompt without a (living) parent.
pub const NO_PARENT: u64 = u64::MAX;
/// `last_step` of a prompt never reported with a step.
pub const NO_STEP: u32 = u32::MAX;

/// Partition of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Free = 0,
    Cold = 1,
    Hard = 2,
    Easy = 3,
    InFlight = 4,
    Archived = 5,
}

impl State {
    pub fn from_code(c: u8) -> Option<State> {
        Some(match c {
            0 => State::Free,
            1 => State::Cold,
            2 => State::Hard,
            3 => State::Easy,
            4 => State::InFlight,
            5 => State::Archived,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Cold => "cold",
            State::Hard => "hard",
            State::Easy => "easy",
            State::InFlight => "in_flight",
            State::Archived => "archived",
        }
    }
}

/// Slot flags.
pub const HAS_SCORE: u8 = 1;
pub const ESTIMATED: u8 = 2;

/// Per-slot columns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Slots {
    pub gen: Vec<u32>,
    pub seq: Vec<u64>,
    pub state: Vec<u8>,
    pub flags: Vec<u8>,
    /// Normalised score in [-1, 1] (meaningful when `HAS_SCORE`).
    pub score: Vec<f32>,
    pub visits: Vec<u32>,
    pub rollouts: Vec<u32>,
    pub correct: Vec<u32>,
    pub last_step: Vec<u32>,
    /// Parent id at insertion (may since have been evicted: check liveness).
    pub parent: Vec<u64>,
    pub difficulty: Vec<f32>,
    pub payload: Vec<Option<Box<[u8]>>>,
}

impl Slots {
    pub fn len(&self) -> usize {
        self.gen.len()
    }

    fn push_free(&mut self) {
        self.gen.push(0);
        self.seq.push(0);
        self.state.push(State::Free as u8);
        self.flags.push(0);
        self.score.push(0.0);
        self.visits.push(0);
        self.rollouts.push(0);
        self.correct.push(0);
        self.last_step.push(NO_STEP);
        self.parent.push(NO_PARENT);
        self.difficulty.push(1.0);
        self.payload.push(None);
    }

    pub fn column_bytes(&self) -> usize {
        self.gen.capacity() * 4
            + self.seq.capacity() * 8
            + self.state.capacity()
            + self.flags.capacity()
            + self.score.capacity() * 4
            + self.visits.capacity() * 4
            + self.rollouts.capacity() * 4
            + self.correct.capacity() * 4
            + self.last_step.capacity() * 4
            + self.parent.capacity() * 8
            + self.difficulty.capacity() * 4
            + self.payload.capacity() * std::mem::size_of::<Option<Box<[u8]>>>()
    }
}

/// Cumulative counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub added: u64,
    pub sampled: u64,
    pub reported: u64,
    pub released: u64,
    pub evicted: u64,
    pub dropped: u64,
    pub reinsertions: u64,
    pub refreshes: u64,
    pub estimated: u64,
    pub orphaned: u64,
    pub drained: u64,
}

/// A prompt to add. `payload` comes from [`crate::payload::encode`].
#[derive(Clone, Debug)]
pub struct NewPrompt {
    pub payload: Box<[u8]>,
    /// Group-mean reward in the user's scale: the prompt enters scored.
    pub reward: Option<f64>,
    pub parent: Option<u64>,
    pub difficulty: Option<f64>,
}

/// Snapshot of sizes and counters, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub size: u64,
    pub cold: u64,
    pub hard: u64,
    pub easy: u64,
    pub in_flight: u64,
    pub archived: u64,
    pub held: u64,
    pub capacity: u64,
    pub boundary: f64,
    pub inbox_queued: u64,
    pub inbox_pushed: u64,
    pub inbox_rejected: u64,
    pub delayed: u64,
    pub step: u64,
    pub memory_bytes: u64,
    pub payload_bytes: u64,
    pub counters: Counters,
}

/// Per-prompt statistics for a batch of ids, in the user's reward scale.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Records {
    pub score: Vec<f64>,
    pub visits: Vec<u32>,
    pub rollouts: Vec<u32>,
    pub correct: Vec<u32>,
    pub last_step: Vec<i64>,
    pub state: Vec<u8>,
    pub estimated: Vec<bool>,
    pub parent: Vec<u64>,
    pub difficulty: Vec<f32>,
}

/// Ordered-set key: (score, seq, slot) packed so that integer order = score
/// order, and equal scores order by `seq` (when the prompt was last placed:
/// added or reported). Ties are therefore least-recently-trained first, and
/// a reported prompt lands at the end of its score's run, where the B-tree
/// path is already hot, instead of at a random position.
pub(crate) type Key = u128;

#[inline]
pub(crate) fn key(score: f32, seq: u64, slot: u32) -> Key {
    let b = score.to_bits();
    let ord = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (Key::from(ord) << 96) | (Key::from(seq) << 32) | Key::from(slot)
}

#[inline]
pub(crate) fn key_slot(k: Key) -> u32 {
    k as u32
}

/// The first key of `k`'s score run (every key with that score is >= it).
#[inline]
pub(crate) fn run_start(k: Key) -> Key {
    k >> 96 << 96
}

#[inline]
pub(crate) fn key_score(k: Key) -> f32 {
    let ord = (k >> 96) as u32;
    let b = if ord >> 31 == 1 {
        ord & 0x7FFF_FFFF
    } else {
        !ord
    };
    f32::from_bits(b)
}

/// Keys from the highest score down, each score's run in ascending order
/// (least recently trained first): what the hard side's "nearest the
/// boundary first" means. O(log n) per distinct score visited.
pub(crate) struct DescRuns<'a> {
    set: &'a BTreeSet<Key>,
    run: Option<std::collections::btree_set::Range<'a, Key>>,
    /// Exclusive upper bound of the runs not yet visited.
    below: Option<Key>,
}

impl<'a> DescRuns<'a> {
    pub(crate) fn new(set: &'a BTreeSet<Key>) -> Self {
        DescRuns {
            set,
            run: None,
            below: None,
        }
    }
}

impl Iterator for DescRuns<'_> {
    type Item = Key;

    fn next(&mut self) -> Option<Key> {
        loop {
            if let Some(k) = self.run.as_mut().and_then(Iterator::next) {
                return Some(*k);
            }
            let last = match self.below {
                None => self.set.last(),
                Some(b) => self.set.range(..b).next_back(),
            }?;
            let start = run_start(*last);
            self.run = Some(match self.below {
                None => self.set.range(start..),
                Some(b) => self.set.range(start..b),
            });
            self.below = Some(start);
        }
    }
}

/// Stores a score as f32 with -0.0 folded into 0.0 (so keys order consistently).
#[inline]
pub(crate) fn store_score(s: f64) -> f32 {
    let f = s.clamp(-1.0, 1.0) as f32;
    if f == 0.0 {
        0.0
    } else {
        f
    }
}

/// HeaPA's child estimate from a parent's normalised score and difficulty ratio.
pub fn child_estimate(parent_score: f64, d: f64) -> f64 {
    let v = if parent_score >= 0.0 {
        parent_score / d
    } else {
        parent_score * d
    };
    v.clamp(-1.0, 1.0)
}

pub struct Pool {
    pub(crate) cfg: Config,
    /// Id modulus: `capacity + 1` (slot `capacity` is the "grave" for ids of
    /// prompts evicted on arrival).
    pub(crate) modulus: u64,
    pub(crate) slots: Slots,
    pub(crate) free: Vec<u32>,
    pub(crate) grave_gen: u64,
    pub(crate) cold: BTreeSet<(u64, u32)>,
    pub(crate) hard: BTreeSet<Key>,
    pub(crate) easy: BTreeSet<Key>,
    pub(crate) archive: BTreeSet<Key>,
    /// Sampling weights of live scored prompts (uniform / prioritized only).
    pub(crate) weights: Option<Fenwick>,
    /// Ids in insertion order (stale ids are skipped and compacted away): the
    /// topological order of the lineage forest, since children are newer.
    pub(crate) log: Vec<u64>,
    pub(crate) next_seq: u64,
    pub(crate) in_flight: u64,
    pub(crate) rng: Rng,
    pub(crate) counters: Counters,
    pub(crate) step: u64,
    /// Trained prompts sitting out `revisit_fraction` (held in the archive):
    /// (drawable once `counters.sampled` reaches this, seq, slot). Entries
    /// whose prompt left the archive or was retrained are stale and skipped.
    pub(crate) cooling: BTreeSet<(u64, u64, u32)>,
    /// Drained inbox items waiting out `delay_steps`: (ready step, item).
    pub(crate) pending: VecDeque<(u64, InboxItem)>,
    pub(crate) inbox: Arc<Inbox>,
    /// Sum of held payloads' lengths (kept up to date so `stats` is O(1)).
    pub(crate) payload_total: u64,
}

enum Victim {
    Scored(Key),
    Cold(u32),
}

impl Pool {
    pub fn new(cfg: Config) -> Result<Pool> {
        cfg.validate()?;
        let weights = matches!(cfg.sampling, Sampling::Uniform | Sampling::Prioritized)
            .then(Fenwick::default);
        Ok(Pool {
            modulus: cfg.capacity + 1,
            rng: Rng::new(cfg.seed),
            inbox: Arc::new(Inbox::new(cfg.inbox_capacity as usize)),
            cfg,
            slots: Slots::default(),
            free: Vec::new(),
            grave_gen: 0,
            cold: BTreeSet::new(),
            hard: BTreeSet::new(),
            easy: BTreeSet::new(),
            archive: BTreeSet::new(),
            weights,
            log: Vec::new(),
            next_seq: 0,
            in_flight: 0,
            counters: Counters::default(),
            step: 0,
            cooling: BTreeSet::new(),
            pending: VecDeque::new(),
            payload_total: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The lock-free inbox; producers may push without holding the pool.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    // ---- ids ----------------------------------------------------------------

    #[inline]
    pub(crate) fn id_of(&self, slot: u32) -> u64 {
        u64::from(self.slots.gen[slot as usize]) * self.modulus + u64::from(slot)
    }

    /// The slot holding `id`, if the pool holds it.
    #[inline]
    pub(crate) fn slot_of(&self, id: u64) -> Option<u32> {
        let slot = id % self.modulus;
        let s = slot as usize;
        if s >= self.slots.len() {
            return None;
        }
        let alive = self.slots.state[s] != State::Free as u8
            && u64::from(self.slots.gen[s]) == id / self.modulus;
        alive.then_some(slot as u32)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.slot_of(id).is_some()
    }

    /// Number of prompts held: live + archived + in flight.
    pub fn held(&self) -> u64 {
        (self.slots.len() - self.free.len()) as u64
    }

    fn resolve(&self, ids: &[u64]) -> Result<Vec<u32>> {
        ids.iter()
            .enumerate()
            .map(|(index, &id)| {
                self.slot_of(id)
                    .ok_or(CoreError::UnknownPrompt { id, index })
            })
            .collect()
    }

    /// Resolves ids that must all be in flight and distinct.
    fn resolve_in_flight(&self, ids: &[u64]) -> Result<Vec<u32>> {
        let slots = self.resolve(ids)?;
        for (i, &s) in slots.iter().enumerate() {
            let st = self.state(s);
            if st != State::InFlight {
                return Err(invalid(format!(
                    "id {} at index {i} is not in flight (it is {})",
                    ids[i],
                    st.name()
                )));
            }
        }
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_unstable_by_key(|&i| slots[i]);
        for w in order.windows(2) {
            if slots[w[0]] == slots[w[1]] {
                let (a, b) = (w[0].min(w[1]), w[0].max(w[1]));
                return Err(invalid(format!(
                    "id {} appears twice (indices {a} and {b})",
                    ids[a]
                )));
            }
        }
        Ok(slots)
    }

    #[inline]
    pub(crate) fn state(&self, slot: u32) -> State {
        State::from_code(self.slots.state[slot as usize]).unwrap_or(State::Free)
    }

    #[inline]
    fn set_state(&mut self, slot: u32, st: State) {
        self.slots.state[slot as usize] = st as u8;
    }

    #[inline]
    pub(crate) fn slot_key(&self, slot: u32) -> Key {
        let s = slot as usize;
        key(self.slots.score[s], self.slots.seq[s], slot)
    }

    // ---- placement ------------------------------------------------------------

    pub(crate) fn target_score(&self) -> f32 {
        store_score(self.cfg.normalize(self.cfg.target))
    }

    pub(crate) fn priority_of(&self, slot: u32) -> f64 {
        match self.cfg.sampling {
            Sampling::Prioritized => {
                let p = (f64::from(self.slots.score[slot as usize]) + 1.0) * 0.5;
                ((1.0 - p) + self.cfg.priority_epsilon).powf(1.0 / self.cfg.priority_temperature)
            }
            _ => 1.0,
        }
    }

    /// Puts a scored slot into the hard or easy side (caller rebalances).
    pub(crate) fn place_scored(&mut self, slot: u32) {
        let k = self.slot_key(slot);
        let to_hard = match self.cfg.boundary {
            Boundary::Absolute => self.slots.score[slot as usize] < self.target_score(),
            // Up to the easiest side's first key it is hard: every hard key
            // stays below every easy key, and `rebalance` restores the split.
            Boundary::Quantile => self.easy.first().is_none_or(|&e| k <= e),
        };
        if to_hard {
            self.hard.insert(k);
            self.set_state(slot, State::Hard);
        } else {
            self.easy.insert(k);
            self.set_state(slot, State::Easy);
        }
        if self.weights.is_some() {
            let w = self.priority_of(slot);
            if let Some(f) = self.weights.as_mut() {
                f.set(slot as usize, w);
            }
        }
    }

    fn place_cold(&mut self, slot: u32) {
        self.cold.insert((self.slots.seq[slot as usize], slot));
        self.set_state(slot, State::Cold);
    }

    fn place_archived(&mut self, slot: u32) {
        self.archive.insert(self.slot_key(slot));
        self.set_state(slot, State::Archived);
    }

    /// Takes a slot out of whatever partition holds it (caller rebalances).
    fn unplace(&mut self, slot: u32) {
        let k = self.slot_key(slot);
        match self.state(slot) {
            State::Cold => {
                self.cold.remove(&(self.slots.seq[slot as usize], slot));
            }
            State::Hard => {
                self.hard.remove(&k);
            }
            State::Easy => {
                self.easy.remove(&k);
            }
            State::Archived => {
                self.archive.remove(&k);
            }
            State::InFlight => self.in_flight -= 1,
            State::Free => {}
        }
        if let Some(f) = self.weights.as_mut() {
            if (slot as usize) < f.len() {
                f.set(slot as usize, 0.0);
            }
        }
    }

    /// How many of `scored` prompts the hard side holds under the quantile
    /// boundary: round(q·s).
    pub(crate) fn quantile_split(&self, scored: usize) -> usize {
        (self.cfg.low_fraction * scored as f64 + 0.5).floor() as usize
    }

    /// Restores the exact quantile split: hard = the round(q·s) lowest keys.
    pub(crate) fn rebalance(&mut self) {
        if self.cfg.boundary != Boundary::Quantile {
            return;
        }
        let target = self.quantile_split(self.hard.len() + self.easy.len());
        while self.hard.len() > target {
            let k = self.hard.pop_last().expect("non-empty");
            self.easy.insert(k);
            self.set_state(key_slot(k), State::Easy);
        }
        while self.hard.len() < target {
            let k = self.easy.pop_first().expect("non-empty");
            self.hard.insert(k);
            self.set_state(key_slot(k), State::Hard);
        }
    }

    // ---- slots ----------------------------------------------------------------

    fn alloc_slot(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let s = self.slots.len() as u32;
        self.slots.push_free();
        if let Some(f) = self.weights.as_mut() {
            f.push_zero();
        }
        s
    }

    /// Removes a prompt from the pool for good (eviction or drop).
    fn free_slot(&mut self, slot: u32) {
        self.unplace(slot);
        let s = slot as usize;
        self.slots.state[s] = State::Free as u8;
        if let Some(p) = self.slots.payload[s].take() {
            self.payload_total -= p.len() as u64;
        }
        self.slots.flags[s] = 0;
        self.slots.gen[s] = self.slots.gen[s].wrapping_add(1);
        self.free.push(slot);
        // Keep the insertion log proportional to what is held.
        if self.log.len() > 2 * self.held() as usize + 1024 {
            self.compact_log();
        }
    }

    pub(crate) fn compact_log(&mut self) {
        let log = std::mem::take(&mut self.log);
        self.log = log
            .into_iter()
            .filter(|&id| self.slot_of(id).is_some())
            .collect();
    }

    /// A fresh id that never resolves: for prompts evicted on arrival.
    fn grave_id(&mut self) -> u64 {
        self.grave_gen += 1;
        self.grave_gen * self.modulus + self.cfg.capacity
    }

    // ---- eviction ---------------------------------------------------------------

    fn victim(&self) -> Option<Victim> {
        let scored = match self.cfg.eviction {
            Eviction::Hardest => {
                let live = self.hard.first().or(self.easy.first()).copied();
                match (live, self.archive.first().copied()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Eviction::Easiest => {
                let live = self.easy.last().or(self.hard.last()).copied();
                match (live, self.archive.last().copied()) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            }
        };
        scored
            .map(Victim::Scored)
            .or_else(|| self.cold.first().map(|&(_, s)| Victim::Cold(s)))
    }

    /// Whether a newcomer with this score (None = cold) loses to the current victim.
    fn newcomer_loses(&self, score: Option<f32>, victim: &Option<Victim>) -> bool {
        match (score, victim) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(_), Some(Victim::Cold(_))) => true,
            (Some(s), Some(Victim::Scored(k))) => match self.cfg.eviction {
                Eviction::Hardest => s < key_score(*k),
                Eviction::Easiest => s > key_score(*k),
            },
        }
    }

    fn evict(&mut self, v: Victim) {
        let slot = match v {
            Victim::Scored(k) => key_slot(k),
            Victim::Cold(s) => s,
        };
        self.free_slot(slot);
        self.counters.evicted += 1;
    }

    // ---- add ----------------------------------------------------------------------

    fn validate_new(&self, items: &[NewPrompt]) -> Result<()> {
        let (lo, hi) = (self.cfg.reward_lo, self.cfg.reward_hi);
        for (i, it) in items.iter().enumerate() {
            if let Some(r) = it.reward {
                if !r.is_finite() || r < lo || r > hi {
                    return Err(invalid(format!(
                        "rewards[{i}] = {r}: expected a finite value in reward_range [{lo}, {hi}]"
                    )));
                }
            }
            if let Some(d) = it.difficulty {
                check_difficulty(i, d)?;
            }
            if let Some(p) = it.parent {
                if self.slot_of(p).is_none() {
                    return Err(CoreError::UnknownPrompt { id: p, index: i });
                }
            }
        }
        if !items.is_empty() && self.in_flight >= self.cfg.capacity {
            return Err(CoreError::Capacity(format!(
                "cannot add {} prompts: all {} slots of the pool are in flight (report or release some first)",
                items.len(),
                self.cfg.capacity
            )));
        }
        Ok(())
    }

    /// Adds prompts; returns one id each (a prompt evicted on arrival gets an
    /// id that never resolves). The batch is validated whole first.
    pub fn add(&mut self, items: Vec<NewPrompt>) -> Result<Vec<u64>> {
        self.validate_new(&items)?;
        let ids = items.into_iter().map(|it| self.admit(it)).collect();
        self.rebalance();
        Ok(ids)
    }

    /// Inserts one validated prompt, evicting if the pool is full.
    fn admit(&mut self, it: NewPrompt) -> u64 {
        self.counters.added += 1;
        // A parent can vanish between validation and admission (evicted by an
        // earlier prompt of the same batch, or before an inbox drain): the
        // prompt then becomes a root.
        let parent = it.parent.and_then(|p| self.slot_of(p).map(|s| (p, s)));
        if it.parent.is_some() && parent.is_none() {
            self.counters.orphaned += 1;
        }
        let d = clamp_difficulty(it.difficulty.unwrap_or(1.0));
        let (score, estimated) = match (it.reward, parent) {
            (Some(r), _) => (Some(store_score(self.cfg.normalize(r))), false),
            (None, Some((_, ps))) if self.slots.flags[ps as usize] & HAS_SCORE != 0 => {
                let s = f64::from(self.slots.score[ps as usize]);
                (Some(store_score(child_estimate(s, d))), true)
            }
            _ => (None, false),
        };
        if self.held() >= self.cfg.capacity {
            let v = self.victim();
            if self.newcomer_loses(score, &v) {
                self.counters.evicted += 1;
                return self.grave_id();
            }
            self.evict(v.expect("a victim exists when the newcomer wins"));
        }
        let slot = self.alloc_slot();
        let s = slot as usize;
        self.slots.seq[s] = self.next_seq;
        self.next_seq += 1;
        self.slots.flags[s] = match (score.is_some(), estimated) {
            (true, true) => HAS_SCORE | ESTIMATED,
            (true, false) => HAS_SCORE,
            _ => 0,
        };
        self.slots.score[s] = score.unwrap_or(0.0);
        self.slots.visits[s] = 0;
        self.slots.rollouts[s] = 0;
        self.slots.correct[s] = 0;
        self.slots.last_step[s] = NO_STEP;
        self.slots.parent[s] = parent.map_or(NO_PARENT, |(p, _)| p);
        self.slots.difficulty[s] = d as f32;
        self.payload_total += it.payload.len() as u64;
        self.slots.payload[s] = Some(it.payload);
        if estimated {
            self.counters.estimated += 1;
        }
        if score.is_some() {
            self.place_scored(slot);
        } else {
            self.place_cold(slot);
        }
        let id = self.id_of(slot);
        self.log.push(id);
        id
    }

    // ---- sample -----------------------------------------------------------------

    /// Draws up to `k` prompts: cold first (FIFO), then by the sampling mode.
    /// Drawn prompts are in flight until reported or released.
    pub fn sample(&mut self, k: usize) -> Vec<u64> {
        if k == 0 {
            return Vec::new();
        }
        if self.cfg.revisit_fraction > 0.0 {
            self.release_cooled(k);
        }
        let live = self.cold.len() + self.hard.len() + self.easy.len();
        if self.cfg.reinsert == Reinsert::OnDrain && live < k && !self.archive.is_empty() {
            self.reinsert_archive();
        }
        let mut chosen: Vec<u32> = Vec::with_capacity(k.min(live + self.archive.len()));
        while chosen.len() < k {
            match self.cold.pop_first() {
                Some((_, slot)) => {
                    chosen.push(slot);
                    self.set_state(slot, State::InFlight);
                    self.in_flight += 1;
                }
                None => break,
            }
        }
        let need = k - chosen.len();
        let scored = self.hard.len() + self.easy.len();
        if need > 0 && scored > 0 {
            let picks = if need >= scored {
                self.hard
                    .iter()
                    .chain(self.easy.iter())
                    .map(|&k| key_slot(k))
                    .collect()
            } else {
                match self.cfg.sampling {
                    Sampling::Medium => self.pick_medium(need),
                    Sampling::Mixed => {
                        let mut easiest: Vec<u32> = DescRuns::new(&self.easy)
                            .chain(DescRuns::new(&self.hard))
                            .take(need / 2)
                            .map(key_slot)
                            .collect();
                        self.take_scored(&easiest);
                        self.rebalance();
                        easiest.extend(self.pick_medium(need - easiest.len()));
                        easiest
                    }
                    Sampling::Uniform | Sampling::Prioritized => self.pick_weighted(need),
                }
            };
            self.take_scored(&picks);
            chosen.extend(picks);
            self.rebalance();
        }
        self.counters.sampled += chosen.len() as u64;
        chosen.iter().map(|&s| self.id_of(s)).collect()
    }

    /// Moves scored slots to in flight (idempotent for already-taken slots).
    fn take_scored(&mut self, slots: &[u32]) {
        for &s in slots {
            if matches!(self.state(s), State::Hard | State::Easy) {
                self.unplace(s);
                self.set_state(s, State::InFlight);
                self.in_flight += 1;
            }
        }
    }

    /// HeaPA boundary sampling: the 2·need candidates nearest the boundary,
    /// then `need` of them uniformly at random.
    fn pick_medium(&mut self, need: usize) -> Vec<u32> {
        if need == 0 {
            return Vec::new();
        }
        let want = (2 * need).min(self.hard.len() + self.easy.len());
        let mut cand: Vec<u32> = Vec::with_capacity(want);
        // Nearest first on both sides; equal scores least recently trained first.
        let mut up = self.easy.iter().copied().peekable();
        let mut down = DescRuns::new(&self.hard).peekable();
        match self.cfg.boundary {
            // Alternate sides, easy side first (the reference's order).
            Boundary::Quantile => {
                let mut easy_turn = true;
                while cand.len() < want {
                    let next = if easy_turn {
                        up.next().or_else(|| down.next())
                    } else {
                        down.next().or_else(|| up.next())
                    };
                    cand.push(key_slot(next.expect("want <= scored")));
                    easy_turn = !easy_turn;
                }
            }
            // Nearest to the absolute target first; at equal distance the hard
            // side (a prompt nobody solves may become solvable, a solved one
            // has nothing left to teach).
            Boundary::Absolute => {
                let t = self.target_score();
                while cand.len() < want {
                    let take_up = match (up.peek(), down.peek()) {
                        (Some(&u), Some(&d)) => key_score(u) - t < t - key_score(d),
                        (Some(_), None) => true,
                        _ => false,
                    };
                    let next = if take_up { up.next() } else { down.next() };
                    cand.push(key_slot(next.expect("want <= scored")));
                }
            }
        }
        self.rng.choose_prefix(&mut cand, need);
        cand.truncate(need);
        cand
    }

    /// Weighted draws without replacement from the Fenwick tree.
    fn pick_weighted(&mut self, need: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(need);
        let mut retried = false;
        while out.len() < need {
            let f = self
                .weights
                .as_mut()
                .expect("weights exist in weighted modes");
            let total = f.total();
            let u = self.rng.unit() * total;
            match f.find(u) {
                Some(i) => {
                    f.set(i, 0.0);
                    out.push(i as u32);
                    retried = false;
                }
                // Rounding drift: rebuild the sums once, then draw again.
                None if !retried => {
                    f.rebuild();
                    retried = true;
                }
                None => break,
            }
        }
        out
    }

    // ---- report / release ------------------------------------------------------

    /// Records group results by id. All ids must be in flight and distinct;
    /// the whole batch is validated before anything changes.
    pub fn report(
        &mut self,
        ids: &[u64],
        rewards: &[f64],
        n_rollouts: Option<&[u32]>,
        n_correct: Option<&[u32]>,
        step: Option<u64>,
    ) -> Result<()> {
        let n = ids.len();
        let check_len = |name: &str, len: usize| {
            if len != n {
                Err(invalid(format!(
                    "{name}: expected length {n} (one per id), got {len}"
                )))
            } else {
                Ok(())
            }
        };
        check_len("rewards", rewards.len())?;
        if let Some(r) = n_rollouts {
            check_len("n_rollouts", r.len())?;
        }
        if let Some(c) = n_correct {
            check_len("n_correct", c.len())?;
        }
        if let Some(s) = step {
            if s >= u64::from(NO_STEP) {
                return Err(invalid(format!(
                    "step: expected a value below {NO_STEP}, got {s}"
                )));
            }
        }
        let (lo, hi) = (self.cfg.reward_lo, self.cfg.reward_hi);
        for (i, &r) in rewards.iter().enumerate() {
            if !r.is_finite() || r < lo || r > hi {
                return Err(invalid(format!(
                    "rewards[{i}] = {r}: expected a finite value in reward_range [{lo}, {hi}]"
                )));
            }
        }
        if let (Some(r), Some(c)) = (n_rollouts, n_correct) {
            if let Some(i) = (0..n).find(|&i| c[i] > r[i]) {
                return Err(invalid(format!(
                    "n_correct[{i}] = {} exceeds n_rollouts[{i}] = {}",
                    c[i], r[i]
                )));
            }
        }
        let slots = self.resolve_in_flight(ids)?;

        for (i, &slot) in slots.iter().enumerate() {
            let s = slot as usize;
            let new = self.cfg.normalize(rewards[i]);
            let observed =
                self.slots.flags[s] & HAS_SCORE != 0 && self.slots.flags[s] & ESTIMATED == 0;
            let value = match self.cfg.stat {
                Stat::Ema if observed => {
                    let a = self.cfg.ema_alpha;
                    a * new + (1.0 - a) * f64::from(self.slots.score[s])
                }
                _ => new,
            };
            self.slots.score[s] = store_score(value);
            self.slots.flags[s] = HAS_SCORE;
            self.slots.visits[s] = self.slots.visits[s].saturating_add(1);
            if let Some(r) = n_rollouts {
                self.slots.rollouts[s] = self.slots.rollouts[s].saturating_add(r[i]);
            }
            if let Some(c) = n_correct {
                self.slots.correct[s] = self.slots.correct[s].saturating_add(c[i]);
            }
            if let Some(st) = step {
                self.slots.last_step[s] = st as u32;
                self.step = self.step.max(st);
            }
            // Trained just now: last among equal scores.
            self.slots.seq[s] = self.next_seq;
            self.next_seq += 1;
            self.in_flight -= 1;
            self.set_state(slot, State::Free); // transient: placed right below
        }
        for slot in slots {
            match self.cfg.reinsert {
                Reinsert::OnDrain => self.place_archived(slot),
                Reinsert::Immediate if self.cfg.revisit_fraction > 0.0 => self.cool(slot),
                Reinsert::Immediate => self.return_scored(slot),
            }
        }
        self.counters.reported += n as u64;
        self.rebalance();
        Ok(())
    }

    /// Puts a trained prompt back into the heaps, or drops it if solved and
    /// `drop_solved` is set.
    fn return_scored(&mut self, slot: u32) {
        if self.cfg.drop_solved && self.slots.score[slot as usize] >= 1.0 {
            self.free_slot(slot);
            self.counters.dropped += 1;
        } else {
            self.place_scored(slot);
        }
    }

    /// Holds a just-trained prompt in the archive until `revisit_fraction ×
    /// held` more prompts have been drawn (or drops it if solved and
    /// `drop_solved` is set).
    fn cool(&mut self, slot: u32) {
        if self.cfg.drop_solved && self.slots.score[slot as usize] >= 1.0 {
            return self.return_scored(slot);
        }
        self.place_archived(slot);
        let wait = (self.cfg.revisit_fraction * self.held() as f64).ceil() as u64;
        let ready = self.counters.sampled.saturating_add(wait);
        self.cooling
            .insert((ready, self.slots.seq[slot as usize], slot));
    }

    /// Whether a cooling entry still describes its prompt.
    pub(crate) fn cooling_entry_live(&self, seq: u64, slot: u32) -> bool {
        self.state(slot) == State::Archived && self.slots.seq[slot as usize] == seq
    }

    /// Returns cooled-down prompts to the heaps before a draw of `k`; when
    /// fewer than `k` prompts are drawable, the earliest-ready ones come back
    /// early rather than leaving the batch short.
    fn release_cooled(&mut self, k: usize) {
        let now = self.counters.sampled;
        while let Some(&(ready, seq, slot)) = self.cooling.first() {
            let live = self.cold.len() + self.hard.len() + self.easy.len();
            if ready > now && live >= k {
                break;
            }
            self.cooling.pop_first();
            if self.cooling_entry_live(seq, slot) {
                self.archive.remove(&self.slot_key(slot));
                self.place_scored(slot);
            }
        }
        self.rebalance();
    }

    /// Returns in-flight prompts, unchanged, to the partition they came from.
    pub fn release(&mut self, ids: &[u64]) -> Result<()> {
        let slots = self.resolve_in_flight(ids)?;
        for &slot in &slots {
            self.in_flight -= 1;
            if self.slots.flags[slot as usize] & HAS_SCORE != 0 {
                self.place_scored(slot);
            } else {
                self.place_cold(slot);
            }
        }
        self.counters.released += slots.len() as u64;
        self.rebalance();
        Ok(())
    }

    /// Controlled reinsertion: the whole archive returns to the heaps (after a
    /// lineage refresh when configured). Keys are total, so the order of
    /// insertion does not matter and no shuffle is needed for determinism.
    pub fn reinsert_archive(&mut self) {
        if self.cfg.refresh_on_reinsert {
            let p = self.cfg.refresh;
            self.refresh(&p);
        }
        let keys = std::mem::take(&mut self.archive);
        self.cooling.clear();
        for k in keys {
            self.return_scored(key_slot(k));
        }
        self.counters.reinsertions += 1;
        self.rebalance();
    }

    // ---- inbox ------------------------------------------------------------------

    /// Moves queued inbox items into the pool (at most `max` taken from the
    /// queue); items wait `delay_steps` steps first. Returns the added ids.
    pub fn drain_inbox(&mut self, max: Option<usize>, step: Option<u64>) -> Vec<u64> {
        if let Some(s) = step {
            self.step = self.step.max(s);
        }
        let now = step.unwrap_or(self.step);
        let ready_at = now.saturating_add(self.cfg.delay_steps);
        let limit = max.unwrap_or(usize::MAX);
        let inbox = Arc::clone(&self.inbox);
        let mut taken = 0usize;
        while taken < limit {
            match inbox.pop() {
                Some(item) => {
                    self.pending.push_back((ready_at, item));
                    taken += 1;
                }
                None => break,
            }
        }
        let mut ids = Vec::new();
        while self.pending.front().is_some_and(|(r, _)| *r <= now)
            && self.in_flight < self.cfg.capacity
        {
            let (_, item) = self.pending.pop_front().expect("front exists");
            let it = NewPrompt {
                payload: item.payload,
                reward: None,
                parent: item.parent,
                difficulty: item.difficulty,
            };
            ids.push(self.admit(it));
        }
        self.counters.drained += ids.len() as u64;
        self.rebalance();
        ids
    }

    // ---- queries ----------------------------------------------------------------

    pub fn records(&self, ids: &[u64]) -> Result<Records> {
        let slots = self.resolve(ids)?;
        let n = slots.len();
        let mut r = Records {
            score: Vec::with_capacity(n),
            visits: Vec::with_capacity(n),
            rollouts: Vec::with_capacity(n),
            correct: Vec::with_capacity(n),
            last_step: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            estimated: Vec::with_capacity(n),
            parent: Vec::with_capacity(n),
            difficulty: Vec::with_capacity(n),
        };
        for &slot in &slots {
            let s = slot as usize;
            let f = self.slots.flags[s];
            r.score.push(if f & HAS_SCORE != 0 {
                self.cfg.denormalize(f64::from(self.slots.score[s]))
            } else {
                f64::NAN
            });
            r.visits.push(self.slots.visits[s]);
            r.rollouts.push(self.slots.rollouts[s]);
            r.correct.push(self.slots.correct[s]);
            let ls = self.slots.last_step[s];
            r.last_step
                .push(if ls == NO_STEP { -1 } else { i64::from(ls) });
            r.state.push(self.slots.state[s]);
            r.estimated.push(f & ESTIMATED != 0);
            r.parent.push(self.live_parent(slot));
            r.difficulty.push(self.slots.difficulty[s]);
        }
        Ok(r)
    }

    /// The parent's id if the parent is still held, else `NO_PARENT`.
    pub(crate) fn live_parent(&self, slot: u32) -> u64 {
        let p = self.slots.parent[slot as usize];
        if p != NO_PARENT && self.slot_of(p).is_some() {
            p
        } else {
            NO_PARENT
        }
    }

    /// Encoded payloads of a batch of ids (see [`crate::payload`]).
    pub fn payloads(&self, ids: &[u64]) -> Result<Vec<&[u8]>> {
        let slots = self.resolve(ids)?;
        Ok(slots
            .iter()
            .map(|&s| self.slots.payload[s as usize].as_deref().unwrap_or(&[]))
            .collect())
    }

    /// All ids in one partition: cold in FIFO order, scored sides and archive
    /// from hardest to easiest, in-flight by slot.
    pub fn ids_in(&self, st: State) -> Vec<u64> {
        let from_keys =
            |set: &BTreeSet<Key>| set.iter().map(|&k| self.id_of(key_slot(k))).collect();
        match st {
            State::Cold => self.cold.iter().map(|&(_, s)| self.id_of(s)).collect(),
            State::Hard => from_keys(&self.hard),
            State::Easy => from_keys(&self.easy),
            State::Archived => from_keys(&self.archive),
            State::InFlight => (0..self.slots.len() as u32)
                .filter(|&s| self.state(s) == State::InFlight)
                .map(|s| self.id_of(s))
                .collect(),
            State::Free => Vec::new(),
        }
    }

    /// The boundary score in the user's scale (NaN when nothing is scored).
    pub fn boundary(&self) -> f64 {
        match self.cfg.boundary {
            Boundary::Absolute => self.cfg.target,
            Boundary::Quantile => self
                .easy
                .first()
                .or(self.hard.last())
                .map_or(f64::NAN, |&k| self.cfg.denormalize(f64::from(key_score(k)))),
        }
    }

    /// Bytes of engine structures (excluding payload contents). B-tree
    /// overhead is estimated from std's node layout (11 keys per node at
    /// roughly 70% fill).
    pub fn memory_bytes(&self) -> u64 {
        let tree =
            (self.hard.len() + self.easy.len() + self.archive.len()) * 26 + self.cold.len() * 26;
        let other = self.free.capacity() * 4
            + self.cooling.len() * 40
            + self.log.capacity() * 8
            + self.weights.as_ref().map_or(0, Fenwick::bytes);
        (self.slots.column_bytes() + tree + other) as u64
    }

    pub fn payload_bytes(&self) -> u64 {
        self.payload_total
    }

    pub fn stats(&self) -> Stats {
        let (cold, hard, easy) = (
            self.cold.len() as u64,
            self.hard.len() as u64,
            self.easy.len() as u64,
        );
        Stats {
            size: cold + hard + easy,
            cold,
            hard,
            easy,
            in_flight: self.in_flight,
            archived: self.archive.len() as u64,
            held: self.held(),
            capacity: self.cfg.capacity,
            boundary: self.boundary(),
            inbox_queued: self.inbox.len() as u64,
            inbox_pushed: self.inbox.pushed(),
            inbox_rejected: self.inbox.rejected(),
            delayed: self.pending.len() as u64,
            step: self.step,
            memory_bytes: self.memory_bytes(),
            payload_bytes: self.payload_bytes(),
            counters: self.counters.clone(),
        }
    }

    /// Panics if an internal invariant is broken (for tests and debugging;
    /// O(n)).
    pub fn check_invariants(&self) {
        let q = self.cfg.low_fraction;
        if self.cfg.boundary == Boundary::Quantile {
            let s = self.hard.len() + self.easy.len();
            assert_eq!(self.hard.len(), (q * s as f64 + 0.5).floor() as usize);
        }
        if let (Some(h), Some(e)) = (self.hard.last(), self.easy.first()) {
            assert!(h < e);
        }
        let mut counts = [0usize; 6];
        for s in 0..self.slots.len() {
            counts[self.slots.state[s] as usize] += 1;
        }
        assert_eq!(counts[State::Cold as usize], self.cold.len());
        assert_eq!(counts[State::Hard as usize], self.hard.len());
        assert_eq!(counts[State::Easy as usize], self.easy.len());
        assert_eq!(counts[State::Archived as usize], self.archive.len());
        assert_eq!(counts[State::InFlight as usize] as u64, self.in_flight);
        assert_eq!(counts[State::Free as usize], self.free.len());
        if self.cfg.revisit_fraction > 0.0 {
            let live = self
                .cooling
                .iter()
                .filter(|&&(_, q, s)| self.cooling_entry_live(q, s))
                .count();
            assert_eq!(live, self.archive.len(), "every archived prompt is cooling");
        }
        assert!(self.held() <= self.cfg.capacity);
        let payload: u64 = self
            .slots
            .payload
            .iter()
            .flatten()
            .map(|b| b.len() as u64)
            .sum();
        assert_eq!(payload, self.payload_total, "running payload total");
    }
}
