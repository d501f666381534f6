"""Lineage forest: child estimates, `lineage()`, and `refresh()` (ChildAgg / PathAgg)
against a pure-Python oracle of the formulas (issue 3).

The oracle pools use ``reward_range=(-1, 1)`` so that ``records()["score"]`` is
the engine's normalised float32 score exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from heapa import NO_PARENT, Pool, PoolConfig, UnknownPromptError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

D_MIN, D_MAX = 0.75, 1.33


def store(v: float) -> float:
    s = float(np.float32(min(max(v, -1.0), 1.0)))
    return 0.0 if s == 0.0 else s


def clamp_d(d: float) -> float:
    return min(max(d, D_MIN), D_MAX)


def child_estimate(s: float, d: float) -> float:
    return min(max(s / d if s >= 0 else s * d, -1.0), 1.0)


def adjust(v: float, d: float, direction: str) -> float:
    d = max(d, 1e-6)
    if (direction == "reference") == (v >= 0):
        return v / d
    return v * d


# ---- oracle -------------------------------------------------------------------------------


class Forest:
    """A snapshot of the pool's lineage read through the public API."""

    def __init__(self, pool: Pool, order: list[int]) -> None:
        self.pool = pool
        held = [i for i in order if _has(pool, i)]
        self.order = held
        r = pool.records(np.array(held, dtype=np.uint64))
        self.score = {i: (None if math.isnan(s) else float(s)) for i, s in zip(held, r["score"].tolist(), strict=True)}
        self.state = dict(zip(held, r["state"].tolist(), strict=True))
        self.diff = dict(zip(held, r["difficulty"].astype(np.float64).tolist(), strict=True))
        self.parent = {i: (None if p == NO_PARENT else int(p)) for i, p in zip(held, r["parent"].tolist(), strict=True)}
        self.children: dict[int, list[int]] = {i: [] for i in held}
        for i in held:
            if self.parent[i] is not None:
                self.children[self.parent[i]].append(i)

    def lineage(self) -> dict[str, dict[int, int]]:
        depth, leaves = {}, {}
        for i in self.order:
            p = self.parent[i]
            depth[i] = 0 if p is None else depth[p] + 1
        for i in reversed(self.order):
            kids = self.children[i]
            leaves[i] = 1 if not kids else sum(max(1, leaves[c]) for c in kids)
        return {"depth": depth, "n_leaves": leaves, "n_children": {i: len(self.children[i]) for i in self.order}}

    def refresh(self, mode: str, temperature: float, blend: float, direction: str, scope: str):
        """Returns (expected scores after refresh, number of prompts written)."""
        value: dict[int, float | None] = {}
        leaves: dict[int, float] = {}
        written = 0
        new = dict(self.score)
        for u in reversed(self.order):  # children are newer than parents
            kids = self.children[u]
            a = self.score[u]
            if not kids:
                leaves[u] = 1.0
                value[u] = a
                continue
            leaves[u] = float(sum(max(1.0, leaves[c]) for c in kids))
            sw = swv = 0.0
            # Summation order as the engine: newest child first.
            for c in sorted(kids, key=self.order.index, reverse=True):
                if value[c] is None:
                    continue
                w = leaves[c] ** (1.0 / temperature) if mode == "path" else 1.0
                sw += w
                swv += w * adjust(value[c], self.diff[c], direction)
            if sw == 0.0:
                value[u] = a
                continue
            m = swv / sw
            v = m if a is None else blend * a + (1.0 - blend) * m
            v = min(max(v, -1.0), 1.0)
            value[u] = v
            st_ = self.state[u]
            if st_ == "archived" or (scope == "all" and st_ in ("hard", "easy")):
                new[u] = store(v)
                written += 1
        return new, written


def _has(pool: Pool, i: int) -> bool:
    try:
        pool.records([i])
    except UnknownPromptError:
        return False
    return True


