"""Priors for never-scored prompts: groups, explicit priors with a confidence, ``cold="prior"``."""

from __future__ import annotations

import math
import struct

import heapa
import numpy as np
import pytest
from heapa import InvalidInputError, Pool, PoolConfig, SnapshotError
from hypothesis import given, settings
from hypothesis import strategies as st
from test_inbox_snapshot import HEADER, _blob, _sections


def prior_pool(**cfg) -> Pool:
    return Pool(PoolConfig(**{"capacity": 1000, "cold": "prior", "explore": 0.0, "seed": 3, **cfg}))


def test_fifo_is_the_default_and_ignores_groups():
    pool = Pool(PoolConfig(capacity=100))
    ids = pool.add([f"q{i}" for i in range(10)], group=[i % 3 for i in range(10)], prior=np.linspace(0, 1, 10))
    assert pool.sample(10).tolist() == ids.tolist()


def test_groups_nearest_the_target_are_drawn_first():
    pool = prior_pool(target=0.5)
    groups = [i % 4 for i in range(80)]
    ids = pool.add([f"q{i}" for i in range(80)], group=groups)
    group_of = dict(zip(ids.tolist(), groups, strict=True))
    truth = {0: 1.0, 1: 0.0, 2: 0.5, 3: 0.75}
    first = pool.sample(80)  # nothing known yet: every group looks like the pool
    pool.report(first, [truth[group_of[i]] for i in first.tolist()])
    fresh = pool.add([f"n{i}" for i in range(80)], group=groups)
    group_of.update(zip(fresh.tolist(), groups, strict=True))
    est = pool.groups()
    assert set(est) == {0, 1, 2, 3}
    assert est[2]["pass_rate"] == 0.5 and est[2]["observations"] > 0
    # Shrunk toward the pool-wide rate, in the observed order.
    assert est[1]["estimate"] < est[2]["estimate"] < est[3]["estimate"] < est[0]["estimate"]
    assert est[0]["estimate"] < 1.0 and est[1]["estimate"] > 0.0
    nxt = [group_of[i] for i in pool.sample(20).tolist()]
    assert nxt == [2] * 20  # the group whose estimate is at the target


@pytest.mark.parametrize("cold_prior, first", [(0.95, "scored"), (0.5, "cold")])
def test_scored_prompts_and_cold_estimates_are_ranked_on_one_scale(cold_prior, first):
    """Under an absolute boundary with medium sampling, a scored prompt nearer the target than every
    cold queue's estimate is drawn before them; a cold queue nearer the target goes first."""
    pool = prior_pool(boundary="absolute", target=0.5, reinsert="immediate")
    cold = pool.add([f"c{i}" for i in range(6)], prior=np.full(6, cold_prior), confidence=np.full(6, 100.0))
    scored = pool.add(["s0", "s1"], rewards=[0.75, 0.75])  # 0.25 from the target; the cold queue ~0.4 or ~0.03
    drawn = set(pool.sample(2).tolist())
    assert drawn == set((scored if first == "scored" else cold[:2]).tolist())
    # The rest of the batch falls back on the other source.
    assert len(drawn | set(pool.sample(6).tolist())) == 8


@pytest.mark.parametrize("explore", [0.0, 0.5])
def test_one_scale_with_several_cold_queues(explore):
    """Grouped cold queues far from the target: the scored prompts nearer it still take their share
    of the batch; the explore share stays cold."""
    pool = prior_pool(boundary="absolute", target=0.5, reinsert="immediate", explore=explore)
    cold = pool.add([f"c{i}" for i in range(8)], group=[i % 2 for i in range(8)],
                    prior=np.full(8, 0.95), confidence=np.full(8, 100.0))  # fmt: skip
    scored = pool.add(["s0", "s1"], rewards=[0.5, 0.5])
    drawn = pool.sample(6).tolist()
    assert set(scored.tolist()) <= set(drawn)
    assert len(set(drawn) & set(cold.tolist())) == 4


def test_one_scale_needs_a_distance_rule_for_scored_prompts():
    """Quantile boundary (or a weighted sampling mode): cold prompts first, as before."""
    for cfg in (dict(target=0.5), dict(boundary="absolute", target=0.5, sampling="uniform")):
        pool = prior_pool(**cfg, reinsert="immediate")
        cold = pool.add([f"c{i}" for i in range(4)], prior=np.full(4, 0.95), confidence=np.full(4, 100.0))
        pool.add(["s0", "s1"], rewards=[0.5, 0.5])
        assert set(pool.sample(4).tolist()) == set(cold.tolist())


