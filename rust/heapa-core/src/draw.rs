//! Weighted draws without replacement over slots, for the `uniform` and
//! `prioritized` sampling modes.
//!
//! Drawable slots are kept in per-weight-class bitsets: class `c` holds the
//! slots whose weight lies in `[floor·2^(c/8), floor·2^((c+1)/8))`. A draw
//! picks a class in proportion to (members × the class's upper bound), a
//! member uniformly by rank, and accepts it with probability weight / bound,
//! so each draw is exactly proportional to the weights and a try succeeds at
//! least 92% of the time. A uniform number below lower / upper bound accepts
//! without reading the slot's score (a cache miss at a million prompts): only
//! the remaining ~8% of tries read it. Everything the draw reads is an integer count or a weight
//! computed from the slot's score: the result depends only on which slots
//! are drawable and the RNG, never on the order of past updates, so a pool
//! rebuilt from a snapshot draws exactly what the original would have.
//!
//! Cost: a bitset of one bit per slot per occupied class (128 KB for 1M slots
//! in uniform mode; 28 classes span the default prioritized weights), a draw
//! reads one Fenwick path over 512-bit blocks and at most 8 words.

use crate::rng::Rng;

const BLOCK_WORDS: usize = 8;
const BLOCK_BITS: usize = BLOCK_WORDS * 64;
/// Classes per doubling of the weight.
const PER_OCTAVE: f64 = 8.0;
/// Weights spanning more than 2^64 share the top class (its acceptance rate
/// can then drop; only extreme temperatures reach it).
const MAX_CLASSES: usize = 512;

/// A bitset with rank selection: the `r`-th set bit in O(log blocks + 64).
#[derive(Clone, Debug, Default)]
struct RankBits {
    words: Vec<u64>,
    /// Fenwick tree (1-based) over per-block set-bit counts.
    tree: Vec<u32>,
    count: usize,
}

impl RankBits {
    fn with_bits(n: usize) -> RankBits {
        let mut b = RankBits::default();
        b.grow(n);
        b
    }

    fn bytes(&self) -> usize {
        self.words.capacity() * 8 + self.tree.capacity() * 4
    }

    /// Makes room for bits `0..n`.
    fn grow(&mut self, n: usize) {
        let words = n.div_ceil(64);
        if words <= self.words.len() {
            return;
        }
        self.words.resize(words, 0);
        let blocks = words.div_ceil(BLOCK_WORDS);
        if self.tree.is_empty() {
            self.tree.push(0);
        }
        // New blocks are empty: each new tree cell covers old blocks only.
        while self.tree.len() <= blocks {
            let i = self.tree.len();
            let lo = i - (i & i.wrapping_neg());
            let s = self.prefix(i - 1) - self.prefix(lo);
            self.tree.push(s);
        }
    }

