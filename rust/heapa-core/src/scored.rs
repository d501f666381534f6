//! The drawable scored prompts: one ordered set of keys, split by a cut into
//! the hard range (keys below it) and the easy range (keys at or above it).
//!
//! One set with a cut rather than two sets, because the quantile boundary
//! moves with every batch: a weighted draw takes hard and easy prompts in
//! another ratio than the split's, so about a hundred keys cross it per
//! batch. Across a cut they are walked over in place (their states change,
//! the set does not), where two sets would remove and insert each one.
//!
//! Removing a random key from a B-tree of a million costs several cache
//! misses; a weighted draw removes 512 random keys per batch. So a drawn key
//! can be *forgotten* instead: it stays in the set, stale, and is skipped by
//! every reader. A key is live when its slot is hard or easy and still has
//! that key. Two rules keep readers cheap: both ends of the set are live
//! between batches (so `first`/`last` need no check), and the set is
//! compacted when stale keys outnumber half the live ones (O(1) amortised
//! per forget). Keys near the boundary (medium sampling) are removed
//! eagerly, where the B-tree path is hot.

use std::collections::BTreeSet;
use std::ops::RangeBounds;

use crate::keys::{key_slot, DescRuns, Key};
use crate::slots::{Slots, State};

/// Compaction does not pay below this many stale keys.
const MIN_STALE: usize = 4096;

#[derive(Clone, Debug)]
pub(crate) struct Scored {
    keys: BTreeSet<Key>,
    /// The lowest and highest key, kept here: reading a B-tree's end walks
    /// down from its root, and every `remove` checks both ends.
    ends: Option<(Key, Key)>,
    /// Live keys below `cut` are hard, the others easy.
    cut: Key,
    hard: usize,
    easy: usize,
}

impl Scored {
    pub fn new(cut: Key) -> Scored {
        Scored {
            keys: BTreeSet::new(),
            ends: None,
            cut,
            hard: 0,
            easy: 0,
        }
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.hard + self.easy
    }

    /// Live hard keys.
    pub fn hard_len(&self) -> usize {
        self.hard
    }

    /// Live easy keys.
    pub fn easy_len(&self) -> usize {
        self.easy
    }

    /// Entries, stale ones included (for memory estimates).
    pub fn entries(&self) -> usize {
        self.keys.len()
    }

    /// The lowest live key (between batches).
    pub fn first(&self) -> Option<Key> {
        self.ends.map(|e| e.0)
    }

    /// The highest live key (between batches).
    pub fn last(&self) -> Option<Key> {
        self.ends.map(|e| e.1)
    }

    fn refresh_ends(&mut self) {
        self.ends = self.keys.first().copied().zip(self.keys.last().copied());
    }

    /// Keys below this are hard.
    pub fn cut(&self) -> Key {
        self.cut
    }

    /// The side a key is on.
    pub fn side_of(&self, k: Key) -> State {
        if k < self.cut {
            State::Hard
        } else {
            State::Easy
        }
    }

    fn is_live(slots: &Slots, k: Key) -> bool {
        let s = key_slot(k);
        matches!(slots.state(s), State::Hard | State::Easy) && slots.key(s) == k
    }

    fn count(&mut self, k: Key) -> &mut usize {
        if k < self.cut {
            &mut self.hard
        } else {
            &mut self.easy
        }
    }

    /// Adds a key and returns the state its slot takes (the caller sets it).
    /// A stale copy of the same key becomes live again.
    pub fn insert(&mut self, k: Key) -> State {
        self.keys.insert(k);
        self.ends = Some(self.ends.map_or((k, k), |(lo, hi)| (lo.min(k), hi.max(k))));
        *self.count(k) += 1;
        self.side_of(k)
    }

    /// Removes a live key now.
    pub fn remove(&mut self, slots: &Slots, k: Key) {
        let had = self.keys.remove(&k);
        debug_assert!(had, "removing a key the set does not hold");
        *self.count(k) -= 1;
        // An end went: the next one in may be stale.
        if self.ends.is_some_and(|(lo, hi)| k == lo || k == hi) {
            self.trim(slots);
        }
    }

    /// Leaves live keys in place, stale (`hard` below the cut, `easy` at or
    /// above it): the caller has moved their slots to another state, and
    /// calls [`Self::settle`] after the batch. Until then an end may be
    /// stale, so nothing may read the set.
    pub fn forget(&mut self, hard: usize, easy: usize) {
        self.hard -= hard;
        self.easy -= easy;
    }