def test_explicit_priors_rank_cold_prompts_and_confidence_blends_the_first_score():
    pool = prior_pool()
    ids = pool.add(["a", "b", "c", "d"], prior=[0.85, 0.45, np.nan, 0.05], confidence=[4, 4, np.nan, 1])
    order = [pool.prompts(pool.sample(1))[0] for _ in range(4)]
    # c: no prior, the pool-wide rate (0.5, nothing reported yet); the others by their band centre
    # shrunk toward that rate, confidence against prior_strength (4): b 0.49, d 0.42, a 0.69.
    assert order == ["c", "b", "d", "a"]
    pool.report(ids, [1.0, 1.0, 1.0, 1.0], n_rollouts=[4, 4, 4, 4])
    score = pool.records(ids)["score"]
    # (4 * prior + 4 * 1.0) / 8 for a and b; c has no prior; d has confidence 1.
    assert score[0] == pytest.approx(0.925, abs=1e-6)
    assert score[1] == pytest.approx(0.725, abs=1e-6)
    assert score[2] == 1.0
    assert score[3] == pytest.approx((0.05 + 4.0) / 5, abs=1e-6)


def test_children_inherit_their_parents_group():
    pool = prior_pool()
    roots = pool.add(["r0", "r1"], group=["math", 7])
    kids = pool.add(["k0", "k1", "k2"], parents=[roots[0], roots[1], roots[0]], group=[None, None, "other"])
    drawn = pool.sample(5)
    pool.report(drawn, [0.0] * 5)
    assert {k: v["observations"] for k, v in pool.groups().items()} == {"math": 2.0, 7: 2.0, "other": 1.0}
    assert kids.shape == (3,)


def test_int_and_str_keys_are_different_groups():
    pool = prior_pool()
    pool.add(["a", "b"], group=[1, "1"])
    pool.report(pool.sample(2), [1.0, 0.0])
    assert set(pool.groups()) == {1, "1"}


def test_observations_age_with_the_half_life():
    pool = prior_pool(prior_half_life=10.0)
    pool.add([f"q{i}" for i in range(4)], group=["g"] * 4)
    pool.report(pool.sample(2), [1.0, 1.0], step=0)
    pool.report(pool.sample(1), [0.0], step=10)
    g = pool.groups()["g"]
    # Two observations at step 0 weigh one at step 10.
    assert g["observations"] == pytest.approx(2.0)
    assert g["pass_rate"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"group": [1.5]}, r"group\[0\]: expected an int or str, got float"),
        ({"group": [True]}, r"group\[0\]: expected an int or str, got bool"),
        ({"group": ["a", "b"]}, r"group: expected length 1"),
        ({"group": "a"}, r"group: expected one int or str per prompt"),
        ({"prior": [1.5]}, r"prior\[0\] = 1.5: expected a finite value in reward_range"),
        ({"prior": [math.inf]}, r"prior\[0\]"),
        ({"prior": [0.5], "rewards": [0.5]}, r"prior\[0\]: the prompt also has a reward"),
        ({"confidence": [1.0]}, r"confidence\[0\]: given without a prior"),
        ({"prior": [0.5], "confidence": [-1.0]}, r"confidence\[0\] = -1"),
        ({"prior": [0.5, 0.5]}, r"prior: expected length 1"),
    ],
)
def test_bad_group_and_prior_inputs_change_nothing(kw, match):
    pool = prior_pool()
    pool.add(["keep"], group=["g"], prior=[0.3], confidence=[2.0])
    before = pool.fingerprint()
    with pytest.raises(InvalidInputError, match=match):
        pool.add(["x"], **kw)
    assert pool.fingerprint() == before


def test_snapshots_keep_groups_priors_and_confidences(tmp_path):
    pool = prior_pool(prior_half_life=5.0)
    rng = np.random.default_rng(0)
    pool.add([f"q{i}" for i in range(200)], group=[f"g{i % 7}" for i in range(200)])
    pool.add([f"p{i}" for i in range(50)], prior=rng.random(50), confidence=rng.integers(0, 9, 50))
    for step in range(5):
        drawn = pool.sample(30)
        pool.report(drawn, rng.random(drawn.shape[0]), n_rollouts=np.full(drawn.shape[0], 8), step=step)
    pool.save(tmp_path / "p.snap")
    back = Pool.load(tmp_path / "p.snap")
    assert back.fingerprint() == pool.fingerprint()
    assert back.groups().keys() == pool.groups().keys()
    for k, v in pool.groups().items():
        assert back.groups()[k] == pytest.approx(v, nan_ok=True)
    assert back.sample(40).tolist() == pool.sample(40).tolist()


