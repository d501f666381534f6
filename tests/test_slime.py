"""heapa.slime: CONTRACT TESTS against stand-in modules (tests/standins/slime: TEST DOUBLES mirroring slime's
``DataSource`` and ``Sample`` interface). slime is not on PyPI, so nothing here runs the real slime.

The driver below does what slime's RolloutManager does with a data source and the all-samples hook:
construct ``cls(args)``, ``get_samples``, roll out, call the hook with every group, keep only groups with
reward variance (the dynamic filter), hand aborted groups back with ``add_samples``, ``save``/``load``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

STANDINS = Path(__file__).parent / "standins"


@pytest.fixture(scope="module")
def slime_standin():
    sys.path.insert(0, str(STANDINS))
    try:
        import slime

        assert slime.STANDIN, "the real slime is installed: these tests expect the stand-in"
        import heapa.slime as hs

        yield hs
    finally:
        sys.path.remove(str(STANDINS))
        for name in [m for m in sys.modules if m == "slime" or m.startswith("slime.") or m == "heapa.slime"]:
            del sys.modules[name]


def make_args(tmp_path, n=20, **kw):
    data = tmp_path / "prompts.jsonl"
    with open(data, "w") as f:
        for i in range(n):
            row = {"input": f"What is {i} + 1?", "label": str(i + 1), "metadata": {"level": i % 3}}
            if i == 0:
                row["input"] = [{"role": "user", "content": "chat prompt"}]
            f.write(json.dumps(row) + "\n")
    base = dict(
        prompt_data=str(data),
        input_key="input",
        label_key="label",
        metadata_key="metadata",
        n_samples_per_prompt=4,
        rollout_seed=3,
        reward_key=None,
        save=str(tmp_path / "ckpt"),
        load=str(tmp_path / "ckpt"),
        heapa_config={"capacity": 256},
    )
    base.update(kw)
    return SimpleNamespace(**base)


def load_function(path: str):
    """slime's way of resolving --data-source-path / --rollout-all-samples-process-path."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def rate(prompt) -> float:
    """Pass rate of a prompt in the toy rollout: 0 (impossible), 1 (trivial) or 0.5 (informative)."""
    text = prompt if isinstance(prompt, str) else prompt[0]["content"]
    return [0.0, 1.0, 0.5][sum(map(ord, text)) % 3]


def rollout(groups, abort_last=False):
    for g in groups:
        for j, s in enumerate(g):
            s.reward = 1.0 if j < rate(s.prompt) * len(g) else 0.0
            s.status = s.Status.COMPLETED
    if abort_last:
        for s in groups[-1]:
            s.status = s.Status.ABORTED
    return groups


def test_import_heapa_slime_is_lazy():
    code = "import heapa, heapa.verl, sys; assert 'slime' not in sys.modules and 'verl' not in sys.modules; print(1)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "1\n"


def test_data_source_contract(slime_standin, tmp_path):
    from slime.rollout.data_source import DataSource

    args = make_args(tmp_path)
    ds = load_function("heapa.slime.HeaPADataSource")(args)
    assert isinstance(ds, DataSource) and len(ds) == 20  # __len__ (abstract since slime v0.2.3)
    groups = ds.get_samples(5)
    assert len(groups) == 5 and all(len(g) == 4 for g in groups)
    ids = {g[0].metadata["heapa_id"] for g in groups}
    assert len(ids) == 5 and all(len({s.metadata["heapa_id"] for s in g}) == 1 for g in groups)
    s = groups[0][0]
    assert s.label == str(int(s.prompt.split()[2]) + 1) if isinstance(s.prompt, str) else s.label == "1"
    assert [x.index for g in groups for x in g] == list(range(20))
    chat = [g for g in groups if not isinstance(g[0].prompt, str)]
    for g in chat:
        assert g[0].prompt == [{"role": "user", "content": "chat prompt"}] and "heapa_chat" not in g[0].metadata
    assert ds.pool.stats()["in_flight"] == 5