def random_forest(seed: int, n_roots: int = 8, n_batches: int = 6, batch: int = 12, **cfg) -> tuple[Pool, list[int]]:
    """A random forest with every kind of node: scored/cold roots, observed and
    estimated children, unscored children of cold parents, deep chains; then
    some prompts trained (archived) and some left in flight."""
    rng = np.random.default_rng(seed)
    base = {"capacity": 100_000, "reward_range": (-1.0, 1.0), "target": 0.0, "seed": seed}
    pool = Pool(PoolConfig(**{**base, **cfg}))
    order: list[int] = []
    rew = rng.uniform(-1, 1, n_roots)
    scored = rng.random(n_roots) < 0.8
    roots_s = pool.add([f"r{i}" for i in range(int(scored.sum()))], rewards=rew[scored]).tolist()
    roots_c = pool.add([f"c{i}" for i in range(int((~scored).sum()))]).tolist()
    order += roots_s + roots_c
    for b in range(n_batches):
        # Prefer recent prompts as parents: deeper trees.
        idx = np.minimum(len(order) - 1, len(order) - 1 - rng.geometric(0.15, batch) + 1)
        idx = np.maximum(idx, 0)
        if rng.random() < 0.3:
            idx = rng.integers(0, len(order), batch)
        parents = np.array([order[j] for j in idx], dtype=np.uint64)
        diff = rng.uniform(0.5, 1.6, batch)
        with_reward = rng.random(batch) < 0.25
        # Two calls: children with and without an observed reward.
        if with_reward.any():
            order += pool.add(
                [f"b{b}w{j}" for j in range(int(with_reward.sum()))],
                rewards=rng.uniform(-1, 1, int(with_reward.sum())),
                parents=parents[with_reward],
                difficulty=diff[with_reward],
            ).tolist()
        if (~with_reward).any():
            d = diff[~with_reward]
            order += pool.add(
                [f"b{b}e{j}" for j in range(len(d))],
                parents=parents[~with_reward],
                difficulty=None if rng.random() < 0.2 else d,
            ).tolist()
    # Train some prompts (-> archived in on_drain), leave some in flight
    # (unscored ones included).
    got = pool.sample(int(len(order) * 0.6))
    mask = rng.random(len(got)) < 0.7
    pool.report(got[mask], rng.uniform(-1, 1, int(mask.sum())))
    # Fresh unscored leaves and internal nodes: cold roots with cold children.
    (cold_root,) = pool.add(["late cold root"])
    late = pool.add(["late1", "late2"], parents=[cold_root, order[-1]]).tolist()
    order += [cold_root, *late]
    order += pool.add(["late3"], parents=[late[0]]).tolist()
    return pool, order


# ---- child estimate ---------------------------------------------------------------------


