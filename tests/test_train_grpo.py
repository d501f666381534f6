"""integration/train_grpo.py speaks TRL's language (issue 16): TrlParser over GRPOConfig, ModelConfig, the script's
arguments and the pool's (generated from PoolConfig), YAML recipes, checkpoints and resuming through TRL's
arguments. Tiny model, CPU, a few steps; the accelerate launch is in test_train_grpo_accelerate.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "integration" / "train_grpo.py"
RECIPES = ROOT / "recipes"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_grpo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_grpo"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("train_grpo", None)


def test_help_lists_trls_arguments_and_the_pools():
    out = run("--help").stdout
    for name in ("--num_generations", "--save_steps", "--resume_from_checkpoint", "--use_vllm", "--model_name_or_path"):
        assert name in out, name  # GRPOConfig and ModelConfig
    for name in ("--preset", "--capacity", "--revisit_fraction", "--reward_range", "--refresh", "--pool_seed"):
        assert name in out, name  # HeaPAArguments (PoolConfig)
    for name in ("--model", "--dataset", "--prompts_per_step", "--augment", "--format_warmup_steps", "--config"):
        assert name in out, name  # the script's own


def test_pool_arguments_are_poolconfigs_fields(script):
    from heapa import PoolConfig

    names = {f.name for f in dataclasses.fields(script.HeaPAArguments)}
    pool = {script.POOL_RENAMES.get(f.name, f.name) for f in dataclasses.fields(PoolConfig)}
    assert names == pool | {"preset"}
    defaults = script.HeaPAArguments()
    assert all(getattr(defaults, n) is None for n in pool)  # None = not given
    # the preset with the given fields on top; the training seed unless --pool_seed
    args = script.HeaPAArguments(preset="paper", capacity=500, reward_range=[-1.0, 1.0], refresh="off")
    assert script.pool_config(args, seed=7) == PoolConfig.paper(capacity=500, reward_range=(-1.0, 1.0), seed=7)
    args = script.HeaPAArguments(preset="frontier", pool_seed=3, refresh="path")
    assert script.pool_config(args, seed=7) == PoolConfig.frontier(seed=3, refresh="path")
    assert script.pool_config(script.HeaPAArguments(preset="none"), seed=0) == PoolConfig()


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipes_name_known_arguments(script, recipe):
    config = yaml.safe_load((RECIPES / recipe).read_text())
    dests = {action.dest for action in script.make_parser()._actions}
    assert set(config) - {"env"} <= dests, sorted(set(config) - dests)


def test_demo_recipe_trains_saves_and_resumes(tmp_path):
    """The demo's recipe with the tiny model: TRL's --save_steps writes checkpoints with the pool, and
    --resume_from_checkpoint true continues the run from the newest one, pool included."""
    from heapa import Pool, PoolConfig
    from heapa.trl import METRICS

    common = ["--config", str(RECIPES / "demo_cpu.yaml"), "--model", "tiny", "--output_dir", str(tmp_path)]
    common += ["--save_strategy", "steps", "--save_steps", "1"]
    run(*common, "--max_steps", "2")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    proc = run(*common, "--max_steps", "3", "--resume_from_checkpoint", "true")
    assert "trained 1 steps" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(set(METRICS) <= set(r) for r in rows)
    # The resumed pool is the checkpoint's: three rounds of the recipe's 8 prompts were drawn from it.
    pool = Pool.load(tmp_path / "checkpoint-3" / "heapa_pool.bin")
    assert pool.stats()["sampled"] == 3 * 8
    assert pool.config == PoolConfig.frontier(seed=0)  # the recipe's preset and seed


def test_demo_recipe_is_the_no_argument_demo(script):
    """`make demo` (no arguments) and the demo recipe train the same run; the recipe keeps no checkpoint."""
    keys = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "num_generations")
    keys += ("max_completion_length", "learning_rate", "lr_scheduler_type", "seed", "use_cpu", "bf16")
    bare, recipe = script.parse_args([]), script.parse_args(["--config", str(RECIPES / "demo_cpu.yaml")])
    assert [getattr(bare[1], k) for k in keys] == [getattr(recipe[1], k) for k in keys]
    assert (bare[1].per_device_train_batch_size, bare[1].gradient_accumulation_steps) == (16, 4)  # 8 prompts x 8
    assert vars(bare[0]) | {"output_dir": None} == vars(recipe[0]) | {"output_dir": None}
    assert script.pool_config(bare[3], seed=0) == script.pool_config(recipe[3], seed=0)
    assert bare[1].save_strategy == "steps" and recipe[1].save_strategy == "no"