def test_every_group_is_reported_including_zero_variance(slime_standin, tmp_path):
    hs = slime_standin
    args = make_args(tmp_path)
    ds = hs.HeaPADataSource(args)
    hook = load_function("heapa.slime.report_all_samples")
    groups = rollout(ds.get_samples(12))
    kept = [g for g in groups if np.std([s.reward for s in g]) > 0]  # slime's dynamic filter
    assert 0 < len(kept) < len(groups)  # the filter dropped zero-variance groups
    hook(args, groups, ds)  # sees all groups
    rec = ds.pool.records(np.array([g[0].metadata["heapa_id"] for g in groups], dtype=np.uint64))
    assert (rec["visits"] == 1).all()
    np.testing.assert_allclose(rec["score"], [rate(g[0].prompt) for g in groups])
    assert rec["rollouts"].tolist() == [4] * 12
    assert rec["correct"].tolist() == [int(rate(g[0].prompt) * 4) for g in groups]
    assert ds.pool.stats()["in_flight"] == 0
    hook(args, groups, ds)  # a second call changes nothing (already reported)
    assert (
        ds.pool.records(rec_ids := np.array([g[0].metadata["heapa_id"] for g in groups], np.uint64))["visits"] == 1
    ).all()
    assert len(rec_ids) == 12


def test_aborted_groups_are_released(slime_standin, tmp_path):
    hs = slime_standin
    args = make_args(tmp_path)
    ds = hs.HeaPADataSource(args)
    groups = rollout(ds.get_samples(4), abort_last=True)
    hs.report_all_samples(args, groups, ds)  # the aborted group has no rewards: not reported
    assert ds.pool.stats()["in_flight"] == 1
    ds.add_samples([groups[-1]])  # slime hands it back
    rec = ds.pool.records(np.array([groups[-1][0].metadata["heapa_id"]], dtype=np.uint64))
    assert rec["state"][0] == "cold" and rec["visits"][0] == 0
    assert ds.pool.stats()["in_flight"] == 0
    ds.add_samples([groups[-1]])  # twice: nothing to release, no error


def test_save_load_roundtrip(slime_standin, tmp_path):
    hs = slime_standin
    args = make_args(tmp_path)
    ds = hs.HeaPADataSource(args)
    hs.report_all_samples(args, rollout(ds.get_samples(6)), ds)
    ds.get_samples(2)  # in flight at the save
    ds.save(7)
    assert (tmp_path / "ckpt" / "rollout" / "heapa_pool_7.heapa").exists()
    expected = hs.Pool.load(tmp_path / "ckpt" / "rollout" / "heapa_pool_7.heapa")
    expected.release(expected.ids("in_flight"))
    fresh = hs.HeaPADataSource(args)
    fresh.load()  # newest rollout id
    assert fresh.pool.fingerprint() == expected.fingerprint() and len(fresh) == 20
    other = tmp_path / "other"
    other.mkdir()
    nothing = hs.HeaPADataSource(make_args(other))
    before = nothing.pool.fingerprint()
    nothing.load(3)  # nothing saved there: a fresh run
    nothing.load()
    assert nothing.pool.fingerprint() == before


def test_dict_rewards_and_threshold(slime_standin, tmp_path):
    hs = slime_standin
    args = make_args(tmp_path, reward_key="acc", heapa_config={"capacity": 64, "reward_range": [-1.0, 1.0]})
    ds = hs.HeaPADataSource(args)
    groups = ds.get_samples(2)
    for g in groups:
        for j, s in enumerate(g):
            s.reward = {"acc": 1.0 if j == 0 else -1.0}
    hs.report_all_samples(args, groups, ds)
    rec = ds.pool.records(np.array([g[0].metadata["heapa_id"] for g in groups], dtype=np.uint64))
    np.testing.assert_allclose(rec["score"], [-0.5, -0.5])
    assert rec["correct"].tolist() == [1, 1]


def test_foreign_groups_are_refused(slime_standin, tmp_path):
    hs = slime_standin
    from slime.utils.types import Sample

    ds = hs.HeaPADataSource(make_args(tmp_path))
    with pytest.raises(hs.InvalidInputError, match="heapa_id"):
        hs.report_all_samples(None, [[Sample(reward=1.0)]], ds)
    with pytest.raises(hs.InvalidInputError, match="HeaPADataSource"):
        hs.report_all_samples(None, [], object())
