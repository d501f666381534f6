//! Drawing a batch: cold prompts first (FIFO), then by the sampling mode.

use crate::cold::{self, Queue, QueueId, BANDS};
use crate::config::{Cold, Reinsert, Sampling};
use crate::groups::Evidence;
use crate::keys::{key_score, key_slot};
use crate::pool::Pool;
use crate::slots::{State, NO_GROUP};

impl Pool {
    /// Draws up to `k` prompts: cold first (FIFO), then by the sampling mode.
    /// Drawn prompts are in flight until reported or released.
    pub fn sample(&mut self, k: usize) -> Vec<u64> {
        if k == 0 {
            return Vec::new();
        }
        if self.cfg.revisit_fraction > 0.0 {
            self.parts
                .release_cooled(&mut self.slots, self.counters.sampled, k);
        }
        let live = self.parts.live();
        if self.cfg.reinsert == Reinsert::OnDrain && live < k && !self.parts.archive.is_empty() {
            self.reinsert_archive();
        }
        let mut chosen: Vec<u32> = Vec::with_capacity(k.min(live + self.parts.archive.len()));
        let from_cold = k.min(self.parts.cold.len());
        self.pick_cold(from_cold, &mut chosen);
        let need = k - chosen.len();
        let scored = self.parts.scored();
        if need > 0 && scored > 0 {
            let picks = if need >= scored {
                let (p, sl) = (&self.parts, &self.slots);
                let all: Vec<u32> = p.scored.iter(sl).map(key_slot).collect();
                self.parts.take_scored(&mut self.slots, &all);
                all
            } else {
                match self.cfg.sampling {
                    Sampling::Medium => self.pick_medium(need),
                    Sampling::Mixed => {
                        let (p, sl) = (&self.parts, &self.slots);
                        let mut easiest: Vec<u32> = p
                            .scored
                            .desc_runs(sl, State::Easy)
                            .chain(p.scored.desc_runs(sl, State::Hard))
                            .take(need / 2)
                            .map(key_slot)
                            .collect();
                        self.parts.take_scored(&mut self.slots, &easiest);
                        self.parts.rebalance(&mut self.slots);
                        easiest.extend(self.pick_medium(need - easiest.len()));
                        easiest
                    }
                    Sampling::Uniform | Sampling::Prioritized => {
                        self.parts
                            .draw_weighted(&mut self.slots, &mut self.rng, need)
                    }
                }
            };
            chosen.extend(picks);
            self.parts.rebalance(&mut self.slots);
        }
        self.counters.sampled += chosen.len() as u64;
        chosen.iter().map(|&s| self.id_of(s)).collect()
    }

    /// Draws up to `m` cold prompts: the oldest (`cold = "fifo"`), or
    /// (`"prior"`) an `explore` share from uniformly chosen queues and the
    /// rest from the queues whose estimate is nearest the target pass rate.
    /// There, scored prompts nearer the target than those queues take their
    /// places (the caller draws them): a score and an estimate are compared
    /// on one scale.
    fn pick_cold(&mut self, m: usize, out: &mut Vec<u32>) {
        let want = out.len() + m;
        if self.cfg.cold == Cold::Fifo {
            return self.pick_cold_fifo(want, out);
        }
        let target = (self.cfg.normalize(self.cfg.target) + 1.0) * 0.5;
        // (distance to the target, oldest member): ties go to the queue
        // that has waited longest, not to the lowest group.
        let mut ranked: Vec<(f64, u64, QueueId)> = self
            .parts
            .cold
            .queues()
            .map(|(id, q)| {
                (
                    (self.queue_estimate(id, q) - target).abs(),
                    q.head_seq(),
                    id,
                )
            })
            .collect();
        if ranked.len() <= 1 {
            // One queue (no groups or priors): FIFO, no RNG drawn.
            let scored = self.scored_nearer(&ranked, m, target);
            return self.pick_cold_fifo(want - scored, out);
        }
        self.keep_nearest(&mut ranked, m);
        let x = self.cfg.explore * m as f64;
        let explore = x as usize + usize::from(self.rng.unit() < x.fract());
        // The scored share is left for the caller to draw.
        let want = want - self.scored_nearer(&ranked, m - explore, target);
        let exploit = want - explore;
        for &(_, _, id) in &ranked {
            if out.len() >= exploit {
                break;
            }
            self.parts
                .pop_cold(&mut self.slots, id, exploit - out.len(), out);
        }
        let mut open: Vec<QueueId> = self.parts.cold.queues().map(|(id, _)| id).collect();
        while out.len() < want && !open.is_empty() {
            let i = self.rng.below(open.len() as u64) as usize;
            if self.parts.pop_cold(&mut self.slots, open[i], 1, out) == 0 {
                open.swap_remove(i);
            }
        }
    }

    /// Sorts `ranked` (distance, oldest member, queue) and keeps the nearest
    /// queues that hold at least `m` prompts between them: all that the
    /// draws by estimate read. With many groups a batch needs a few queues,
    /// and selecting them is O(queues) where sorting them all cost more than
    /// the rest of the draw. (Oldest members differ between queues, so the
    /// order is total and the kept prefix is the full sort's.)
    fn keep_nearest(&self, ranked: &mut Vec<(f64, u64, QueueId)>, m: usize) {
        let order = |a: &(f64, u64, QueueId), b: &(f64, u64, QueueId)| {
            a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
        };
        let mut k = 16;
        while k < ranked.len() {
            ranked.select_nth_unstable_by(k, order);
            ranked[..k].sort_unstable_by(order);
            let held: usize = ranked[..k]
                .iter()
                .map(|&(_, _, id)| self.parts.cold.queue_len(id))
                .sum();
            if held >= m {
                ranked.truncate(k);
                return;
            }
            k *= 4;
        }
        ranked.sort_unstable_by(order);
    }