def test_forged_group_sections_are_rejected():
    pool = prior_pool()
    pool.add(["a", "b"], group=["x", "y"], prior=[0.2, 0.8], confidence=[1.0, 2.0])
    secs = _sections(pool.to_bytes()[HEADER:-8])

    def forge(edit) -> bytes:
        return _blob([(t, bytes(edit(bytearray(b))) if t == b"GRPS" else b) for t, b in secs])

    # Rename group "y" to "x": the same key stored twice.
    def dup(b: bytearray) -> bytearray:
        i = b.index(b"s:y")
        b[i : i + 3] = b"s:x"
        return b

    with pytest.raises(SnapshotError, match="stored twice"):
        Pool.from_bytes(forge(dup))

    # A slot's group index past the table.
    def far_group(b: bytearray) -> bytearray:
        col = len(b) - 2 * 4 - 1 - 2 * 4  # the group column (2 slots), its flag, the confidence column
        b[col : col + 4] = struct.pack("<I", 9)
        return b

    with pytest.raises(SnapshotError, match="inconsistent prior, confidence or group"):
        Pool.from_bytes(forge(far_group))

    # A negative confidence.
    def neg_conf(b: bytearray) -> bytearray:
        b[-4:] = struct.pack("<f", -1.0)
        return b

    with pytest.raises(SnapshotError, match="confidence out of range"):
        Pool.from_bytes(forge(neg_conf))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 5), st.floats(0, 1), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_random_grouped_histories_round_trip(ops):
    """Model check: whatever the history, the cold prompts are exactly those never drawn (or
    released), nothing is drawn twice at once, and a restored pool draws what the original draws."""
    pool = prior_pool(explore=0.3)
    cold: set[int] = set()
    flying: list[int] = []
    was_cold: dict[int, bool] = {}
    n = 0
    for op, a, x, flag in ops:
        if op == 0:
            ids = pool.add(
                [f"q{n + i}" for i in range(a)],
                group=[(n + i) % 3 if flag else None for i in range(a)],
                prior=[x if (n + i) % 2 else np.nan for i in range(a)],
            )
            n += a
            cold.update(ids.tolist())
        elif op == 1:
            n_cold = len(cold)
            got = pool.sample(a).tolist()
            assert len(set(got)) == len(got) and not set(got) & set(flying)
            assert len(set(got) & cold) == min(len(got), n_cold)  # cold first
            was_cold.update((i, i in cold) for i in got)
            cold -= set(got)
            flying += got
        elif op == 2 and flying:
            done, flying = flying[: a + 1], flying[a + 1 :]
            pool.report(done, [x] * len(done))
        elif flying:
            back, flying = flying[: a + 1], flying[a + 1 :]
            pool.release(back)
            cold.update(i for i in back if was_cold[i])
    assert set(pool.ids("cold").tolist()) == cold
    copy = Pool.from_bytes(pool.to_bytes())
    assert copy.fingerprint() == pool.fingerprint()
    assert copy.sample(7).tolist() == pool.sample(7).tolist()


def test_prior_config_fields_are_validated():
    for kw, match in [
        ({"explore": 1.5}, "explore"),
        ({"prior_strength": 0.0}, "prior_strength"),
        ({"prior_half_life": -1.0}, "prior_half_life"),
        ({"cold": "random"}, "cold"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            PoolConfig(**kw)
    assert heapa.PoolConfig().cold == "fifo"


def test_posterior_scores_weigh_rollouts_and_age_old_evidence():
    pool = Pool(PoolConfig(capacity=10, stat="posterior", prior_half_life=10.0, reinsert="immediate"))
    (i,) = pool.add(["q"], prior=[0.0], confidence=[4.0]).tolist()
    for step, (reward, n) in enumerate([(1.0, 4), (0.5, 8)]):
        assert pool.sample(1).tolist() == [i]
        pool.report([i], [reward], n_rollouts=[n], step=step * 10)
    # Step 0: (4 * 0 + 4 * 1) / 8 = 0.5 with 8 rollouts of evidence; step 10: that evidence
    # counts half (4) against 8 new rollouts: (4 * 0.5 + 8 * 0.5) / 12 = 0.5.
    assert pool.records([i])["score"][0] == pytest.approx(0.5, abs=1e-6)
    pool.sample(1)
    pool.report([i], [1.0], n_rollouts=[12], step=10)
    # No ageing within a step: (12 * 0.5 + 12 * 1) / 24.
    assert pool.records([i])["score"][0] == pytest.approx(0.75, abs=1e-6)
    back = Pool.from_bytes(pool.to_bytes())
    assert back.fingerprint() == pool.fingerprint()


def test_a_misleading_predictor_is_overruled_band_by_band():
    """Prompts predicted easy (0.9) that sit at the target, and prompts predicted at the target that
    are all solved: the predictor is believed at first, the explore share samples the other band, and
    once each band's own evidence has accrued the truly informative band is drawn."""
    pool = prior_pool(explore=0.2)
    easy_said = set(pool.add([f"e{i}" for i in range(200)], prior=[0.9] * 200, confidence=[4.0] * 200).tolist())
    pool.add([f"m{i}" for i in range(200)], prior=[0.5] * 200, confidence=[4.0] * 200)
    draws = []
    for _ in range(12):
        ids = pool.sample(10).tolist()
        draws.append(sum(i in easy_said for i in ids))
        pool.report(ids, [0.5 if i in easy_said else 1.0 for i in ids], n_rollouts=[8] * len(ids))
    assert draws[0] <= 2  # explore only
    assert draws[-1] >= 8  # all but the explore share
