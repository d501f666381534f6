//! Fenwick (binary indexed) tree over per-slot weights: O(log n) weight
//! updates and O(log n) weighted draws without replacement, for the
//! `uniform` and `prioritized` sampling modes.

#[derive(Clone, Debug, Default)]
pub struct Fenwick {
    /// 1-based partial sums; `tree[0]` is unused.
    tree: Vec<f64>,
    /// Exact per-index weights, so removals subtract exactly what was added.
    w: Vec<f64>,
}

impl Fenwick {
    pub fn bytes(&self) -> usize {
        (self.tree.capacity() + self.w.capacity()) * 8
    }

    /// Appends an index with weight 0.
    pub fn push_zero(&mut self) {
        if self.tree.is_empty() {
            self.tree.push(0.0);
        }
        let i = self.tree.len(); // 1-based index of the new element
                                 // tree[i] covers (i - lowbit(i), i]; all but the new element already exist.
        let lo = i - (i & i.wrapping_neg());
        let s = self.prefix(i - 1) - self.prefix(lo);
        self.tree.push(s);
        self.w.push(0.0);
    }

    pub fn set(&mut self, idx: usize, weight: f64) {
        let delta = weight - self.w[idx];
        if delta == 0.0 {
            return;
        }
        self.w[idx] = weight;
        let mut i = idx + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Sum of the first `n` weights.
    fn prefix(&self, n: usize) -> f64 {
        let mut i = n;
        let mut s = 0.0;
        while i > 0 {
            s += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        s
    }

    pub fn total(&self) -> f64 {
        self.prefix(self.w.len())
    }

    /// Index of the element where the running sum first exceeds `u`.
    /// Returns `None` only if rounding pushes `u` past the last positive weight.
    pub fn find(&self, u: f64) -> Option<usize> {
        let n = self.w.len();
        if n == 0 {
            return None;
        }
        let mut pos = 0usize;
        let mut rem = u;
        let mut step = 1usize << (usize::BITS - 1 - n.leading_zeros());
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        (pos < n && self.w[pos] > 0.0).then_some(pos)
    }

    /// Recomputes the partial sums from the exact weights (drops rounding drift).
    pub fn rebuild(&mut self) {
        let n = self.w.len();
        self.tree.clear();
        self.tree.resize(n + 1, 0.0);
        for i in 1..=n {
            self.tree[i] += self.w[i - 1];
            let j = i + (i & i.wrapping_neg());
            if j <= n {
                let v = self.tree[i];
                self.tree[j] += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_set_find_matches_linear_scan() {
        let mut f = Fenwick::default();
        let ws = [0.0, 2.0, 0.5, 0.0, 1.5, 3.0, 0.25];
        for (i, &w) in ws.iter().enumerate() {
            f.push_zero();
            f.set(i, w);
        }
        assert!((f.total() - ws.iter().sum::<f64>()).abs() < 1e-12);
        let mut acc = 0.0;
        for (i, &w) in ws.iter().enumerate() {
            if w > 0.0 {
                assert_eq!(f.find(acc + w / 2.0), Some(i));
            }
            acc += w;
        }
        f.set(5, 0.0);
        f.rebuild();
        assert!((f.total() - 4.25).abs() < 1e-12);
    }
}
