//! Per-prompt state as struct-of-arrays columns indexed by a dense `u32`
//! slot, and the names of the partitions a slot can be in.

use crate::digest;
use crate::error::{invalid, Result};
use crate::keys::{key, Key};
use crate::payload::Arena;

/// `parent` of a prompt without a (living) parent.
pub const NO_PARENT: u64 = u64::MAX;
/// `last_step` of a prompt never reported with a step.
pub const NO_STEP: u32 = u32::MAX;
/// `group` of a prompt in no group.
pub const NO_GROUP: u32 = u32::MAX;

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
/// A never-scored prompt with an explicit prior (kept in `score`).
pub const HAS_PRIOR: u8 = 4;

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
    /// Group index per slot, or empty while no prompt has had a group
    /// (pools without groups pay nothing).
    pub group: Vec<u32>,
    /// Confidence (pseudo-count) of an explicit prior per slot, or empty
    /// while none has been given.
    pub confidence: Vec<f32>,
    pub payload: Arena,
    /// Running digest of every (slot, column) value and every payload, for
    /// the fingerprint: each write through a setter swaps one term.
    pub digest: u64,
}

/// Column ids in the digest's terms.
const GEN: u8 = 0;
const SEQ: u8 = 1;
const STATE: u8 = 2;
const FLAGS: u8 = 3;
const SCORE: u8 = 4;
const VISITS: u8 = 5;
const ROLLOUTS: u8 = 6;
const CORRECT: u8 = 7;
const LAST_STEP: u8 = 8;
const PARENT: u8 = 9;
const DIFFICULTY: u8 = 10;
const PAYLOAD: u8 = 11;
const GROUP: u8 = 12;
const CONFIDENCE: u8 = 13;

/// One (slot, column, value) term of the digest (a mixer, a few cycles:
/// every column write pays two of these).
#[inline]
fn term<T: bytemuck::Pod>(slot: u32, column: u8, v: &T) -> u64 {
    digest::small(u64::from(slot) << 8 | u64::from(column), v)
}

/// The digest term of a slot's payload bytes.
fn payload_term(slot: u32, p: &[u8]) -> u64 {
    digest::element(u64::from(slot) << 8 | u64::from(PAYLOAD), p)
}

/// The column table: per column a setter that writes the value and swaps its
/// digest term (every write to a slot's columns goes through one), and the
/// value a new slot starts with.
macro_rules! columns {
    ($($set:ident: $col:ident: $t:ty = $id:ident, new $default:expr),+ $(,)?) => {
        $(
            #[inline]
            pub fn $set(&mut self, slot: u32, v: $t) {
                let old = std::mem::replace(&mut self.$col[slot as usize], v);
                if bytemuck::bytes_of(&old) != bytemuck::bytes_of(&v) {
                    self.digest = self
                        .digest
                        .wrapping_sub(term(slot, $id, &old))
                        .wrapping_add(term(slot, $id, &v));
                }
            }
        )+

        /// Adds a slot holding nothing (every column at its starting value).
        pub fn push_free(&mut self) {
            $(self.$col.push($default);)+
            if !self.group.is_empty() {
                self.group.push(NO_GROUP);
            }
            if !self.confidence.is_empty() {
                self.confidence.push(0.0);
            }
            self.payload.push_empty();
            let slot = self.gen.len() as u32 - 1;
            self.digest = self.digest.wrapping_add(self.column_terms(slot));
        }

        /// The digest terms of every column of one slot.
        fn column_terms(&self, slot: u32) -> u64 {
            let s = slot as usize;
            0u64 $(.wrapping_add(term(slot, $id, &self.$col[s])))+
        }
    };
}

impl Slots {
    pub fn len(&self) -> usize {
        self.gen.len()
    }

    columns! {
        set_gen: gen: u32 = GEN, new 0,
        set_seq: seq: u64 = SEQ, new 0,
        set_state_code: state: u8 = STATE, new State::Free as u8,
        set_flags: flags: u8 = FLAGS, new 0,
        set_score: score: f32 = SCORE, new 0.0,
        set_visits: visits: u32 = VISITS, new 0,
        set_rollouts: rollouts: u32 = ROLLOUTS, new 0,
        set_correct: correct: u32 = CORRECT, new 0,
        set_last_step: last_step: u32 = LAST_STEP, new NO_STEP,
        set_parent: parent: u64 = PARENT, new NO_PARENT,
        set_difficulty: difficulty: f32 = DIFFICULTY, new 1.0,
    }

