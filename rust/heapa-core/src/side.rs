//! One side of the boundary (hard or easy): an ordered set of keys that
//! may hold stale entries.
//!
//! Removing a random key from a B-tree of a million costs several cache
//! misses; a weighted draw removes 512 random keys per batch. So a drawn key
//! can be *forgotten* instead: it stays in the set, stale, and is skipped by
//! every reader. A key is live when its slot is in this side's state and
//! still has that key. Two rules keep readers cheap: both ends of the set are
//! live between batches (so `first`/`last` need no check), and the set is compacted
//! when stale keys outnumber half the live ones (O(1) amortised per forget).
//! Keys near the boundary (medium sampling) are removed eagerly, where the
//! B-tree path is hot.

use std::collections::BTreeSet;

use crate::keys::{key_slot, DescRuns, Key};
use crate::slots::{Slots, State};

/// Which end of a side.
#[derive(Clone, Copy, Debug)]
pub(crate) enum End {
    Lowest,
    Highest,
}

/// Compaction does not pay below this many stale keys.
const MIN_STALE: usize = 4096;

#[derive(Clone, Debug)]
pub(crate) struct Side {
    keys: BTreeSet<Key>,
    live: usize,
    state: State,
}

impl Side {
    pub fn new(state: State) -> Side {
        Side {
            keys: BTreeSet::new(),
            live: 0,
            state,
        }
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Entries, stale ones included (for memory estimates).
    pub fn entries(&self) -> usize {
        self.keys.len()
    }

    pub fn first(&self) -> Option<Key> {
        self.keys.first().copied()
    }

    pub fn last(&self) -> Option<Key> {
        self.keys.last().copied()
    }

    fn is_live(&self, slots: &Slots, k: Key) -> bool {
        let s = key_slot(k);
        slots.state(s) == self.state && slots.key(s) == k
    }

    /// Adds a key whose slot the caller puts in this side's state. A stale
    /// copy of the same key becomes live again.
    pub fn insert(&mut self, k: Key) {
        self.keys.insert(k);
        self.live += 1;
    }

    /// Removes a live key now.
    pub fn remove(&mut self, slots: &Slots, k: Key) {
        let had = self.keys.remove(&k);
        debug_assert!(had, "removing a key the side does not hold");
        self.live -= 1;
        // An end went: the next one in may be stale.
        if self.first().is_none_or(|f| k < f) || self.last().is_none_or(|l| k > l) {
            self.trim(slots);
        }
    }

    /// Leaves `n` live keys in place, stale: the caller has moved their
    /// slots to another state, and calls [`Self::settle`] after the batch.
    /// Until then an end may be stale, so nothing may read the side.
    pub fn forget(&mut self, n: usize) {
        self.live -= n;
    }

    /// Ends a batch of [`Self::forget`]: drops stale ends, and compacts if
    /// stale keys outnumber half the live ones. Only between batches:
    /// mid-batch, slots already moved but not yet forgotten would count as
    /// live and be dropped.
    pub fn settle(&mut self, slots: &Slots) {
        self.trim(slots);
        let stale = self.keys.len() - self.live;
        if stale > MIN_STALE.max(self.live / 2) {
            self.compact(slots);
        }
    }

    /// Takes out the `n` lowest or highest live keys (fewer if the side
    /// holds fewer), dropping the stale keys among them. Their liveness is
    /// read in one pass of independent loads, so the cache misses overlap.
    pub fn pop_end(&mut self, slots: &Slots, n: usize, end: End) -> Vec<Key> {
        let mut out = Vec::with_capacity(n);
        let mut next: Vec<Key> = Vec::new();
        while out.len() < n && !self.keys.is_empty() {
            let want = n - out.len();
            next.clear();
            match end {
                End::Lowest => next.extend(self.keys.iter().take(want)),
                End::Highest => next.extend(self.keys.iter().rev().take(want)),
            }
            let live: Vec<bool> = next.iter().map(|&k| self.is_live(slots, k)).collect();
            out.extend(
                next.iter()
                    .zip(live)
                    .filter_map(|(&k, live)| live.then_some(k)),
            );
            // One split instead of a B-tree pop per key.
            let edge = *next.last().expect("the side is not empty");
            match end {
                End::Lowest if next.len() < self.keys.len() => {
                    self.keys = self.keys.split_off(&(edge + 1))
                }
                End::Highest if next.len() < self.keys.len() => drop(self.keys.split_off(&edge)),
                _ => self.keys.clear(),
            }
        }
        self.live -= out.len();
        match end {
            End::Lowest => self.trim_first(slots),
            End::Highest => self.trim_last(slots),
        }
        out
    }

    /// Drops stale keys from both ends.
    fn trim(&mut self, slots: &Slots) {
        self.trim_first(slots);
        self.trim_last(slots);
    }

    fn trim_first(&mut self, slots: &Slots) {
        while self.first().is_some_and(|k| !self.is_live(slots, k)) {
            self.keys.pop_first();
        }
    }

    fn trim_last(&mut self, slots: &Slots) {
        while self.last().is_some_and(|k| !self.is_live(slots, k)) {
            self.keys.pop_last();
        }
    }

    fn compact(&mut self, slots: &Slots) {
        let keys = std::mem::take(&mut self.keys);
        self.keys = keys
            .into_iter()
            .filter(|&k| self.is_live(slots, k))
            .collect();
        debug_assert_eq!(self.keys.len(), self.live);
    }

    /// Live keys in ascending order.
    pub fn iter<'a>(&'a self, slots: &'a Slots) -> impl DoubleEndedIterator<Item = Key> + 'a {
        self.keys
            .iter()
            .copied()
            .filter(move |&k| self.is_live(slots, k))
    }

    /// Live keys from the highest score down, each score's run least
    /// recently trained first (see [`DescRuns`]).
    pub fn desc_runs<'a>(&'a self, slots: &'a Slots) -> impl Iterator<Item = Key> + 'a {
        DescRuns::new(&self.keys).filter(move |&k| self.is_live(slots, k))
    }

    /// Takes every live key out, ascending.
    pub fn take(&mut self, slots: &Slots) -> Vec<Key> {
        let keys = std::mem::take(&mut self.keys);
        let mut v = Vec::with_capacity(self.live);
        v.extend(keys.into_iter().filter(|&k| self.is_live(slots, k)));
        self.live = 0;
        v
    }

    /// Replaces the contents with sorted live keys.
    pub fn set_sorted(&mut self, keys: &[Key]) {
        self.keys = keys.iter().copied().collect();
        self.live = keys.len();
    }

    /// Panics unless the live count and the ends agree with the slots.
    pub fn check(&self, slots: &Slots) {
        assert_eq!(
            self.iter(slots).count(),
            self.live,
            "{:?} live count",
            self.state
        );
        for end in [self.first(), self.last()].into_iter().flatten() {
            assert!(self.is_live(slots, end), "{:?}: a stale end", self.state);
        }
    }
}
