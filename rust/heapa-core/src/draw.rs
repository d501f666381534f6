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
//! the remaining ~8% of tries read it. Everything the draw reads is an
//! integer count or a weight computed from the slot's score: the result
//! depends only on which slots are drawable and the RNG, never on the order
//! of past updates, so a pool rebuilt from a snapshot draws exactly what the
//! original would have.
//!
//! A batch is drawn in rounds (see [`Draw::draw`]) so that its ranks are
//! resolved together, sorted, in one pass over the counts instead of one
//! dependent search per draw.
//!
//! Cost: a bitset of one bit per slot per occupied class (128 KB for 1M slots
//! in uniform mode; 28 classes span the default prioritized weights) with
//! 16-bit running counts per 256 bits; inserting or removing a slot is O(1).

use crate::rng::Rng;

const BLOCK_WORDS: usize = 4;
const BLOCK_BITS: usize = BLOCK_WORDS * 64;
/// Blocks per super-block (8,192 bits): their running counts fill one cache
/// line, and finding a block among them is 32 comparisons that vectorise;
/// small blocks keep the bit counting of a selection short.
const SUPER_BLOCKS: usize = 32;
/// Classes per doubling of the weight.
const PER_OCTAVE: f64 = 8.0;
/// Weights spanning more than 2^64 share the top class (its acceptance rate
/// can then drop; only extreme temperatures reach it).
const MAX_CLASSES: usize = 512;

/// `FROM[at][j]` is 1 for `j >= at`: what a running count at `j` changes by
/// when a bit in block `at` of its super-block is set or cleared.
static FROM: [[u16; SUPER_BLOCKS]; SUPER_BLOCKS] = {
    let mut t = [[0u16; SUPER_BLOCKS]; SUPER_BLOCKS];
    let mut at = 0;
    while at < SUPER_BLOCKS {
        let mut j = at;
        while j < SUPER_BLOCKS {
            t[at][j] = 1;
            j += 1;
        }
        at += 1;
    }
    t
};

/// A bitset with rank selection: per 256-bit block, the set bits from the
/// start of its 32-block super-block through that block, and per super-block
/// its count; so an update is O(1) (one super-block's entries) and a batch
/// of sorted ranks is selected in one forward pass.
#[derive(Clone, Debug, Default)]
struct RankBits {
    words: Vec<u64>,
    /// Running counts within each super-block (the last super-block padded
    /// to full length): finding a rank's block is then a count of entries
    /// at or below it, with no dependency from one entry to the next.
    through: Vec<u16>,
    supers: Vec<u32>,
    count: usize,
}

impl RankBits {
    fn with_bits(n: usize) -> RankBits {
        let mut b = RankBits::default();
        b.grow(n);
        b
    }

    fn bytes(&self) -> usize {
        self.words.capacity() * 8 + self.through.capacity() * 2 + self.supers.capacity() * 4
    }

    /// Makes room for bits `0..n`.
    fn grow(&mut self, n: usize) {
        let words = n.div_ceil(64);
        if words <= self.words.len() {
            return;
        }
        self.words.resize(words, 0);
        let supers = words.div_ceil(BLOCK_WORDS * SUPER_BLOCKS);
        // New blocks hold no bits: in the last old super-block their running
        // count is already its total (the padding), in new ones 0.
        self.through.resize(supers * SUPER_BLOCKS, 0);
        self.supers.resize(supers, 0);
    }

    /// The running counts of the super-block holding `block`, and `block`'s
    /// index among them.
    fn super_of(&mut self, block: usize) -> (&mut [u16; SUPER_BLOCKS], usize) {
        let first = block - block % SUPER_BLOCKS;
        let run = (&mut self.through[first..first + SUPER_BLOCKS])
            .try_into()
            .expect("a whole super-block");
        (run, block - first)
    }

    fn insert(&mut self, bit: usize) {
        let (w, m) = (bit / 64, 1u64 << (bit % 64));
        debug_assert_eq!(self.words[w] & m, 0, "bit {bit} already set");
        self.words[w] |= m;
        self.count += 1;
        let b = bit / BLOCK_BITS;
        self.supers[b / SUPER_BLOCKS] += 1;
        let (run, at) = self.super_of(b);
        for (t, m) in run.iter_mut().zip(&FROM[at]) {
            *t = t.wrapping_add(*m);
        }
    }

