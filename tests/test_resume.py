"""Resuming HeaPAGRPOTrainer (issue 16): a finished run resumes as a no-op, an incomplete checkpoint left by a
process killed while saving is skipped, and a run killed with SIGKILL 10 times at random moments (in steps and while
checkpoints are written), then resumed each time, ends with the uninterrupted run's pool.

Run as a script (``python tests/test_resume.py OUT MAX_STEPS``) this file is the training process the kill
test starts: it trains the tiny model, resuming from OUT's newest complete checkpoint if there is one, and
prints ``STEP n`` / ``SAVE n`` / ``TORN n`` / ``FINAL fingerprint reported`` lines as it goes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TRANSFORMERS_OFFLINE="1")

import torch
from heapa import HeapaError
from heapa._inspect import POOL_FILE, STATE_FILE, checkpoint_complete, checkpoint_folders
from heapa.testing import arithmetic_dataset, char_tokenizer, closeness_reward, tiny_grpo_config, tiny_model
from heapa.trl import HeaPAGRPOTrainer, HeaPAMixin
from transformers import TrainerCallback
from trl import GRPOTrainer

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*deprecated:FutureWarning")

G = 4
SAVE_STEPS = 2


def make_trainer(out, max_steps: int, trainer_cls=HeaPAGRPOTrainer, **config):
    """The tiny model on arithmetic; the reward depends on what the model wrote, so equal pools at the end
    mean equal generations (restored RNG states), not only equal draws."""
    tok = char_tokenizer()
    cfg = {"per_device_train_batch_size": 2 * G, "num_generations": G, "max_steps": max_steps}
    cfg.update(save_strategy="steps", save_steps=SAVE_STEPS, **config)
    return trainer_cls(
        model=tiny_model(tok, hidden=32, layers=1),
        reward_funcs=[closeness_reward],
        args=tiny_grpo_config(str(out), **cfg),
        train_dataset=arithmetic_dataset(24),
        processing_class=tok,
    )


def resume(trainer, out) -> None:
    """What a job scheduler's restart does: resume from the newest complete checkpoint, else start over."""
    has_complete = any(checkpoint_complete(f) for f in checkpoint_folders(out))
    trainer.train(resume_from_checkpoint=True if has_complete else None)


def pool_state(trainer) -> tuple[int, int]:
    return int(trainer.heapa_pool.fingerprint()), int(trainer.heapa_pool.stats()["reported"])


# ---------------------------------------------------------------------- in process


def test_resuming_a_finished_run_changes_nothing(tmp_path, caplog):
    """max_steps=5 is not a multiple of the epoch (12 steps): transformers would train a sixth step."""
    full = make_trainer(tmp_path, max_steps=5)
    full.train()
    done = pool_state(full)
    before = sorted(f.name for f in checkpoint_folders(tmp_path))
    assert before == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]

    again = make_trainer(tmp_path, max_steps=5)
    with caplog.at_level(logging.WARNING, logger="heapa.trl"):
        again.train(resume_from_checkpoint=True)
    assert "the run is complete" in caplog.text
    assert again.state.global_step == 5
    assert pool_state(again) == done  # same fingerprint, same number of reported prompts
    assert sorted(f.name for f in checkpoint_folders(tmp_path)) == before  # no checkpoint-6


def test_resume_with_more_steps_continues(tmp_path):
    """The guard only stops a run that reached max_steps: raising max_steps trains on."""
    make_trainer(tmp_path, max_steps=4).train()
    longer = make_trainer(tmp_path, max_steps=6)
    longer.train(resume_from_checkpoint=True)
    assert longer.state.global_step == 6
    assert longer.heapa_pool.stats()["reported"] == 6 * 2  # two prompts a round


def test_incomplete_checkpoint_is_skipped(tmp_path, caplog):
    """A checkpoint without heapa's state file (the process died while saving) is not resumed from."""
    make_trainer(tmp_path / "full", max_steps=6).train()
    full = make_trainer(tmp_path / "ref", max_steps=6)
    full.train()
    run = tmp_path / "full"
    (run / "checkpoint-6" / STATE_FILE).unlink()  # torn after the pool, before the marker
    (run / "checkpoint-4" / POOL_FILE).unlink()  # torn before the pool (and the marker)
    (run / "checkpoint-4" / STATE_FILE).unlink()
    assert [checkpoint_complete(f) for f in checkpoint_folders(run)] == [True, False, False]

    resumed = make_trainer(run, max_steps=6)
    with caplog.at_level(logging.WARNING, logger="heapa.trl"):
        resumed.train(resume_from_checkpoint=True)
    assert "skipping incomplete checkpoint(s) ['checkpoint-4', 'checkpoint-6']" in caplog.text
    assert pool_state(resumed) == pool_state(full)
    assert all(checkpoint_complete(f) for f in checkpoint_folders(run))  # rewritten whole

    (run / "checkpoint-6" / STATE_FILE).unlink()
    explicit = make_trainer(run, max_steps=6)
    with pytest.raises(HeapaError, match="checkpoint-6 is incomplete"):
        explicit.train(resume_from_checkpoint=str(run / "checkpoint-6"))


def test_only_incomplete_checkpoints_is_a_clear_error(tmp_path):
    make_trainer(tmp_path, max_steps=2).train()
    (tmp_path / "checkpoint-2" / STATE_FILE).unlink()
    with pytest.raises(ValueError, match="no complete checkpoint"):
        make_trainer(tmp_path, max_steps=2).train(resume_from_checkpoint=True)


