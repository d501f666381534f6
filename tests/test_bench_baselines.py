"""The benchmark baselines implement the same semantics as heapa (small inputs).

Both pure-Python baselines (``heapa.bench.baselines``) are driven through the
same operation sequences as ``heapa.Pool`` and must agree on every partition
count; their sampling, eviction and lineage refresh are checked against direct
definitions.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from heapa import Pool, PoolConfig
from heapa.bench import registry as reg
from heapa.bench import runner as bench_runner
from heapa.bench.baselines import ReferenceCrash, make_pool, target_hard
from heapa.bench.baselines.best_python import _depths, _refresh_levels, _refresh_loop
from heapa.bench.cli import main as bench_main
from heapa.bench.report import format_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BASELINES = ["best_python", "reference_design"]
IMPLS = [*BASELINES, "heapa"]
COUNTS = ("size", "cold", "in_flight", "archived", "held", "evicted")


def make(name: str, **cfg):
    if name == "heapa":
        return Pool(PoolConfig(**cfg))
    return make_pool(name, **cfg)


def counts(pool) -> dict:
    st_ = pool.stats()
    out = {k: int(st_[k]) for k in COUNTS}
    out["scored"] = int(st_["hard"]) + int(st_["easy"])
    return out


def check_split(name: str, pool, low_fraction: float = 0.5) -> None:
    st_ = pool.stats()
    scored = st_["hard"] + st_["easy"]
    if name == "best_python":
        assert st_["hard"] == target_hard(scored, low_fraction)
    elif name == "heapa":  # exact quantile split; rounding may differ by one
        assert abs(st_["hard"] - low_fraction * scored) <= 1
    # reference_design only approximates the split (lazy <= 4-move rebalance)


def rewards_for(n: int, salt: int) -> np.ndarray:
    return np.random.default_rng(salt).integers(0, 17, n) / 16.0


# ---------------------------------------------------------------- scripted


def test_scripted_sequence_same_counts():
    trace = {}
    for name in IMPLS:
        pool = make(name, capacity=1000, seed=1)
        steps = []
        pool.add([f"c{i}" for i in range(200)])
        pool.add([f"s{i}" for i in range(300)], rewards=rewards_for(300, 1))
        steps.append(counts(pool))
        a = pool.sample(100)  # all cold
        steps.append(counts(pool))
        pool.report(a[:60], rewards_for(60, 2))
        pool.release(a[60:])
        steps.append(counts(pool))
        b = pool.sample(250)  # 140 cold + 110 scored
        steps.append(counts(pool))
        pool.report(b, rewards_for(250, 3))
        steps.append(counts(pool))
        c = pool.sample(300)  # 190 live < 300: the archive (310) returns first
        steps.append(counts(pool))
        pool.release(c)
        steps.append(counts(pool))
        pool.add([f"n{i}" for i in range(700)], rewards=rewards_for(700, 4))  # 200 over capacity
        steps.append(counts(pool))
        check_split(name, pool)
        trace[name] = steps
    expected = trace["best_python"]
    assert expected[1] == {
        "size": 400,
        "cold": 100,
        "in_flight": 100,
        "archived": 0,
        "held": 500,
        "evicted": 0,
        "scored": 300,
    }
    assert expected[5]["archived"] == 0 and expected[5]["in_flight"] == 300
    assert expected[7]["held"] == 1000 and expected[7]["evicted"] == 200
    for name in IMPLS:
        assert trace[name] == expected, name


# --------------------------------------------------------------- hypothesis

OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 12), st.integers(0, 25)),
    st.tuples(st.just("sample"), st.integers(0, 40)),
    st.tuples(st.just("report"), st.floats(0, 1)),
    st.tuples(st.just("release"), st.floats(0, 1)),
    st.tuples(st.just("children"), st.integers(1, 10)),
)


def _run_sequence(name: str, ops, capacity: int, reinsert: str, sampling: str) -> list[dict]:
    pool = make(name, capacity=capacity, reinsert=reinsert, sampling=sampling, seed=3)
    in_flight: list[int] = []
    scored_ids: list[int] = []
    trace = []
    for j, op in enumerate(ops):
        kind = op[0]
        if kind == "add" and pool.stats()["in_flight"] < capacity:  # else CapacityError everywhere
            _, n_cold, n_scored = op
            if n_cold:
                pool.add([f"c{j}_{i}" for i in range(n_cold)])
            if n_scored:
                ids = pool.add([f"s{j}_{i}" for i in range(n_scored)], rewards=rewards_for(n_scored, j))
                scored_ids.extend(int(i) for i in ids)
        elif kind == "sample":
            in_flight.extend(int(i) for i in pool.sample(op[1]))
        elif kind in ("report", "release"):
            r = int(op[1] * len(in_flight))
            ids, in_flight = np.array(in_flight[:r], dtype=np.uint64), in_flight[r:]
            if kind == "report":
                pool.report(ids, rewards_for(r, j))
            else:
                pool.release(ids)
        elif kind == "children" and scored_ids and capacity >= 10**6:  # parents must still exist
            n = op[1]
            rng = np.random.default_rng(j)
            parents = np.array([scored_ids[i] for i in rng.integers(0, len(scored_ids), n)], dtype=np.uint64)
            pool.add([f"k{j}_{i}" for i in range(n)], parents=parents, difficulty=rng.uniform(0.75, 1.33, n))
        trace.append(counts(pool))
        check_split(name, pool)
    return trace


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=25), sampling=st.sampled_from(["medium", "mixed", "uniform", "prioritized"]))
def test_random_sequences_on_drain_same_counts(ops, sampling):
    """No eviction: archive, reinsertion, lineage estimates; every count agrees."""
    traces = {name: _run_sequence(name, ops, 10**6, "on_drain", sampling) for name in IMPLS}
    for name in IMPLS:
        assert traces[name] == traces["best_python"], name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=25), capacity=st.integers(5, 60))
def test_random_sequences_bounded_same_counts(ops, capacity):
    """Immediate reinsertion under a small capacity: eviction counts agree."""
    traces = {name: _run_sequence(name, ops, capacity, "immediate", "medium") for name in IMPLS}
    for name in IMPLS:
        assert traces[name] == traces["best_python"], name
        assert all(t["held"] <= capacity for t in traces[name])


# ------------------------------------------------------------- sampling


@pytest.mark.parametrize("name", IMPLS)
def test_cold_first_fifo(name):
    pool = make(name, capacity=100)
    scored = pool.add(["a", "b"], rewards=np.array([0.5, 0.5]))
    cold = pool.add(["c", "d", "e"])
    assert set(pool.sample(2).tolist()) == set(cold[:2].tolist())
    got = set(pool.sample(2).tolist())
    assert cold[2] in got and len(got & set(scored.tolist())) == 1


@pytest.mark.parametrize("name", BASELINES)
def test_medium_samples_the_boundary_window(name):
    n, k = 1000, 10
    pool = make(name, capacity=n, seed=5)
    rewards = np.random.default_rng(0).permutation(n) / n  # distinct
    ids = pool.add([f"q{i}" for i in range(n)], rewards=rewards)
    rank = {int(i): r for i, r in zip(ids, np.argsort(np.argsort(rewards)), strict=True)}
    got = pool.sample(k)
    ranks = sorted(rank[int(i)] for i in got)
    # the 2k candidates around the median, up to the reference's +-1 split slack
    assert n // 2 - k - 1 <= ranks[0] and ranks[-1] < n // 2 + k + 1


@pytest.mark.parametrize("name", BASELINES)
def test_mixed_takes_half_from_the_easy_end(name):
    n, k = 1000, 20
    pool = make(name, capacity=n, sampling="mixed", seed=5)
    rewards = np.arange(n) / n
    pool.add([f"q{i}" for i in range(n)], rewards=rewards)
    got = pool.sample(k)
    scores = np.sort(pool.records(got)["score"])
    assert np.allclose(scores[-k // 2 :], rewards[-k // 2 :])  # the 10 easiest
    assert np.all(np.abs(scores[: k // 2] - 0.5) < 0.03)  # the rest near the median


@pytest.mark.parametrize("name", BASELINES)
def test_prioritized_prefers_hard_prompts(name):
    pool = make(name, capacity=2000, sampling="prioritized", seed=7)
    pool.add([f"h{i}" for i in range(1000)], rewards=np.zeros(1000))
    pool.add([f"e{i}" for i in range(1000)], rewards=np.ones(1000))
    got = pool.sample(200)
    hard = int(np.count_nonzero(pool.records(got)["score"] == 0.0))
    # weights 1.1 vs 0.1: about 11/12 of the draws are hard prompts
    assert hard > 160


# ------------------------------------------------------------- eviction


@pytest.mark.parametrize("name", IMPLS)
def test_eviction_drops_the_hardest_then_the_oldest_cold(name):
    pool = make(name, capacity=6, reinsert="on_drain")
    cold = pool.add(["c0", "c1"])
    scored = pool.add(["s0", "s1", "s2", "s3"], rewards=np.array([0.2, 0.8, 0.5, 0.9]))
    pool.add(["n0"], rewards=np.array([0.6]))  # evicts s0 (0.2)
    pool.add(["n1"], rewards=np.array([0.1]))  # the new one is the hardest: evicts itself
    st_ = pool.stats()
    assert st_["evicted"] == 2 and st_["held"] == 6
    if name != "heapa":
        states = pool.records(scored)["state"]
        assert states[0] == "evicted" and "evicted" not in states[1:]
        more = pool.add(["x0", "x1", "x2", "x3", "x4", "x5"])  # cold only
        assert pool.stats()["cold"] == 6 - 0 and pool.stats()["evicted"] == 2 + 6
        assert list(pool.records(cold)["state"]) == ["evicted", "evicted"]
        assert "evicted" not in pool.records(more)["state"]


@pytest.mark.parametrize("name", BASELINES)
def test_archived_prompts_compete_for_eviction(name):
    pool = make(name, capacity=4)
    ids = pool.add(["a", "b", "c", "d"], rewards=np.array([0.5, 0.6, 0.7, 0.8]))
    got = pool.sample(1)
    pool.report(got, np.array([0.0]))  # archived, now the hardest
    pool.add(["e"], rewards=np.array([0.9]))
    assert pool.records(got)["state"][0] == "evicted"
    assert "evicted" not in pool.records([i for i in ids if i != got[0]])["state"]


# -------------------------------------------------------------- lineage


def oracle_refresh(parent, a, d, mode, temperature, blend, direction):
    """Direct (recursive) definition of the refresh on a small forest."""
    n = len(parent)
    children = [[] for _ in range(n)]
    for i, p in enumerate(parent):
        if p >= 0:
            children[p].append(i)

    def leaves(u):
        return 1.0 if not children[u] else sum(max(1.0, leaves(c)) for c in children[u])

    def g(v, dd):
        if direction == "reference":
            return v / dd if v >= 0 else v * dd
        return v * dd if v >= 0 else v / dd

    def value(u):
        if not children[u]:
            return a[u]
        terms = [(c, value(c)) for c in children[u]]
        terms = [(c, v) for c, v in terms if not math.isnan(v)]
        if not terms:
            return a[u]
        w = [leaves(c) ** (1.0 / temperature) if mode == "path" else 1.0 for c, _ in terms]
        m = sum(wi * g(v, d[c]) for wi, (c, v) in zip(w, terms, strict=True)) / sum(w)
        x = m if math.isnan(a[u]) else blend * a[u] + (1 - blend) * m
        return min(1.0, max(-1.0, x))

    return [value(u) for u in range(n)]


FOREST = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-1, 10**6), min_size=n, max_size=n),
        st.lists(st.integers(0, 16), min_size=n, max_size=n),
        st.lists(st.floats(0.75, 1.33), min_size=n, max_size=n),
    )
)


def build_forest_pool(name, raw_parent, levels, diffs):
    parent = [-1 if (p < 0 or i == 0) else p % i for i, p in enumerate(raw_parent)]
    pool = make(name, capacity=1000, reinsert="immediate")
    ids = []
    for i, p in enumerate(parent):
        r = np.array([levels[i] / 16.0])
        if p < 0:
            ids.append(int(pool.add([f"n{i}"], rewards=r)[0]))
        else:
            par = np.array([ids[p]], dtype=np.uint64)
            ids.append(int(pool.add([f"n{i}"], rewards=r, parents=par, difficulty=np.array([diffs[i]]))[0]))
    return pool, ids, parent


@settings(max_examples=60, deadline=None)
@given(
    forest=FOREST,
    mode=st.sampled_from(["path", "children"]),
    temperature=st.sampled_from([1.0, 0.5, 2.0]),
    blend=st.sampled_from([0.5, 0.25]),
    direction=st.sampled_from(["reference", "inverse"]),
)
def test_refresh_matches_the_definition(forest, mode, temperature, blend, direction):
    raw_parent, levels, diffs = forest
    for name in IMPLS:
        pool, ids, parent = build_forest_pool(name, raw_parent, levels, diffs)
        a = [2.0 * (lv / 16.0) - 1.0 for lv in levels]
        expect = oracle_refresh(parent, a, diffs, mode, temperature, blend, direction)
        pool.refresh(mode=mode, temperature=temperature, blend=blend, direction=direction, scope="all")
        got = pool.records(np.array(ids, dtype=np.uint64))["score"]
        tol = 1e-6 if name == "heapa" else 1e-9  # heapa stores scores and difficulties as f32
        np.testing.assert_allclose(got, [(x + 1.0) / 2.0 for x in expect], atol=tol, err_msg=name)
        assert pool.stats()["hard"] + pool.stats()["easy"] == len(ids)


def test_level_pass_and_loop_pass_agree():
    rng = np.random.default_rng(11)
    n = 5000
    parent = np.where(rng.random(n) < 0.6, (rng.random(n) * np.arange(n)).astype(np.int64), -1)
    parent[0] = -1
    a = np.where(rng.random(n) < 0.9, rng.uniform(-1, 1, n), np.nan)
    d = rng.uniform(0.75, 1.33, n)
    depth = _depths(parent)
    for mode in ("path", "children"):
        args = (parent, a, d, mode, 0.7, 0.5, "reference")
        v1, r1 = _refresh_levels(depth, int(depth.max()), *args)
        v2, r2 = _refresh_loop(*args)
        assert np.array_equal(r1, r2)
        np.testing.assert_allclose(v1[r1], v2[r2], rtol=1e-12)


@pytest.mark.parametrize("depth", [3000, 6000])
def test_best_python_refreshes_deep_chains(depth):
    pool = make("best_python", capacity=depth)
    prev = pool.add(["c0"], rewards=np.array([0.5]))
    for i in range(1, depth):
        prev = pool.add([f"c{i}"], rewards=np.array([0.5]), parents=prev)
    assert pool.refresh(mode="path", scope="all") == depth - 1


def test_reference_design_crashes_on_deep_chains_like_the_reference():
    pool = make("reference_design", capacity=3000)
    prev = pool.add(["c0"], rewards=np.array([0.5]))
    for i in range(1, 3000):
        prev = pool.add([f"c{i}"], rewards=np.array([0.5]), parents=prev)
    with pytest.raises(ReferenceCrash, match="RecursionError"):
        pool.refresh(mode="path")
    assert "RecursionError" in pool.stats()["refresh_error"]


@pytest.mark.parametrize("name", IMPLS)
def test_children_get_the_parent_estimate(name):
    pool = make(name, capacity=100)
    par = pool.add(["p0", "p1", "p2"], rewards=np.array([1.0, 0.25, 0.5]))  # scores 1, -0.5, 0
    kids = pool.add(["k0", "k1", "k2"], parents=par, difficulty=np.array([1.25, 1.25, 2.0]))
    assert pool.stats()["cold"] == 0
    if name != "heapa":
        got = pool.records(kids)["score"]
        # s/d for s >= 0, s*d for s < 0 (d clamped to 1.33), back to the user scale
        np.testing.assert_allclose(got, [(1 / 1.25 + 1) / 2, (-0.5 * 1.25 + 1) / 2, 0.5])


# ------------------------------------------------------- inbox, snapshots


@pytest.mark.parametrize("name", IMPLS)
def test_inbox_is_bounded_and_drains_into_the_pool(name):
    pool = make(name, capacity=100, inbox_capacity=8)
    par = pool.add(["p"], rewards=np.array([0.5]))
    assert pool.inbox.push([f"x{i}" for i in range(10)], parents=np.repeat(par, 10)) == 8
    ids = pool.drain_inbox()
    assert len(ids) == 8 and pool.stats()["size"] == 9
    assert len(pool.drain_inbox()) == 0


@pytest.mark.parametrize("name", BASELINES)
def test_save_load_round_trip(name, tmp_path):
    pool = make(name, capacity=500, seed=9)
    pool.add([f"c{i}" for i in range(50)])
    pool.add([f"s{i}" for i in range(300)], rewards=rewards_for(300, 1))
    got = pool.sample(80)
    pool.report(got[:40], rewards_for(40, 2))
    pool.inbox.push(["late"], parents=got[:1])
    path = tmp_path / "pool.snap"
    pool.save(path)
    loaded = type(pool).load(path)
    assert loaded.stats() == pool.stats()
    pool.release(got[40:])
    loaded.release(got[40:])
    assert list(loaded.sample(200)) == list(pool.sample(200))
    assert list(loaded.drain_inbox()) == list(pool.drain_inbox())


# ------------------------------------------------------ benchmark registry
# (the runner and its report on tiny pools; nothing here is timed against a limit)

ONCE = bench_runner.Profile(max_time=0.0, min_reps=1, max_reps=2)
SUMMARY_KEYS = set(bench_runner.summarize([1.0], 1, "calls"))


def test_registry_is_consistent():
    assert len(set(reg.NAMES)) == len(reg.OPS) and reg.NAMES[0] == "add"
    for op in reg.OPS:
        assert set(op.impls) <= set(reg.IMPLS) and reg.SUBJECT in op.impls, op.name
        assert set(op.max_size) | set(op.crashes) <= set(op.impls), op.name
        assert set(op.min_speedup) <= set(reg.BASELINES) & set(op.impls), op.name
        if op.budget:
            assert op.budget.metric in SUMMARY_KEYS, op.name
    # the operations the engine team measures at 1M, with their budgets
    assert reg.BY_NAME["sample_uniform_512"].budget == reg.Budget("p50_us", "<=", 100.0)
    assert reg.BY_NAME["sample_prioritized_512"].budget == reg.Budget("p50_us", "<=", 100.0)
    assert reg.BY_NAME["stats"].budget == reg.Budget("p50_us", "<=", 20.0)
    assert reg.BY_NAME["stats"].flat_from == 10_000
    assert reg.BY_NAME["fingerprint"].budget is None


def test_budget_checks():
    b = reg.Budget("ops_per_s", ">=", 10.0)
    assert b.ok(10.0) and not b.ok(9.9) and b.ok(None) is None
    assert b.entry(12.0) == {"metric": "ops_per_s", "cmp": ">=", "limit": 10.0, "value": 12.0, "ok": True}
    with pytest.raises(ValueError):
        reg.Budget("p50_us", "<", 1.0)


@pytest.mark.parametrize("impl", reg.IMPLS)
def test_every_operation_runs(impl):
    """Each implementation runs every operation it has (or fails the way the registry expects)."""
    ops = [op for op in reg.OPS if impl in op.impls]
    out = bench_runner.run_worker(impl, 4 * 512, ops, ONCE)
    assert set(out["errors"]) == {op.name for op in ops if impl in op.crashes}
    for op in ops:
        r = out["results"][op.name]
        assert (r is None) == (impl in op.crashes), op.name
        if r is not None:
            assert r["items_per_call"] == op.items_at(4 * 512) and r["unit"] == op.unit and r["reps"] >= 1
    assert out["memory"]["rss_bytes_per_prompt"] is not None


def test_report_with_fallback_and_flat_check(monkeypatch):
    """The whole report on a tiny pool: a baseline fallback size, a flat-cost check, an op one impl lacks."""
    size, small = 4096, 2048
    changed = {
        "report_512": {"max_size": {"reference_design": small}},
        "stats": {"flat_from": small},
    }
    ops = tuple(dataclasses.replace(op, **changed.get(op.name, {})) for op in reg.OPS)
    monkeypatch.setattr(reg, "OPS", ops)
    monkeypatch.setattr(reg, "BY_NAME", {op.name: op for op in ops})
    calls = []

    def spawn(impl, at, ops_, quick, seed):
        calls.append((impl, at, [op.name for op in ops_]))
        return json.loads(json.dumps(bench_runner.run_worker(impl, at, ops_, ONCE, seed)))

    monkeypatch.setattr(bench_runner, "spawn_worker", spawn)
    names = ["add", "stats", "fingerprint", "sample_uniform_512", "report_512"]
    report = bench_runner.run(size, True, list(reg.IMPLS), names, log=lambda _: None)
    json.dumps(report)

    assert ("heapa", small, ["stats", "report_512"]) in calls
    assert ("reference_design", small, ["report_512"]) in calls
    assert list(report["results"]) == names
    assert report["baselines"]["best_python"]["fingerprint"] is None
    assert report["speedup"]["reference_design"]["report_512"] is None
    fb = report["fallback"]["reference_design"]
    assert fb["size"] == small and set(fb["results"]) == {"report_512"} and fb["speedup"]["report_512"] > 0
    assert report["scaling"]["stats"]["size"] == small and report["scaling"]["stats"]["ratio"] > 0
    budgets = report["budgets"]
    assert {"stats", "sample_uniform_512", "memory_bytes_per_prompt", "stats:flat_vs_2048"} <= set(budgets)
    assert budgets["report_512:speedup_vs_best_python"]["value"] is not None
    assert budgets["sample_medium_512:speedup_vs_best_python"]["ok"] is None  # not run
    assert not report["errors"]
    table = format_table(report)
    for name in names:
        assert name in table
    assert "stats:flat_vs_2048" not in table and "ratio" in table


def test_cli_lists_the_registry(capsys):
    assert bench_main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in reg.NAMES)
    assert bench_main(["--ops", "nope"]) == 2
    assert bench_main(["--impls", "heapa,nope"]) == 2
