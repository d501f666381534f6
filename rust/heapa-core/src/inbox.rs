//! The lock-free hand-off from asynchronous validators to the pool: a bounded
//! multi-producer queue that producers push to without ever taking the pool's
//! lock. The pool drains it at step boundaries.
//!
//! The inbox owns every queued item, including the ones a snapshot has read:
//! `len`, `capacity` and what `push_batch` accepts do not change when the pool
//! is saved. Memory grows with what is queued (the lock-free queue allocates
//! small segments on demand), never with `capacity`, so a huge configured
//! bound cannot exhaust memory up front.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crossbeam_queue::SegQueue;

use crate::config::check_difficulty;
use crate::error::Result;

/// A validated query waiting to enter the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxItem {
    /// Encoded with [`crate::payload::encode`].
    pub payload: Box<[u8]>,
    pub parent: Option<u64>,
    pub difficulty: Option<f64>,
}

/// Builds inbox items from encoded payloads and optional per-item columns
/// (already of equal length), checked as [`crate::Pool::add`] checks them. A
/// parent need not exist: one evicted before the drain makes its child a root.
pub fn items(
    payloads: Vec<Box<[u8]>>,
    parents: Option<Vec<u64>>,
    difficulty: Option<Vec<f64>>,
) -> Result<Vec<InboxItem>> {
    if let Some(d) = &difficulty {
        for (i, &x) in d.iter().enumerate() {
            check_difficulty(i, x)?;
        }
    }
    Ok(payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| InboxItem {
            payload,
            parent: parents.as_ref().map(|p| p[i]),
            difficulty: difficulty.as_ref().map(|d| d[i]),
        })
        .collect())
}

pub struct Inbox {
    queue: SegQueue<InboxItem>,
    /// Items a snapshot took out of `queue` to read them, in order; drained
    /// before `queue`. Only the consumer side (the pool) touches it.
    held: Mutex<VecDeque<InboxItem>>,
    /// Items queued or held, plus pushes reserving a place: the bound.
    len: AtomicUsize,
    capacity: usize,
    pushed: AtomicU64,
    rejected: AtomicU64,
}

impl Inbox {
    pub fn new(capacity: usize) -> Inbox {
        Inbox {
            queue: SegQueue::new(),
            held: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
            pushed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Reserves room for one item; false when the inbox is full.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Enqueues items in order until the inbox is full. Returns how many were
    /// accepted; the rest were not enqueued, so the producer can retry them.
    pub fn push_batch(&self, items: Vec<InboxItem>) -> usize {
        let total = items.len();
        let mut accepted = 0;
        for it in items {
            if !self.reserve() {
                break;
            }
            self.queue.push(it);
            accepted += 1;
        }
        self.pushed.fetch_add(accepted as u64, Ordering::Relaxed);
        self.rejected
            .fetch_add((total - accepted) as u64, Ordering::Relaxed);
        accepted
    }

    fn held(&self) -> std::sync::MutexGuard<'_, VecDeque<InboxItem>> {
        // A panic while holding the lock leaves a plain VecDeque: still valid.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest queued item (consumer side).
    pub fn pop(&self) -> Option<InboxItem> {
        let it = self.held().pop_front().or_else(|| self.queue.pop())?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(it)
    }

    /// Up to `max` of the oldest queued items (consumer side; one lock).
    pub fn pop_many(&self, max: usize) -> Vec<InboxItem> {
        let mut held = self.held();
        let mut out = Vec::new();
        while out.len() < max {
            match held.pop_front().or_else(|| self.queue.pop()) {
                Some(it) => out.push(it),
                None => break,
            }
        }
        self.len.fetch_sub(out.len(), Ordering::AcqRel);
        out
    }

    /// Every queued item, oldest first, without removing any (consumer side,
    /// for snapshots). Producers may keep pushing meanwhile; their items are
    /// either in the returned list or after it.
    pub fn queued(&self) -> Vec<InboxItem> {
        let mut held = self.held();
        while let Some(it) = self.queue.pop() {
            held.push_back(it);
        }
        held.iter().cloned().collect()
    }

    /// Restores items read from a snapshot (the inbox must be empty).
    pub(crate) fn restore(&self, items: VecDeque<InboxItem>, pushed: u64, rejected: u64) {
        self.len.store(items.len(), Ordering::Release);
        *self.held() = items;
        self.pushed.store(pushed, Ordering::Relaxed);
        self.rejected.store(rejected, Ordering::Relaxed);
    }

    /// Items queued (including pushes in progress).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: u8) -> InboxItem {
        InboxItem {
            payload: vec![i].into(),
            parent: None,
            difficulty: None,
        }
    }

    #[test]
    fn a_huge_bound_allocates_nothing_up_front() {
        let inbox = Inbox::new(1 << 30);
        assert_eq!(inbox.push_batch(vec![item(1), item(2)]), 2);
        assert_eq!(inbox.len(), 2);
    }

    #[test]
    fn reading_for_a_snapshot_keeps_items_order_and_bound() {
        let inbox = Inbox::new(3);
        assert_eq!(inbox.push_batch(vec![item(1), item(2)]), 2);
        assert_eq!(inbox.queued(), vec![item(1), item(2)]);
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.push_batch(vec![item(3), item(4)]), 1);
        assert_eq!(inbox.queued().len(), 3);
        let order: Vec<_> = std::iter::from_fn(|| inbox.pop()).collect();
        assert_eq!(order, vec![item(1), item(2), item(3)]);
        assert!(inbox.is_empty());
        assert_eq!((inbox.pushed(), inbox.rejected()), (3, 1));
    }
}