@pytest.mark.parametrize("parent_r", [-1.0, -0.6, -0.1, 0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("d", [0.5, 0.75, 0.9, 1.0, 1.2, 1.33, 2.0, None])
def test_child_estimate_on_add(parent_r, d):
    pool = Pool(PoolConfig(capacity=100, reward_range=(-1.0, 1.0), target=0.0))
    (p,) = pool.add(["parent"], rewards=[parent_r])
    (c,) = pool.add(["child"], parents=[p], difficulty=None if d is None else [d])
    r = pool.records([c])
    dd = clamp_d(1.0 if d is None else d)
    assert r["estimated"][0]
    assert r["parent"][0] == p
    assert r["difficulty"][0] == np.float32(dd)
    assert r["score"][0] == store(child_estimate(store(parent_r), dd))
    assert r["state"][0] in ("hard", "easy")
    assert pool.stats()["estimated"] == 1


def test_child_estimate_user_scale():
    pool = Pool(PoolConfig(capacity=100))  # (0, 1)
    (p,) = pool.add(["parent"], rewards=[0.8])  # normalised 0.6
    (c,) = pool.add(["child"], parents=[p], difficulty=[1.2])
    np.testing.assert_allclose(pool.records([c])["score"], [(0.6 / 1.2 + 1) / 2], atol=1e-6)
    (c2,) = pool.add(["child2"], parents=[p], difficulty=[0.8])
    np.testing.assert_allclose(pool.records([c2])["score"], [(0.6 / 0.8 + 1) / 2], atol=1e-6)


def test_child_of_unscored_parent_is_cold_and_reward_wins():
    pool = Pool(PoolConfig(capacity=100))
    (p,) = pool.add(["cold parent"])
    (c,) = pool.add(["child"], parents=[p], difficulty=[1.2])
    r = pool.records([c])
    assert r["state"][0] == "cold" and not r["estimated"][0] and math.isnan(r["score"][0])
    (q,) = pool.add(["scored parent"], rewards=[0.9])
    (c2,) = pool.add(["child"], parents=[q], rewards=[0.1])
    r = pool.records([c2])
    assert not r["estimated"][0]
    np.testing.assert_allclose(r["score"], [0.1], atol=1e-6)
    assert pool.stats()["estimated"] == 0


def test_estimate_is_replaced_by_first_observation_even_with_ema():
    pool = Pool(PoolConfig(capacity=100, stat="ema", ema_alpha=0.5, reinsert="immediate"))
    (p,) = pool.add(["parent"], rewards=[1.0])
    (c,) = pool.add(["child"], parents=[p], difficulty=[0.75])
    pool.release(pool.sample(2))
    got = pool.sample(2)
    pool.report(got, [0.0 if g == c else 1.0 for g in got.tolist()])
    r = pool.records([c])
    assert not r["estimated"][0]
    np.testing.assert_allclose(r["score"], [0.0], atol=1e-6)


def test_estimate_uses_parent_current_score():
    pool = Pool(PoolConfig(capacity=100, reward_range=(-1.0, 1.0), target=0.0, reinsert="immediate"))
    (p,) = pool.add(["parent"], rewards=[0.5])
    pool.report(pool.sample(1), [-0.4])
    (c,) = pool.add(["child"], parents=[p], difficulty=[1.25])
    assert pool.records([c])["score"][0] == store(-0.4 * 1.25)


# ---- lineage() -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_lineage_matches_oracle(seed):
    pool, order = random_forest(seed)
    f = Forest(pool, order)
    exp = f.lineage()
    got = pool.lineage(np.array(order, dtype=np.uint64))
    assert got["parent"].dtype == np.uint64
    assert got["parent"].tolist() == [NO_PARENT if f.parent[i] is None else f.parent[i] for i in order]
    assert got["depth"].tolist() == [exp["depth"][i] for i in order]
    assert got["n_children"].tolist() == [exp["n_children"][i] for i in order]
    assert got["n_leaves"].tolist() == [exp["n_leaves"][i] for i in order]
    assert max(exp["depth"].values()) >= 3  # the generator makes deep trees


def test_lineage_small_tree_by_hand():
    pool = Pool(PoolConfig(capacity=100))
    (r,) = pool.add(["root"], rewards=[0.5])
    a, b = pool.add(["a", "b"], parents=[r, r]).tolist()
    (c,) = pool.add(["c"], parents=[a])
    d, e = pool.add(["d", "e"], parents=[c, c]).tolist()
    lin = pool.lineage([r, a, b, c, d, e])
    assert lin["parent"].tolist() == [NO_PARENT, r, r, a, c, c]
    assert lin["depth"].tolist() == [0, 1, 1, 2, 3, 3]
    assert lin["n_children"].tolist() == [2, 1, 0, 2, 0, 0]
    assert lin["n_leaves"].tolist() == [3, 2, 1, 2, 1, 1]
    assert pool.lineage([])["depth"].shape == (0,)


# ---- refresh() against the oracle ------------------------------------------------------------


def check_refresh(pool: Pool, order: list[int], **kw) -> None:
    f = Forest(pool, order)
    exp, written = f.refresh(**kw)
    n_ref = pool.stats()["refreshes"]
    got_written = pool.refresh(**kw)
    assert got_written == written
    assert pool.stats()["refreshes"] == n_ref + 1
    r = pool.records(np.array(f.order, dtype=np.uint64))
    for i, s, st_ in zip(f.order, r["score"].tolist(), r["state"].tolist(), strict=True):
        e = exp[i]
        if e is None:
            assert math.isnan(s), i
        else:
            assert abs(s - e) <= 1e-6, (i, s, e, f.state[i], f.children[i])
        # Partitions never change in a refresh (only hard <-> easy).
        assert st_ == f.state[i] or {st_, f.state[i]} <= {"hard", "easy"}
    check_split(pool)


def check_split(pool: Pool) -> None:
    """hard ++ easy is sorted by (score, slot) and split at the configured boundary."""
    cap = pool.config.capacity + 1
    hard, easy = pool.ids("hard"), pool.ids("easy")
    allk = np.concatenate([hard, easy])
    sc = pool.records(allk)["score"] if len(allk) else np.zeros(0)
    keys = list(zip(sc.tolist(), (allk % np.uint64(cap)).tolist(), strict=True))
    assert keys == sorted(keys)
    if pool.config.boundary == "quantile":
        assert len(hard) == math.floor(pool.config.low_fraction * len(allk) + 0.5)
    arch = pool.ids("archived")
    if len(arch):
        asc = pool.records(arch)["score"]
        assert (np.diff(asc) >= 0).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(["path", "children"]),
    temperature=st.sampled_from([1.0, 0.5, 2.0, 0.3, 3.7]),
    blend=st.sampled_from([0.5, 0.0, 1.0, 0.25, 0.8]),
    direction=st.sampled_from(["reference", "inverse"]),
    scope=st.sampled_from(["archive", "all"]),
    boundary=st.sampled_from(["quantile", "absolute"]),
)
def test_refresh_matches_oracle(seed, mode, temperature, blend, direction, scope, boundary):
    pool, order = random_forest(seed, boundary=boundary)
    check_refresh(pool, order, mode=mode, temperature=temperature, blend=blend, direction=direction, scope=scope)
    # A second pass starts from the refreshed values.
    check_refresh(pool, order, mode=mode, temperature=temperature, blend=blend, direction=direction, scope=scope)


@pytest.mark.parametrize("mode", ["path", "children"])
@pytest.mark.parametrize("direction", ["reference", "inverse"])
def test_refresh_by_hand(mode, direction):
    """root (archived, a=0.2) with children x (leaf, 0.6, d=1.2) and y (-> two leaves)."""
    pool = Pool(PoolConfig(capacity=100, reward_range=(-1.0, 1.0), target=0.0))
    (r,) = pool.add(["root"], rewards=[0.2])
    x, y = pool.add(["x", "y"], parents=[r, r], rewards=[0.6, -0.5], difficulty=[1.2, 0.8]).tolist()
    l1, l2 = pool.add(["l1", "l2"], parents=[y, y], rewards=[-0.2, 0.4], difficulty=[1.0, 1.25]).tolist()
    got = pool.sample(5)
    pool.report(got, pool.records(got)["score"])  # same scores, now archived
    g = lambda v, d: adjust(v, float(np.float32(d)), direction)  # noqa: E731
    # y: children l1, l2 (leaves, weight 1 each in both modes)
    m_y = (g(store(0.4), 1.25) + g(store(-0.2), 1.0)) / 2
    v_y = 0.5 * store(-0.5) + 0.5 * m_y
    if mode == "path":
        w_x, w_y = 1.0, 2.0  # leaves: x is a leaf, y has two
    else:
        w_x, w_y = 1.0, 1.0
    m_r = (w_y * g(v_y, 0.8) + w_x * g(store(0.6), 1.2)) / (w_x + w_y)
    v_r = 0.5 * store(0.2) + 0.5 * m_r
    assert pool.refresh(mode=mode, direction=direction) == 2
    s = pool.records([r, x, y, l1, l2])["score"]
    np.testing.assert_allclose(s, [store(v_r), store(0.6), store(v_y), store(-0.2), store(0.4)], atol=1e-7)


def test_refresh_scope_archive_leaves_live_prompts():
    pool = Pool(PoolConfig(capacity=100, reward_range=(-1.0, 1.0), target=0.0))
    (r,) = pool.add(["root"], rewards=[0.9])
    pool.add(["c"], parents=[r], rewards=[-0.9])
    assert pool.refresh(scope="archive") == 0
    assert pool.records([r])["score"][0] == store(0.9)
    assert pool.refresh(scope="all") == 1
    assert pool.records([r])["score"][0] == store(0.5 * store(0.9) + 0.5 * store(-0.9))
    check_split(pool)


def test_refresh_blend_extremes():
    pool = Pool(PoolConfig(capacity=100, reward_range=(-1.0, 1.0), target=0.0))
    (r,) = pool.add(["root"], rewards=[0.9])
    pool.add(["c"], parents=[r], rewards=[-0.3])
    pool.refresh(blend=1.0, scope="all")
    assert pool.records([r])["score"][0] == store(0.9)
    pool.refresh(blend=0.0, scope="all")
    assert pool.records([r])["score"][0] == store(-0.3)


def test_refresh_clips_to_range():
    pool = Pool(PoolConfig(capacity=100, reward_range=(-1.0, 1.0), target=0.0))
    (r,) = pool.add(["root"], rewards=[1.0])
    pool.add(["c"], parents=[r], rewards=[1.0], difficulty=[0.75])  # 1/0.75 > 1
    pool.refresh(blend=0.0, scope="all")
    assert pool.records([r])["score"][0] == 1.0


def test_configured_refresh_runs_on_reinsertion():
    cfg = dict(refresh="path", refresh_temperature=0.5, refresh_blend=0.3, refresh_direction="inverse")
    pool, order = random_forest(3, **cfg)
    # Reference pool: same forest without the configured refresh, refreshed by hand.
    ref, _ = random_forest(3)
    f = Forest(ref, order)
    exp, _ = f.refresh(mode="path", temperature=0.5, blend=0.3, direction="inverse", scope="archive")
    live = pool.stats()["size"]
    before = pool.stats()["refreshes"]
    pool.sample(live + 1)  # drains: refresh, then the archive returns
    assert pool.stats()["refreshes"] == before + 1
    assert pool.stats()["reinsertions"] == 1
    r = pool.records(np.array(f.order, dtype=np.uint64))
    for i, s in zip(f.order, r["score"].tolist(), strict=True):
        e = exp[i]
        assert (e is None and math.isnan(s)) or abs(s - e) <= 1e-6


def test_refresh_empty_and_flat_pools():
    pool = Pool(PoolConfig(capacity=10))
    assert pool.refresh() == 0
    pool.add(["a", "b"], rewards=[0.1, 0.2])
    assert pool.refresh(mode="children", scope="all") == 0


# ---- deep chains ---------------------------------------------------------------------------


def test_million_deep_chain():
    """A chain one million deep (the reference crashes past ~1,000): built through
    the inbox, where each item names the previous one as its parent (ids of a
    fresh pool are 0, 1, 2, ...), then refreshed and inspected."""
    n = 1_000_000
    pool = Pool(PoolConfig(capacity=n + 10, inbox_capacity=1 << 20, reward_range=(-1.0, 1.0), target=0.0))
    (root,) = pool.add(["root"], rewards=[0.6])
    assert root == 0
    rng = np.random.default_rng(0)
    diff = rng.uniform(0.7, 1.4, n - 1)
    texts = ["x"] * (n - 1)
    assert pool.inbox.push(texts, parents=np.arange(0, n - 1, dtype=np.uint64), difficulty=diff) == n - 1
    ids = pool.drain_inbox()
    assert ids.tolist() == list(range(1, n))
    assert pool.stats()["orphaned"] == 0
    all_ids = np.arange(n, dtype=np.uint64)
    before = pool.records(all_ids)["score"]
    assert not np.isnan(before).any()  # every link got an estimate

    lin = pool.lineage(np.array([0, 1, n // 2, n - 1], dtype=np.uint64))
    assert lin["depth"].tolist() == [0, 1, n // 2, n - 1]
    assert lin["n_children"].tolist() == [1, 1, 1, 0]
    assert lin["n_leaves"].tolist() == [1, 1, 1, 1]
    assert lin["parent"].tolist() == [NO_PARENT, 0, n // 2 - 1, n - 2]

    assert pool.refresh(mode="path", scope="all", blend=0.5) == n - 1
    after = pool.records(all_ids)["score"]
    # Oracle: bottom-up along the chain (d is the child's clamped difficulty).
    dd = np.clip(diff, D_MIN, D_MAX).astype(np.float32).astype(np.float64).tolist()
    own = before.tolist()
    exp = [0.0] * n
    v = own[n - 1]
    exp[n - 1] = v
    for u in range(n - 2, -1, -1):
        d = dd[u]  # difficulty of child u+1
        g = v / d if v >= 0 else v * d
        v = min(max(0.5 * own[u] + 0.5 * g, -1.0), 1.0)
        exp[u] = v
    np.testing.assert_allclose(after, np.array(exp, dtype=np.float32), atol=1e-6)


# ---- eviction keeps the forest valid --------------------------------------------------------


def test_evicted_parent_children_become_roots():
    pool = Pool(PoolConfig(capacity=6, reward_range=(-1.0, 1.0), target=0.0))
    (p,) = pool.add(["parent"], rewards=[-0.9])  # the hardest: first to go
    # Estimates -0.9 * d: easier than the parent for d < 1.
    kids = pool.add(["k1", "k2"], parents=[p, p], difficulty=[0.75, 0.8]).tolist()
    (gk,) = pool.add(["grandkid"], parents=[kids[0]], difficulty=[0.9])
    est_before = pool.records([*kids, gk])["score"]
    pool.add(["e1", "e2"], rewards=[0.9, 0.9])  # fills the pool
    (n1,) = pool.add(["n1"], rewards=[0.95])  # evicts the parent, reuses its slot
    assert not _has(pool, p)
    assert pool.stats()["evicted"] == 1
    assert n1 % 7 == p % 7  # the parent's slot now holds another prompt
    r = pool.records([*kids, gk])
    assert r["parent"].tolist() == [NO_PARENT, NO_PARENT, kids[0]]
    np.testing.assert_array_equal(r["score"], est_before)  # estimates are kept as they are
    lin = pool.lineage([*kids, gk, n1])
    assert lin["depth"].tolist() == [0, 0, 1, 0]
    assert lin["n_children"].tolist() == [1, 0, 0, 0]  # n1 did not inherit the children
    # Refresh and samples keep working on the forest.
    order = [*kids, gk, n1]
    check_refresh(pool, order, mode="path", temperature=1.0, blend=0.5, direction="reference", scope="all")
    assert len(pool.sample(10)) == len(pool)


def test_parent_evicted_within_batch_and_before_drain():
    pool = Pool(PoolConfig(capacity=3))
    (p,) = pool.add(["p"], rewards=[0.0])
    pool.add(["a"], rewards=[0.5])
    with pytest.raises(UnknownPromptError):
        pool.add(["x"], parents=[10**9])
    # c1 is admitted as p's child; "big" evicts p (the hardest); c2's parent is
    # gone by the time it is admitted (orphaned), and it evicts c1.
    c1, big, c2 = pool.add(["c1", "big", "c2"], rewards=[0.4, 0.9, 0.6], parents=[p, p, p]).tolist()
    assert not _has(pool, p) and not _has(pool, c1)
    assert pool.records([big, c2])["parent"].tolist() == [NO_PARENT, NO_PARENT]
    assert pool.stats()["orphaned"] == 1
    # Inbox: parent dies between push and drain -> orphan counted, child is a root.
    pool2 = Pool(PoolConfig(capacity=2))
    (q,) = pool2.add(["q"], rewards=[0.0])
    assert pool2.inbox.push(["child"], parents=[q], difficulty=[1.0]) == 1
    pool2.add(["a", "b"], rewards=[0.5, 0.6])  # evicts q
    (c,) = pool2.drain_inbox()
    assert pool2.stats()["orphaned"] == 1
    r = pool2.records([c])
    assert r["parent"][0] == NO_PARENT and r["state"][0] == "cold" and not r["estimated"][0]


@pytest.mark.parametrize("seed", range(4))
def test_random_forest_with_evictions(seed):
    """Evict part of a full random forest (hardest first, archived prompts
    included), then lineage and refresh still match the oracle on what is left."""
    n_roots, n_batches, batch = 8, 5, 12
    cap = n_roots + n_batches * batch + 4  # the forest fills the pool exactly
    pool, order = random_forest(seed, n_roots=n_roots, n_batches=n_batches, batch=batch, capacity=cap)
    assert len(pool) == cap and pool.stats()["evicted"] == 0
    rng = np.random.default_rng(seed)
    n_new = cap // 3
    order += pool.add([f"new{i}" for i in range(n_new)], rewards=rng.uniform(0.0, 1.0, n_new)).tolist()
    assert pool.stats()["evicted"] >= n_new
    f = Forest(pool, order)
    assert any(f.parent[i] is None for i in f.order if i not in order[:n_roots])  # orphans exist
    exp = f.lineage()
    lin = pool.lineage(np.array(f.order, dtype=np.uint64))
    assert lin["depth"].tolist() == [exp["depth"][i] for i in f.order]
    assert lin["n_children"].tolist() == [exp["n_children"][i] for i in f.order]
    assert lin["n_leaves"].tolist() == [exp["n_leaves"][i] for i in f.order]
    check_refresh(pool, order, mode="path", temperature=0.7, blend=0.4, direction="inverse", scope="all")
    check_refresh(pool, order, mode="children", temperature=1.0, blend=0.5, direction="reference", scope="archive")