# ---------------------------------------------------------------------- killed at random moments

MAX_STEPS = 30


class _StallAfterTransformersSave(GRPOTrainer):
    """Between transformers' files and heapa's: the process announces it and waits to be killed."""

    saves = 0

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        self.saves += 1
        if self.saves == int(os.environ.get("HEAPA_TEST_STALL_AT", "0")):
            print(f"TORN {self.state.global_step}", flush=True)
            time.sleep(60)


class _Worker(HeaPAMixin, _StallAfterTransformersSave):
    def _save_checkpoint(self, model, trial):
        print(f"SAVE {self.state.global_step}", flush=True)
        super()._save_checkpoint(model, trial)


class _Steps(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        print(f"STEP {state.global_step}", flush=True)


def _worker_main(out: str, max_steps: int) -> None:
    logging.disable(logging.WARNING)
    trainer = make_trainer(out, max_steps, trainer_cls=_Worker, save_total_limit=2)  # rotation included
    trainer.add_callback(_Steps())
    print("READY", flush=True)
    resume(trainer, out)
    fingerprint, reported = pool_state(trainer)
    print(f"FINAL {fingerprint} {reported}", flush=True)


def _start(out: Path, stall: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HEAPA_TEST_STALL_AT": "2" if stall else "0"}
    log = open(out.with_suffix(".stderr"), "a")  # noqa: SIM115 (handed to the child)
    proc = subprocess.Popen(
        [sys.executable, __file__, str(out), str(MAX_STEPS)], stdout=subprocess.PIPE, stderr=log, text=True, env=env
    )
    log.close()
    return proc


def _final(proc: subprocess.Popen, out: Path) -> tuple[int, int]:
    lines = proc.stdout.read().splitlines()
    assert proc.wait(timeout=300) == 0, out.with_suffix(".stderr").read_text()[-3000:]
    last = [line for line in lines if line.startswith("FINAL")][-1].split()
    return int(last[1]), int(last[2])


def _kill_once(out: Path, mode: str, rng: random.Random) -> str | None:
    """One life of the training process, killed at a random moment; None if it finished first.

    step: 0-40 ms after the 1st-4th step of this life ends (sometimes inside the checkpoint that follows);
    save: 0-100 ms into writing this life's 2nd checkpoint (model, optimizer, trainer state, pool, marker:
    50-150 ms in all), so the 1st is complete and the run progresses;
    torn: at the 2nd checkpoint, after transformers' files and before heapa's (the process waits there)."""
    proc = _start(out, stall=mode == "torn")
    wait_for, nth = {"step": ("STEP", rng.randint(1, 4)), "save": ("SAVE", 2), "torn": ("TORN", 1)}[mode]
    seen, line = 0, ""
    for line in proc.stdout:  # the last line read says where the kill landed
        if line.startswith(wait_for):
            seen += 1
            if seen == nth:
                time.sleep({"step": rng.uniform(0, 0.04), "save": rng.uniform(0, 0.1), "torn": 0}[mode])
                proc.send_signal(signal.SIGKILL)
                break
    proc.stdout.close()
    code = proc.wait(timeout=300)
    assert code in (0, -signal.SIGKILL), out.with_suffix(".stderr").read_text()[-3000:]
    if code != -signal.SIGKILL:
        return None
    newest = checkpoint_folders(out)[-1:]
    torn = bool(newest) and not checkpoint_complete(newest[0])
    return f"{mode}@{line.split()[-1]}" + (" (left an incomplete checkpoint)" if torn else "")


@pytest.mark.slow
def test_killed_and_resumed_runs_end_with_the_uninterrupted_pool(tmp_path):
    seed = int(os.environ.get("HEAPA_KILL_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    modes = ["step"] * 3 + ["save"] * 4 + ["torn"] * 3  # 10 kills
    rng.shuffle(modes)
    t0 = time.perf_counter()
    reference = _final(_start(tmp_path / "reference"), tmp_path / "reference")

    out = tmp_path / "killed"
    kills: list[str] = []
    for _ in range(3 * len(modes)):
        if not modes:
            break
        mode = modes.pop()
        what = _kill_once(out, mode, rng)
        if what is None:  # finished before the kill: this mode again later
            modes.insert(0, mode)
        else:
            kills.append(what)
        if any(f.name == f"checkpoint-{MAX_STEPS}" and checkpoint_complete(f) for f in checkpoint_folders(out)):
            # finished before every kill landed: compare, then start the run over
            assert _final(_start(out), out) == reference, f"seed {seed}, kills {kills}"
            shutil.rmtree(out)
    note = f"seed {seed}, {len(kills)} kills {kills}, {time.perf_counter() - t0:.0f} s"
    assert not modes, note
    resumed = _final(_start(out), out)
    finished_again = _final(_start(out), out)  # a finished run resumed: nothing changes
    print(note)
    assert resumed == reference, note
    assert finished_again == reference, note
    assert sum("incomplete" in k for k in kills) >= 3, note  # every 'torn' kill leaves one
    state = json.loads((out / f"checkpoint-{MAX_STEPS}" / STATE_FILE).read_text())
    assert state["fingerprint"] == reference[0]


if __name__ == "__main__":
    _worker_main(sys.argv[1], int(sys.argv[2]))
