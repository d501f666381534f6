#!/usr/bin/env python
"""Does HeaPA learn faster with a real model? SmolLM2-135M-Instruct, GRPO on CPU, uniform vs HeaPA.

Every arm and seed starts from the same pretrained weights (``heapa.models.load_pretrained``) and trains with
GRPO through the same ``heapa.trl.HeaPAGRPOTrainer`` on the same training pool (``heapa.tasks``, levels 1-5);
only the pool's configuration differs:

  uniform      PoolConfig(sampling="uniform", reinsert="immediate")
  recommended  PoolConfig.frontier() (what heapa recommends)
  heapa_paper  PoolConfig.paper() (HeaPA as published)
  recommended_groups  PoolConfig.frontier() told each prompt's level as its group (optional: ``--arms``)

Seeds are paired (seed k of every arm has the same RL seed) and every arm gets the same rollout budget
(steps x prompts per step x G). Greedy math-verify accuracy on a fixed held-out split (never in the pool) is
measured every ``--eval-every`` steps; the informative-group fraction (groups whose rewards are not all equal)
comes from every step. Every sampler without groups draws never-scored prompts first, in the same order, so
those arms can only differ after the first pass over the pool (keep ``--pool-size`` below the prompts a run
draws to compare them). The grouped arm ranks never-scored prompts by their level's estimate from the first
step: compare it with a pool larger than a run draws (docs/priors.md).

Each arm x seed is saved to ``--output-dir``/runs/<arm>-seed<k>.json as soon as it finishes and skipped when
the study is rerun with the same settings, so it can be run in pieces (``--arms``, ``--seeds``). When every
requested arm has the same seeds, ``efficiency_real.json`` and ``efficiency_real.png`` are written with the
statistics of ``integration/efficiency_tiny.py`` (paired 95% t-intervals over seeds). ``--quick``: a smoke run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficiency_tiny import ALL_ARMS, ARMS, analyse, group_column, pool_overrides, report
from efficiency_tiny import plot as tiny_plot

warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)

# Sized for about an hour of 2 shared CPU cores for 3 arms x 3 seeds (docs/efficiency_real.md).
DEFAULTS = dict(
    model="smollm2-135m-instruct",
    seeds=3,
    steps=12,
    prompts_per_step=4,
    num_generations=8,
    max_completion_length=12,
    micro_batch=16,
    pool_size=16,
    levels=[1, 2, 3, 4, 5],
    heldout_per_level=5,
    eval_every=4,
    learning_rate=1e-5,
    task_seed=0,
)
QUICK = dict(
    seeds=1,
    steps=2,
    prompts_per_step=2,
    num_generations=4,
    max_completion_length=4,
    micro_batch=8,
    pool_size=10,
    heldout_per_level=1,
    eval_every=1,
)
# Settings that change a run's result: a saved run is reused only when all of them match.
RUN_KEYS = (
    "model",
    "steps",
    "prompts_per_step",
    "num_generations",
    "max_completion_length",
    "micro_batch",
    "pool_size",
    "levels",
    "heldout_per_level",
    "eval_every",
    "learning_rate",
    "task_seed",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="runs/efficiency_real")
    p.add_argument("--model", default=None, help="a heapa.models name (default smollm2-135m-instruct)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ALL_ARMS)
    p.add_argument("--seeds", type=int, default=None, help=f"paired seeds 0..N-1 (default {DEFAULTS['seeds']})")
    p.add_argument("--only-seeds", type=int, nargs="+", help="run just these seeds now (resume in pieces)")
    p.add_argument("--steps", type=int, default=None, help=f"GRPO steps per run (default {DEFAULTS['steps']})")
    p.add_argument("--prompts-per-step", type=int, default=None)
    p.add_argument("--num-generations", type=int, default=None, help="completions per prompt (G)")
    p.add_argument("--max-completion-length", type=int, default=None, help="new tokens per completion")
    p.add_argument("--micro-batch", type=int, default=None, help="completions per forward/backward (memory)")
    p.add_argument("--pool-size", type=int, default=None, help="training prompts (spread over the levels)")
    p.add_argument("--levels", type=int, nargs="+", default=None, help="heapa.tasks levels (default 1-5)")
    p.add_argument("--heldout-per-level", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None, help="steps between held-out evaluations")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--task-seed", type=int, default=None, help="seed of the task set (fixed across arms)")
    p.add_argument("--target-fraction", type=float, default=0.6, help="target = uniform's mean accuracy here")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--analyse-only", action="store_true", help="summarise the saved runs, train nothing")
    p.add_argument("--quick", action="store_true", help="smoke run with tiny batches")
    args = p.parse_args(argv)
    base = {**DEFAULTS, **(QUICK if args.quick else {})}
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if "uniform" not in args.arms:  # every comparison is paired with uniform
        args.arms = ["uniform", *args.arms]
    if (args.prompts_per_step * args.num_generations) % args.micro_batch:
        p.error("--micro-batch must divide prompts-per-step x num-generations")
    return args


def run_key(args) -> str:
    blob = json.dumps({k: getattr(args, k) for k in RUN_KEYS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- one run


def run_one(args, arm: str, seed: int, model, tok, base_state, tasks) -> dict:
    from heapa import PoolConfig
    from heapa.tasks import evaluate, math_verify_reward
    from heapa.testing import tiny_grpo_config
    from heapa.trl import HeaPAGRPOTrainer
    from transformers import PrinterCallback, TrainerCallback

    model.load_state_dict(base_state)  # every run starts from the pretrained weights
    G, B = args.num_generations, args.prompts_per_step
    heldout = tasks["heldout"]
    curve: dict[str, list] = {"step": [], "rollouts": [], "accuracy": []}
    per_step: dict[str, list] = {"step": [], "zero_variance_frac": [], "pass_rate": []}
    t_eval = [0.0]

    def record(step: int) -> None:
        t0 = time.perf_counter()
        res = evaluate(model, tok, heldout, max_new_tokens=args.max_completion_length, batch_size=64)
        t_eval[0] += time.perf_counter() - t0
        curve["step"].append(step)
        curve["rollouts"].append(step * B * G)
        for k, v in res.items():
            if k != "n":
                curve.setdefault(k, []).append(v)

    class Recorder(TrainerCallback):
        def on_step_end(self, targs, st, control, **kw):
            if st.global_step % args.eval_every == 0 or st.global_step == args.steps:
                record(st.global_step)

        def on_log(self, targs, st, control, logs=None, **kw):
            if logs and "batch/zero_variance_frac" in logs:
                per_step["step"].append(st.global_step)
                per_step["zero_variance_frac"].append(logs["batch/zero_variance_frac"])
                per_step["pass_rate"].append(logs.get("batch/pass_rate"))

    t0 = time.perf_counter()
    record(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = tiny_grpo_config(
            tmp,
            max_steps=args.steps,
            per_device_train_batch_size=args.micro_batch,  # counts completions
            gradient_accumulation_steps=B * G // args.micro_batch,  # one generation round per optimizer step
            num_generations=G,
            max_completion_length=args.max_completion_length,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            seed=seed,
        )
        trainer = HeaPAGRPOTrainer(
            model=model,
            reward_funcs=[math_verify_reward],
            args=config,
            train_dataset=tasks["train"],
            processing_class=tok,
            pool_config=PoolConfig(capacity=max(1024, 2 * len(tasks["train"])), seed=seed, **pool_overrides(arm)),
            group_column=group_column(arm),
            verifier="math_verify_reward",
        )
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(Recorder())
        trainer.train()
        pool = trainer.heapa_pool
        ids = np.concatenate([pool.ids(s) for s in ("cold", "hard", "easy", "in_flight", "archived")])
        visits = pool.records(ids)["visits"]
        levels = np.array([m["level"] for m in pool.metadata(ids)])
        groups = pool.groups() if group_column(arm) else {}
    zv = np.array([np.nan if v is None else v for v in per_step["zero_variance_frac"]], dtype=float)
    return {
        "arm": arm,
        "seed": seed,
        "key": run_key(args),
        "seconds": time.perf_counter() - t0,
        "eval_seconds": t_eval[0],
        "curve": curve,
        "per_step": per_step,
        "informative_frac": float(1.0 - np.nanmean(zv)),
        "distinct_prompts_trained": int((visits > 0).sum()),
        "max_visits": int(visits.max()),
        # Which levels the run trained on (rollouts, by each prompt's task level), and what the pool learned of
        # each level when it was told the levels (a grouped arm).
        "rollouts_per_level": {int(lv): int(visits[levels == lv].sum()) * G for lv in np.unique(levels)},
        "group_estimates": {str(k): v for k, v in groups.items()},
    }


# ---------------------------------------------------------------------- summary


def plot(args, runs: list[dict], result: dict, path: Path) -> None:
    tiny_plot(
        args,
        runs,
        result,
        path,
        title=f"{args.model}, GRPO on CPU: mean over seeds, band = ±1 s.e.",
        ylabel="held-out accuracy (greedy, math-verify)",
        first_pass=result["cold_pass_rollouts"] < args.steps * args.prompts_per_step * args.num_generations,
    )


def load_runs(folder: Path, key: str) -> dict[tuple[str, int], dict]:
    found = {}
    for f in sorted(folder.glob("*-seed*.json")):
        r = json.loads(f.read_text())
        if r.get("key") != key:
            raise SystemExit(
                f"{f} was run with other settings (key {r.get('key')}, now {key}); use another --output-dir or "
                "the settings of that run (see its 'setup' in efficiency_real.json)"
            )
        found[(r["arm"], r["seed"])] = r
    return found


def summarise(args, out: Path, runs_by_key: dict, setup: dict, wall: float) -> int:
    for (arm, seed), r in sorted(runs_by_key.items(), key=lambda kv: (kv[0][1], args.arms.index(kv[0][0]))):
        acc = " ".join(f"{a:.2f}" for a in r["curve"]["accuracy"])
        print(
            f"seed {seed} {arm:>11}: held-out accuracy at steps {r['curve']['step']}: {acc}; informative groups "
            f"{r['informative_frac']:.2f}; {r['seconds']:.0f}s"
        )
    seeds = sorted({s for (_, s) in runs_by_key})
    complete = [s for s in seeds if all((arm, s) in runs_by_key for arm in args.arms)]
    missing = [(arm, s) for s in range(args.seeds) for arm in args.arms if (arm, s) not in runs_by_key]
    if missing:
        print(f"not run yet: {', '.join(f'{a} seed {s}' for a, s in missing)} (rerun the same command to resume)")
    if len(complete) < 2:
        print(f"{len(complete)} complete seed(s): need 2 or more for intervals; no summary written")
        return 0
    runs = [runs_by_key[(arm, s)] for s in complete for arm in args.arms]
    budget = args.steps * args.prompts_per_step * args.num_generations
    ns = argparse.Namespace(**vars(args))
    # efficiency_tiny.analyse counts the first pass in whole multiples of its 3 levels; the pool size here is
    # the training split's real size.
    ns.pool_size = setup["pool_prompts"]
    result = analyse(ns, runs, budget)
    doc = {
        "setup": {**setup, "seeds_complete": complete, "budget_rollouts": budget},
        **result,
        "runs": runs,
        "wall_seconds_this_invocation": wall,
        "train_seconds_total": float(sum(r["seconds"] for r in runs)),
    }
    (out / "efficiency_real.json").write_text(json.dumps(doc, indent=1, default=float))
    plot(args, runs, result, out / "efficiency_real.png")
    report(result, budget, len(complete))
    for arm, s in result["arms"].items():
        if arm == "uniform":
            continue
        g = s["mean_accuracy_gain_vs_uniform"]
        if g["lo"] is not None:
            print(
                f"  {arm:>11}: mean accuracy over the run vs uniform {g['mean']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]"
            )
    print(f"{doc['train_seconds_total']:.0f}s of training over {len(runs)} runs -> {out / 'efficiency_real.json'}")
    return 0


# ---------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from heapa.tasks import math_tasks

    tasks = math_tasks(
        args.pool_size,
        heldout_per_level=args.heldout_per_level,
        dev_per_level=0,
        levels=args.levels,
        seed=args.task_seed,
    )
    setup = {
        **{k: getattr(args, k) for k in RUN_KEYS},
        "key": run_key(args),
        "arms": list(args.arms),
        "seeds": args.seeds,
        "pool_configs": {arm: pool_overrides(arm) for arm in args.arms},
        "group_columns": {arm: group_column(arm) for arm in args.arms},
        "pool_prompts": len(tasks["train"]),
        "heldout_prompts": len(tasks["heldout"]),
        "torch_threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    done = load_runs(out / "runs", setup["key"])
    todo = [
        (arm, s)
        for s in (args.only_seeds if args.only_seeds is not None else range(args.seeds))
        for arm in args.arms
        if (arm, s) not in done
    ]
    if todo and not args.analyse_only:
        from heapa.models import load_pretrained

        t0 = time.perf_counter()
        model, tok = load_pretrained(args.model)
        base = {k: v.detach().clone() for k, v in model.state_dict().items()}
        print(
            f"loaded {args.model} in {time.perf_counter() - t0:.1f}s; {len(done)} runs saved, {len(todo)} to go",
            flush=True,
        )
        for arm, seed in todo:
            r = run_one(args, arm, seed, model, tok, base, tasks)
            path = out / "runs" / f"{arm}-seed{seed}.json"
            path.with_suffix(".tmp").write_text(json.dumps(r, default=float))
            path.with_suffix(".tmp").replace(path)  # atomic: a killed study never leaves half a run
            done[(arm, seed)] = r
            c = r["curve"]
            print(
                f"seed {seed} {arm:>11}: accuracy {c['accuracy'][0]:.3f} -> {c['accuracy'][-1]:.3f}, informative "
                f"groups {r['informative_frac']:.2f}, {r['distinct_prompts_trained']} distinct prompts trained, "
                f"{r['seconds']:.0f}s (eval {r['eval_seconds']:.0f}s; total {time.perf_counter() - t_start:.0f}s)",
                flush=True,
            )
    return summarise(args, out, done, setup, time.perf_counter() - t_start)


if __name__ == "__main__":
    sys.exit(main())
