"""``heapa.sim`` with groups and priors (docs/priors.md): the large-pool scenarios, the prior-aware
samplers and the group oracle, and that the simulated trainer hands groups and priors to the pool.
Small sizes only; no statistical margins."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from heapa.sim import PRIOR_SAMPLERS, PRIOR_SCENARIOS, get_sampler, get_scenario, run_one, run_suite
from heapa.sim import runner as sim_runner
from heapa.sim.model import sigmoid
from heapa.sim.runner import GroupOracle, add_kwargs

TINY_GROUPS = get_scenario("tiny_groups")
TINY_GROUPS_PRIOR = get_scenario("tiny_groups_prior")
TINY_PRIOR_WRONG = get_scenario("tiny_prior_wrong")


def test_catalogue_covers_the_issue():
    need = {
        "large",
        "large_groups",
        "large_groups_1m",
        "large_groups_flat",
        "large_prior_noisy",
        "large_prior_wrong",
    }
    assert need <= set(PRIOR_SCENARIOS)
    base = get_scenario("base")
    for sc in PRIOR_SCENARIOS.values():
        # same learner and budget as base, a pool larger than a run draws (even at the cap)
        assert (sc.batch, sc.group, sc.budget_steps, sc.lr) == (base.batch, base.group, base.budget_steps, base.lr)
        assert sc.n_prompts >= 200_000 and sc.max_steps * sc.batch < sc.n_prompts
    assert PRIOR_SCENARIOS["large_groups_1m"].n_prompts == 1_000_000
    assert {"heapa_frontier_prior", "group_oracle"} <= set(PRIOR_SAMPLERS)
    assert PRIOR_SAMPLERS["heapa_frontier_prior"].pool["cold"] == "prior"
    assert PRIOR_SAMPLERS["heapa_frontier_prior"].pool["boundary"] == "absolute"


def test_group_structure_and_controls():
    rng = np.random.default_rng(0)
    grouped = PRIOR_SCENARIOS["large_groups"]
    flat = PRIOR_SCENARIOS["large_groups_flat"]
    assert len(grouped.difficulty) == len(flat.difficulty) == 20
    assert grouped.observable_groups and flat.observable_groups
    # informative groups: different means; the control: one distribution for every group
    assert np.std([c[1] for c in grouped.difficulty]) > 1.0
    assert len({c[1:] for c in flat.difficulty}) == 1
    # same marginal mean and spread as base
    b = grouped.draw(rng, 100_000)
    assert abs(b.mean() - 1.0) < 0.05 and abs(b.std() - 1.5) < 0.05
    # draw() and draw_components() make the same draws
    d1 = grouped.draw(np.random.default_rng(5), 100)
    d2, comp = grouped.draw_components(np.random.default_rng(5), 100)
    np.testing.assert_array_equal(d1, d2)
    assert comp.min() >= 0 and comp.max() < 20


def test_priors_noisy_and_wrong():
    b = PRIOR_SCENARIOS["large"].draw(np.random.default_rng(1), 50_000)
    truth = sigmoid(0.0 - b)
    noisy = PRIOR_SCENARIOS["large_prior_noisy"].priors(np.random.default_rng(2), b)
    wrong = PRIOR_SCENARIOS["large_prior_wrong"].priors(np.random.default_rng(2), b)
    assert ((noisy > 0) & (noisy < 1)).all() and ((wrong > 0) & (wrong < 1)).all()
    assert np.corrcoef(noisy, truth)[0, 1] > 0.4
    assert np.corrcoef(wrong, truth)[0, 1] < -0.7
    with pytest.raises(ValueError):
        PRIOR_SCENARIOS["large"].priors(np.random.default_rng(0), b)


class _SpyPool(sim_runner.Pool):
    made: ClassVar[list[_SpyPool]] = []

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.add_calls: list[dict] = []
        _SpyPool.made.append(self)

    def add(self, prompts, *a, **kw):
        self.add_calls.append(kw)
        return super().add(prompts, *a, **kw)


@pytest.fixture
def spy(monkeypatch):
    _SpyPool.made = []
    monkeypatch.setattr(sim_runner, "Pool", _SpyPool)
    return _SpyPool


def test_trainer_passes_groups_and_priors(spy):
    sc = TINY_GROUPS_PRIOR
    run_one(sc, get_sampler("heapa_frontier_prior"), 0)
    (pool,) = spy.made
    (kw,) = pool.add_calls
    n = sc.n_prompts
    assert kw["group"].shape == (n,) and set(np.unique(kw["group"])) == set(range(20))
    assert kw["prior"].shape == (n,) and np.isfinite(kw["prior"]).all()
    np.testing.assert_array_equal(kw["confidence"], np.full(n, sc.prior_confidence))
    # the engine saw the groups: reports built evidence for them
    g = pool.groups()
    assert len(g) == 20 and sum(e["observations"] for e in g.values()) > 0
    # the baselines get the same groups and priors (they rank nothing with them)
    spy.made.clear()
    run_one(sc, get_sampler("uniform"), 0)
    (kw_u,) = spy.made[0].add_calls
    np.testing.assert_array_equal(kw_u["group"], kw["group"])
    np.testing.assert_array_equal(kw_u["prior"], kw["prior"])


def test_no_groups_no_priors_passes_nothing():
    sc = get_scenario("tiny")
    b, comp = sc.draw_components(np.random.default_rng(0), 50)
    for sp in ("uniform", "heapa_frontier_prior", "heapa_frontier_prior_binned", "group_oracle_static"):
        assert add_kwargs(sc, get_sampler(sp), 0, b, comp) == {}


def test_binned_keys_and_group_truth():
    sc = TINY_GROUPS_PRIOR
    b, comp = sc.draw_components(np.random.default_rng(0), 2000)
    kw = add_kwargs(sc, get_sampler("heapa_frontier_prior_binned"), 0, b, comp)
    bins = np.minimum((kw["prior"] * 20).astype(int), 19)
    np.testing.assert_array_equal(kw["group"], (comp + 1) * 21 + bins)
    # priors only: one group per bin
    kw = add_kwargs(TINY_PRIOR_WRONG, get_sampler("heapa_frontier_prior_binned"), 0, b, comp)
    np.testing.assert_array_equal(kw["group"], np.minimum((kw["prior"] * 20).astype(int), 19))
    # the static oracle's prior is the group's true mean pass rate at theta0, same in a group
    kw = add_kwargs(sc, get_sampler("group_oracle_static"), 0, b, comp)
    for g in range(20):
        m = kw["prior"][comp == g]
        assert np.allclose(m, sigmoid(sc.theta0 - b[comp == g]).mean())
    assert (kw["confidence"] >= 1e5).all()
    # prior bin as the key (calibrated): the bin replaces the dataset's group; without priors, the groups
    kw = add_kwargs(sc, get_sampler("heapa_frontier_prior_calibrated"), 0, b, comp)
    np.testing.assert_array_equal(kw["group"], np.minimum((kw["prior"] * 20).astype(int), 19))
    kw = add_kwargs(TINY_GROUPS, get_sampler("heapa_frontier_prior_calibrated"), 0, b, comp)
    np.testing.assert_array_equal(kw["group"], comp)
    assert "prior" not in kw
    # without groups the sampler gets none
    assert "group" not in add_kwargs(sc, get_sampler("heapa_frontier_prior_nogroups"), 0, b, comp)


def test_group_oracle_takes_the_group_nearest_half_fresh_first():
    sc = TINY_GROUPS
    comp = np.array([0, 1, 2, 1, 0, 1, 2, 1])
    b = np.array([3.0, 0.0, -3.0, 0.0, 3.0, 0.0, -3.0, 0.0])
    o = GroupOracle(sc, b, comp)
    np.testing.assert_array_equal(o.pick(0.0, 3), [1, 3, 5])  # group 1 (pass 0.5), in order of addition
    np.testing.assert_array_equal(o.pick(0.0, 2), [7, 0])  # then the next nearest group (tie: lower id)
    # ability moved: group 0 is now at 0.5
    np.testing.assert_array_equal(o.pick(3.0, 1), [4])
    # everything drawn once: a new pass
    assert o.pick(3.0, 3).shape == (3,)


@pytest.mark.parametrize("scenario", ["tiny_groups", "tiny_groups_prior", "tiny_prior_wrong"])
def test_every_prior_sampler_runs_and_is_deterministic(scenario):
    sc = get_scenario(scenario)
    for name in PRIOR_SAMPLERS:
        a = run_one(sc, get_sampler(name), 1)
        assert a.steps > 0 and 0 <= a.informative_fraction <= 1 and a.accuracy[-1] > a.accuracy[0]
        b = run_one(sc, get_sampler(name), 1)
        np.testing.assert_array_equal(a.accuracy, b.accuracy)
        assert a.fingerprint == b.fingerprint


def test_cache_resumes(tmp_path, monkeypatch):
    path = str(tmp_path / "runs.jsonl")
    sps = [get_sampler("heapa_frontier_prior"), get_sampler("group_oracle")]
    r1, _ = run_suite([TINY_GROUPS], sps, seeds=2, cache=path)
    ran = []
    real = sim_runner.run_many

    def counting(jobs, **kw):
        ran.extend(jobs)
        return real(jobs, **kw)

    monkeypatch.setattr("heapa.sim.run_many", counting)
    r2, _ = run_suite([TINY_GROUPS], sps, seeds=3, cache=path)
    assert len(ran) == 3  # only seed 2 of each of the three samplers (uniform added)
    r3, _ = run_suite([TINY_GROUPS], sps, seeds=3)
    assert r2 == r3
    assert r1["scenarios"]["tiny_groups"]["samplers"].keys() == r2["scenarios"]["tiny_groups"]["samplers"].keys()