    /// Ends a batch of [`Self::forget`]: drops stale ends, and compacts if
    /// stale keys outnumber half the live ones. Only between batches:
    /// mid-batch, slots already moved but not yet forgotten would count as
    /// live and be dropped.
    pub fn settle(&mut self, slots: &Slots) {
        self.trim(slots);
        let stale = self.keys.len() - self.len();
        if stale > MIN_STALE.max(self.len() / 2) {
            self.compact(slots);
        }
    }

    /// Moves the cut until `hard` live keys lie below it, setting the state
    /// of every live key it passes. The keys are read in runs whose
    /// liveness is checked in one pass of independent loads, so the cache
    /// misses overlap.
    pub fn move_cut(&mut self, slots: &mut Slots, hard: usize) {
        let mut run: Vec<Key> = Vec::new();
        while self.hard != hard {
            let (up, want) = if self.hard < hard {
                (true, (hard - self.hard).min(self.easy))
            } else {
                (false, self.hard - hard)
            };
            if want == 0 {
                break;
            }
            run.clear();
            if up {
                run.extend(self.keys.range(self.cut..).take(want));
            } else {
                run.extend(self.keys.range(..self.cut).rev().take(want));
            }
            let live: Vec<bool> = run.iter().map(|&k| Self::is_live(slots, k)).collect();
            let (st, moved) = if up {
                (State::Easy, State::Hard)
            } else {
                (State::Hard, State::Easy)
            };
            let mut n = 0;
            for (&k, live) in run.iter().zip(live) {
                if live {
                    debug_assert_eq!(slots.state(key_slot(k)), st);
                    slots.set_state(key_slot(k), moved);
                    n += 1;
                }
            }
            let edge = *run.last().expect("want live keys lie past the cut");
            if up {
                self.cut = edge + 1;
                self.hard += n;
                self.easy -= n;
            } else {
                self.cut = edge;
                self.hard -= n;
                self.easy += n;
            }
        }
    }

    /// Drops stale keys from both ends.
    fn trim(&mut self, slots: &Slots) {
        while self.keys.first().is_some_and(|&k| !Self::is_live(slots, k)) {
            self.keys.pop_first();
        }
        while self.keys.last().is_some_and(|&k| !Self::is_live(slots, k)) {
            self.keys.pop_last();
        }
        self.refresh_ends();
    }

    fn compact(&mut self, slots: &Slots) {
        let keys = std::mem::take(&mut self.keys);
        self.keys = keys
            .into_iter()
            .filter(|&k| Self::is_live(slots, k))
            .collect();
        self.refresh_ends();
        debug_assert_eq!(self.keys.len(), self.len());
    }

