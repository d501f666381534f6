#!/usr/bin/env python
"""GPU smoke test: HeaPAGRPOTrainer on CUDA with bf16, a few steps, checkpoint and resume (a few minutes).

Uses SmolLM2-135M-Instruct (``heapa.models``) when its weights package is installed, otherwise the same
architecture with random weights from the config kept in ``heapa.models`` (and the character tokenizer of
``heapa.testing``): it checks mechanics, not what the model learns. Prints every check and exits non-zero
when one fails. ``--device cpu`` runs the same checks on CPU with tiny batches (fp32; use ``--layers 2`` with
``--random-weights`` for a quick look at the code path without a GPU).

    python integration/gpu_smoke.py                       # on a machine with CUDA
    python integration/gpu_smoke.py --device cpu --random-weights --layers 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--model", default="smollm2-135m-instruct", help="a heapa.models name")
    p.add_argument("--random-weights", action="store_true", help="skip the packaged weights even when installed")
    p.add_argument("--layers", type=int, default=None, help="random weights only: fewer layers than the model's")
    p.add_argument("--steps", type=int, default=None, help="GRPO steps before the checkpoint (cuda 4, cpu 1)")
    p.add_argument("--prompts-per-step", type=int, default=None, help="(cuda 16, cpu 2)")
    p.add_argument("--num-generations", type=int, default=None, help="(cuda 8, cpu 4)")
    p.add_argument("--max-completion-length", type=int, default=None, help="(cuda 64, cpu 4)")
    p.add_argument("--output-dir", default=None, help="checkpoints go here (default: a temporary folder)")
    args = p.parse_args(argv)
    gpu = args.device == "cuda"
    for key, on_gpu, on_cpu in (
        ("steps", 4, 1),
        ("prompts_per_step", 16, 2),
        ("num_generations", 8, 4),
        ("max_completion_length", 64, 4),
    ):
        if getattr(args, key) is None:
            setattr(args, key, on_gpu if gpu else on_cpu)
    return args


class Checks:
    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> None:
        self.failed += not ok
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", flush=True)


def build(args):
    """(model, tokenizer, what was loaded): the packaged weights when installed, else random weights."""
    import torch
    from heapa.models import ModelNotInstalledError, load_pretrained, random_model

    if not args.random_weights:
        try:
            model, tok = load_pretrained(args.model, dtype=torch.float32, device=args.device)
            return model, tok, f"{args.model}, packaged pretrained weights"
        except ModelNotInstalledError as e:
            print(f"{e}\n-> random weights with the same architecture", flush=True)
    from heapa.testing import char_tokenizer

    tok = char_tokenizer()  # ids fit the model's vocabulary; the text is meaningless, the mechanics are not
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    overrides.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = random_model(args.model, device=args.device, **overrides)
    layers = model.config.num_hidden_layers
    return model, tok, f"{args.model} architecture ({layers} layers), random weights"


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    import torch
    import transformers
    import trl

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here; nothing was checked (use --device cpu for the CPU code path)")
        return 2
    from heapa import PoolConfig
    from heapa.tasks import math_tasks, math_verify_reward
    from heapa.trl import METRICS, STATE_FILE, HeaPAGRPOTrainer
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig

    gpu = args.device == "cuda"
    where = torch.cuda.get_device_name(0) if gpu else "CPU"
    print(
        f"gpu_smoke on {where}: torch {torch.__version__} (CUDA {torch.version.cuda}), transformers "
        f"{transformers.__version__}, trl {trl.__version__}",
        flush=True,
    )
    t0 = time.perf_counter()
    model, tok, source = build(args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {source}, {n_params / 1e6:.1f}M parameters, loaded in {time.perf_counter() - t0:.1f}s", flush=True)

    seen: dict[int, list[float]] = {}

    def recorded_reward(completions, answer, heapa_id, **kwargs):
        out = math_verify_reward(completions, answer)
        for i in set(heapa_id):  # a prompt's latest group replaces its earlier ones
            seen[int(i)] = []
        for i, r in zip(heapa_id, out, strict=True):
            seen[int(i)].append(r)
        return out

    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    data = math_tasks(64, heldout_per_level=2, dev_per_level=0)["train"]
    G, B = args.num_generations, args.prompts_per_step
    tmp = tempfile.TemporaryDirectory() if args.output_dir is None else None
    out = Path(args.output_dir or tmp.name)

    def make(max_steps: int):
        config = GRPOConfig(
            output_dir=str(out),
            max_steps=max_steps,
            per_device_train_batch_size=B * G,
            num_generations=G,
            max_completion_length=args.max_completion_length,
            learning_rate=1e-6,
            use_cpu=not gpu,
            bf16=gpu,
            gradient_checkpointing=False,
            logging_steps=1,
            save_strategy="steps",
            save_steps=args.steps,
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        trainer = HeaPAGRPOTrainer(
            model=model,
            processing_class=tok,
            reward_funcs=[recorded_reward],
            args=config,
            train_dataset=data,
            pool_config=PoolConfig.frontier(seed=0),
            verifier="recorded_reward",
        )
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(Timer())
        return trainer

    check = Checks()
    print(
        f"training {args.steps} steps of {B} prompts x {G} completions x {args.max_completion_length} tokens",
        flush=True,
    )
    trainer = make(args.steps)
    trainer.train()
    pool = trainer.heapa_pool
    stats = pool.stats()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    check(stats["reported"] == args.steps * B and stats["in_flight"] == 0, f"{stats['reported']} groups reported")
    check(len(logged) == args.steps and all(set(METRICS) <= set(h) for h in logged), "pool/* and batch/* logged")
    ids = np.array(sorted(seen), dtype=np.uint64)
    scores = pool.records(ids)["score"]
    means = np.array([np.mean(seen[int(i)]) for i in ids])
    check(bool(np.allclose(scores, means)), f"pool scores equal each prompt's latest group mean ({len(ids)} ids)")
    check(all(np.isfinite(h["loss"]) and np.isfinite(h["grad_norm"]) for h in logged), "finite loss and grad norm")
    if gpu:
        dtype_ok = trainer.args.bf16 and next(trainer.model.parameters()).is_cuda
        check(dtype_ok, "trained on CUDA with bf16 autocast")

    ckpt = out / f"checkpoint-{args.steps}"
    saved = json.loads((ckpt / STATE_FILE).read_text())
    resumed_fp = {}

    class AtStart(TrainerCallback):
        def on_train_begin(self, *a, **k):
            resumed_fp["fp"] = int(resumed.heapa_pool.fingerprint())

    resumed = make(args.steps + 1)
    resumed.add_callback(AtStart())
    resumed.train(resume_from_checkpoint=str(ckpt))
    check(resumed_fp.get("fp") == saved["fingerprint"], "resumed pool has the checkpoint's fingerprint")
    check(resumed.heapa_pool.stats()["reported"] == (args.steps + 1) * B, "the resumed run trained one more round")

    peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if gpu else ""
    times = ", ".join(f"{t:.2f}" for t in step_times)
    rates = ", ".join(f"{h['batch/pass_rate']:.2f}" for h in logged)
    print(f"step times (s): {times}; batch pass rates {rates}{peak}; wall {time.perf_counter() - t_start:.0f}s")
    if tmp is not None:
        tmp.cleanup()
    print("gpu_smoke: all checks passed" if not check.failed else f"gpu_smoke: {check.failed} check(s) FAILED")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
