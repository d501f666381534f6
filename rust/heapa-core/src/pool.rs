//! The HeaPA prompt pool: orchestration of one batch call at a time.
//!
//! A prompt's public id is `generation * (capacity + 1) + slot`, so an id
//! resolves to its slot (`slots.rs`) in O(1) without a hash map, and a stale
//! id (evicted, slot reused) is detected by its generation. Where each
//! prompt is (cold, hard, easy, archived, cooling, in flight) is owned by
//! `partitions.rs`; drawing is in `sample.rs`, eviction in `evict.rs`, the
//! lineage refresh in `lineage.rs`, the file format in `snapshot.rs`.
//!
//! Every operation is O(log n) per prompt touched.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::cold;
use crate::config::{check_difficulty, clamp_difficulty, Boundary, Config, Reinsert, Stat};
use crate::digest::Stack;
use crate::error::{invalid, CoreError, Result};
use crate::groups::Groups;
use crate::inbox::{Inbox, InboxItem};
use crate::keys::{key_score, key_slot, store_score, Key};
use crate::partitions::Partitions;
use crate::rng::Rng;
use crate::slots::Slots;
pub use crate::slots::{State, ESTIMATED, HAS_PRIOR, HAS_SCORE, NO_GROUP, NO_PARENT, NO_STEP};

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
#[derive(Clone, Debug, Default)]
pub struct NewPrompt {
    pub payload: Box<[u8]>,
    /// Group-mean reward in the user's scale: the prompt enters scored.
    pub reward: Option<f64>,
    pub parent: Option<u64>,
    pub difficulty: Option<f64>,
    /// Group key (dataset, level, topic…); children of a held parent
    /// inherit the parent's group when they have none.
    pub group: Option<String>,
    /// Predicted pass rate in the user's reward scale, for a prompt entering
    /// unscored (`cold = "prior"` ranks it by this).
    pub prior: Option<f64>,
    /// The prior's weight in pseudo-rollouts (default 0: ranks, never blends).
    pub confidence: Option<f64>,
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
    /// Free slots, reused last freed first.
    pub(crate) free: Stack<u32>,
    pub(crate) grave_gen: u64,
    /// Cold queue, scored set (hard/easy), archive, cooling set, in flight, draw index.
    pub(crate) parts: Partitions,
    /// Ids in insertion order (stale ids are skipped and compacted away): the
    /// topological order of the lineage forest, since children are newer.
    pub(crate) log: Stack<u64>,
    pub(crate) next_seq: u64,
    pub(crate) rng: Rng,
    pub(crate) counters: Counters,
    pub(crate) step: u64,
    /// Drained inbox items waiting out `delay_steps`: (ready step, item).
    pub(crate) pending: VecDeque<(u64, InboxItem)>,
    pub(crate) inbox: Arc<Inbox>,
    /// Group names and the evidence behind their estimates.
    pub(crate) groups: Groups,
}

