//! Eviction: which prompt leaves when a full pool admits a newcomer.

use crate::config::Eviction;
use crate::keys::{key_score, key_slot, Key};
use crate::pool::Pool;

pub(crate) enum Victim {
    Scored(Key),
    Cold(u32),
}

impl Pool {
    /// The prompt that leaves if one must: the hardest (or easiest) scored
    /// prompt, live or archived; cold prompts only when nothing is scored;
    /// never one in flight.
    pub(crate) fn victim(&self) -> Option<Victim> {
        let scored = match self.cfg.eviction {
            Eviction::Hardest => {
                let live = self.parts.scored.first();
                match (live, self.parts.archive.first().copied()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Eviction::Easiest => {
                let live = self.parts.scored.last();
                match (live, self.parts.archive.last().copied()) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            }
        };
        scored
            .map(Victim::Scored)
            .or_else(|| self.parts.cold.oldest().map(Victim::Cold))
    }

    /// Whether a newcomer with this score (None = cold) loses to the current victim.
    pub(crate) fn newcomer_loses(&self, score: Option<f32>, victim: &Option<Victim>) -> bool {
        match (score, victim) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(_), Some(Victim::Cold(_))) => true,
            (Some(s), Some(Victim::Scored(k))) => match self.cfg.eviction {
                Eviction::Hardest => s < key_score(*k),
                Eviction::Easiest => s > key_score(*k),
            },
        }
    }

    pub(crate) fn evict(&mut self, v: Victim) {
        let slot = match v {
            Victim::Scored(k) => key_slot(k),
            Victim::Cold(s) => s,
        };
        self.free_slot(slot);
        self.counters.evicted += 1;
    }
}
