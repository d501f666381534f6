"""Basic API of `heapa.Pool`: payloads, records, stats, determinism, reward scales,
eviction, and every error path of the batch API (issue 2).

Each error test checks three things: the exception class, that the message
names the offending index/id, and that the pool is exactly as it was before
(``fingerprint()`` and ``stats()`` unchanged).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from contextlib import contextmanager

import heapa
import numpy as np
import pytest
from heapa import (
    NO_PARENT,
    CapacityError,
    HeapaError,
    InvalidInputError,
    Pool,
    PoolConfig,
    UnknownPromptError,
)

# ---- helpers -------------------------------------------------------------------------


def _stats_key(pool: Pool) -> dict:
    s = dict(pool.stats())
    b = s.pop("boundary")
    s["boundary"] = "nan" if math.isnan(b) else b
    return s


@contextmanager
def unchanged(pool: Pool):
    """Asserts the block leaves the pool exactly as it was."""
    fp, st, n = pool.fingerprint(), _stats_key(pool), len(pool)
    yield
    assert pool.fingerprint() == fp
    assert _stats_key(pool) == st
    assert len(pool) == n


def raises_unchanged(pool: Pool, exc: type[BaseException], match: str, fn) -> BaseException:
    with unchanged(pool), pytest.raises(exc, match=match) as info:
        fn()
    return info.value


def busy_pool(**cfg) -> tuple[Pool, dict[str, np.ndarray]]:
    """A pool with something in every partition: cold, hard, easy, in flight, archived."""
    pool = Pool(PoolConfig(capacity=100, seed=7, **cfg))
    scored = pool.add([f"s{i}" for i in range(6)], rewards=[0.1, 0.2, 0.4, 0.6, 0.8, 0.9])
    flight = pool.sample(4)  # medium: 4 of the boundary window
    pool.report(flight[:2], [0.3, 0.7])  # -> archived (on_drain)
    cold = pool.add(["c0", "c1", "c2"])
    rest = flight[2:]
    return pool, {
        "scored": scored,
        "archived": flight[:2],
        "in_flight": rest,
        "cold": cold,
        "hard": pool.ids("hard"),
        "easy": pool.ids("easy"),
    }


# ---- basic API --------------------------------------------------------------------------


def test_add_returns_uint64_ids_and_len():
    pool = Pool(PoolConfig(capacity=10))
    ids = pool.add(["a", "b", "c"])
    assert isinstance(ids, np.ndarray) and ids.dtype == np.uint64 and ids.shape == (3,)
    assert len(set(ids.tolist())) == 3
    assert len(pool) == 3
    assert pool.add([]).shape == (0,)
    assert len(pool) == 3
    s = pool.stats()
    assert (s["cold"], s["hard"], s["easy"], s["held"], s["size"], s["added"]) == (3, 0, 0, 3, 3, 3)


def test_cold_fifo_then_scored():
    pool = Pool(PoolConfig(capacity=10))
    scored = pool.add(["x", "y"], rewards=[0.2, 0.8])
    cold = pool.add(["a", "b", "c"])
    got = pool.sample(4)
    assert got.dtype == np.uint64
    assert got[:3].tolist() == cold.tolist()  # FIFO
    assert got[3] in scored.tolist()
    assert pool.stats()["in_flight"] == 4
    # Fewer than k available: returns what there is, never raises.
    more = pool.sample(10)
    assert len(more) == 1
    assert pool.sample(10).shape == (0,)
    assert pool.sample(0).shape == (0,)


def test_sample_accepts_numpy_integers():
    pool = Pool(PoolConfig(capacity=10))
    pool.add(["a", "b", "c"])
    assert len(pool.sample(np.int64(2))) == 2
    assert len(pool.sample(np.uint8(1))) == 1


def test_inputs_accept_lists_and_arrays():
    pool = Pool(PoolConfig(capacity=10))
    ids = pool.add(np.array(["a", "b", "c"]), rewards=np.array([0.1, 0.5, 0.9], dtype=np.float32))
    pool.add(("d", "e"), rewards=[0, 1])  # ints are fine as rewards
    got = pool.sample(5)
    pool.report(got.tolist(), [0.5] * 5)  # list of python ints
    assert pool.stats()["reported"] == 5
    assert pool.prompts(ids.astype(np.int64)) == ["a", "b", "c"]


def test_payloads_round_trip():
    pool = Pool(PoolConfig(capacity=10))
    prompts = ["plain", "", "ünïcødé ✓ 数学", "line\nbreak\x00nul"]
    answers = ["1", None, "ß", ""]
    meta = [{"a": 1, "b": [1, 2, {"c": None}]}, None, [1.5, "x"], "just a string"]
    ids = pool.add(prompts, answers=answers, metadata=meta)
    assert pool.prompts(ids) == prompts
    assert pool.answers(ids) == answers
    assert pool.metadata(ids) == meta
    # Any order, duplicates, subsets.
    sel = ids[[3, 0, 3]]
    assert pool.prompts(sel) == [prompts[3], prompts[0], prompts[3]]
    assert pool.answers(sel) == [answers[3], answers[0], answers[3]]
    assert pool.metadata(sel) == [meta[3], meta[0], meta[3]]
    assert pool.prompts([]) == []
    # Without answers/metadata: None.
    more = pool.add(["q"])
    assert pool.answers(more) == [None]
    assert pool.metadata(more) == [None]
    # Payloads survive sampling, reporting and reinsertion.
    got = pool.sample(5)
    pool.report(got, [0.5] * len(got))
    assert pool.prompts(ids) == prompts
    assert pool.stats()["payload_bytes"] > 0


def test_records_fields_and_updates():
    pool = Pool(PoolConfig(capacity=10))
    ids = pool.add(["a", "b", "c"], rewards=[0.25, 0.5, 1.0])
    cold = pool.add(["d"])
    r = pool.records(np.concatenate([ids, cold]))
    assert set(r) >= {
        "score",
        "visits",
        "rollouts",
        "correct",
        "last_step",
        "state",
        "estimated",
        "parent",
        "difficulty",
    }
    np.testing.assert_allclose(r["score"][:3], [0.25, 0.5, 1.0], atol=1e-6)
    assert math.isnan(r["score"][3])
    assert r["visits"].tolist() == [0, 0, 0, 0]
    assert r["last_step"].tolist() == [-1, -1, -1, -1]
    assert r["state"][3] == "cold"
    assert set(r["state"][:3].tolist()) <= {"hard", "easy"}
    assert r["parent"].tolist() == [NO_PARENT] * 4
    assert not r["estimated"].any()

    got = pool.sample(4)
    assert set(pool.records(got)["state"].tolist()) == {"in_flight"}
    pool.report(got, [0.0, 0.5, 0.75, 1.0], n_rollouts=[8, 8, 8, 8], n_correct=[0, 4, 6, 8], step=3)
    r = pool.records(got)
    np.testing.assert_allclose(r["score"], [0.0, 0.5, 0.75, 1.0], atol=1e-6)
    assert r["visits"].tolist() == [1, 1, 1, 1]
    assert r["rollouts"].tolist() == [8, 8, 8, 8]
    assert r["correct"].tolist() == [0, 4, 6, 8]
    assert r["last_step"].tolist() == [3, 3, 3, 3]
    assert set(r["state"].tolist()) == {"archived"}
    assert pool.stats()["step"] == 3

    # A second visit accumulates rollouts/correct and keeps the latest score.
    again = pool.sample(4)  # drains: the archive returns first
    assert sorted(again.tolist()) == sorted(got.tolist())
    pool.report(again, [0.5] * 4, n_rollouts=[4] * 4, n_correct=[2] * 4, step=5)
    r = pool.records(got)
    assert r["visits"].tolist() == [2, 2, 2, 2]
    assert r["rollouts"].tolist() == [12] * 4
    np.testing.assert_allclose(r["score"], [0.5] * 4, atol=1e-6)
    assert r["last_step"].tolist() == [5] * 4
    assert pool.stats()["reinsertions"] == 1


def test_ema_statistic():
    pool = Pool(PoolConfig(capacity=10, stat="ema", ema_alpha=0.25, reinsert="immediate"))
    (pid,) = pool.add(["a"])
    pool.report(pool.sample(1), [1.0])  # first observation: taken as is
    np.testing.assert_allclose(pool.records([pid])["score"], [1.0], atol=1e-6)
    pool.report(pool.sample(1), [0.0])
    # normalised: 1 -> 0.25*(-1) + 0.75*1 = 0.5 -> user 0.75
    np.testing.assert_allclose(pool.records([pid])["score"], [0.75], atol=1e-6)
    # A prompt added with a reward counts as observed.
    (q,) = pool.add(["b"], rewards=[0.0])
    pool.release(pool.sample(2))
    sel = pool.sample(2)
    pool.report(sel, [1.0, 1.0])
    np.testing.assert_allclose(pool.records([q])["score"], [0.25], atol=1e-6)


def test_release_returns_prompts_unchanged():
    pool = Pool(PoolConfig(capacity=10))
    scored = pool.add(["x", "y", "z"], rewards=[0.1, 0.5, 0.9])
    cold = pool.add(["a", "b"])
    before = pool.records(np.concatenate([scored, cold]))
    got = pool.sample(5)
    pool.release(got[::-1])
    after = pool.records(np.concatenate([scored, cold]))
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    # Cold prompts keep their FIFO place.
    assert pool.ids("cold").tolist() == cold.tolist()
    s = pool.stats()
    assert (s["released"], s["in_flight"], s["sampled"]) == (5, 0, 5)


def test_stats_and_partitions_add_up():
    pool, _parts = busy_pool()
    s = pool.stats()
    assert s["cold"] == 3
    assert s["in_flight"] == 2
    assert s["archived"] == 2
    assert s["hard"] + s["easy"] == 2
    assert s["size"] == s["cold"] + s["hard"] + s["easy"]
    assert s["held"] == s["size"] + s["in_flight"] + s["archived"] == len(pool) == 9
    assert (s["added"], s["sampled"], s["reported"], s["released"], s["evicted"]) == (9, 4, 2, 0, 0)
    assert s["capacity"] == 100
    for name in ("cold", "hard", "easy", "in_flight", "archived"):
        ids = pool.ids(name)
        assert ids.dtype == np.uint64
        assert len(ids) == s[name]
        if len(ids):
            assert set(pool.records(ids)["state"].tolist()) == {name}
    # Scored partitions are listed hardest first.
    for name in ("hard", "easy", "archived"):
        sc = pool.records(pool.ids(name))["score"]
        assert (np.diff(sc) >= 0).all()
    with pytest.raises(InvalidInputError, match="state"):
        pool.ids("bogus")
    assert "Pool(held=9/100" in repr(pool)


def test_quantile_boundary_split():
    pool = Pool(PoolConfig(capacity=100, low_fraction=0.25))
    rewards = np.linspace(0, 1, 9)
    ids = pool.add([str(i) for i in range(9)], rewards=rewards)
    hard = pool.ids("hard")
    assert len(hard) == math.floor(0.25 * 9 + 0.5) == 2
    assert hard.tolist() == ids[:2].tolist()
    assert pool.ids("easy").tolist() == ids[2:].tolist()
    np.testing.assert_allclose(pool.stats()["boundary"], rewards[2], atol=1e-6)


def test_absolute_boundary_split_and_window():
    pool = Pool(PoolConfig(capacity=100, boundary="absolute", target=0.5, seed=3))
    rewards = [0.0, 0.1, 0.4, 0.45, 0.5, 0.55, 0.7, 1.0]
    ids = pool.add([str(i) for i in range(8)], rewards=rewards)
    assert pool.ids("hard").tolist() == ids[:4].tolist()
    assert pool.ids("easy").tolist() == ids[4:].tolist()
    assert pool.stats()["boundary"] == 0.5
    # need=2: the 4 nearest 0.5 are 0.5 (tie-break easy first), 0.45, 0.55, 0.4
    for _ in range(10):
        got = pool.sample(2)
        assert set(got.tolist()) <= set(ids[[2, 3, 4, 5]].tolist())
        pool.release(got)


def test_reward_range_minus_one_one_round_trip():
    pool = Pool(PoolConfig(capacity=100, reward_range=(-1.0, 1.0), target=0.0, boundary="absolute"))
    vals = [-1.0, -0.3, 0.0, 0.25, 0.7, 1.0]
    ids = pool.add([str(v) for v in vals], rewards=vals)
    np.testing.assert_allclose(pool.records(ids)["score"], vals, atol=1e-6)
    assert pool.stats()["boundary"] == 0.0
    assert pool.ids("hard").tolist() == ids[:2].tolist()
    got = pool.sample(6)
    pool.report(got, [0.125] * 6)
    np.testing.assert_allclose(pool.records(got)["score"], [0.125] * 6, atol=1e-6)
    with pytest.raises(InvalidInputError, match=r"rewards\[0\]"):
        pool.add(["x"], rewards=[-1.5])


@pytest.mark.parametrize("rr", [(0.0, 1.0), (-1.0, 1.0), (0.0, 10.0), (-5.0, -2.0)])
def test_scale_round_trip_any_range(rr):
    lo, hi = rr
    pool = Pool(PoolConfig(capacity=100, reward_range=rr, target=lo))
    vals = np.linspace(lo, hi, 11)
    ids = pool.add([str(i) for i in range(11)], rewards=vals)
    np.testing.assert_allclose(pool.records(ids)["score"], vals, atol=1e-6 * (hi - lo))
    # Ordering follows the user's scale (higher = easier).
    assert pool.ids("hard").tolist() + pool.ids("easy").tolist() == ids.tolist()


def test_drop_solved_immediate():
    pool = Pool(PoolConfig(capacity=10, reinsert="immediate", drop_solved=True))
    ids = pool.add(["a", "b", "c"])
    got = pool.sample(3)
    pool.report(got, [1.0, 0.5, 1.0])
    s = pool.stats()
    assert s["dropped"] == 2
    assert len(pool) == 1
    with pytest.raises(UnknownPromptError):
        pool.records(ids[[0]])
    assert pool.records(ids[[1]])["state"][0] in ("hard", "easy")


def test_drop_solved_on_drain():
    pool = Pool(PoolConfig(capacity=10, drop_solved=True))
    ids = pool.add(["a", "b", "c"])
    pool.report(pool.sample(3), [1.0, 0.5, 1.0])
    assert pool.stats()["archived"] == 3  # dropped only on reinsertion
    got = pool.sample(3)
    assert got.tolist() == [ids[1]]
    assert pool.stats()["dropped"] == 2


def test_on_drain_reinsertion_only_when_short():
    pool = Pool(PoolConfig(capacity=20))
    ids = pool.add([str(i) for i in range(6)], rewards=[0.5] * 6)
    got = pool.sample(3)
    pool.report(got, [0.1, 0.2, 0.3])
    assert pool.stats()["archived"] == 3
    # 3 live >= k=3: archive stays.
    first = pool.sample(3)
    assert set(first.tolist()) == set(ids.tolist()) - set(got.tolist())
    assert pool.stats()["archived"] == 3
    pool.report(first, [0.9] * 3)
    # 0 live < 1: everything returns.
    pool.sample(1)
    s = pool.stats()
    assert s["archived"] == 0 and s["reinsertions"] == 1 and s["hard"] + s["easy"] == 5


def test_immediate_reinsertion():
    pool = Pool(PoolConfig(capacity=20, reinsert="immediate"))
    pool.add([str(i) for i in range(4)])
    got = pool.sample(4)
    pool.report(got, [0.1, 0.2, 0.3, 0.4])
    s = pool.stats()
    assert s["archived"] == 0 and s["hard"] + s["easy"] == 4


def test_equal_scores_are_drawn_least_recently_trained_first():
    """An absolute frontier with every prompt tied cycles through all of them
    (the order is training order, not slot order)."""
    pool = Pool(PoolConfig(capacity=20, boundary="absolute", target=0.5, reinsert="immediate"))
    ids = pool.add([f"q{i}" for i in range(10)], rewards=[0.5] * 10)
    seen = []
    for _ in range(10):
        got = pool.sample(1)
        pool.report(got, [0.5])
        seen += got.tolist()
    assert sorted(seen) == sorted(ids.tolist())


def test_absolute_frontier_prefers_unsolved_at_equal_distance():
    pool2 = Pool(PoolConfig(capacity=20, boundary="absolute", target=0.5, reinsert="immediate", seed=3))
    a = pool2.add([f"s{i}" for i in range(4)], rewards=[1.0] * 4)
    b = pool2.add([f"u{i}" for i in range(4)], rewards=[0.0] * 4)
    # need=2 -> window of the 4 nearest: all four unsolved (hard side first).
    assert set(pool2.sample(2).tolist()) <= set(b.tolist())
    assert not set(a.tolist()) & set(pool2.ids("in_flight").tolist())


def test_revisit_fraction_holds_trained_prompts_out():
    pool = Pool(PoolConfig(capacity=20, reinsert="immediate", revisit_fraction=0.5, boundary="absolute"))
    ids = pool.add([f"q{i}" for i in range(10)], rewards=[0.5] * 10)
    first = pool.sample(2)
    pool.report(first, [0.5, 0.5])
    # Held 10 -> they sit out until 5 more prompts have been drawn.
    assert pool.stats()["archived"] == 2
    drawn = []
    for _ in range(4):
        got = pool.sample(1)
        drawn += got.tolist()
        pool.report(got, [0.5])
    assert not set(drawn) & set(first.tolist())
    # The fifth draw completes the interval; the next draw returns them to the heaps first.
    pool.report(pool.sample(1), [0.5])
    assert pool.stats()["archived"] == 7
    got = pool.sample(1)
    assert not set(got.tolist()) & set(first.tolist())  # never-trained prompts are older
    assert set(first.tolist()) <= set(pool.ids("hard").tolist() + pool.ids("easy").tolist())
    pool.release(got)
    assert set(ids.tolist()) == set(np.concatenate([pool.ids(s) for s in ("hard", "easy", "archived")]).tolist())


def test_revisit_fraction_releases_early_rather_than_short():
    pool = Pool(PoolConfig(capacity=10, reinsert="immediate", revisit_fraction=0.9))
    pool.add([f"q{i}" for i in range(4)], rewards=[0.2, 0.4, 0.6, 0.8])
    got = pool.sample(3)
    pool.report(got, [0.5] * 3)
    # One live prompt left, four wanted: the cooling ones come back, oldest first.
    assert len(pool.sample(4)) == 4


@pytest.mark.parametrize("reinsert", ["on_drain"])
def test_revisit_fraction_needs_immediate(reinsert):
    with pytest.raises(InvalidInputError, match="immediate"):
        PoolConfig(reinsert=reinsert, revisit_fraction=0.2)
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(InvalidInputError, match="revisit_fraction"):
            PoolConfig(reinsert="immediate", revisit_fraction=bad)


@pytest.mark.parametrize("mode", ["medium", "mixed", "easy_medium_mixed", "uniform", "prioritized"])
def test_sampling_modes_draw_distinct_scored(mode):
    pool = Pool(PoolConfig(capacity=100, sampling=mode, seed=11))
    ids = pool.add([str(i) for i in range(40)], rewards=np.linspace(0, 1, 40))
    got = pool.sample(10)
    assert len(got) == 10 and len(set(got.tolist())) == 10
    assert set(got.tolist()) <= set(ids.tolist())
    if mode in ("mixed", "easy_medium_mixed"):
        # The 5 easiest come first, easiest first.
        assert got[:5].tolist() == ids[::-1][:5].tolist()
    if mode == "medium":
        # The 20 nearest the median (ranks 10..29).
        assert set(got.tolist()) <= set(ids[10:30].tolist())


def test_prioritized_prefers_hard():
    pool = Pool(PoolConfig(capacity=1000, sampling="prioritized", seed=5, priority_temperature=0.25))
    ids = pool.add([str(i) for i in range(200)], rewards=[0.0] * 100 + [1.0] * 100)
    hard = set(ids[:100].tolist())
    got = pool.sample(50)
    n_hard = sum(i in hard for i in got.tolist())
    assert n_hard >= 40  # weights (1.1)^4 vs (0.1)^4


# ---- eviction ------------------------------------------------------------------------------


def test_evict_hardest():
    pool = Pool(PoolConfig(capacity=3))
    ids = pool.add(["a", "b", "c"], rewards=[0.2, 0.5, 0.8])
    (new,) = pool.add(["d"], rewards=[0.6])
    assert not pool_has(pool, ids[0])
    assert pool_has(pool, new)
    assert pool.stats()["evicted"] == 1
    assert len(pool) == 3
    # A newcomer strictly harder than the hardest held loses (evicted on arrival).
    (loser,) = pool.add(["e"], rewards=[0.1])
    assert not pool_has(pool, loser)
    with pytest.raises(UnknownPromptError):
        pool.records([loser])
    assert pool.stats()["evicted"] == 2
    assert pool.stats()["added"] == 5
    # A tie goes to the newcomer.
    (tie,) = pool.add(["f"], rewards=[0.5])
    assert pool_has(pool, tie) and not pool_has(pool, ids[1])


def test_evict_easiest():
    pool = Pool(PoolConfig(capacity=3, eviction="easiest"))
    ids = pool.add(["a", "b", "c"], rewards=[0.2, 0.5, 0.8])
    (new,) = pool.add(["d"], rewards=[0.6])
    assert not pool_has(pool, ids[2]) and pool_has(pool, new)
    (loser,) = pool.add(["e"], rewards=[0.9])
    assert not pool_has(pool, loser)


def test_eviction_archive_candidates_cold_last_in_flight_never():
    pool = Pool(PoolConfig(capacity=4))
    scored = pool.add(["a", "b"], rewards=[0.5, 0.6])
    got = pool.sample(1)
    pool.report(got, [0.05])  # archived, now the hardest held
    cold = pool.add(["c", "d"])
    (n1,) = pool.add(["e"], rewards=[0.7])
    assert not pool_has(pool, got[0])  # archived prompt evicted first
    # Scored candidates go before cold ones.
    others = [i for i in scored.tolist() if i != got[0]]
    pool.add(["f"])
    assert not pool_has(pool, others[0])
    # Now: n1 (scored) + cold c, d, f. Cold newcomers evict the scored one...
    pool.add(["g"])
    assert not pool_has(pool, n1)
    # ... then the oldest cold.
    pool.add(["h"])
    assert not pool_has(pool, cold[0]) and pool_has(pool, cold[1])
    # A scored newcomer loses when only cold candidates remain.
    (lost,) = pool.add(["i"], rewards=[1.0])
    assert not pool_has(pool, lost)
    # In-flight prompts are never evicted.
    flying = pool.sample(3)
    pool.add(["j", "k"])
    assert all(pool_has(pool, i) for i in flying.tolist())
    assert len(pool) == 4
    assert pool.stats()["evicted"] == 7


def test_capacity_error_when_all_in_flight():
    pool = Pool(PoolConfig(capacity=2))
    pool.add(["a", "b"])
    pool.sample(2)
    e = raises_unchanged(pool, CapacityError, "in flight", lambda: pool.add(["c"]))
    assert isinstance(e, HeapaError)
    assert "2" in str(e)
    pool.add([])  # an empty batch is fine


def test_evicted_parent_makes_orphan_root():
    pool = Pool(PoolConfig(capacity=3))
    (parent,) = pool.add(["p"], rewards=[0.1])
    (child,) = pool.add(["c"], parents=[parent])
    pool.add(["x", "y"], rewards=[0.9, 0.9])  # evicts the hardest: the parent
    assert not pool_has(pool, parent)
    assert pool.records([child])["parent"][0] == NO_PARENT


def pool_has(pool: Pool, i) -> bool:
    try:
        pool.records([i])
    except UnknownPromptError:
        return False
    return True


# ---- determinism ----------------------------------------------------------------------------


def _script(pool: Pool, rng: np.random.Generator) -> list:
    out = []
    for step in range(30):
        n = int(rng.integers(0, 6))
        rew = rng.random(n) if rng.random() < 0.6 else None
        out.append(pool.add([f"p{step}-{i}" for i in range(n)], rewards=rew).tolist())
        got = pool.sample(int(rng.integers(0, 8)))
        out.append(got.tolist())
        if len(got):
            cut = int(rng.integers(0, len(got) + 1))
            pool.report(got[:cut], rng.random(cut), step=step)
            pool.release(got[cut:])
        out.append(pool.fingerprint())
    return out


@pytest.mark.parametrize("mode", ["medium", "mixed", "uniform", "prioritized"])
@pytest.mark.parametrize("reinsert", ["on_drain", "immediate"])
def test_determinism_same_seed_same_results(mode, reinsert):
    cfg = PoolConfig(capacity=40, sampling=mode, reinsert=reinsert, seed=42)
    a = _script(Pool(cfg), np.random.default_rng(0))
    b = _script(Pool(cfg), np.random.default_rng(0))
    assert a == b
    c = _script(Pool(PoolConfig.from_dict({**cfg.to_dict(), "seed": 43})), np.random.default_rng(0))
    assert a != c  # the seed matters (fingerprint includes the RNG state)


_SUBPROCESS_SCRIPT = """
import numpy as np
from heapa import Pool, PoolConfig
pool = Pool(PoolConfig(capacity=30, sampling="{mode}", seed=123))
rng = np.random.default_rng(0)
out = []
for step in range(20):
    pool.add([f"p{{step}}-{{i}}" for i in range(4)], rewards=rng.random(4) if step % 2 else None)
    got = pool.sample(5)
    out.append(got.tolist())
    pool.report(got[:3], rng.random(len(got[:3])))
    pool.release(got[3:])
