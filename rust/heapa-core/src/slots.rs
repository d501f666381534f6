//! Per-prompt state as struct-of-arrays columns indexed by a dense `u32`
//! slot, and the names of the partitions a slot can be in.

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
    }
}
