//! Never-scored prompts, waiting in first-in-first-out queues.
//!
//! With `cold = "fifo"` there is one queue. With `cold = "prior"` there is
//! one per (group, prior band): prompts of a group without an explicit prior
//! share their group's estimate, and prompts with a prior share a band of
//! width 1/`BANDS` in pass rate. Estimates change after every report, so no
//! prompt is ever re-keyed: the sampler ranks the non-empty queues (O(queues)
//! per draw) and takes the head of the best one. Within a queue, oldest first.

use std::collections::btree_map::{Entry, OccupiedEntry};
use std::collections::{BTreeMap, BTreeSet};

use crate::slots::{Slots, HAS_PRIOR};

/// Prior bands over pass rate [0, 1].
pub(crate) const BANDS: u64 = 20;

/// A queue's id: group << 8 | band (0 = no explicit prior, 1..=BANDS).
pub(crate) type QueueId = u64;

/// The (group, prior band) of a slot whose prior is unspent (band 0: none).
pub(crate) fn queue_id(slots: &Slots, slot: u32) -> QueueId {
    let band = if slots.flags[slot as usize] & HAS_PRIOR != 0 {
        let p = (f64::from(slots.score[slot as usize]) + 1.0) * 0.5;
        1 + ((p * BANDS as f64) as u64).min(BANDS - 1)
    } else {
        0
    };
    u64::from(slots.group_of(slot)) << 8 | band
}

/// The id under which a band's evidence is pooled over every group (the
/// ungrouped queue of that band).
pub(crate) fn pooled_band(id: QueueId) -> QueueId {
    u64::from(crate::slots::NO_GROUP) << 8 | (id & 0xFF)
}

#[derive(Clone, Debug)]
pub(crate) struct Queue {
    fifo: BTreeSet<(u64, u32)>,
    /// When the oldest member was placed, kept here: every draw ranks every
    /// queue by it, and reading it from the set walks down a B-tree that is
    /// cold for all but the few queues drawn from.
    head: u64,
    /// Sum of the members' prior confidences.
    pub confidence: f64,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            fifo: BTreeSet::new(),
            head: u64::MAX,
            confidence: 0.0,
        }
    }

    pub fn len(&self) -> usize {
        self.fifo.len()
    }

    /// When the oldest member was placed (queues are non-empty).
    pub fn head_seq(&self) -> u64 {
        self.head
    }

    fn refresh_head(&mut self) {
        self.head = self.fifo.first().map_or(u64::MAX, |&(seq, _)| seq);
    }
}

/// Bookkeeping after `gone` left the queue of `e` (found once per take):
/// its confidence and head, and the queue dropped once empty.
fn took(mut e: OccupiedEntry<'_, QueueId, Queue>, slots: &Slots, gone: &[u32]) {
    let q = e.get_mut();
    for &slot in gone {
        q.confidence -= f64::from(slots.confidence_of(slot));
    }
    q.refresh_head();
    if q.fifo.is_empty() {
        e.remove();
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ColdQueues {
    by_estimate: bool,
    queues: BTreeMap<QueueId, Queue>,
    len: usize,
}

impl ColdQueues {
    pub fn new(by_estimate: bool) -> ColdQueues {
        ColdQueues {
            by_estimate,
            queues: BTreeMap::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Members of one queue (0 if it is empty).
    pub fn queue_len(&self, id: QueueId) -> usize {
        self.queues.get(&id).map_or(0, Queue::len)
    }

    /// The queue a cold slot waits in.
    pub fn queue_of(&self, slots: &Slots, slot: u32) -> QueueId {
        if self.by_estimate {
            queue_id(slots, slot)
        } else {
            0
        }
    }

    pub fn insert(&mut self, slots: &Slots, slot: u32) {
        let q = self
            .queues
            .entry(self.queue_of(slots, slot))
            .or_insert_with(Queue::new);
        let seq = slots.seq[slot as usize];
        q.fifo.insert((seq, slot));
        q.head = q.head.min(seq);
        q.confidence += f64::from(slots.confidence_of(slot));
        self.len += 1;
    }

    pub fn remove(&mut self, slots: &Slots, slot: u32) {
        let Entry::Occupied(mut e) = self.queues.entry(self.queue_of(slots, slot)) else {
            panic!("a cold slot's queue exists");
        };
        let had = e.get_mut().fifo.remove(&(slots.seq[slot as usize], slot));
        debug_assert!(had);
        took(e, slots, &[slot]);
        self.len -= 1;
    }

    /// Up to `n` heads of queue `id`, oldest first, taken out and appended
    /// to `out`; how many. The queue is found once however many are taken.
    pub fn pop_many(&mut self, slots: &Slots, id: QueueId, n: usize, out: &mut Vec<u32>) -> usize {
        let Entry::Occupied(mut e) = self.queues.entry(id) else {
            return 0;
        };
        let fifo = &mut e.get_mut().fifo;
        let from = out.len();
        out.extend((0..n).map_while(|_| fifo.pop_first()).map(|(_, slot)| slot));
        took(e, slots, &out[from..]);
        self.len -= out.len() - from;
        out.len() - from
    }

    /// The queue whose head is oldest.
    fn oldest_queue(&self) -> Option<QueueId> {
        self.queues
            .iter()
            .filter_map(|(&id, q)| q.fifo.first().map(|&h| (h, id)))
            .min()
            .map(|(_, id)| id)
    }

    /// The oldest cold prompt (the eviction victim among cold prompts).
    pub fn oldest(&self) -> Option<u32> {
        let id = self.oldest_queue()?;
        self.queues[&id].fifo.first().map(|&(_, s)| s)
    }

    /// The non-empty queues, by id.
    pub fn queues(&self) -> impl Iterator<Item = (QueueId, &Queue)> {
        self.queues.iter().map(|(&id, q)| (id, q))
    }

    /// Every cold slot, oldest first.
    pub fn fifo_order(&self) -> Vec<u32> {
        let mut all: Vec<(u64, u32)> = self
            .queues
            .values()
            .flat_map(|q| q.fifo.iter().copied())
            .collect();
        all.sort_unstable();
        all.into_iter().map(|(_, s)| s).collect()
    }

    /// Panics unless the queues agree with the slots.
    pub fn check(&self, slots: &Slots) {
        let mut n = 0;
        for (&id, q) in &self.queues {
            assert!(!q.fifo.is_empty(), "empty queues are dropped");
            assert_eq!(
                Some(q.head),
                q.fifo.first().map(|&(seq, _)| seq),
                "the kept head"
            );
            let mut conf = 0.0;
            for &(seq, s) in &q.fifo {
                assert_eq!(self.queue_of(slots, s), id);
                assert_eq!(slots.seq[s as usize], seq);
                conf += f64::from(slots.confidence_of(s));
            }
            assert!((conf - q.confidence).abs() <= 1e-6 * conf.max(1.0));
            n += q.fifo.len();
        }
        assert_eq!(n, self.len);
    }
}
