//! Golden values for PathAgg / ChildAgg and clean rejection of damaged snapshots.

use heapa_core::payload::encode;
use heapa_core::{
    Config, CoreError, Direction, NewPrompt, Pool, RefreshMode, RefreshParams, Scope, State,
};

fn np(reward: Option<f64>, parent: Option<u64>, d: f64) -> NewPrompt {
    NewPrompt {
        payload: encode("q", Some("1"), None),
        reward,
        parent,
        difficulty: Some(d),
        ..Default::default()
    }
}

/// root(a) -> {c1(v1, d1) -> {g(vg, dg)}, c2(v2, d2)}; rewards in [-1, 1].
fn tree() -> (Pool, Vec<u64>) {
    let cfg = Config {
        reward_range: (-1.0, 1.0),
        capacity: 16,
        ..Config::default()
    };
    let mut p = Pool::new(cfg).unwrap();
    let root = p.add(vec![np(Some(0.2), None, 1.0)]).unwrap()[0];
    let c = p
        .add(vec![
            np(Some(0.6), Some(root), 1.2),
            np(Some(-0.4), Some(root), 0.8),
        ])
        .unwrap();
    let g = p.add(vec![np(Some(0.9), Some(c[0]), 1.1)]).unwrap()[0];
    (p, vec![root, c[0], c[1], g])
}

fn archive_all(p: &mut Pool) {
    let ids = p.sample(16);
    let rs: Vec<f64> = p.records(&ids).unwrap().score;
    p.report(&ids, &rs, None, None, None).unwrap();
}

#[test]
fn path_and_children_aggregation_golden() {
    let g = |v: f64, d: f64| if v >= 0.0 { v / d } else { v * d };
    for mode in [RefreshMode::Path, RefreshMode::Children] {
        let (mut p, ids) = tree();
        archive_all(&mut p);
        let n = p.refresh(&RefreshParams {
            mode,
            temperature: 0.5,
            ..Default::default()
        });
        assert_eq!(n, 2, "only the two internal nodes change");
        let s = p.records(&ids).unwrap().score;
        let c1 = (0.5f64 * 0.6 + 0.5 * g(0.9, 1.1)).clamp(-1.0, 1.0);
        // leaves under c1: 1 (g); under c2: 1 (leaf) -> equal weights at any T.
        let m = (g(c1, 1.2) + g(-0.4, 0.8)) / 2.0;
        let root = 0.5 * 0.2 + 0.5 * m;
        assert!((s[1] - c1).abs() < 1e-6, "{mode:?} c1 {} vs {c1}", s[1]);
        assert!(
            (s[0] - root).abs() < 1e-6,
            "{mode:?} root {} vs {root}",
            s[0]
        );
        assert!(
            (s[2] + 0.4).abs() < 1e-6 && (s[3] - 0.9).abs() < 1e-6,
            "leaves unchanged"
        );
    }
    // Inverse direction and archive scope: live prompts keep their values.
    let (mut p, ids) = tree();
    let n = p.refresh(&RefreshParams {
        direction: Direction::Inverse,
        scope: Scope::Archive,
        ..Default::default()
    });
    assert_eq!(n, 0);
    let n = p.refresh(&RefreshParams {
        direction: Direction::Inverse,
        scope: Scope::All,
        ..Default::default()
    });
    assert_eq!(n, 2);
    let s = p.records(&ids).unwrap().score;
    let c1: f64 = 0.5 * 0.6 + 0.5 * (0.9 * 1.1); // inverse: v·d for v ≥ 0
    assert!((s[1] - c1.clamp(-1.0, 1.0)).abs() < 1e-6);
}

#[test]
fn child_estimate_and_orphans() {
    let (mut p, ids) = tree();
    let kid = p.add(vec![np(None, Some(ids[1]), 1.33)]).unwrap()[0];
    let r = p.records(&[kid]).unwrap();
    assert!(r.estimated[0]);
    assert!((r.score[0] - 0.6 / 1.33).abs() < 1e-6);
    let neg = p.add(vec![np(None, Some(ids[2]), 5.0)]).unwrap()[0]; // d clamps to 1.33
    assert!((p.records(&[neg]).unwrap().score[0] - (-0.4 * 1.33)).abs() < 1e-6);
    // Evict everything scored by filling with harder prompts: children become roots.
    let mut small = Pool::new(Config {
        capacity: 2,
        ..Config::default()
    })
    .unwrap();
    let a = small.add(vec![np(Some(0.1), None, 1.0)]).unwrap()[0];
    let b = small.add(vec![np(None, Some(a), 1.0)]).unwrap()[0];
    small.add(vec![np(Some(0.9), None, 1.0)]).unwrap();
    assert!(!small.contains(a));
    let l = small.lineage(&[b]).unwrap();
    assert_eq!((l.parent[0], l.depth[0]), (heapa_core::NO_PARENT, 0));
}