impl Pool {
    pub fn new(cfg: Config) -> Result<Pool> {
        cfg.validate()?;
        Ok(Pool {
            parts: Partitions::new(&cfg),
            modulus: cfg.capacity + 1,
            rng: Rng::new(cfg.seed),
            inbox: Arc::new(Inbox::new(cfg.inbox_capacity as usize)),
            cfg,
            slots: Slots::default(),
            free: Stack::default(),
            grave_gen: 0,
            log: Stack::default(),
            next_seq: 0,
            counters: Counters::default(),
            step: 0,
            pending: VecDeque::new(),
            groups: Groups::default(),
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
        self.slots.state(slot)
    }

    // ---- slots ----------------------------------------------------------------

    fn alloc_slot(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let s = self.slots.len() as u32;
        self.slots.push_free();
        self.parts.grow(self.slots.len());
        s
    }

    /// Removes a prompt from the pool for good (eviction or drop).
    pub(crate) fn free_slot(&mut self, slot: u32) {
        self.parts.remove(&mut self.slots, slot);
        let s = slot as usize;
        self.slots.clear_payload(slot);
        self.slots.set_flags(slot, 0);
        self.slots.set_group(slot, NO_GROUP);
        self.slots.set_confidence(slot, 0.0);
        self.slots.set_gen(slot, self.slots.gen[s].wrapping_add(1));
        self.free.push(slot);
        // Keep the insertion log proportional to what is held.
        if self.log.len() > 2 * self.held() as usize + 1024 {
            self.compact_log();
        }
    }

    pub(crate) fn compact_log(&mut self) {
        let live = self
            .log
            .iter()
            .copied()
            .filter(|&id| self.slot_of(id).is_some());
        self.log = Stack::from_vec(live.collect());
    }

    /// A fresh id that never resolves: for prompts evicted on arrival.
    fn grave_id(&mut self) -> u64 {
        self.grave_gen += 1;
        self.grave_gen * self.modulus + self.cfg.capacity
    }

    // ---- add ----------------------------------------------------------------------

    fn validate_new(&self, items: &[NewPrompt]) -> Result<()> {
        let (lo, hi) = self.cfg.reward_range;
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
            if let Some(p) = it.prior {
                if !p.is_finite() || p < lo || p > hi {
                    return Err(invalid(format!(
                        "prior[{i}] = {p}: expected a finite value in reward_range [{lo}, {hi}]"
                    )));
                }
                if it.reward.is_some() {
                    return Err(invalid(format!(
                        "prior[{i}]: the prompt also has a reward (a scored prompt needs no prior)"
                    )));
                }
            }
            if let Some(c) = it.confidence {
                if !(c.is_finite() && c >= 0.0) || c > f64::from(f32::MAX) {
                    return Err(invalid(format!(
                        "confidence[{i}] = {c}: expected a finite value >= 0 (pseudo-rollouts)"
                    )));
                }
                if it.prior.is_none() {
                    return Err(invalid(format!("confidence[{i}]: given without a prior")));
                }
            }
            if let Some(g) = &it.group {
                if g.len() > u16::MAX as usize {
                    return Err(invalid(format!(
                        "group[{i}]: expected a key of at most {} bytes, got {}",
                        u16::MAX,
                        g.len()
                    )));
                }
            }
            if let Some(p) = it.parent {
                if self.slot_of(p).is_none() {
                    return Err(CoreError::UnknownPrompt { id: p, index: i });
                }
            }
        }
        if !items.is_empty() && self.parts.in_flight >= self.cfg.capacity {
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
        self.parts.rebalance(&mut self.slots);
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
        let sl = &mut self.slots;
        sl.set_seq(slot, self.next_seq);
        self.next_seq += 1;
        let prior = it
            .prior
            .filter(|_| score.is_none())
            .map(|p| store_score(self.cfg.normalize(p)));
        let flags = match (score.is_some(), estimated) {
            (true, true) => HAS_SCORE | ESTIMATED,
            (true, false) => HAS_SCORE,
            _ if prior.is_some() => HAS_PRIOR,
            _ => 0,
        };
        sl.set_flags(slot, flags);
        sl.set_score(slot, score.or(prior).unwrap_or(0.0));
        let group = match &it.group {
            Some(g) => self.groups.intern(g),
            None => parent.map_or(NO_GROUP, |(_, ps)| sl.group_of(ps)),
        };
        sl.set_group(slot, group);
        let conf = if prior.is_some() {
            it.confidence.unwrap_or(0.0)
        } else {
            0.0
        };
        sl.set_confidence(slot, conf as f32);
        sl.set_visits(slot, 0);
        sl.set_rollouts(slot, 0);
        sl.set_correct(slot, 0);
        sl.set_last_step(slot, NO_STEP);
        sl.set_parent(slot, parent.map_or(NO_PARENT, |(p, _)| p));
        sl.set_difficulty(slot, d as f32);
        sl.set_payload(slot, &it.payload);
        if estimated {
            self.counters.estimated += 1;
        }
        if score.is_some() {
            self.parts.place_scored(&mut self.slots, slot);
        } else {
            self.parts.place_cold(&mut self.slots, slot);
        }
        let id = self.id_of(slot);
        self.log.push(id);
        id
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
        let (lo, hi) = self.cfg.reward_range;
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
            let flags = self.slots.flags[s];
            let observed = flags & HAS_SCORE != 0 && flags & ESTIMATED == 0;
            let old = f64::from(self.slots.score[s]);
            let at = step.unwrap_or(self.step).max(self.step);
            let half_life = self.cfg.prior_half_life;
            // The evidence behind the current estimate, in rollouts: a prior's
            // confidence, or (posterior) what earlier reports saw, aged.
            let last = self.slots.last_step[s];
            let age = if half_life > 0.0 && last != NO_STEP && observed {
                (-((at.saturating_sub(u64::from(last))) as f64) / half_life).exp2()
            } else {
                1.0
            };
            let weight = f64::from(self.slots.confidence_of(slot)) * age;
            let rollouts = n_rollouts.map_or(1.0, |r| f64::from(r[i]));
            let posterior = self.cfg.stat == Stat::Posterior;
            let blends = weight > 0.0
                && rollouts > 0.0
                && (flags & HAS_PRIOR != 0 && n_rollouts.is_some() || posterior && observed);
            let value = match self.cfg.stat {
                Stat::Ema if observed => {
                    let a = self.cfg.ema_alpha;
                    a * new + (1.0 - a) * old
                }
                _ if blends => (weight * old + rollouts * new) / (weight + rollouts),
                _ => new,
            };
            let evidence = if posterior {
                (if blends { weight } else { 0.0 }) + rollouts
            } else {
                0.0
            };
            let pass = (new + 1.0) * 0.5;
            let g = self.slots.group_of(slot);
            if let Some(e) = self.groups.evidence.get_mut(g as usize) {
                e.observe(pass, at, half_life);
            }
            if flags & HAS_PRIOR != 0 {
                // The band in its group, and the band over every group (the
                // same queue id for an ungrouped prompt).
                let own = cold::queue_id(&self.slots, slot);
                let pooled = cold::pooled_band(own);
                for id in [Some(own), (pooled != own).then_some(pooled)]
                    .into_iter()
                    .flatten()
                {
                    let e = self.groups.bands.entry(id).or_default();
                    e.observe(pass, at, half_life);
                }
            }
            self.groups.pool.observe(pass, at, half_life);
            let sl = &mut self.slots;
            sl.set_score(slot, store_score(value));
            sl.set_flags(slot, HAS_SCORE);
            // A prior is spent by its first measurement; a posterior keeps its evidence.
            sl.set_confidence(slot, evidence as f32);
            sl.set_visits(slot, sl.visits[s].saturating_add(1));
            if let Some(r) = n_rollouts {
                sl.set_rollouts(slot, sl.rollouts[s].saturating_add(r[i]));
            }
            if let Some(c) = n_correct {
                sl.set_correct(slot, sl.correct[s].saturating_add(c[i]));
            }
            if let Some(st) = step {
                sl.set_last_step(slot, st as u32);
                self.step = self.step.max(st);
            }
            // Trained just now: last among equal scores.
            self.slots.set_seq(slot, self.next_seq);
            self.next_seq += 1;
            self.parts.land(&mut self.slots, slot);
        }
        for slot in slots {
            match self.cfg.reinsert {
                Reinsert::OnDrain => self.parts.place_archived(&mut self.slots, slot),
                Reinsert::Immediate if self.cfg.revisit_fraction > 0.0 => self.cool(slot),
                Reinsert::Immediate => self.return_scored(slot),
            }
        }
        self.counters.reported += n as u64;
        self.parts.rebalance(&mut self.slots);
        Ok(())
    }

    /// Puts a trained prompt back into the heaps, or drops it if solved and
    /// `drop_solved` is set.
    fn return_scored(&mut self, slot: u32) {
        if self.cfg.drop_solved && self.slots.score[slot as usize] >= 1.0 {
            self.free_slot(slot);
            self.counters.dropped += 1;
        } else {
            self.parts.place_scored(&mut self.slots, slot);
        }
    }

    /// Holds a just-trained prompt in the archive until `revisit_fraction ×
    /// held` more prompts have been drawn (or drops it if solved and
    /// `drop_solved` is set).
    fn cool(&mut self, slot: u32) {
        if self.cfg.drop_solved && self.slots.score[slot as usize] >= 1.0 {
            return self.return_scored(slot);
        }
        let wait = (self.cfg.revisit_fraction * self.held() as f64).ceil() as u64;
        let ready = self.counters.sampled.saturating_add(wait);
        self.parts.cool(&mut self.slots, slot, ready);
    }

    /// Returns in-flight prompts, unchanged, to the partition they came from.
    pub fn release(&mut self, ids: &[u64]) -> Result<()> {
        let slots = self.resolve_in_flight(ids)?;
        for &slot in &slots {
            self.parts.land(&mut self.slots, slot);
            if self.slots.has_score(slot) {
                self.parts.place_scored(&mut self.slots, slot);
            } else {
                self.parts.place_cold(&mut self.slots, slot);
            }
        }
        self.counters.released += slots.len() as u64;
        self.parts.rebalance(&mut self.slots);
        Ok(())
    }

    /// Controlled reinsertion: the whole archive returns to the heaps (after a
    /// lineage refresh when configured). Keys are total, so the order of
    /// insertion does not matter and no shuffle is needed for determinism.
    pub fn reinsert_archive(&mut self) {
        if self.cfg.refresh.is_some() {
            let p = self.cfg.refresh_params();
            self.refresh(&p);
        }
        for slot in self.parts.take_archive(&mut self.slots) {
            self.return_scored(slot);
        }
        self.counters.reinsertions += 1;
        self.parts.rebalance(&mut self.slots);
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
        let taken = self.inbox.pop_many(limit);
        self.pending
            .extend(taken.into_iter().map(|item| (ready_at, item)));
        let mut ids = Vec::new();
        while self.pending.front().is_some_and(|(r, _)| *r <= now)
            && self.parts.in_flight < self.cfg.capacity
        {
            let (_, item) = self.pending.pop_front().expect("front exists");
            let it = NewPrompt {
                payload: item.payload,
                parent: item.parent,
                difficulty: item.difficulty,
                ..NewPrompt::default()
            };
            ids.push(self.admit(it));
        }
        self.counters.drained += ids.len() as u64;
        self.parts.rebalance(&mut self.slots);
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
            .map(|&s| self.slots.payload.get(s as usize).unwrap_or(&[]))
            .collect())
    }

