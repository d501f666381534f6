"""``accelerate launch`` runs integration/train_grpo.py on two CPU processes from the recipes: the 2-process
accelerate config and the tiny-model recipe (issue 16). Tiny model, 2 steps."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("accelerate")

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_cpu_processes(tmp_path):
    from heapa import Pool
    from heapa.trl import METRICS

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "the accelerate command is not installed next to this Python"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [accelerate, "launch", "--config_file", str(ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml")]
    cmd += ["--main_process_port", str(free_port())]
    cmd += [str(ROOT / "integration" / "train_grpo.py"), "--config", str(ROOT / "recipes" / "tiny_cpu.yaml")]
    cmd += ["--max_steps", "2", "--prompts_per_step", "4", "--output_dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # Two processes trained: one RNG state each in the checkpoint, and each round drew 4 prompts per process.
    checkpoint = tmp_path / "checkpoint-2"
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    pool = Pool.load(checkpoint / "heapa_pool.bin")
    assert pool.stats()["sampled"] == 2 * 4 * 2

    # The pool metrics were logged once per step (by the main process, which holds the pool) ...
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(set(METRICS) <= set(r) for r in rows)
    # ... and the pool's fingerprint is reported once, equal to the one the final checkpoint recorded.
    found = re.findall(r"pool fingerprint (0x[0-9a-f]+) at step 2", out)
    assert len(found) == 1, out[-4000:]
    state = json.loads((checkpoint / "heapa_trainer.json").read_text())
    assert int(found[0], 16) == state["fingerprint"] == pool.fingerprint()
