//! Per-prompt state as struct-of-arrays columns indexed by a dense `u32`
//! slot, and the names of the partitions a slot can be in.

use crate::digest::{self, Records};
use crate::error::{invalid, Result};
use crate::keys::{key, Key};
use crate::payload::Arena;

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

    /// Parses a partition name (`"free"` is not one: nothing is stored there).
    pub fn parse(s: &str) -> Result<State> {
        const HELD: [State; 5] = [
            State::Cold,
            State::Hard,
            State::Easy,
            State::InFlight,
            State::Archived,
        ];
        HELD.into_iter().find(|st| st.name() == s).ok_or_else(|| {
            invalid(format!(
                "state: expected one of {:?}, got {s:?}",
                HELD.map(State::name)
            ))
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
    pub payload: Arena,
    /// Running digest of every slot's record, for the fingerprint.
    pub digest: Records,
}

impl Slots {
    pub fn len(&self) -> usize {
        self.gen.len()
    }

    pub fn push_free(&mut self) {
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
        self.payload.push_empty();
        self.digest.grow(self.gen.len() as u32 - 1);
    }

    /// Slot `slot` is about to change: its old record leaves the digest
    /// (once per flush). Every write to a held slot's columns comes after one.
    #[inline]
    pub fn touch(&mut self, slot: u32) {
        if !self.digest.is_touched(slot) {
            let old = self.record_hash(slot);
            self.digest.touch(slot, old);
        }
    }

    #[inline]
    pub fn set_state(&mut self, slot: u32, st: State) {
        if self.state[slot as usize] != st as u8 {
            self.touch(slot);
            self.state[slot as usize] = st as u8;
        }
    }

    #[inline]
    pub fn set_score(&mut self, slot: u32, v: f32) {
        self.touch(slot);
        self.score[slot as usize] = v;
    }

    /// The hash of everything a slot holds (columns and payload).
    pub fn record_hash(&self, slot: u32) -> u64 {
        let s = slot as usize;
        let mut b = [0u8; 46];
        b[0..4].copy_from_slice(&self.gen[s].to_le_bytes());
        b[4..12].copy_from_slice(&self.seq[s].to_le_bytes());
        b[12] = self.state[s];
        b[13] = self.flags[s];
        b[14..18].copy_from_slice(&self.score[s].to_le_bytes());
        b[18..22].copy_from_slice(&self.visits[s].to_le_bytes());
        b[22..26].copy_from_slice(&self.rollouts[s].to_le_bytes());
        b[26..30].copy_from_slice(&self.correct[s].to_le_bytes());
        b[30..34].copy_from_slice(&self.last_step[s].to_le_bytes());
        b[34..42].copy_from_slice(&self.parent[s].to_le_bytes());
        b[42..46].copy_from_slice(&self.difficulty[s].to_le_bytes());
        let head = digest::element(u64::from(slot), &b);
        self.payload
            .get(s)
            .map_or(head, |p| digest::element(head, p))
    }

    /// The digest of every slot (rehashes what changed since the last call).
    pub fn digest(&mut self) -> u64 {
        for slot in self.digest.take_touched() {
            let h = self.record_hash(slot);
            self.digest.settle(slot, h);
        }
        self.digest.sum()
    }

    /// Recomputes the digest from scratch (after loading; O(n)).
    pub fn rebuild_digest(&mut self) {
        let n = self.len() as u32;
        let sum = (0..n).fold(0u64, |acc, i| acc.wrapping_add(self.record_hash(i)));
        self.digest = Records::new(n, sum);
    }

    #[inline]
    pub fn state(&self, slot: u32) -> State {
        State::from_code(self.state[slot as usize]).unwrap_or(State::Free)
    }

    #[inline]
    pub fn has_score(&self, slot: u32) -> bool {
        self.flags[slot as usize] & HAS_SCORE != 0
    }

    /// The slot's ordered-set key (its score, when it was last placed, itself).
    #[inline]
    pub fn key(&self, slot: u32) -> Key {
        let s = slot as usize;
        key(self.score[s], self.seq[s], slot)
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
            + self.payload.index_bytes()
            + self.digest.bytes()
    }
}
