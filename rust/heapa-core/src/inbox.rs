//! The lock-free hand-off from asynchronous validators to the pool: a bounded
//! multi-producer queue that producers push to without ever taking the pool's
//! lock. The pool drains it at step boundaries.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

/// A validated query waiting to enter the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxItem {
    /// Encoded with [`crate::payload::encode`].
    pub payload: Box<[u8]>,
    pub parent: Option<u64>,
    pub difficulty: Option<f64>,
}

pub struct Inbox {
    queue: ArrayQueue<InboxItem>,
    pushed: AtomicU64,
    rejected: AtomicU64,
}

impl Inbox {
    pub fn new(capacity: usize) -> Inbox {
        Inbox {
            queue: ArrayQueue::new(capacity.max(1)),
            pushed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Enqueues items in order until the queue is full. Returns how many were
    /// accepted; the rest were not enqueued, so the producer can retry them.
    pub fn push_batch(&self, items: Vec<InboxItem>) -> usize {
        let total = items.len();
        let mut accepted = 0;
        for it in items {
            if self.queue.push(it).is_err() {
                break;
            }
            accepted += 1;
        }
        self.pushed.fetch_add(accepted as u64, Ordering::Relaxed);
        self.rejected
            .fetch_add((total - accepted) as u64, Ordering::Relaxed);
        accepted
    }

    pub fn pop(&self) -> Option<InboxItem> {
        self.queue.pop()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn restore_counters(&self, pushed: u64, rejected: u64) {
        self.pushed.store(pushed, Ordering::Relaxed);
        self.rejected.store(rejected, Ordering::Relaxed);
    }
}