    fn prefix(&self, blocks: usize) -> u32 {
        let mut i = blocks;
        let mut s = 0;
        while i > 0 {
            s += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        s
    }

    fn add(&mut self, block: usize, delta: i32) {
        let mut i = block + 1;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    fn insert(&mut self, bit: usize) {
        let (w, m) = (bit / 64, 1u64 << (bit % 64));
        debug_assert_eq!(self.words[w] & m, 0, "bit {bit} already set");
        self.words[w] |= m;
        self.count += 1;
        self.add(bit / BLOCK_BITS, 1);
    }

    fn remove(&mut self, bit: usize) {
        let (w, m) = (bit / 64, 1u64 << (bit % 64));
        debug_assert_ne!(self.words[w] & m, 0, "bit {bit} not set");
        self.words[w] &= !m;
        self.count -= 1;
        self.add(bit / BLOCK_BITS, -1);
    }

    /// The index of the `r`-th set bit (0-based); `r < count`.
    fn select(&self, r: usize) -> usize {
        debug_assert!(r < self.count);
        // Fenwick descent: the block holding the r-th bit.
        let mut rem = r as u32;
        let mut pos = 0;
        let mut step = (self.tree.len() - 1).next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next < self.tree.len() && self.tree[next] <= rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        let mut w = pos * BLOCK_WORDS;
        loop {
            let c = self.words[w].count_ones();
            if rem < c {
                return w * 64 + select_in_word(self.words[w], rem);
            }
            rem -= c;
            w += 1;
        }
    }
}

/// Position of the `r`-th set bit of `w` (r < popcount): byte counts and
/// their running sums in one multiply, then a scan of the one byte.
fn select_in_word(w: u64, r: u32) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut c = w - ((w >> 1) & 0x5555_5555_5555_5555);
    c = (c & 0x3333_3333_3333_3333) + ((c >> 2) & 0x3333_3333_3333_3333);
    c = (c + (c >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    let sums = c.wrapping_mul(ONES); // byte i: set bits in bytes 0..=i
    let mut i = 0;
    while (sums >> (8 * i) & 0xFF) as u32 <= r {
        i += 1;
    }
    let before = if i == 0 {
        0
    } else {
        (sums >> (8 * (i - 1)) & 0xFF) as u32
    };
    let mut b = (w >> (8 * i)) & 0xFF;
    for _ in 0..r - before {
        b &= b - 1;
    }
    8 * i + b.trailing_zeros() as usize
}

/// Sampling weight of a drawable prompt, from its stored score in [-1, 1].
#[derive(Clone, Copy, Debug)]
pub enum Weight {
    Uniform,
    /// ((1 − pass rate) + ε)^(1/T): harder prompts are drawn more often.
    Prioritized {
        epsilon: f64,
        inv_temperature: f64,
    },
}

impl Weight {
    pub fn of(self, score: f32) -> f64 {
        match self {
            Weight::Uniform => 1.0,
            Weight::Prioritized {
                epsilon,
                inv_temperature,
            } => {
                let p = (f64::from(score) + 1.0) * 0.5;
                let w = (1.0 - p) + epsilon;
                if inv_temperature == 1.0 {
                    w
                } else {
                    w.powf(inv_temperature)
                }
            }
        }
    }
}

/// The drawable slots, by weight class.
#[derive(Clone, Debug)]
pub struct Draw {
    weight: Weight,
    /// The smallest weight a score can have (a solved prompt's).
    floor: f64,
    /// The largest weight a score can have (an unsolved prompt's).
    ceil: f64,
    classes: Vec<RankBits>,
    /// Each class's upper weight bound as an integer multiple of
    /// `ceil / 2^20`, so the total proposal mass is an exact integer.
    units: Vec<u64>,
    /// Each class's upper bound (`units × ceil / 2^20`).
    bounds: Vec<f64>,
    /// lower(c) / bound(c): a uniform number below it accepts unread.
    sure: Vec<f64>,
    /// Σ members × units over the classes.
    mass: u64,
    bits: usize,
    len: usize,
}

/// Resolution of the class bounds.
const UNIT: f64 = (1u64 << 20) as f64;

impl Draw {
    pub fn new(weight: Weight) -> Draw {
        Draw {
            weight,
            floor: weight.of(1.0),
            ceil: weight.of(-1.0),
            classes: Vec::new(),
            units: Vec::new(),
            bounds: Vec::new(),
            sure: Vec::new(),
            mass: 0,
            bits: 0,
            len: 0,
        }
    }

    /// Drawable slots.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&self) -> usize {
        self.classes.iter().map(RankBits::bytes).sum()
    }

    /// Makes room for slots `0..n`.
    pub fn grow(&mut self, n: usize) {
        self.bits = self.bits.max(n);
        for c in &mut self.classes {
            c.grow(n);
        }
    }

    fn class_of(&self, score: f32) -> usize {
        match self.weight {
            Weight::Uniform => 0,
            Weight::Prioritized { .. } => {
                let r = PER_OCTAVE * (self.weight.of(score) / self.floor).log2();
                // NaN-free: weights are >= floor > 0; clamp rounding below 0.
                (r.max(0.0) as usize).min(MAX_CLASSES - 1)
            }
        }
    }

    /// Lower and upper bounds of the weights in class `c`.
    fn bounds_of(&self, c: usize) -> (f64, f64) {
        match self.weight {
            Weight::Uniform => (1.0, 1.0),
            Weight::Prioritized { .. } => {
                let at = |c: usize| self.floor * (c as f64 / PER_OCTAVE).exp2();
                let lower = if c + 1 == MAX_CLASSES { 0.0 } else { at(c) };
                (lower, at(c + 1).min(self.ceil))
            }
        }
    }

    pub fn insert(&mut self, slot: u32, score: f32) {
        let c = self.class_of(score);
        while self.classes.len() <= c {
            let (lower, upper) = self.bounds_of(self.classes.len());
            let units = (upper / self.ceil * UNIT).ceil().max(1.0);
            let bound = units * self.ceil / UNIT;
            self.units.push(units as u64);
            self.bounds.push(bound);
            self.sure.push(lower / bound);
            self.classes.push(RankBits::with_bits(self.bits));
        }
        self.classes[c].insert(slot as usize);
        self.mass += self.units[c];
        self.len += 1;
    }

    /// Removes a drawable slot; `score` must be the one it was inserted with.
    pub fn remove(&mut self, slot: u32, score: f32) {
        let c = self.class_of(score);
        self.classes[c].remove(slot as usize);
        self.mass -= self.units[c];
        self.len -= 1;
    }

    pub fn clear(&mut self) {
        self.classes.clear();
        self.units.clear();
        self.bounds.clear();
        self.sure.clear();
        self.mass = 0;
        self.len = 0;
    }

    /// Draws one slot in proportion to its weight and removes it; `score`
    /// reads a slot's score. `None` when nothing is drawable.
    pub fn draw(&mut self, rng: &mut Rng, score: impl Fn(u32) -> f32) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        loop {
            // One integer picks the class (by members × units) and the
            // member within it (uniformly by rank).
            let mut r = rng.below(self.mass);
            let mut c = 0;
            loop {
                let m = self.classes[c].count as u64 * self.units[c];
                if r < m {
                    break;
                }
                r -= m;
                c += 1;
            }
            let slot = self.classes[c].select((r / self.units[c]) as usize) as u32;
            let accept = match self.weight {
                Weight::Uniform => true,
                Weight::Prioritized { .. } => {
                    let u = rng.unit();
                    u < self.sure[c] || u * self.bounds[c] < self.weight.of(score(slot))
                }
            };
            if accept {
                self.classes[c].remove(slot as usize);
                self.mass -= self.units[c];
                self.len -= 1;
                return Some(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_finds_every_set_bit_in_order() {
        let mut b = RankBits::with_bits(10_000);
        let set: Vec<usize> = (0..10_000)
            .filter(|i| i % 7 == 3 || i % 4096 == 0)
            .collect();
        for &i in &set {
            b.insert(i);
        }
        for (r, &i) in set.iter().enumerate() {
            assert_eq!(b.select(r), i);
        }
        b.remove(set[5]);
        assert_eq!(b.select(5), set[6]);
        b.grow(100_000);
        b.insert(99_999);
        assert_eq!(b.select(b.count - 1), 99_999);
    }

    #[test]
    fn select_in_word_matches_a_scan() {
        let w: u64 = 0xF0F0_0000_8001_0003;
        let bits: Vec<usize> = (0..64).filter(|i| w >> i & 1 == 1).collect();
        for (r, &i) in bits.iter().enumerate() {
            assert_eq!(select_in_word(w, r as u32), i);
        }
    }

    #[test]
    fn prioritized_draws_are_proportional_to_weights() {
        let weight = Weight::Prioritized {
            epsilon: 0.1,
            inv_temperature: 1.0,
        };
        let scores = [-1.0f32, -0.5, 0.0, 0.5, 1.0];
        let w: Vec<f64> = scores.iter().map(|&s| weight.of(s)).collect();
        let total: f64 = w.iter().sum();
        let mut rng = Rng::new(7);
        let mut hits = [0usize; 5];
        let n = 200_000;
        for _ in 0..n {
            let mut d = Draw::new(weight);
            d.grow(5);
            for (i, &s) in scores.iter().enumerate() {
                d.insert(i as u32, s);
            }
            hits[d.draw(&mut rng, |s| scores[s as usize]).unwrap() as usize] += 1;
        }
        for i in 0..5 {
            let p = w[i] / total;
            let got = hits[i] as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() < 5.0 * sd, "slot {i}: {got} vs {p}");
        }
    }
}