    /// Live keys in `range`, ascending.
    fn live_in<'a>(
        &'a self,
        slots: &'a Slots,
        range: impl RangeBounds<Key>,
    ) -> impl DoubleEndedIterator<Item = Key> + 'a {
        self.keys
            .range(range)
            .copied()
            .filter(move |&k| Self::is_live(slots, k))
    }

    /// Live keys in ascending order, hard then easy.
    pub fn iter<'a>(&'a self, slots: &'a Slots) -> impl DoubleEndedIterator<Item = Key> + 'a {
        self.live_in(slots, ..)
    }

    /// Live hard keys, ascending.
    pub fn hard<'a>(&'a self, slots: &'a Slots) -> impl DoubleEndedIterator<Item = Key> + 'a {
        self.live_in(slots, ..self.cut)
    }

    /// Live easy keys, ascending.
    pub fn easy<'a>(&'a self, slots: &'a Slots) -> impl DoubleEndedIterator<Item = Key> + 'a {
        self.live_in(slots, self.cut..)
    }

    /// Live hard (`State::Hard`) or easy keys from the highest score down,
    /// each score's run least recently trained first (see [`DescRuns`]).
    pub fn desc_runs<'a>(
        &'a self,
        slots: &'a Slots,
        side: State,
    ) -> impl Iterator<Item = Key> + 'a {
        let runs = match side {
            State::Hard => DescRuns::new(&self.keys, 0, Some(self.cut)),
            _ => DescRuns::new(&self.keys, self.cut, None),
        };
        runs.filter(move |&k| Self::is_live(slots, k))
    }

    /// Takes every live key out, ascending.
    pub fn take(&mut self, slots: &Slots) -> Vec<Key> {
        let keys = std::mem::take(&mut self.keys);
        let mut v = Vec::with_capacity(self.len());
        v.extend(keys.into_iter().filter(|&k| Self::is_live(slots, k)));
        (self.ends, self.hard, self.easy) = (None, 0, 0);
        v
    }

    /// Replaces the contents with sorted live keys, those below `cut` hard.
    pub fn set_sorted(&mut self, keys: &[Key], cut: Key) {
        self.keys = keys.iter().copied().collect();
        self.refresh_ends();
        self.cut = cut;
        self.hard = keys.partition_point(|&k| k < cut);
        self.easy = keys.len() - self.hard;
    }

    /// Panics unless the live counts, the ends and the states agree with
    /// the slots.
    pub fn check(&self, slots: &Slots) {
        for (side, n) in [(State::Hard, self.hard), (State::Easy, self.easy)] {
            let keys: Vec<Key> = match side {
                State::Hard => self.hard(slots).collect(),
                _ => self.easy(slots).collect(),
            };
            assert_eq!(keys.len(), n, "{side:?} live count");
            for k in keys {
                assert_eq!(slots.state(key_slot(k)), side, "a key on the wrong side");
            }
        }
        assert_eq!(
            self.ends,
            self.keys.first().copied().zip(self.keys.last().copied()),
            "the ends kept"
        );
        for end in [self.first(), self.last()].into_iter().flatten() {
            assert!(Self::is_live(slots, end), "a stale end");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::key_score;
    use crate::rng::Rng;

    /// Slots `0..n` with scores on five levels, each placed in `set`.
    fn placed(n: u32, set: &mut Scored) -> Slots {
        let mut slots = Slots::default();
        for s in 0..n {
            slots.push_free();
            slots.set_score(s, [-1.0, -0.5, 0.0, 0.5, 1.0][(s * 7 % 5) as usize]);
            slots.set_seq(s, u64::from(s));
            let st = set.insert(slots.key(s));
            slots.set_state(s, st);
        }
        slots
    }

    /// The oracle's descending runs: by score from the highest, each run
    /// ascending.
    fn desc_runs(keys: &[Key]) -> Vec<Key> {
        let mut v = keys.to_vec();
        v.sort_by(|a, b| key_score(*b).total_cmp(&key_score(*a)).then(a.cmp(b)));
        v
    }

    #[test]
    fn the_cut_splits_the_live_keys_like_a_sorted_vector() {
        let mut rng = Rng::new(5);
        let mut set = Scored::new(0);
        let mut slots = placed(300, &mut set);
        // The oracle: the live keys, sorted.
        let mut live: Vec<Key> = (0..300).map(|s| slots.key(s)).collect();
        live.sort_unstable();
        for round in 0..40 {
            // Move the cut anywhere (often into a run of equal scores).
            let hard = rng.below(live.len() as u64 + 1) as usize;
            set.move_cut(&mut slots, hard);
            set.check(&slots);
            let h: Vec<Key> = set.hard(&slots).collect();
            let e: Vec<Key> = set.easy(&slots).collect();
            assert_eq!(h, live[..hard], "round {round}: hard");
            assert_eq!(e, live[hard..], "round {round}: easy");
            let h_runs: Vec<Key> = set.desc_runs(&slots, State::Hard).collect();
            let e_runs: Vec<Key> = set.desc_runs(&slots, State::Easy).collect();
            assert_eq!(h_runs, desc_runs(&h), "round {round}: hard runs");
            assert_eq!(e_runs, desc_runs(&e), "round {round}: easy runs");
            // Forget a few keys (drawn: stale), remove one now, and put
            // back an earlier drawn one.
            let mut gone = [0usize; 2];
            for _ in 0..5.min(live.len()) {
                let k = live.swap_remove(rng.below(live.len() as u64) as usize);
                gone[usize::from(set.side_of(k) == State::Easy)] += 1;
                slots.set_state(key_slot(k), State::InFlight);
            }
            set.forget(gone[0], gone[1]);
            set.settle(&slots);
            if let Some(k) = live.pop() {
                set.remove(&slots, k);
                slots.set_state(key_slot(k), State::Free);
            }
            let back = (0..300)
                .find(|&s| slots.state(s) == State::InFlight)
                .expect("a drawn slot");
            let st = set.insert(slots.key(back));
            slots.set_state(back, st);
            live.push(slots.key(back));
            live.sort_unstable();
            set.move_cut(&mut slots, hard.min(live.len()));
            set.check(&slots);
        }
    }
}
