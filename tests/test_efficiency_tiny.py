"""``integration/efficiency_tiny.py --quick``: the real tiny-model GRPO comparison runs end to end on CPU
and writes a JSON of the documented shape and a plot (smoke test; the numbers mean nothing at this size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("matplotlib")

SCRIPT = Path(__file__).resolve().parents[1] / "integration" / "efficiency_tiny.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("efficiency_tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output-dir", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "efficiency_tiny.json").read_text()), proc.stdout


def test_quick_writes_plot_and_prints_progress(quick_run):
    out, _, stdout = quick_run
    png = out / "efficiency_tiny.png"
    assert png.exists() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "warm-up:" in stdout and "target accuracy" in stdout and "wall time" in stdout


def test_quick_json_shape(quick_run):
    _, doc, _ = quick_run
    from heapa.sim.samplers import RECOMMENDED, SAMPLERS

    setup = doc["setup"]
    arms = setup["arms"]
    assert arms[0] == "uniform" and {"recommended", "heapa_paper"} <= set(arms)
    assert setup["pool_configs"]["uniform"] == {"sampling": "uniform", "reinsert": "immediate"}
    assert setup["pool_configs"]["recommended"] == SAMPLERS[RECOMMENDED].pool
    assert setup["quick"] is True
    budget = setup["budget_rollouts"]
    assert budget == setup["steps"] * setup["prompts_per_step"] * setup["num_generations"]
    assert 0.0 <= doc["target_accuracy"] <= 1.0
    assert doc["wall_seconds"] > 0

    assert len(doc["runs"]) == setup["seeds"] * len(arms)
    for run in doc["runs"]:
        assert run["arm"] in arms
        curve = run["curve"]
        assert curve["rollouts"][0] == 0 and curve["rollouts"][-1] == budget
        assert curve["rollouts"] == sorted(curve["rollouts"])
        assert len(curve["accuracy"]) == len(curve["rollouts"]) == len(curve["level1"])
        assert all(0.0 <= a <= 1.0 for a in curve["accuracy"])
        assert len(run["per_step"]["zero_variance_frac"]) == setup["steps"]
        assert 0.0 <= run["informative_frac"] <= 1.0
        assert run["final_accuracy"] == curve["accuracy"][-1]

    for arm in arms:
        s = doc["arms"][arm]
        for key in ("rollouts_to_target", "final_accuracy", "ratio_to_uniform", "informative_frac"):
            assert set(s[key]) >= {"mean", "lo", "hi", "n"}, (arm, key)
        if arm != "uniform":
            assert len(s["ratio_to_uniform_per_seed"]) == setup["seeds"]
            assert "final_accuracy_gain_vs_uniform" in s
    # Every arm starts from the same warmed weights: identical accuracy before the first step.
    starts = {run["seed"]: set() for run in doc["runs"]}
    for run in doc["runs"]:
        starts[run["seed"]].add(run["curve"]["accuracy"][0])
    assert all(len(v) == 1 for v in starts.values())