#[test]
fn damaged_snapshots_are_rejected_cleanly() {
    let (mut p, _) = tree();
    p.sample(2);
    let good = p.to_bytes();
    assert!(Pool::from_bytes(&good).is_ok());
    for cut in (0..good.len()).step_by(7) {
        assert!(
            matches!(Pool::from_bytes(&good[..cut]), Err(CoreError::Snapshot(_))),
            "cut {cut}"
        );
    }
    let mut x = 0x9E37_79B9u64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bad = good.clone();
        let i = (x as usize) % bad.len();
        bad[i] ^= 1 << (x % 8);
        assert!(Pool::from_bytes(&bad).is_err(), "flip at {i}");
    }
    let mut future = good.clone();
    future[8..12].copy_from_slice(&99u32.to_le_bytes());
    let e = Pool::from_bytes(&future).err().unwrap().to_string();
    assert!(e.contains("newer"), "{e}");
    let copy = Pool::from_bytes(&good).unwrap();
    assert_eq!(copy.ids_in(State::InFlight), p.ids_in(State::InFlight));
    assert_eq!(copy.to_bytes(), good);
}

/// Builds a random forest in a random pool: some prompts trained (archived or
/// back in the heaps), some in flight, some cold.
fn random_forest(cfg: &Config, spec: &[(u8, u8, u8)]) -> Pool {
    let mut p = Pool::new(cfg.clone()).unwrap();
    let mut ids: Vec<u64> = Vec::new();
    for (i, &(r, par, d)) in spec.iter().enumerate() {
        let parent = (i > 0 && par % 3 != 0).then(|| ids[usize::from(par) % ids.len()]);
        let reward = (r % 4 != 0).then_some(f64::from(r % 9) / 8.0);
        let d = 0.75 + f64::from(d % 8) * 0.08;
        ids.push(p.add(vec![np(reward, parent, d)]).unwrap()[0]);
    }
    let taken = p.sample(spec.len() / 2);
    let n = taken.len() * 2 / 3;
    let rewards: Vec<f64> = (0..n).map(|i| (i % 5) as f64 / 4.0).collect();
    p.report(&taken[..n], &rewards, None, None, Some(1))
        .unwrap();
    p
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// The bulk re-keying path of `refresh` and the per-prompt path give the
    /// same pool: same columns, same partitions, same future samples.
    #[test]
    fn bulk_and_incremental_refresh_agree(
        spec in proptest::collection::vec((0u8..=255, 0u8..=255, 0u8..=255), 2..60),
        absolute in proptest::bool::ANY,
        q in proptest::sample::select(vec![0.2, 0.5, 0.8]),
        prioritized in proptest::bool::ANY,
        on_drain in proptest::bool::ANY,
        children in proptest::bool::ANY,
    ) {
        let cfg = Config {
            capacity: 64,
            boundary: if absolute { heapa_core::Boundary::Absolute } else { heapa_core::Boundary::Quantile },
            low_fraction: q,
            sampling: if prioritized { heapa_core::Sampling::Prioritized } else { heapa_core::Sampling::Medium },
            reinsert: if on_drain { heapa_core::Reinsert::OnDrain } else { heapa_core::Reinsert::Immediate },
            ..Config::default()
        };
        let params = RefreshParams {
            mode: if children { RefreshMode::Children } else { RefreshMode::Path },
            scope: Scope::All,
            ..RefreshParams::default()
        };
        let (mut a, mut b) = (random_forest(&cfg, &spec), random_forest(&cfg, &spec));
        proptest::prop_assert_eq!(a.fingerprint(), b.fingerprint());
        let na = a.refresh_via(&params, Some(true));
        let nb = b.refresh_via(&params, Some(false));
        proptest::prop_assert_eq!(na, nb);
        a.check_invariants();
        b.check_invariants();
        proptest::prop_assert_eq!(a.fingerprint(), b.fingerprint());
        for st in [State::Hard, State::Easy, State::Archived, State::Cold] {
            proptest::prop_assert_eq!(a.ids_in(st), b.ids_in(st));
        }
        proptest::prop_assert_eq!(a.sample(7), b.sample(7));
    }
}
