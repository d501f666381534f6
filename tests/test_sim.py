"""``heapa.sim`` / ``heapa simulate``: the simulated learner, its cost model and the report."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from heapa import cli
from heapa.sim import RECOMMENDED, SAMPLERS, SCENARIOS, get_sampler, get_scenario, main, run_one, run_suite
from heapa.sim.model import quick
from heapa.sim.report import mean_ci

TINY = get_scenario("tiny")
REQUIRED_SAMPLERS = {
    "uniform",
    "dapo_filter",
    "prioritized",
    "heapa_paper",
    "heapa_frontier",
    "heapa_paper_augment",
    "heapa_frontier_augment",
}
REQUIRED_SCENARIOS = {
    "base",
    "narrow",
    "wide",
    "too_hard",
    "too_easy",
    "bimodal",
    "memorisation",
    "memorisation_forgetting",
    "G4",
    "G16",
    "paper_like",
}


def test_catalogue_covers_the_issue():
    assert set(SAMPLERS) >= REQUIRED_SAMPLERS
    assert set(SCENARIOS) >= REQUIRED_SCENARIOS
    assert RECOMMENDED in SAMPLERS and not SAMPLERS[RECOMMENDED].oracle
    pl = SCENARIOS["paper_like"]
    assert pl.group == 16 and abs(pl.n_prompts / pl.batch - 14_000 / 512) < 0.5


def test_cli_json_shape_and_plot(tmp_path):
    out, fig = tmp_path / "r.json", tmp_path / "tiny.png"
    rc = cli.main(["simulate", "--scenario", "tiny", "--seeds", "2", "--json", str(out), "--plot", str(fig),
                   "--workers", "1", "--quiet"])  # fmt: skip
    assert rc == 0 and fig.stat().st_size > 0
    rep = json.loads(out.read_text())
    assert rep["recommended"] == RECOMMENDED
    sc = rep["scenarios"]["tiny"]
    assert 0 < sc["target"] < 1
    assert set(sc["samplers"]) == set(SAMPLERS)
    for name, e in sc["samplers"].items():
        for key in ("rollouts_to_target", "ratio_to_uniform", "final_accuracy"):
            assert isinstance(e[key]["mean"], float), (name, key)
            lo, hi = e[key]["ci95"]
            assert lo <= e[key]["mean"] <= hi
    u = sc["samplers"]["uniform"]["ratio_to_uniform"]
    assert u["mean"] == pytest.approx(1.0) and u["ci95"] == pytest.approx([1.0, 1.0])


def test_same_seed_same_run_and_seeds_differ():
    for name in ("heapa_frontier_augment", "heapa_paper_augment", RECOMMENDED, "dapo_filter"):
        a, b = run_one(TINY, SAMPLERS[name], 3), run_one(TINY, SAMPLERS[name], 3)
        np.testing.assert_array_equal(a.cost, b.cost)
        np.testing.assert_array_equal(a.accuracy, b.accuracy)
        assert a.fingerprint == b.fingerprint
        c = run_one(TINY, SAMPLERS[name], 4)
        assert not np.array_equal(a.accuracy[: len(c.accuracy)], c.accuracy[: len(a.accuracy)])


def test_suite_is_deterministic_across_worker_counts():
    sps = [get_sampler("heapa_frontier"), get_sampler("heapa_frontier_augment")]
    r1, _ = run_suite([TINY], sps, seeds=2, workers=1)
    r2, _ = run_suite([TINY], sps, seeds=2, workers=2)
    assert r1 == r2


def test_cost_model_counts_augmentation():
    sc = replace(TINY, aug_gen_cost=1.0, aug_val_cost=2.0)
    r = run_one(sc, SAMPLERS["heapa_frontier_augment"], 0)
    assert r.aug_candidates > 0 and 0 < r.aug_accepted <= r.aug_candidates
    assert r.aug_cost == pytest.approx(3.0 * r.aug_candidates)
    assert r.cost[-1] == pytest.approx(r.rollouts + r.aug_cost)
    assert r.rollouts == r.steps * sc.batch * sc.group  # every rollout of every step counted
    # the pool really grew through lineage
    assert r.pool_size == sc.n_prompts + r.aug_accepted
    free = replace(sc, aug_gen_cost=0.0, aug_val_cost=0.0)
    f = run_one(free, SAMPLERS["heapa_frontier_augment"], 0)
    assert f.aug_cost == 0.0 and f.cost[-1] == pytest.approx(f.rollouts)
    # no augmentation: no augmentation cost
    u = run_one(sc, SAMPLERS["uniform"], 0)
    assert u.aug_cost == 0.0 and u.aug_candidates == 0


def test_dapo_pays_for_discarded_groups():
    r = run_one(TINY, SAMPLERS["dapo_filter"], 0)
    per_step = np.diff(r.cost)
    assert (per_step % (TINY.batch * TINY.group) == 0).all()
    assert per_step.max() > TINY.batch * TINY.group  # some steps needed extra generation batches


def test_children_get_lineage_and_estimates():
    from heapa import Pool, PoolConfig

    # the same calls the simulator makes, checked against the pool's records
    pool = Pool(PoolConfig(capacity=100, seed=0, boundary="absolute", reinsert="immediate"))
    ids = pool.add(["q"] * 4)
    got = pool.sample(4)
    pool.report(got, np.array([0.25, 0.5, 0.75, 0.5]), n_rollouts=np.full(4, 8), n_correct=np.array([2, 4, 6, 4]))
    assert pool.inbox.push(["v"] * 2, parents=got[:2], difficulty=np.array([1.2, 0.8])) == 2
    kids = pool.drain_inbox(step=1)
    rec = pool.records(kids)
    assert list(rec["parent"]) == list(got[:2]) and rec["estimated"].all()
    assert set(ids) == set(got)


def test_learning_only_from_informative_groups():
    from heapa.sim.runner import Learner

    L = Learner(TINY, 10, np.zeros(5))
    slots = np.arange(4)
    s = np.zeros(4)
    L.train(slots, s, np.array([0, 8, 0, 8]), 1)
    assert L.theta == TINY.theta0
    L.train(slots, s, np.array([1, 8, 4, 0]), 2)
    assert L.theta > TINY.theta0
    # diminishing returns: twice the informative groups, less than twice the gain
    a, b = Learner(TINY, 10, np.zeros(5)), Learner(TINY, 10, np.zeros(5))
    a.train(slots[:2], s[:2], np.array([4, 4]), 1)
    b.train(slots, s, np.array([4, 4, 4, 4]), 1)
    assert a.theta - TINY.theta0 < b.theta - TINY.theta0 < 2 * (a.theta - TINY.theta0)


def test_memorisation_raises_train_pass_rate_not_heldout():
    from heapa.sim.runner import Learner

    sc = SCENARIOS["memorisation_forgetting"]
    L = Learner(sc, 4, np.zeros(3))
    L.b[:] = 0.0
    slots = np.array([0])
    before = L.pass_prob(slots, L.strength(slots, 1))[0]
    L.train(slots, L.strength(slots, 1), np.array([4]), 1)
    theta = L.theta
    after = L.pass_prob(slots, L.strength(slots, 2))[0]
    assert after > 1 / (1 + math.exp(-theta))  # memorised beyond the ability gain
    assert after > before
    later = L.pass_prob(slots, L.strength(slots, 1000))[0]
    assert later == pytest.approx(1 / (1 + math.exp(-theta)), abs=1e-6)  # forgotten


def test_mean_ci():
    e = mean_ci([1.0, 2.0, 3.0])
    assert e["mean"] == 2.0 and e["ci95"][0] < 2.0 < e["ci95"][1]
    assert mean_ci([1.0])["ci95"] == [1.0, 1.0]
    assert mean_ci([])["mean"] is None


def test_quick_keeps_ratios():
    q = quick(SCENARIOS["paper_like"])
    assert q.group == 16 and q.n_prompts / q.batch == pytest.approx(1750 / 64, rel=0.05)


def test_bad_names_exit_2(capsys):
    assert main(["--scenario", "nope", "--quiet"]) == 2
    assert main(["--scenario", "tiny", "--samplers", "nope", "--quiet"]) == 2
    assert main(["--scenario", "tiny", "--pool-size", "0", "--quiet"]) == 2


def test_pool_size_runs_each_scenario_at_each_size(tmp_path):
    out = tmp_path / "r.json"
    rc = main(["--scenario", "tiny", "--pool-size", "50", "400", "--samplers", "heapa_frontier_revisit",
               "--seeds", "1", "--workers", "1", "--json", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    scenarios = json.loads(out.read_text())["scenarios"]
    assert set(scenarios) == {"tiny@50", "tiny@400"}
    assert {sc["params"]["n_prompts"] for sc in scenarios.values()} == {50, 400}
