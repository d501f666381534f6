//! Ordered-set keys of scored prompts, and the score representation.

use std::collections::BTreeSet;

/// Ordered-set key: (score, seq, slot) packed so that integer order = score
/// order, and equal scores order by `seq` (when the prompt was last placed:
/// added or reported). Ties are therefore least-recently-trained first, and
/// a reported prompt lands at the end of its score's run, where the B-tree
/// path is already hot, instead of at a random position.
pub type Key = u128;

#[inline]
pub fn key(score: f32, seq: u64, slot: u32) -> Key {
    let b = score.to_bits();
    let ord = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (Key::from(ord) << 96) | (Key::from(seq) << 32) | Key::from(slot)
}

#[inline]
pub fn key_slot(k: Key) -> u32 {
    k as u32
}

/// The first key of `k`'s score run (every key with that score is >= it).
#[inline]
pub fn run_start(k: Key) -> Key {
    k >> 96 << 96
}

#[inline]
pub fn key_score(k: Key) -> f32 {
    let ord = (k >> 96) as u32;
    let b = if ord >> 31 == 1 {
        ord & 0x7FFF_FFFF
    } else {
        !ord
    };
    f32::from_bits(b)
}

/// Keys in `[lo, below)` from the highest score down, each score's run in
/// ascending order (least recently trained first): what "nearest the
/// boundary first" means on the hard side. O(log n) per distinct score
/// visited.
pub struct DescRuns<'a> {
    set: &'a BTreeSet<Key>,
    run: Option<std::collections::btree_set::Range<'a, Key>>,
    lo: Key,
    /// Exclusive upper bound of the runs not yet visited.
    below: Option<Key>,
}

impl<'a> DescRuns<'a> {
    pub fn new(set: &'a BTreeSet<Key>, lo: Key, below: Option<Key>) -> Self {
        DescRuns {
            set,
            run: None,
            lo,
            below,
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
                None => self.set.range(self.lo..).next_back(),
                Some(b) if b <= self.lo => None,
                Some(b) => self.set.range(self.lo..b).next_back(),
            }?;
            let start = run_start(*last).max(self.lo);
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
pub fn store_score(s: f64) -> f32 {
    let f = s.clamp(-1.0, 1.0) as f32;
    if f == 0.0 {
        0.0
    } else {
        f
    }
}