print(pool.fingerprint(), out)
"""


@pytest.mark.parametrize("mode", ["medium", "prioritized"])
def test_determinism_across_processes(mode):
    """Same seed, same calls => same results in another process (with another
    hash seed)."""
    code = _SUBPROCESS_SCRIPT.format(mode=mode)
    runs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        runs.append(res.stdout)
    local = {}
    exec(compile(code.replace("\nprint(", "\nresult = ("), "<script>", "exec"), local)
    assert runs[0] == runs[1]
    fp, out = local["result"]
    assert runs[0] == f"{fp} {out}\n"


def test_no_parent_sentinel():
    assert NO_PARENT == Pool.NO_PARENT == heapa.NO_PARENT == 2**64 - 1


def test_fingerprint_changes_with_state():
    pool = Pool(PoolConfig(capacity=10))
    f0 = pool.fingerprint()
    assert isinstance(f0, int)
    pool.add(["a"])
    f1 = pool.fingerprint()
    assert f1 != f0
    pool.release(pool.sample(1))
    assert pool.fingerprint() != f1  # counters moved
    assert Pool(PoolConfig(capacity=10)).fingerprint() == f0


def test_config_overrides_and_round_trip():
    cfg = PoolConfig(capacity=10, sampling="easy_medium_mixed", reward_range=[-1, 1], target=0)
    assert cfg.reward_range == (-1.0, 1.0)
    pool = Pool(cfg, seed=9)
    assert pool.config.seed == 9 and pool.config.capacity == 10
    pool2 = Pool(capacity=5, eviction="easiest")
    assert pool2.config.eviction == "easiest"
    assert PoolConfig.from_dict(cfg.to_dict()) == cfg


# ---- error paths: configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("capacity", 0),
        ("capacity", -1),
        ("capacity", 1.5),
        ("capacity", True),
        ("capacity", 2**40),
        ("low_fraction", 0.0),
        ("low_fraction", 1.0),
        ("low_fraction", float("nan")),
        ("reward_range", (1.0, 0.0)),
        ("reward_range", (0.0, 0.0)),
        ("reward_range", (0.0, float("inf"))),
        ("reward_range", (0.0,)),
        ("reward_range", "ab"),
        ("target", 1.5),
        ("target", float("nan")),
        ("sampling", "bogus"),
        ("boundary", "median"),
        ("eviction", "oldest"),
        ("stat", "mean"),
        ("reinsert", "never"),
        ("ema_alpha", 0.0),
        ("ema_alpha", 1.5),
        ("priority_epsilon", 0.0),
        ("priority_temperature", -1.0),
        ("inbox_capacity", 0),
        ("delay_steps", -1),
        ("seed", -1),
        ("refresh", "bogus"),
    ],
)
def test_bad_config_values(field, value):
    with pytest.raises(InvalidInputError, match="(?i)" + field.split("_")[0]) as info:
        PoolConfig(**{field: value})
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidInputError):
        Pool(**{field: value})


@pytest.mark.parametrize(("field", "value"), [("refresh_blend", 1.5), ("refresh_temperature", 0.0)])
def test_bad_refresh_config(field, value):
    with pytest.raises(InvalidInputError, match=field.split("_")[1]):
        PoolConfig(refresh="path", **{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("refresh_blend", 5.0), ("refresh_temperature", 0.0), ("refresh_direction", "bogus"), ("refresh_scope", "bogus")],
)
def test_bad_refresh_config_without_refresh(field, value):
    """refresh_* knobs are validated even while ``refresh`` is off: they are bad
    config values either way (and would surface later, when someone turns
    refresh on)."""
    with pytest.raises(InvalidInputError, match=field.split("_")[1]):
        PoolConfig(**{field: value})


def test_config_survives_snapshot_with_refresh_off():
    """Every PoolConfig field round-trips through a snapshot, refresh_* knobs
    included when ``refresh`` is None."""
    cfg = PoolConfig(
        capacity=10, refresh_blend=0.2, refresh_temperature=3.0, refresh_direction="inverse", refresh_scope="all"
    )
    pool = Pool(cfg)
    assert pool.config == cfg
    assert Pool.from_bytes(pool.to_bytes()).config == cfg


def test_bad_override_on_existing_config():
    with pytest.raises(InvalidInputError, match="capacity"):
        Pool(PoolConfig(), capacity=0)


# ---- error paths: add ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rewards": [[0.1], [0.2], [0.3]]}, r"rewards.*shape"),
        ({"rewards": 0.5}, r"rewards.*1-D"),
        ({"rewards": [0.1, 0.2]}, r"rewards.*length 3"),
        ({"rewards": ["a", "b", "c"]}, r"rewards.*dtype"),
        ({"rewards": [0.1, float("nan"), 0.3]}, r"rewards\[1\]"),
        ({"rewards": [0.1, 0.2, float("inf")]}, r"rewards\[2\]"),
        ({"rewards": [-float("inf"), 0.2, 0.3]}, r"rewards\[0\]"),
        ({"rewards": [0.1, 0.2, 1.5]}, r"rewards\[2\] = 1\.5.*reward_range"),
        ({"rewards": [0.1, -0.01, 0.3]}, r"rewards\[1\].*reward_range"),
        ({"answers": ["a", "b"]}, r"answers.*length 3"),
        ({"answers": ["a", 7, "c"]}, r"answers\[1\]"),
        ({"metadata": [{}, {}]}, r"metadata.*length 3"),
        ({"metadata": [{}, {}, {1, 2}]}, r"metadata\[2\]"),
        ({"metadata": [{}, float("nan"), {}]}, r"metadata\[1\]"),
        ({"difficulty": [1.0, 0.0, 1.0]}, r"difficulty\[1\]"),
        ({"difficulty": [1.0, 1.0, float("nan")]}, r"difficulty\[2\]"),
        ({"difficulty": [1.0, 1.0]}, r"difficulty.*length 3"),
        ({"parents": [0, 1]}, r"parents.*length 3"),
        ({"parents": [0.5, 1.0, 2.0]}, r"parents.*dtype"),
        ({"parents": [-1, 0, 0]}, r"parents\[0\]"),
    ],
)
def test_add_invalid_input(kwargs, match):
    pool, _ = busy_pool()
    e = raises_unchanged(pool, InvalidInputError, match, lambda: pool.add(["x", "y", "z"], **kwargs))
    assert isinstance(e, ValueError) and isinstance(e, HeapaError)


@pytest.mark.parametrize(
    ("prompts", "match"),
    [("abc", "prompts"), (b"abc", "prompts"), (["a", 1, "c"], r"prompts\[1\]"), (None, "prompts"), (3, "prompts")],
)
def test_add_bad_prompts(prompts, match):
    pool, _ = busy_pool()
    raises_unchanged(pool, InvalidInputError, match, lambda: pool.add(prompts))


def test_add_unknown_parent_names_id_and_index():
    pool, parts = busy_pool()
    good = int(parts["cold"][0])
    e = raises_unchanged(
        pool,
        UnknownPromptError,
        r"unknown prompt id 987654 at index 2",
        lambda: pool.add(["x", "y", "z"], parents=[good, good, 987654]),
    )
    assert isinstance(e, KeyError)
    assert str(e) == "unknown prompt id 987654 at index 2"  # no KeyError quoting


def test_add_rejects_whole_batch():
    """A bad item at the end of a batch leaves the earlier ones unadded."""
    pool, _ = busy_pool()
    raises_unchanged(
        pool,
        InvalidInputError,
        r"rewards\[99\]",
        lambda: pool.add([str(i) for i in range(100)], rewards=[0.5] * 99 + [2.0]),
    )


def test_add_capacity_error_names_what():
    pool = Pool(PoolConfig(capacity=3))
    pool.add(["a", "b", "c"], rewards=[0.1, 0.2, 0.3])
    pool.sample(3)
    raises_unchanged(pool, CapacityError, r"3 slots.*in flight", lambda: pool.add(["x"], rewards=[0.5]))
    # Inbox drains never raise: items wait (delayed) until a slot frees up.
    assert pool.inbox.push(["q"]) == 1
    assert pool.drain_inbox().shape == (0,)
    assert pool.stats()["delayed"] == 1 and len(pool) == 3
    pool.report(pool.ids("in_flight")[:1], [0.5])
    (q,) = pool.drain_inbox()
    assert pool.prompts([q]) == ["q"]
    assert pool.stats()["delayed"] == 0


# ---- error paths: sample ------------------------------------------------------------------


@pytest.mark.parametrize(("k", "match"), [(-1, "k.*-1"), (1.5, "k.*integer"), ("3", "k.*integer"), (None, "k")])
def test_sample_bad_k(k, match):
    pool, _ = busy_pool()
    raises_unchanged(pool, InvalidInputError, match, lambda: pool.sample(k))


_HUGE_K_SCRIPT = """
import sys
from heapa import Pool, InvalidInputError
pool = Pool(capacity=10)
ids = pool.add(["a", "b"])
k = int(sys.argv[1])
try:
    got = pool.sample(k)