    /// All ids in one partition: cold in FIFO order, scored sides and archive
    /// from hardest to easiest, in-flight by slot.
    pub fn ids_in(&self, st: State) -> Vec<u64> {
        let ids =
            |keys: &mut dyn Iterator<Item = Key>| keys.map(|k| self.id_of(key_slot(k))).collect();
        match st {
            State::Cold => self
                .parts
                .cold
                .fifo_order()
                .into_iter()
                .map(|s| self.id_of(s))
                .collect(),
            State::Hard => ids(&mut self.parts.scored.hard(&self.slots)),
            State::Easy => ids(&mut self.parts.scored.easy(&self.slots)),
            State::Archived => ids(&mut self.parts.archive.iter().copied()),
            State::InFlight => (0..self.slots.len() as u32)
                .filter(|&s| self.state(s) == State::InFlight)
                .map(|s| self.id_of(s))
                .collect(),
            State::Free => Vec::new(),
        }
    }

    /// Every group: (key, decayed observations, observed pass rate (NaN if
    /// none), shrunk estimate), in the order groups were first seen.
    pub fn groups(&self) -> Vec<(String, f64, f64, f64)> {
        let (h, m) = (self.cfg.prior_half_life, self.cfg.prior_strength);
        (0..self.groups.names.len())
            .map(|g| {
                let e = self.groups.evidence[g].at(self.step, h);
                let est = self.groups.estimate(g as u32, self.step, h, m);
                let rate = if e.n > 0.0 { e.sum / e.n } else { f64::NAN };
                (self.groups.names[g].clone(), e.n, rate, est)
            })
            .collect()
    }