    fn remove(&mut self, bit: usize) {
        let (w, m) = (bit / 64, 1u64 << (bit % 64));
        debug_assert_ne!(self.words[w] & m, 0, "bit {bit} not set");
        self.words[w] &= !m;
        self.count -= 1;
        let b = bit / BLOCK_BITS;
        self.supers[b / SUPER_BLOCKS] -= 1;
        let (run, at) = self.super_of(b);
        for (t, m) in run.iter_mut().zip(&FROM[at]) {
            *t = t.wrapping_sub(*m);
        }
    }

    /// For each of `ranks` (ascending, each `< count`, repeats allowed): the
    /// block holding that set bit and its rank within the block, in one
    /// forward pass over the counts (which stay in cache; the words are not
    /// read).
    fn locate_sorted(
        &self,
        ranks: impl IntoIterator<Item = usize>,
        mut found: impl FnMut(usize, u32),
    ) {
        // A cursor on the super-blocks, with the set bits before it.
        let (mut sup, mut before_sup) = (0, 0);
        for r in ranks {
            debug_assert!(r < self.count);
            while r >= before_sup + self.supers[sup] as usize {
                before_sup += self.supers[sup] as usize;
                sup += 1;
            }
            let first = sup * SUPER_BLOCKS;
            let run: &[u16; SUPER_BLOCKS] = self.through[first..first + SUPER_BLOCKS]
                .try_into()
                .expect("a whole super-block");
            // rem < the super-block's count <= 8,192.
            let rem = (r - before_sup) as u16;
            // The block is the number of running counts at or below `rem`
            // (independent comparisons, which vectorise).
            let at: usize = run.iter().map(|&t| usize::from(t <= rem)).sum();
            let before = at.checked_sub(1).map_or(0, |i| run[i]);
            found(first + at, u32::from(rem - before));
        }
    }

    /// Reads both ends of a block's words (a cache line or two) and returns
    /// them, so that a loop of touches overlaps its cache misses.
    fn touch(&self, block: usize) -> u64 {
        let w = block * BLOCK_WORDS;
        self.words[w] ^ self.words[(w + BLOCK_WORDS).min(self.words.len()) - 1]
    }

    /// The index of the set bit with rank `rem` within block `block`.
    fn select_in_block(&self, block: usize, rem: u32) -> usize {
        // Without branches on the data (a mispredicted branch per rank cost
        // more than the arithmetic): the word is the number of words whose
        // running count stays at or below `rem`.
        let first = block * BLOCK_WORDS;
        let words = &self.words[first..(first + BLOCK_WORDS).min(self.words.len())];
        let (mut seen, mut at, mut before) = (0, 0, 0);
        for &w in words {
            seen += w.count_ones();
            let past = seen <= rem;
            at += usize::from(past);
            before = if past { seen } else { before };
        }
        (first + at) * 64 + select_in_word(words[at], rem - before)
    }
}

