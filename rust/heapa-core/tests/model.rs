//! Model-based property tests: random operation sequences run against the
//! engine and against a naive oracle (plain vectors, full sorts and scans),
//! comparing partitions, scores and counters after every step.

use std::collections::HashMap;

use heapa_core::payload::encode;
use heapa_core::{Boundary, Config, Eviction, NewPrompt, Pool, Reinsert, Sampling, Stat, State};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum S {
    Cold,
    Live,
    InFlight,
    Archived,
}

#[derive(Clone, Debug)]
struct P {
    state: S,
    score: Option<f32>,
    observed: bool,
    seq: u64,
    slot: u64,
    /// Cooling (revisit_fraction): drawable again once `sampled` reaches it.
    ready: u64,
}

/// The naive oracle.
struct Model {
    cfg: Config,
    ps: HashMap<u64, P>,
    seq: u64,
    evicted: u64,
    dropped: u64,
    sampled: u64,
}

fn norm(cfg: &Config, r: f64) -> f32 {
    let f = cfg.normalize(r) as f32;
    if f == 0.0 {
        0.0
    } else {
        f
    }
}

/// The engine's order: score, then `seq` (when last added or reported), then slot.
fn okey(p: &P) -> (u32, u64, u64) {
    let b = p.score.unwrap().to_bits();
    (
        if b >> 31 == 1 { !b } else { b | 0x8000_0000 },
        p.seq,
        p.slot,
    )
}

/// Nearest-the-boundary order of the hard side: score descending, equal
/// scores least recently trained (lowest seq) first.
fn desc_runs(ps: &HashMap<u64, P>, ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_by_key(|i| {
        let (o, seq, slot) = okey(&ps[i]);
        (std::cmp::Reverse(o), seq, slot)
    });
    v
}

impl Model {
    fn held(&self) -> usize {
        self.ps.len()
    }

    /// Scored live ids sorted by key.
    fn scored_live(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .ps
            .iter()
            .filter(|(_, p)| p.state == S::Live)
            .map(|(&i, _)| i)
            .collect();
        v.sort_by_key(|i| okey(&self.ps[i]));
        v
    }

    fn cold_fifo(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .ps
            .iter()
            .filter(|(_, p)| p.state == S::Cold)
            .map(|(&i, _)| i)
            .collect();
        v.sort_by_key(|i| self.ps[i].seq);
        v
    }

    /// (hard, easy) split of the scored live prompts.
    fn split(&self) -> (Vec<u64>, Vec<u64>) {
        let v = self.scored_live();
        match self.cfg.boundary {
            Boundary::Quantile => {
                let t = (self.cfg.low_fraction * v.len() as f64 + 0.5).floor() as usize;
                (v[..t].to_vec(), v[t..].to_vec())
            }
            Boundary::Absolute => {
                let t = self.cfg.normalize(self.cfg.target) as f32;
                v.iter().partition(|i| self.ps[*i].score.unwrap() < t)
            }
        }
    }

    fn victim(&self) -> Option<u64> {
        let mut cand: Vec<u64> = self
            .ps
            .iter()
            .filter(|(_, p)| matches!(p.state, S::Live | S::Archived))
            .map(|(&i, _)| i)
            .collect();
        cand.sort_by_key(|i| okey(&self.ps[i]));
        let scored = match self.cfg.eviction {
            Eviction::Hardest => cand.first().copied(),
            Eviction::Easiest => cand.last().copied(),
        };
        scored.or_else(|| self.cold_fifo().first().copied())
    }

