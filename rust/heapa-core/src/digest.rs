//! Incremental digests, so that `Pool::fingerprint` costs what changed since
//! the last one instead of a pass over the whole pool.
//!
//! A digest is a sum (mod 2^64) of one 64-bit hash per element, each hash
//! covering the element and its position: adding, removing or changing one
//! element updates the sum in O(1), and two sequences with the same elements
//! at the same positions have the same sum whatever happened in between.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The hash of one element (`bytes`) at `position`.
pub(crate) fn element(position: u64, bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, position)
}

/// A stack (push and pop at the end) with a digest of its contents.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stack<T> {
    items: Vec<T>,
    sum: u64,
}

impl<T: bytemuck::Pod> Stack<T> {
    pub fn from_vec(items: Vec<T>) -> Self {
        let sum = items.iter().enumerate().fold(0u64, |s, (i, x)| {
            s.wrapping_add(element(i as u64, bytemuck::bytes_of(x)))
        });
        Stack { items, sum }
    }

    pub fn push(&mut self, x: T) {
        let at = self.items.len() as u64;
        self.sum = self.sum.wrapping_add(element(at, bytemuck::bytes_of(&x)));
        self.items.push(x);
    }

    pub fn pop(&mut self) -> Option<T> {
        let x = self.items.pop()?;
        let at = self.items.len() as u64;
        self.sum = self.sum.wrapping_sub(element(at, bytemuck::bytes_of(&x)));
        Some(x)
    }

    pub fn digest(&self) -> u64 {
        self.sum
    }

    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }
}

impl<T> std::ops::Deref for Stack<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

/// The digest of a set of indexed records that change in place: a record is
/// `touch`ed before it changes (its old hash leaves the sum) and rehashed at
/// the next `flush`, so each change costs two hashes however often the
/// record changes between flushes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Records {
    sum: u64,
    /// One bit per record: touched since the last flush.
    dirty: Vec<u64>,
    touched: Vec<u32>,
}

impl Records {
    /// The digest of `n` records whose hashes sum to `sum` (nothing touched).
    pub fn new(n: u32, sum: u64) -> Records {
        Records {
            sum,
            dirty: vec![0; (n as usize).div_ceil(64)],
            touched: Vec::new(),
        }
    }

    /// Makes room for record `i` (the next one), new: counted at the next flush.
    pub fn grow(&mut self, i: u32) {
        if (i as usize) / 64 >= self.dirty.len() {
            self.dirty.push(0);
        }
        self.mark(i);
    }

    fn mark(&mut self, i: u32) {
        self.dirty[(i / 64) as usize] |= 1 << (i % 64);
        self.touched.push(i);
    }

    /// Whether record `i` changed since the last flush.
    pub fn is_touched(&self, i: u32) -> bool {
        self.dirty[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    /// Record `i`, whose hash is `old`, is about to change (call only when
    /// it is not touched yet).
    pub fn touch(&mut self, i: u32, old: u64) {
        debug_assert!(!self.is_touched(i));
        self.mark(i);
        self.sum = self.sum.wrapping_sub(old);
    }

    /// The records touched since the last flush; each must be `settle`d.
    pub fn take_touched(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.touched)
    }

    /// Counts record `i`'s hash now.
    pub fn settle(&mut self, i: u32, new: u64) {
        self.dirty[(i / 64) as usize] &= !(1 << (i % 64));
        self.sum = self.sum.wrapping_add(new);
    }

    /// The digest (valid once every touched record is settled).
    pub fn sum(&self) -> u64 {
        debug_assert!(self.touched.is_empty());
        self.sum
    }

    pub fn bytes(&self) -> usize {
        self.dirty.capacity() * 8 + self.touched.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_digest_depends_only_on_its_contents() {
        let mut a = Stack::default();
        for x in [3u32, 1, 4, 1, 5] {
            a.push(x);
        }
        a.pop();
        a.push(9);
        assert_eq!(a.digest(), Stack::from_vec(vec![3u32, 1, 4, 1, 9]).digest());
        assert_ne!(a.digest(), Stack::from_vec(vec![1u32, 3, 4, 1, 9]).digest());
    }

    #[test]
    fn touched_records_are_rehashed_once() {
        let mut vals = vec![10u64, 20, 30];
        let h = |v: &[u64], i: u32| element(u64::from(i), &v[i as usize].to_le_bytes());
        let sum = |v: &[u64]| (0..v.len() as u32).fold(0u64, |s, i| s.wrapping_add(h(v, i)));
        let mut r = Records::new(3, sum(&vals));
        r.touch(1, h(&vals, 1));
        vals[1] = 21;
        assert!(r.is_touched(1)); // changes again before the flush: nothing to do
        vals[1] = 22;
        vals.push(40);
        r.grow(3);
        for i in r.take_touched() {
            r.settle(i, h(&vals, i));
        }
        assert_eq!(r.sum(), sum(&vals));
        assert!(!r.is_touched(1));
    }
}