except InvalidInputError:
    print("invalid")
else:
    print(sorted(got.tolist()) == sorted(ids.tolist()))
"""


@pytest.mark.parametrize("k", [2**31, 2**40, 2**62, 2**63 - 1, 2**64])
def test_sample_huge_k_returns_what_there_is(k):
    """``sample(k)`` with k far above the pool size returns what there is (issue
    2: "never block, never raise"). Run in a subprocess: today the engine
    reserves a buffer of k entries up front, so ``sample(2**40)`` aborts the
    whole process (memory allocation failure, SIGABRT) and ``sample(2**62)``
    raises a Rust PanicException; ``sample(2**64)`` raises a bare
    OverflowError rather than an InvalidInputError."""
    res = subprocess.run([sys.executable, "-c", _HUGE_K_SCRIPT, str(k)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[:600]
    out = res.stdout.strip()
    assert out == "True" or (k >= 2**63 and out == "invalid"), res.stderr[:600]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda p: p.drain_inbox(max=2**64), id="drain-max"),
        pytest.param(lambda p: p.drain_inbox(step=2**64), id="drain-step"),
        pytest.param(lambda p: p.report(p.ids("in_flight"), [0.5, 0.5], step=2**64), id="report-step-2**64"),
        pytest.param(lambda p: p.report(p.ids("in_flight"), [0.5, 0.5], step=2**32 - 1), id="report-step-2**32-1"),
    ],
)
def test_out_of_range_integers_are_invalid_input(call):
    """Integers too large for the engine are bad input (InvalidInputError naming
    the argument), not a bare OverflowError from the conversion layer."""
    pool, _ = busy_pool()
    raises_unchanged(pool, InvalidInputError, "max|step", lambda: call(pool))


# ---- error paths: report / release ---------------------------------------------------------


def test_report_id_not_in_flight_each_partition():
    pool, parts = busy_pool()
    fl = parts["in_flight"]
    for name in ("cold", "hard", "easy", "archived"):
        bad = int(parts[name][0]) if len(parts[name]) else None
        if bad is None:
            continue
        ids = np.array([fl[0], bad], dtype=np.uint64)
        raises_unchanged(
            pool,
            InvalidInputError,
            rf"id {bad} at index 1 is not in flight \(it is {name}\)",
            lambda ids=ids: pool.report(ids, [0.5, 0.5]),
        )
        raises_unchanged(
            pool, InvalidInputError, rf"id {bad} at index 1 is not in flight", lambda ids=ids: pool.release(ids)
        )


def test_report_unknown_id():
    pool, parts = busy_pool()
    fl = parts["in_flight"]
    ids = np.array([fl[0], fl[1], 10**12], dtype=np.uint64)
    e = raises_unchanged(
        pool, UnknownPromptError, rf"unknown prompt id {10**12} at index 2", lambda: pool.report(ids, [0.5] * 3)
    )
    assert isinstance(e, KeyError)
    raises_unchanged(pool, UnknownPromptError, r"at index 2", lambda: pool.release(ids))


def test_report_evicted_id_is_unknown():
    pool = Pool(PoolConfig(capacity=2))
    ids = pool.add(["a", "b"], rewards=[0.1, 0.9])
    pool.add(["c"], rewards=[0.5])  # evicts ids[0]; its slot is reused
    raises_unchanged(pool, UnknownPromptError, rf"unknown prompt id {ids[0]} at index 0", lambda: pool.records(ids[:1]))
    pool.sample(2)
    raises_unchanged(pool, UnknownPromptError, rf"id {ids[0]}", lambda: pool.report(ids[:1], [0.5]))


def test_report_id_twice():
    pool, parts = busy_pool()
    fl = parts["in_flight"]
    ids = np.array([fl[0], fl[1], fl[0]], dtype=np.uint64)
    raises_unchanged(
        pool, InvalidInputError, rf"id {fl[0]} appears twice \(indices 0 and 2\)", lambda: pool.report(ids, [0.5] * 3)
    )
    raises_unchanged(pool, InvalidInputError, r"appears twice \(indices 0 and 2\)", lambda: pool.release(ids))


def test_report_already_reported_in_earlier_call():
    pool, parts = busy_pool()
    fl = parts["in_flight"]
    pool.report(fl[:1], [0.5])
    raises_unchanged(
        pool,
        InvalidInputError,
        rf"id {fl[0]} at index 0 is not in flight \(it is archived\)",
        lambda: pool.report(fl, [0.5, 0.5]),
    )


@pytest.mark.parametrize(
    ("rewards", "kw", "match"),
    [
        ([0.5], {}, r"rewards.*length 2"),
        ([0.5, 0.5, 0.5], {}, r"rewards.*length 2"),
        ([[0.5, 0.5]], {}, r"rewards.*shape"),
        (["a", "b"], {}, r"rewards.*dtype"),
        ([0.5, float("nan")], {}, r"rewards\[1\]"),
        ([float("inf"), 0.5], {}, r"rewards\[0\]"),
        ([0.5, 1.0000001], {}, r"rewards\[1\].*reward_range"),
        ([-0.5, 0.5], {}, r"rewards\[0\] = -0\.5"),
        ([0.5, 0.5], {"n_rollouts": [4]}, r"n_rollouts.*length 2"),
        ([0.5, 0.5], {"n_correct": [1, 2, 3]}, r"n_correct.*length 2"),
        ([0.5, 0.5], {"n_rollouts": [4, -1]}, r"n_rollouts\[1\]"),
        ([0.5, 0.5], {"n_rollouts": [4.0, 4.0]}, r"n_rollouts.*dtype"),
        ([0.5, 0.5], {"n_rollouts": [4, 4], "n_correct": [1, 5]}, r"n_correct\[1\] = 5 exceeds n_rollouts\[1\] = 4"),
        ([0.5, 0.5], {"step": -1}, r"step.*-1"),
        ([0.5, 0.5], {"step": 1.5}, r"step"),
    ],
)
def test_report_invalid_input(rewards, kw, match):
    pool, parts = busy_pool()
    fl = parts["in_flight"]
    raises_unchanged(pool, InvalidInputError, match, lambda: pool.report(fl, rewards, **kw))


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (np.array([[0, 1]], dtype=np.uint64), r"ids.*shape"),
        (np.array([0.0, 1.0]), r"ids.*dtype"),
        ([-3, 0], r"ids\[0\] = -3"),
        (5, r"ids.*1-D"),
        (["a"], r"ids.*dtype"),
    ],
)
def test_bad_id_arrays(ids, match):
    pool, _ = busy_pool()
    for fn in (
        lambda: pool.report(ids, [0.5, 0.5]),
        lambda: pool.release(ids),
        lambda: pool.records(ids),
        lambda: pool.prompts(ids),
        lambda: pool.answers(ids),
        lambda: pool.metadata(ids),
        lambda: pool.lineage(ids),
    ):
        raises_unchanged(pool, InvalidInputError, match, fn)


def test_report_reward_outside_custom_range():
    pool = Pool(PoolConfig(capacity=10, reward_range=(-1.0, 1.0), target=0.0))
    pool.add(["a", "b"])
    got = pool.sample(2)
    raises_unchanged(pool, InvalidInputError, r"rewards\[1\] = 1\.5.*\[-1, 1\]", lambda: pool.report(got, [-1.0, 1.5]))
    pool.report(got, [-1.0, 1.0])


def test_report_empty_batch_is_fine():
    pool, _ = busy_pool()
    pool.report([], [])
    pool.release([])
    assert pool.stats()["reported"] == 2


@pytest.mark.parametrize("reader", ["records", "prompts", "answers", "metadata", "lineage"])
def test_readers_unknown_id(reader):
    pool, parts = busy_pool()
    ids = np.array([parts["cold"][0], parts["hard"][0], 424242], dtype=np.uint64)
    e = raises_unchanged(
        pool, UnknownPromptError, r"unknown prompt id 424242 at index 2", lambda: getattr(pool, reader)(ids)
    )
    assert isinstance(e, KeyError)


def test_refresh_bad_arguments():
    pool, _ = busy_pool()
    for kw, match in [
        ({"mode": "bogus"}, "bogus"),
        ({"direction": "sideways"}, "sideways"),
        ({"scope": "live"}, "live"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"blend": 1.5}, "blend"),
        ({"blend": -0.1}, "blend"),
    ]:
        raises_unchanged(pool, InvalidInputError, match, lambda kw=kw: pool.refresh(**kw))


def test_drain_inbox_bad_arguments():
    pool, _ = busy_pool()
    raises_unchanged(pool, InvalidInputError, "max", lambda: pool.drain_inbox(max=-1))
    raises_unchanged(pool, InvalidInputError, "step", lambda: pool.drain_inbox(step=-2))


def test_exception_hierarchy():
    assert issubclass(UnknownPromptError, KeyError) and issubclass(UnknownPromptError, HeapaError)
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, HeapaError)
    assert issubclass(CapacityError, HeapaError)
    assert issubclass(heapa.SnapshotError, HeapaError)


def test_mixed_python_int_and_numpy_id_list():
    """A list mixing numpy uint64 ids (as returned by the pool) with Python ints
    is a natural thing to build (``list(ids) + [other]``). numpy turns such a
    list into float64, which the id converter rejects as a dtype error: the
    user then sees "expected an integer array, got dtype float64" instead of
    the real problem (the unknown id)."""
    pool = Pool(PoolConfig(capacity=10))
    ids = pool.add(["a", "b"])
    got = pool.sample(2)
    mixed = [got[0], int(got[1])]
    assert re.fullmatch(r"\d+", str(mixed[1]))
    pool.report(mixed, [0.5, 0.5])
    assert pool.stats()["reported"] == 2
    with pytest.raises(UnknownPromptError, match="12345"):
        pool.records([ids[0], 12345])


# ---- inputs that must stay inside the error hierarchy (fault-injection findings) ----------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: p.add(["ok", "bad\ud800"]), r"prompts\[1\].*UTF-8"),
        (lambda p: p.add(["ok"], answers=["\udfff"]), r"answers\[0\].*UTF-8"),
        (lambda p: p.inbox.push(["ok", "x\ud800"]), r"prompts\[1\].*UTF-8"),
        (lambda p: p.add(["ok", 3]), r"prompts\[1\].*str.*int"),
        (lambda p: p.add(["ok"], answers="a"), r"answers.*sequence"),
        (lambda p: p.ids(1), r"state.*str.*int"),
        (lambda p: p.refresh(mode=None), r"mode.*str.*NoneType"),
        (lambda p: p.refresh(temperature=None), r"temperature.*number.*NoneType"),
        (lambda p: p.refresh(temperature="1"), r"temperature.*number.*str"),
        (lambda p: p.refresh(blend=True), r"blend.*number.*bool"),
    ],
)
def test_bad_inputs_raise_invalid_input_naming_the_argument(call, match):
    pool = Pool(PoolConfig(capacity=10))
    pool.add(["seed"])
    fp = pool.fingerprint()
    with pytest.raises(InvalidInputError, match=match):
        call(pool)
    assert pool.fingerprint() == fp and len(pool.inbox) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reward_range": ("a", "b")}, r"reward_range\[0\].*number.*str"),
        ({"reward_range": (0.0,)}, r"reward_range.*pair"),
        ({"sampling": None}, r"sampling.*None"),
        ({"capacity": None}, r"capacity.*None"),
        ({"capacity": 1.5}, r"capacity.*integer"),
        ({"low_fraction": "0.5"}, r"low_fraction.*number.*str"),
        ({"drop_solved": 1}, r"drop_solved.*bool"),
        ({"refresh_temperature": None}, r"refresh_temperature.*None"),
    ],
)
def test_config_values_of_the_wrong_type(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        PoolConfig(**kwargs)


def test_unknown_config_fields_are_an_error():
    with pytest.raises(InvalidInputError, match="capcity"):
        Pool(PoolConfig(capacity=100), capcity=3)
    with pytest.raises(InvalidInputError, match="capcity"):
        Pool(capcity=3)
    with pytest.raises(InvalidInputError, match="bogus"):
        PoolConfig.from_dict({"capacity": 3, "bogus": 1})


def test_python_config_fields_equal_the_engines():
    from dataclasses import fields

    from heapa._heapa import CONFIG_FIELDS

    assert [f.name for f in fields(PoolConfig)] == list(CONFIG_FIELDS)
    assert list(Pool(PoolConfig(capacity=3))._core.config()) == list(CONFIG_FIELDS)
    # ... and the same defaults: the engine's table is the one definition.
    assert Pool(PoolConfig())._core.config() == PoolConfig().to_dict()


def test_report_copies_its_inputs_before_releasing_the_gil():
    """A caller thread writing the rewards array while ``report`` runs must not get
    a value stored that validation never saw (the engine once read the array twice,
    around releasing the GIL: a NaN slipped in and the next snapshot did not load)."""
    import threading

    pool = Pool(PoolConfig(capacity=200_000, sampling="uniform"))
    pool.add([str(i) for i in range(200_000)])
    stop = threading.Event()
    rewards = np.full(100_000, 0.5)

    def scribble():
        while not stop.is_set():
            rewards[:] = np.nan
            rewards[:] = 0.5

    t = threading.Thread(target=scribble)
    t.start()
    try:
        for _ in range(20):
            ids = pool.sample(100_000)
            try:
                pool.report(ids, rewards)
            except InvalidInputError:
                pool.release(ids)
    finally:
        stop.set()
        t.join()
    scores = pool.records(np.concatenate([pool.ids(s) for s in ("hard", "easy", "archived")]))["score"]
    assert not np.isnan(scores).any()
    Pool.from_bytes(pool.to_bytes())  # loads: nothing unchecked was stored


def test_named_presets():
    from heapa.sim import RECOMMENDED, SAMPLERS

    paper, frontier = PoolConfig.paper(), PoolConfig.frontier(capacity=1000)
    assert (paper.boundary, paper.sampling, paper.reinsert) == ("quantile", "medium", "on_drain")
    assert (frontier.boundary, frontier.reinsert, frontier.revisit_fraction) == ("absolute", "immediate", 0.25)
    assert frontier.capacity == 1000
    # The simulator's recommended sampler and the paper sampler are these presets.
    assert PoolConfig.from_dict({**PoolConfig().to_dict(), **SAMPLERS[RECOMMENDED].pool}) == PoolConfig.frontier()
    assert PoolConfig.from_dict({**PoolConfig().to_dict(), **SAMPLERS["heapa_paper"].pool}) == PoolConfig.paper()
    with pytest.raises(InvalidInputError, match="bogus"):
        PoolConfig.frontier(bogus=1)


def test_release_in_flight_returns_what_a_restored_pool_had_drawn():
    pool = Pool(PoolConfig(capacity=10))
    ids = pool.add([f"q{i}" for i in range(6)])
    drawn = pool.sample(4)
    restored = Pool.from_bytes(pool.to_bytes())
    assert sorted(restored.release_in_flight().tolist()) == sorted(drawn.tolist())
    assert restored.stats()["in_flight"] == 0 and len(restored.ids("cold")) == len(ids)
    assert restored.release_in_flight().tolist() == []