    /// The boundary score in the user's scale (NaN when nothing is scored).
    pub fn boundary(&self) -> f64 {
        match self.cfg.boundary {
            Boundary::Absolute => self.cfg.target,
            Boundary::Quantile => {
                let s = &self.parts.scored;
                s.easy(&self.slots)
                    .next()
                    .or_else(|| s.hard(&self.slots).next_back())
                    .map_or(f64::NAN, |k| self.cfg.denormalize(f64::from(key_score(k))))
            }
        }
    }

    /// Bytes of engine structures (excluding payload contents). B-tree
    /// overhead is estimated from std's node layout (11 keys per node at
    /// roughly 70% fill).
    pub fn memory_bytes(&self) -> u64 {
        let other = self.free.capacity() * 4 + self.log.capacity() * 8;
        (self.slots.column_bytes() + self.parts.memory_bytes() + other) as u64
    }

    pub fn payload_bytes(&self) -> u64 {
        self.slots.payload.live_bytes()
    }

    pub fn stats(&self) -> Stats {
        let p = &self.parts;
        let (cold, hard, easy) = (
            p.cold.len() as u64,
            p.scored.hard_len() as u64,
            p.scored.easy_len() as u64,
        );
        Stats {
            size: cold + hard + easy,
            cold,
            hard,
            easy,
            in_flight: p.in_flight,
            archived: p.archive.len() as u64,
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
        self.parts
            .check(&self.slots, self.cfg.revisit_fraction > 0.0);
        let free = self
            .slots
            .state
            .iter()
            .filter(|&&st| st == State::Free as u8);
        assert_eq!(free.count(), self.free.len());
        assert!(self.held() <= self.cfg.capacity);
        let payload: u64 = (0..self.slots.len())
            .filter_map(|i| self.slots.payload.get(i))
            .map(|b| b.len() as u64)
            .sum();
        assert_eq!(payload, self.payload_bytes(), "running payload total");
        assert_eq!(
            self.slots.digest,
            self.slots.full_digest(),
            "running slot digest"
        );
        assert_eq!(
            self.free.digest(),
            Stack::from_vec(self.free.to_vec()).digest()
        );
        assert_eq!(
            self.log.digest(),
            Stack::from_vec(self.log.to_vec()).digest()
        );
    }
}