    /// Mirrors admission; `id` is what the engine returned.
    fn add(&mut self, id: u64, reward: Option<f64>) {
        let score = reward.map(|r| norm(&self.cfg, r));
        if self.held() as u64 >= self.cfg.capacity {
            let v = self.victim();
            let loses = match (score, v) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(s), Some(v)) => match self.ps[&v].score {
                    None => true,
                    Some(vs) if self.ps[&v].state != S::Cold => match self.cfg.eviction {
                        Eviction::Hardest => s < vs,
                        Eviction::Easiest => s > vs,
                    },
                    Some(_) => true,
                },
            };
            self.evicted += 1;
            if loses {
                return;
            }
            self.ps.remove(&v.unwrap());
        }
        let state = if score.is_some() { S::Live } else { S::Cold };
        let slot = id % (self.cfg.capacity + 1);
        self.ps.insert(
            id,
            P {
                state,
                score,
                observed: score.is_some(),
                seq: self.seq,
                slot,
                ready: 0,
            },
        );
        self.seq += 1;
    }

    fn return_scored(&mut self, id: u64) {
        if self.cfg.drop_solved && self.ps[&id].score == Some(1.0) {
            self.ps.remove(&id);
            self.dropped += 1;
        } else {
            self.ps.get_mut(&id).unwrap().state = S::Live;
        }
    }

    /// Before sampling: on-drain reinsertion; returns the allowed scored window.
    fn before_sample(&mut self, k: usize) {
        // (`sample(0)` is a no-op in the engine.)
        if self.cfg.revisit_fraction > 0.0 && k > 0 {
            let mut cooling: Vec<u64> = self
                .ps
                .iter()
                .filter(|(_, p)| p.state == S::Archived)
                .map(|(&i, _)| i)
                .collect();
            cooling.sort_by_key(|i| (self.ps[i].ready, self.ps[i].seq, self.ps[i].slot));
            for id in cooling {
                let live = self
                    .ps
                    .values()
                    .filter(|p| matches!(p.state, S::Cold | S::Live))
                    .count();
                if self.ps[&id].ready > self.sampled && live >= k {
                    break;
                }
                self.ps.get_mut(&id).unwrap().state = S::Live;
            }
        }
        let live = self
            .ps
            .values()
            .filter(|p| matches!(p.state, S::Cold | S::Live))
            .count();
        let archived: Vec<u64> = self
            .ps
            .iter()
            .filter(|(_, p)| p.state == S::Archived)
            .map(|(&i, _)| i)
            .collect();
        if self.cfg.reinsert == Reinsert::OnDrain && live < k && !archived.is_empty() {
            for id in archived {
                self.return_scored(id);
            }
        }
    }

    /// Checks a sample against the oracle and applies it.
    fn check_sample(&mut self, k: usize, got: &[u64]) {
        self.before_sample(k);
        let cold = self.cold_fifo();
        let c = cold.len().min(k);
        assert_eq!(
            &got[..c.min(got.len())],
            &cold[..c],
            "cold prompts first, FIFO"
        );
        let (hard, easy) = self.split();
        let need = k - c;
        let s = hard.len() + easy.len();
        assert_eq!(got.len(), c + need.min(s), "sample size");
        let rest = &got[c..];
        if need > 0 && need < s {
            let allowed: Vec<u64> = match self.cfg.sampling {
                Sampling::Medium => self.window(&hard, &easy, need),
                Sampling::Mixed => {
                    let e = need / 2;
                    let mut all = desc_runs(&self.ps, &easy);
                    all.extend(desc_runs(&self.ps, &hard));
                    let easiest: Vec<u64> = all[..e].to_vec();
                    assert_eq!(&rest[..e], &easiest[..], "mixed: easiest first");
                    for id in &easiest {
                        self.ps.get_mut(id).unwrap().state = S::InFlight;
                    }
                    let (h2, e2) = self.split();
                    let w = self.window(&h2, &e2, need - e);
                    for id in &rest[e..] {
                        assert!(w.contains(id), "mixed: medium part within the window");
                    }
                    w
                }
                _ => hard.iter().chain(easy.iter()).copied().collect(),
            };
            for id in rest {
                assert!(
                    allowed.contains(id) || self.ps[id].state == S::InFlight,
                    "scored pick outside its window"
                );
            }
        }
        let mut uniq = got.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), got.len(), "no duplicates in a sample");
        for id in got {
            self.ps.get_mut(id).unwrap().state = S::InFlight;
        }
        self.sampled += got.len() as u64;
    }

    fn window(&self, hard: &[u64], easy: &[u64], need: usize) -> Vec<u64> {
        let want = (2 * need).min(hard.len() + easy.len());
        match self.cfg.boundary {
            Boundary::Quantile => {
                let down = desc_runs(&self.ps, hard);
                let (mut up, mut down) = (easy.iter(), down.iter());
                let mut out = Vec::new();
                let mut easy_turn = true;
                while out.len() < want {
                    let n = if easy_turn {
                        up.next().or_else(|| down.next())
                    } else {
                        down.next().or_else(|| up.next())
                    };
                    out.push(*n.unwrap());
                    easy_turn = !easy_turn;
                }
                out
            }
            Boundary::Absolute => {
                let t = self.cfg.normalize(self.cfg.target) as f32;
                let mut all: Vec<u64> = hard.iter().chain(easy.iter()).copied().collect();
                // Stable: nearest first, ties easy side first (approximated by
                // allowing every prompt as near as the farthest chosen).
                all.sort_by(|a, b| {
                    let da = (self.ps[a].score.unwrap() - t).abs();
                    let db = (self.ps[b].score.unwrap() - t).abs();
                    da.partial_cmp(&db).unwrap()
                });
                let cut = (self.ps[&all[want - 1]].score.unwrap() - t).abs();
                all.into_iter()
                    .filter(|i| (self.ps[i].score.unwrap() - t).abs() <= cut)
                    .collect()
            }
        }
    }

    fn report(&mut self, id: u64, r: f64) {
        let new = self.cfg.normalize(r);
        let p = self.ps.get_mut(&id).unwrap();
        let v = match (self.cfg.stat, p.observed) {
            (Stat::Ema, true) => {
                self.cfg.ema_alpha * new + (1.0 - self.cfg.ema_alpha) * f64::from(p.score.unwrap())
            }
            _ => new,
        };
        let f = v.clamp(-1.0, 1.0) as f32;
        p.score = Some(if f == 0.0 { 0.0 } else { f });
        p.observed = true;
        p.seq = self.seq;
        self.seq += 1;
        match self.cfg.reinsert {
            Reinsert::OnDrain => p.state = S::Archived,
            Reinsert::Immediate
                if self.cfg.revisit_fraction > 0.0
                    && !(self.cfg.drop_solved && p.score == Some(1.0)) =>
            {
                p.state = S::Archived;
                let held = self.ps.len() as f64;
                let ps = self.ps.get_mut(&id).unwrap();
                ps.ready = self.sampled + (self.cfg.revisit_fraction * held).ceil() as u64;
            }
            Reinsert::Immediate => self.return_scored(id),
        }
    }

    fn release(&mut self, id: u64) {
        let p = self.ps.get_mut(&id).unwrap();
        p.state = if p.score.is_some() { S::Live } else { S::Cold };
    }

    fn compare(&self, pool: &Pool) {
        let (hard, easy) = self.split();
        let sorted = |mut v: Vec<u64>| {
            v.sort_unstable();
            v
        };
        assert_eq!(pool.ids_in(State::Cold), self.cold_fifo(), "cold FIFO");
        assert_eq!(sorted(pool.ids_in(State::Hard)), sorted(hard), "hard side");
        assert_eq!(sorted(pool.ids_in(State::Easy)), sorted(easy), "easy side");
        let of = |s: S| {
            sorted(
                self.ps
                    .iter()
                    .filter(|(_, p)| p.state == s)
                    .map(|(&i, _)| i)
                    .collect(),
            )
        };
        assert_eq!(
            sorted(pool.ids_in(State::Archived)),
            of(S::Archived),
            "archive"
        );
        assert_eq!(
            sorted(pool.ids_in(State::InFlight)),
            of(S::InFlight),
            "in flight"
        );
        let st = pool.stats();
        assert_eq!(st.held as usize, self.held());
        assert_eq!(st.counters.evicted, self.evicted);
        assert_eq!(st.counters.dropped, self.dropped);
        let ids: Vec<u64> = self.ps.keys().copied().collect();
        let rec = pool.records(&ids).unwrap();
        for (i, id) in ids.iter().enumerate() {
            match self.ps[id].score {
                Some(s) => assert!((self.cfg.normalize(rec.score[i]) - f64::from(s)).abs() < 1e-6),
                None => assert!(rec.score[i].is_nan()),
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(Vec<Option<u8>>),
    Sample(usize),
    Report(Vec<u8>),
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(prop::option::weighted(0.6, 0u8..=8), 1..6).prop_map(Op::Add),
        3 => (0usize..6).prop_map(Op::Sample),
        3 => prop::collection::vec(0u8..=8, 0..6).prop_map(Op::Report),
        1 => (0usize..4).prop_map(Op::Release),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        1u64..24,
        prop::bool::ANY,
        prop::sample::select(vec![0.25, 0.5, 0.7]),
        prop::sample::select(vec![
            Sampling::Medium,
            Sampling::Mixed,
            Sampling::Uniform,
            Sampling::Prioritized,
        ]),
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
        (0u64..1000, prop::sample::select(vec![0.0, 0.0, 0.3])),
    )
        .prop_map(
            |(
                capacity,
                absolute,
                q,
                sampling,
                easiest,
                ema,
                immediate,
                drop_solved,
                (seed, revisit),
            )| {
                Config {
                    capacity,
                    boundary: if absolute {
                        Boundary::Absolute
                    } else {
                        Boundary::Quantile
                    },
                    low_fraction: q,
                    target: 0.5,
                    sampling,
                    eviction: if easiest {
                        Eviction::Easiest
                    } else {
                        Eviction::Hardest
                    },
                    stat: if ema { Stat::Ema } else { Stat::Latest },
                    reinsert: if immediate {
                        Reinsert::Immediate
                    } else {
                        Reinsert::OnDrain
                    },
                    drop_solved,
                    seed,
                    revisit_fraction: if immediate { revisit } else { 0.0 },
                    ..Config::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_oracle(cfg in config(), ops in prop::collection::vec(op(), 1..60)) {
        let mut pool = Pool::new(cfg.clone()).unwrap();
        let mut m = Model { cfg: cfg.clone(), ps: HashMap::new(), seq: 0, evicted: 0, dropped: 0, sampled: 0 };
        let mut in_flight: Vec<u64> = Vec::new();
        for op in ops {
            match op {
                Op::Add(rs) => {
                    if m.ps.values().filter(|p| p.state == S::InFlight).count() as u64 >= cfg.capacity {
                        continue;
                    }
                    let items: Vec<NewPrompt> = rs.iter().map(|r| NewPrompt {
                        payload: encode("q", None, None),
                        reward: r.map(|x| f64::from(x) / 8.0),
                        parent: None,
                        difficulty: None,
                        ..Default::default()
                    }).collect();
                    let ids = pool.add(items).unwrap();
                    for (id, r) in ids.iter().zip(&rs) {
                        m.add(*id, r.map(|x| f64::from(x) / 8.0));
                    }
                    for id in &ids {
                        prop_assert_eq!(pool.contains(*id), m.ps.contains_key(id), "admission of {}", id);
                    }
                }
                Op::Sample(k) => {
                    let got = pool.sample(k);
                    m.check_sample(k, &got);
                    in_flight.extend(&got);
                }
                Op::Report(rs) => {
                    let n = rs.len().min(in_flight.len());
                    let ids: Vec<u64> = in_flight.drain(..n).collect();
                    let rewards: Vec<f64> = rs[..n].iter().map(|&x| f64::from(x) / 8.0).collect();
                    pool.report(&ids, &rewards, None, None, Some(1)).unwrap();
                    for (id, r) in ids.iter().zip(&rewards) {
                        m.report(*id, *r);
                    }
                }
                Op::Release(n) => {
                    let n = n.min(in_flight.len());
                    let ids: Vec<u64> = in_flight.drain(..n).collect();
                    pool.release(&ids).unwrap();
                    for id in ids {
                        m.release(id);
                    }
                }
            }
            pool.check_invariants();
            m.compare(&pool);
        }
        // A snapshot round trip preserves everything, including future samples.
        let bytes = pool.to_bytes();
        let mut copy = Pool::from_bytes(&bytes).unwrap();
        prop_assert_eq!(copy.fingerprint(), pool.fingerprint());
        prop_assert_eq!(copy.sample(3), pool.sample(3));
    }
}

#[test]
fn failed_calls_change_nothing() {
    let mut pool = Pool::new(Config {
        capacity: 8,
        ..Config::default()
    })
    .unwrap();
    let np = |r: Option<f64>| NewPrompt {
        payload: encode("q", None, None),
        reward: r,
        parent: None,
        difficulty: None,
        ..Default::default()
    };
    let ids = pool
        .add(vec![np(Some(0.5)), np(None), np(Some(0.1))])
        .unwrap();
    let before = pool.fingerprint();
    assert!(pool.add(vec![np(Some(0.5)), np(Some(2.0))]).is_err());
    assert!(pool.add(vec![np(Some(f64::NAN))]).is_err());
    assert!(pool.report(&ids[..1], &[0.5], None, None, None).is_err()); // not in flight
    let s = pool.sample(2);
    let mid = pool.fingerprint();
    assert!(pool
        .report(&[s[0], s[0]], &[0.1, 0.2], None, None, None)
        .is_err());
    assert!(pool.report(&s, &[0.1], None, None, None).is_err());
    assert!(pool
        .report(&s, &[0.1, 0.2], Some(&[4, 4]), Some(&[5, 1]), None)
        .is_err());
    assert!(pool
        .report(&[s[0], 12345], &[0.1, 0.2], None, None, None)
        .is_err());
    assert_eq!(pool.fingerprint(), mid);
    pool.release(&s).unwrap();
    assert_ne!(pool.fingerprint(), before); // counters moved
    assert_eq!(pool.stats().in_flight, 0);
}

#[test]
fn million_deep_chain_refreshes_without_recursion() {
    let n = 1_000_000usize;
    let mut pool = Pool::new(Config {
        capacity: n as u64,
        ..Config::default()
    })
    .unwrap();
    let mut parent = None;
    let mut last = 0;
    // Add in chunks so each child refers to an existing parent.
    for i in 0..n {
        let ids = pool
            .add(vec![NewPrompt {
                payload: encode("", None, None),
                reward: Some(if i % 2 == 0 { 0.2 } else { 0.8 }),
                parent,
                difficulty: Some(1.1),
                ..Default::default()
            }])
            .unwrap();
        parent = Some(ids[0]);
        last = ids[0];
    }
    let updated = pool.refresh(&heapa_core::RefreshParams {
        scope: heapa_core::Scope::All,
        ..Default::default()
    });
    assert_eq!(updated, n - 1);
    let l = pool.lineage(&[last]).unwrap();
    assert_eq!(l.depth[0] as usize, n - 1);
    assert_eq!(l.n_leaves[0], 1);
}

/// Weighted draws leave stale keys behind (see `scored.rs`); through enough
/// steps to compact them several times, every invariant holds, and a pool
/// rebuilt from a snapshot (no stale keys) draws exactly what the original
/// draws.
#[test]
fn weighted_sampling_through_compactions_matches_a_restored_pool() {
    for sampling in [Sampling::Uniform, Sampling::Prioritized] {
        let n = 20_000usize;
        let mut pool = Pool::new(Config {
            capacity: n as u64,
            sampling,
            seed: 11,
            ..Config::default()
        })
        .unwrap();
        let items = (0..n)
            .map(|i| NewPrompt {
                payload: encode("", None, None),
                reward: Some((i % 9) as f64 / 8.0),
                parent: None,
                difficulty: None,
                ..Default::default()
            })
            .collect();
        pool.add(items).unwrap();
        let mut r = 0u64;
        for step in 0..300 {
            let ids = pool.sample(256);
            assert_eq!(ids.len(), 256);
            let rewards: Vec<f64> = ids
                .iter()
                .map(|_| {
                    r = r
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (r >> 61) as f64 / 7.0
                })
                .collect();
            if step % 7 == 3 {
                pool.release(&ids).unwrap();
            } else {
                pool.report(&ids, &rewards, None, None, None).unwrap();
            }
            if step % 50 == 0 {
                pool.check_invariants();
            }
        }
        pool.check_invariants();
        let mut restored = Pool::from_bytes(&pool.to_bytes()).unwrap();
        assert_eq!(restored.fingerprint(), pool.fingerprint());
        for _ in 0..5 {
            let (a, b) = (pool.sample(300), restored.sample(300));
            assert_eq!(a, b, "{sampling:?}");
            for st in [State::Hard, State::Easy] {
                assert_eq!(pool.ids_in(st), restored.ids_in(st));
            }
        }
        pool.check_invariants();
        // Drawing without returning: stale keys pile up and are compacted.
        while pool.stats().hard + pool.stats().easy > 0 {
            assert!(!pool.sample(512).is_empty());
            pool.check_invariants();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// `cold = "prior"`: through random adds (with groups, priors, children),
    /// draws, reports and releases, every invariant holds, and a pool rebuilt
    /// from its snapshot has the same fingerprint and draws the same prompts.
    #[test]
    fn prior_ranked_cold_queues_survive_snapshots(
        ops in prop::collection::vec((0u8..4, 0u8..=255, 0u8..=255), 1..50),
        explore in prop::sample::select(vec![0.0, 0.3, 1.0]),
        half_life in prop::sample::select(vec![0.0, 3.0]),
    ) {
        let mut pool = Pool::new(Config {
            capacity: 48,
            cold: heapa_core::Cold::Prior,
            explore,
            prior_half_life: half_life,
            seed: 5,
            ..Config::default()
        })
        .unwrap();
        let mut flying: Vec<u64> = Vec::new();
        for (step, &(op, a, b)) in ops.iter().enumerate() {
            match op {
                0 => {
                    let items = (0..(a % 6) as usize)
                        .map(|i| NewPrompt {
                            payload: encode("q", None, None),
                            group: (b % 3 != 0).then(|| format!("g{}", (a as usize + i) % 5)),
                            prior: (b % 2 == 0).then(|| f64::from(a.wrapping_mul(i as u8 + 1)) / 255.0),
                            confidence: (b % 4 == 0).then(|| f64::from(b % 9)),
                            reward: (b % 7 == 1).then(|| f64::from(a) / 255.0),
                            parent: None,
                            difficulty: None,
                        })
                        .map(|mut it| {
                            if it.reward.is_some() {
                                it.prior = None;
                                it.confidence = None;
                            }
                            if it.prior.is_none() {
                                it.confidence = None;
                            }
                            it
                        })
                        .collect();
                    let _ = pool.add(items);
                }
                1 => flying.extend(pool.sample((a % 9) as usize)),
                2 if !flying.is_empty() => {
                    let k = (a as usize % flying.len()) + 1;
                    let ids: Vec<u64> = flying.drain(..k).collect();
                    let rewards: Vec<f64> = ids.iter().map(|&i| ((i * 7 + u64::from(b)) % 9) as f64 / 8.0).collect();
                    let n: Vec<u32> = ids.iter().map(|_| 8).collect();
                    pool.report(&ids, &rewards, Some(&n), None, Some(step as u64)).unwrap();
                }
                _ if !flying.is_empty() => {
                    let k = (a as usize % flying.len()) + 1;
                    let ids: Vec<u64> = flying.drain(..k).collect();
                    pool.release(&ids).unwrap();
                }
                _ => {}
            }
            pool.check_invariants();
        }
        let mut restored = Pool::from_bytes(&pool.to_bytes()).unwrap();
        restored.check_invariants();
        prop_assert_eq!(restored.fingerprint(), pool.fingerprint());
        prop_assert_eq!(restored.ids_in(State::Cold), pool.ids_in(State::Cold));
        prop_assert_eq!(restored.sample(10), pool.sample(10));
        prop_assert_eq!(restored.fingerprint(), pool.fingerprint());
    }
}