    /// Columns allocated on first use: a value's digest term is taken
    /// relative to the default's, so an absent column contributes nothing.
    fn set_lazy<T: bytemuck::Pod + PartialEq>(
        col: &mut Vec<T>,
        digest: &mut u64,
        len: usize,
        id: u8,
        default: T,
        slot: u32,
        v: T,
    ) {
        if col.is_empty() {
            if v == default {
                return;
            }
            col.resize(len, default);
        }
        let old = std::mem::replace(&mut col[slot as usize], v);
        *digest = digest
            .wrapping_sub(term(slot, id, &old))
            .wrapping_add(term(slot, id, &v));
    }

    pub fn set_group(&mut self, slot: u32, g: u32) {
        let n = self.len();
        Self::set_lazy(
            &mut self.group,
            &mut self.digest,
            n,
            GROUP,
            NO_GROUP,
            slot,
            g,
        );
    }

    pub fn set_confidence(&mut self, slot: u32, c: f32) {
        let n = self.len();
        Self::set_lazy(
            &mut self.confidence,
            &mut self.digest,
            n,
            CONFIDENCE,
            0.0,
            slot,
            c,
        );
    }

    #[inline]
    pub fn group_of(&self, slot: u32) -> u32 {
        self.group.get(slot as usize).copied().unwrap_or(NO_GROUP)
    }

    #[inline]
    pub fn confidence_of(&self, slot: u32) -> f32 {
        self.confidence.get(slot as usize).copied().unwrap_or(0.0)
    }

    /// The digest terms of the lazy columns (relative to their defaults).
    fn lazy_terms(&self, slot: u32) -> u64 {
        let rel = |id: u8, v: u64, d: u64| term(slot, id, &v).wrapping_sub(term(slot, id, &d));
        let g = self.group_of(slot);
        let c = self.confidence_of(slot);
        rel(GROUP, u64::from(g), u64::from(NO_GROUP)).wrapping_add(rel(
            CONFIDENCE,
            u64::from(c.to_bits()),
            0,
        ))
    }

    #[inline]
    pub fn set_state(&mut self, slot: u32, st: State) {
        self.set_state_code(slot, st as u8);
    }

    /// Stores a slot's payload (it must have none).
    pub fn set_payload(&mut self, slot: u32, p: &[u8]) {
        self.digest = self.digest.wrapping_add(payload_term(slot, p));
        self.payload.set(slot as usize, p);
    }

    pub fn clear_payload(&mut self, slot: u32) {
        if let Some(p) = self.payload.get(slot as usize) {
            self.digest = self.digest.wrapping_sub(payload_term(slot, p));
            self.payload.clear(slot as usize);
        }
    }

    /// The digest from scratch (after loading, and to check the running one).
    pub fn full_digest(&self) -> u64 {
        (0..self.len() as u32).fold(0u64, |acc, slot| {
            let p = self.payload.get(slot as usize);
            acc.wrapping_add(self.column_terms(slot))
                .wrapping_add(self.lazy_terms(slot))
                .wrapping_add(p.map_or(0, |p| payload_term(slot, p)))
        })
    }

    #[inline]
    pub fn state(&self, slot: u32) -> State {
        State::from_code(self.state[slot as usize]).unwrap_or(State::Free)
    }

    #[inline]
    pub fn has_score(&self, slot: u32) -> bool {
        self.flags[slot as usize] & HAS_SCORE != 0
    }

    /// Reads the state and generation of each of `slots` in a loop of
    /// independent loads, so that their cache misses overlap: a batch of
    /// scattered slots is touched before a longer loop updates their states
    /// (and the caller makes their ids), which then hits the cache.
    pub fn touch(&self, slots: &[u32]) {
        let read = slots.iter().fold(0u32, |a, &s| {
            a ^ u32::from(self.state[s as usize]) ^ self.gen[s as usize]
        });
        std::hint::black_box(read);
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
            + self.group.capacity() * 4
            + self.confidence.capacity() * 4
            + self.payload.index_bytes()
    }
}
