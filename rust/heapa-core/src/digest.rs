//! Incremental digests, so that `Pool::fingerprint` costs what changed since
//! the last one instead of a pass over the whole pool.
//!
//! A digest is a sum (mod 2^64) of one 64-bit hash per element, each hash
//! covering the element and its position: adding, removing or changing one
//! element updates the sum in O(1), and two sequences with the same elements
//! at the same positions have the same sum whatever happened in between.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// A 64-bit mixer (the SplitMix64 finaliser): a bijection whose output bits
/// each depend on every input bit.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The hash of one element (`bytes`) at `position`.
pub(crate) fn element(position: u64, bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, position)
}

/// A stack (push and pop at the end) of values of at most 8 bytes, with a
/// digest of its contents.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stack<T> {
    items: Vec<T>,
    sum: u64,
}

/// The term of a value of at most 8 bytes at `position`.
#[inline]
pub(crate) fn small<T: bytemuck::Pod>(position: u64, v: &T) -> u64 {
    let mut bits = [0u8; 8];
    let b = bytemuck::bytes_of(v);
    bits[..b.len()].copy_from_slice(b);
    mix(mix(position) ^ u64::from_le_bytes(bits))
}

impl<T: bytemuck::Pod> Stack<T> {
    pub fn from_vec(items: Vec<T>) -> Self {
        let sum = items
            .iter()
            .enumerate()
            .fold(0u64, |s, (i, x)| s.wrapping_add(small(i as u64, x)));
        Stack { items, sum }
    }

    pub fn push(&mut self, x: T) {
        let at = self.items.len() as u64;
        self.sum = self.sum.wrapping_add(small(at, &x));
        self.items.push(x);
    }

    pub fn pop(&mut self) -> Option<T> {
        let x = self.items.pop()?;
        let at = self.items.len() as u64;
        self.sum = self.sum.wrapping_sub(small(at, &x));
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
}