/// Position of the `r`-th set bit of `w` (r < popcount), without branches:
/// byte counts and their running sums in one multiply, the byte holding the
/// bit by comparing all eight sums at once, then a table lookup.
fn select_in_word(w: u64, r: u32) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut c = w - ((w >> 1) & 0x5555_5555_5555_5555);
    c = (c & 0x3333_3333_3333_3333) + ((c >> 2) & 0x3333_3333_3333_3333);
    c = (c + (c >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    let sums = c.wrapping_mul(ONES); // byte i: set bits in bytes 0..=i (<= 64)
                                     // Byte i's high bit is set where sums[i] <= r: those bytes come first.
    let past = (((u64::from(r) * ONES) | HIGHS) - sums) & HIGHS;
    let i = ((past >> 7).wrapping_mul(ONES) >> 56) as usize;
    let before = ((sums << 8) >> (8 * i)) as u8;
    let byte = (w >> (8 * i)) as u8;
    8 * i + usize::from(SELECT_IN_BYTE[usize::from(r as u8 - before)][usize::from(byte)])
}

/// `SELECT_IN_BYTE[k][b]`: the position of the `k`-th set bit of byte `b`.
static SELECT_IN_BYTE: [[u8; 256]; 8] = {
    let mut t = [[0u8; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let (mut k, mut bit) = (0, 0);
        while bit < 8 {
            if b >> bit & 1 == 1 {
                t[k][b] = bit as u8;
                k += 1;
            }
            bit += 1;
        }
        b += 1;
    }
    t
};

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

/// A round's proposals, packed in a u64 each: class (9 bits), rank (32 bits:
/// slots are u32) and the proposal's index (at most 2^23 per round).
const INDEX_BITS: u32 = 23;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const CLASS_SHIFT: u32 = INDEX_BITS + 32;
const _: () = assert!(MAX_CLASSES <= 1 << (64 - CLASS_SHIFT));

fn rank_of(proposal: u64) -> u64 {
    (proposal >> INDEX_BITS) & u64::from(u32::MAX)
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

    /// Draws up to `k` slots without replacement, each in proportion to its
    /// weight among the slots not drawn before it, and removes them; `score`
    /// reads a slot's score.
    ///
    /// Draws go in rounds against the set as it was at the round's start: a
    /// round proposes one (class, rank) per slot still wanted, resolves them
    /// all in one sorted pass per class, and accepts them in proposal order.
    /// A proposal that repeats an earlier one of its round is rejected, which
    /// leaves every accepted draw exactly as likely as a draw from the slots
    /// still undrawn (rejection sampling); what a round accepts is removed
    /// before the next.
    pub fn draw(&mut self, rng: &mut Rng, k: usize, score: impl Fn(u32) -> f32) -> Vec<u32> {
        let mut out = Vec::with_capacity(k.min(self.len));
        // class << 55 | rank << 23 | proposal index: sorting groups each
        // class's ranks in order, repeats adjacent and the first one first.
        let mut order: Vec<u64> = Vec::new();
        // Each proposal's (class, block, rank in the block), then its
        // (slot, class); `None` for a repeat of an earlier proposal.
        let mut located: Vec<Option<(usize, u32, u32)>> = Vec::new();
        let mut picked: Vec<Option<(u32, usize)>> = Vec::new();
        let mut unit_of: Vec<f64> = Vec::new();
        let mut mass_through: Vec<u64> = Vec::new();
        let weighted = matches!(self.weight, Weight::Prioritized { .. });
        while out.len() < k && self.len > 0 {
            let m = (k - out.len()).min(1 << INDEX_BITS);
            order.clear();
            unit_of.clear();
            // Running proposal mass through each class: the class of a
            // uniform integer below the total is the count of sums <= it.
            mass_through.clear();
            mass_through.extend(self.classes.iter().zip(&self.units).scan(
                0,
                |sum, (class, &units)| {
                    *sum += class.count as u64 * units;
                    Some(*sum)
                },
            ));
            for i in 0..m {
                let r = rng.below(self.mass);
                let c = mass_through.partition_point(|&through| through <= r);
                let rank = rng.below(self.classes[c].count as u64);
                order.push(((c as u64) << CLASS_SHIFT) | (rank << INDEX_BITS) | i as u64);
                if weighted {
                    unit_of.push(rng.unit());
                }
            }
            order.sort_unstable();
            // Blocks found with the counts only.
            located.clear();
            located.resize(m, None);
            let mut at = 0;
            while at < m {
                let c = (order[at] >> CLASS_SHIFT) as usize;
                let end = at + order[at..].partition_point(|&o| (o >> CLASS_SHIFT) as usize == c);
                let mut entries = order[at..end].iter();
                let mut last = u64::MAX;
                self.classes[c].locate_sorted(
                    order[at..end].iter().map(|&o| rank_of(o) as usize),
                    |block, rem| {
                        let o = *entries.next().expect("one block per rank");
                        let rank = rank_of(o);
                        if rank != last {
                            located[(o & INDEX_MASK) as usize] = Some((c, block as u32, rem));
                            last = rank;
                        }
                    },
                );
                at = end;
            }
            // The words are what misses the cache (a bitset per class): read
            // them all first, without branches, so the misses overlap.
            let mut touched = 0u64;
            for &(c, block, _) in located.iter().flatten() {
                touched ^= self.classes[c].touch(block as usize);
            }
            std::hint::black_box(touched);
            // Every slot is selected before any is removed: a removal would
            // shift the ranks within its block.
            picked.clear();
            picked.extend(located.iter().map(|l| {
                l.map(|(c, block, rem)| {
                    (
                        self.classes[c].select_in_block(block as usize, rem) as u32,
                        c,
                    )
                })
            }));
            for (i, &p) in picked.iter().enumerate() {
                let Some((slot, c)) = p else { continue };
                let accept = !weighted || {
                    let u = unit_of[i];
                    u < self.sure[c] || u * self.bounds[c] < self.weight.of(score(slot))
                };
                if accept {
                    self.classes[c].remove(slot as usize);
                    self.mass -= self.units[c];
                    self.len -= 1;
                    out.push(slot);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(b: &RankBits, ranks: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        b.locate_sorted(ranks.iter().copied(), |block, rem| {
            out.push(b.select_in_block(block, rem))
        });
        out
    }

    #[test]
    fn select_finds_every_set_bit_in_order() {
        // Several super-blocks (8,192 bits each), some of them empty.
        let n = 200_000;
        let mut b = RankBits::with_bits(n);
        let set: Vec<usize> = (0..n)
            .filter(|i| (i % 7 == 3 || i % 4096 == 0) && !(70_000..140_000).contains(i))
            .collect();
        for &i in &set {
            b.insert(i);
        }
        let all: Vec<usize> = (0..set.len()).collect();
        assert_eq!(select(&b, &all), set);
        for (r, &i) in set.iter().enumerate().step_by(97) {
            assert_eq!(select(&b, &[r]), [i]);
        }
        // Repeated and sparse ranks in one pass.
        let last = set.len() - 1;
        assert_eq!(
            select(&b, &[0, 0, 5, 9_000, 9_000, last]),
            [set[0], set[0], set[5], set[9_000], set[9_000], set[last]]
        );
        b.remove(set[5]);
        assert_eq!(select(&b, &[5]), [set[6]]);
        b.grow(300_000);
        b.insert(299_999);
        assert_eq!(select(&b, &[b.count - 1]), [299_999]);
        // A bit in a block that was the last super-block's padding.
        b.insert(200_500);
        assert_eq!(select(&b, &[b.count - 2, b.count - 1]), [200_500, 299_999]);
    }

    #[test]
    fn select_in_word_matches_a_scan() {
        let mut rng = Rng::new(3);
        let words = [
            0xF0F0_0000_8001_0003,
            u64::MAX,
            1,
            1 << 63,
            0x8000_0000_0000_0001,
        ];
        let random = (0..2000).map(|_| rng.next_u64() & rng.next_u64());
        for w in words.into_iter().chain(random) {
            let bits: Vec<usize> = (0..64).filter(|i| w >> i & 1 == 1).collect();
            for (r, &i) in bits.iter().enumerate() {
                assert_eq!(select_in_word(w, r as u32), i, "word {w:#x}, rank {r}");
            }
        }
    }

    /// A draw index over slots `0..scores.len()` with these scores.
    fn filled(weight: Weight, scores: &[f32]) -> Draw {
        let mut d = Draw::new(weight);
        d.grow(scores.len());
        for (i, &s) in scores.iter().enumerate() {
            d.insert(i as u32, s);
        }
        d
    }

    /// Panics unless `hits / n` is within 5 standard errors of `p`.
    fn assert_frequency(hits: usize, n: usize, p: f64, what: &str) {
        let got = hits as f64 / n as f64;
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!((got - p).abs() < 5.0 * sd, "{what}: {got} vs {p}");
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
            let mut d = filled(weight, &scores);
            hits[d.draw(&mut rng, 1, |s| scores[s as usize])[0] as usize] += 1;
        }
        for i in 0..5 {
            assert_frequency(hits[i], n, w[i] / total, &format!("slot {i}"));
        }
    }

    #[test]
    fn a_batch_is_successive_weighted_draws_without_replacement() {
        // Drawing all four slots at once: the first two must follow
        // successive sampling (p(i, j) = w_i / W · w_j / (W − w_i)), though
        // a round proposes against the set as it was at the round's start.
        let weight = Weight::Prioritized {
            epsilon: 0.05,
            inv_temperature: 1.0,
        };
        let scores = [-1.0f32, -0.2, 0.4, 1.0];
        let w: Vec<f64> = scores.iter().map(|&s| weight.of(s)).collect();
        let total: f64 = w.iter().sum();
        let mut rng = Rng::new(11);
        let mut hits = [[0usize; 4]; 4];
        let n = 200_000;
        for _ in 0..n {
            let mut d = filled(weight, &scores);
            let got = d.draw(&mut rng, 4, |s| scores[s as usize]);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3], "each slot exactly once");
            assert_eq!(d.len(), 0);
            hits[got[0] as usize][got[1] as usize] += 1;
        }
        for i in 0..4 {
            for j in (0..4).filter(|&j| j != i) {
                let p = w[i] / total * w[j] / (total - w[i]);
                assert_frequency(hits[i][j], n, p, &format!("({i}, {j})"));
            }
        }
    }
}
