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