    /// How many of `n` draws by estimate go to scored prompts instead of the
    /// cold queues `ranked` (nearest first, each `(distance, _, queue)`):
    /// merging both by distance to the target pass rate, a scored prompt
    /// goes first when it is strictly nearer. Only where scored prompts are
    /// drawn by that distance too (medium sampling, absolute boundary);
    /// O(queues + the count).
    fn scored_nearer(&self, ranked: &[(f64, u64, QueueId)], n: usize, target: f64) -> usize {
        let by_distance = self.cfg.sampling == Sampling::Medium && self.parts.target().is_some();
        if !by_distance || self.parts.scored() == 0 {
            return 0;
        }
        let (p, sl) = (&self.parts, &self.slots);
        let pass = |k| (f64::from(key_score(k)) + 1.0) * 0.5;
        let mut up = p
            .scored
            .easy(sl)
            .map(|k| (pass(k) - target).abs())
            .peekable();
        let mut down = p
            .scored
            .desc_runs(sl, State::Hard)
            .map(|k| (target - pass(k)).abs())
            .peekable();
        let (mut scored, mut left) = (0, n);
        for &(d, _, id) in ranked {
            while left > 0 {
                // At equal distance the hard side first, as in `pick_medium`.
                let took = match (up.peek(), down.peek()) {
                    (Some(&u), Some(&h)) if u < h => up.next_if(|&x| x < d),
                    (Some(_), None) => up.next_if(|&x| x < d),
                    _ => down.next_if(|&x| x < d),
                };
                if took.is_none() {
                    break;
                }
                scored += 1;
                left -= 1;
            }
            left -= left.min(p.cold.queue_len(id));
            if left == 0 {
                break;
            }
        }
        scored
    }

    /// Fills `out` up to `want` from the one cold queue there is here
    /// (`cold = "fifo"`, or `"prior"` holding a single queue), oldest first.
    fn pick_cold_fifo(&mut self, want: usize, out: &mut Vec<u32>) {
        debug_assert!(self.parts.cold.queues().count() <= 1, "one cold queue");
        let queue = self.parts.cold.queues().next().map(|(id, _)| id);
        if let Some(id) = queue {
            let n = want.saturating_sub(out.len());
            self.parts.pop_cold(&mut self.slots, id, n, out);
        }
    }

    /// A cold queue's pass-rate estimate. Without a prior: its group's
    /// (shrunk toward the pool). With one: the band centre weighted by the
    /// members' mean confidence, what earlier prompts of this (group, band)
    /// actually did, and the group's estimate weighted by `prior_strength`,
    /// so a predictor that misleads is overruled band by band.
    fn queue_estimate(&self, id: QueueId, q: &Queue) -> f64 {
        let (group, band) = ((id >> 8) as u32, id & 0xFF);
        let (h, m) = (self.cfg.prior_half_life, self.cfg.prior_strength);
        let e = self.groups.estimate(group, self.step, h, m);
        if band == 0 {
            return e;
        }
        // The predictor's band centre, calibrated by what prompts of this
        // band did in every group; then this queue's own evidence and the
        // group's estimate.
        let centre = (band as f64 - 0.5) / BANDS as f64;
        let c = q.confidence / q.len() as f64;
        let pooled = match group {
            NO_GROUP => Evidence::default(), // its own evidence is the pooled one
            _ => self.groups.band(cold::pooled_band(id), self.step, h),
        };
        let calibrated = if c + pooled.n > 0.0 {
            (c * centre + pooled.sum) / (c + pooled.n)
        } else {
            centre
        };
        let seen = self.groups.band(id, self.step, h);
        (c * calibrated + seen.sum + m * e) / (c + seen.n + m)
    }

    /// HeaPA boundary sampling: the 2·need candidates nearest the boundary,
    /// then `need` of them uniformly at random.
    pub(crate) fn pick_medium(&mut self, need: usize) -> Vec<u32> {
        if need == 0 {
            return Vec::new();
        }
        let want = (2 * need).min(self.parts.scored());
        let mut cand: Vec<u32> = Vec::with_capacity(want);
        // Nearest first on both sides; equal scores least recently trained first.
        let (p, sl) = (&self.parts, &self.slots);
        let mut up = p.scored.easy(sl).peekable();
        let mut down = p.scored.desc_runs(sl, State::Hard).peekable();
        match self.parts.target() {
            // Alternate sides, easy side first (the reference's order).
            None => {
                let mut easy_turn = true;
                while cand.len() < want {
                    let next = if easy_turn {
                        up.next().or_else(|| down.next())
                    } else {
                        down.next().or_else(|| up.next())
                    };
                    cand.push(key_slot(next.expect("want <= scored")));
                    easy_turn = !easy_turn;
                }
            }
            // Nearest to the absolute target first; at equal distance the hard
            // side (a prompt nobody solves may become solvable, a solved one
            // has nothing left to teach).
            Some(t) => {
                while cand.len() < want {
                    let take_up = match (up.peek(), down.peek()) {
                        (Some(&u), Some(&d)) => key_score(u) - t < t - key_score(d),
                        (Some(_), None) => true,
                        _ => false,
                    };
                    let next = if take_up { up.next() } else { down.next() };
                    cand.push(key_slot(next.expect("want <= scored")));
                }
            }
        }
        drop((up, down));
        self.rng.choose_prefix(&mut cand, need);
        cand.truncate(need);
        self.parts.take_scored(&mut self.slots, &cand);
        cand
    }
}
