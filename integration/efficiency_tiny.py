#!/usr/bin/env python
"""Does HeaPA learn faster? A real (not simulated) GRPO comparison with a tiny model on CPU.

One tiny Qwen2-style model (``heapa.testing.tiny_model``, character tokenizer) is warmed up once with a short
supervised phase on ``a+b=`` problems (``heapa.augment._sft.supervised_warmup``) to a modest held-out accuracy. The
warmed weights are kept in memory, and every arm and seed starts from them. Each arm then trains with GRPO
through the same ``heapa.trl.HeaPAGRPOTrainer``, and only the pool's configuration differs:

  uniform      PoolConfig(sampling="uniform", reinsert="immediate")
  recommended  PoolConfig.frontier() (what heapa recommends)
  heapa_paper  PoolConfig.paper() (HeaPA as published)

All arms have the same seeds and the same rollout budget (steps x prompts per step x G). Greedy exact-match
accuracy on a fixed held-out set (same generator, prompts in neither the pool nor the warm-up data) is
measured every ``--eval-every`` steps, and the x-axis counts rollouts (completions generated).

Problems, three levels with large problem spaces so that held-out prompts can stay disjoint from training:
level 1 ``a+b`` with a in 0-199 and b in 0-9; level 2 with a, b in 10-99; level 3 with a in 100-999 and b in 10-99.
The reward is exact match only (a verifiable 0/1 reward, also the pool's signal).

Writes ``--output-dir``/efficiency_tiny.json (curves per arm and seed, rollouts to target, final accuracy,
paired ratios to uniform with 95% intervals over seeds, mean accuracy over the run) and efficiency_tiny.png.
``--quick`` runs a smoke version in well under a minute; ``--reanalyse JSON`` recomputes the summary and the
plot of an earlier run without training. The default run takes about 12 minutes on 2 cores (docs/efficiency_tiny.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import numpy as np
from heapa.sim.report import t975

warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)

ARMS = ("uniform", "recommended", "heapa_paper")
#: Optional arms: the recommended configuration told each prompt's task level as its group (``group_column``),
#: so never-scored prompts are ranked by their level's estimate instead of drawn first-in first-out.
GROUP_ARMS = ("recommended_groups",)
ALL_ARMS = ARMS + GROUP_ARMS
LEVELS = (1, 2, 3)

DEFAULTS = dict(
    seeds=5,
    steps=300,
    prompts_per_step=32,
    num_generations=8,
    pool_size=2400,
    heldout_per_level=200,
    eval_every=10,
    warmup_steps=3000,
    warmup_target=0.15,
    warmup_chunk=50,
    warmup_examples=30_000,
    learning_rate=1e-3,
    hidden=64,
    layers=2,
)
QUICK = dict(
    seeds=1,
    steps=4,
    prompts_per_step=4,
    num_generations=4,
    pool_size=60,
    heldout_per_level=10,
    eval_every=2,
    warmup_steps=60,
    warmup_chunk=30,
    warmup_examples=2_000,
    hidden=32,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default="runs/efficiency_tiny")
    p.add_argument("--seeds", type=int, default=None, help=f"RL seeds per arm (default {DEFAULTS['seeds']})")
    p.add_argument("--steps", type=int, default=None, help=f"GRPO steps per run (default {DEFAULTS['steps']})")
    p.add_argument("--prompts-per-step", type=int, default=None)
    p.add_argument("--num-generations", type=int, default=None, help="completions per prompt (G)")
    p.add_argument("--pool-size", type=int, default=None, help="training pool (prompts, split evenly over levels)")
    p.add_argument("--heldout-per-level", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None, help="steps between held-out evaluations")
    p.add_argument("--warmup-steps", type=int, default=None, help="most supervised warm-up steps (batch 32)")
    p.add_argument("--warmup-target", type=float, default=None, help="stop the warm-up at this dev accuracy")
    p.add_argument("--warmup-chunk", type=int, default=None, help="warm-up steps between dev evaluations")
    p.add_argument("--warmup-examples", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None, help="GRPO learning rate")
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ALL_ARMS)
    p.add_argument("--target-fraction", type=float, default=0.6, help="target = uniform's mean accuracy here")
    p.add_argument("--quick", action="store_true", help="smoke run (< 1 minute)")
    p.add_argument(
        "--reanalyse",
        metavar="JSON",
        help="recompute the summary and the plot from a previous run's JSON (no training)",
    )
    args = p.parse_args(argv)
    base = {**DEFAULTS, **(QUICK if args.quick else {})}
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# ---------------------------------------------------------------------- problems


def make_problem(level: int, rng: random.Random) -> tuple[str, str]:
    if level == 1:
        a, b = rng.randint(0, 199), rng.randint(0, 9)
    elif level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
    else:
        a, b = rng.randint(100, 999), rng.randint(10, 99)
    return f"{a}+{b}=", str(a + b)


def make_splits(args, seed: int = 1234) -> dict[str, list[tuple[str, str, int]]]:
    """Held-out, pool, dev (stops the warm-up) and warm-up problems, pairwise disjoint (the warm-up data may
    repeat its own problems). Fixed across arms and seeds."""
    rng = random.Random(seed)

    def draw(n_per_level: int, exclude: set[str]) -> list[tuple[str, str, int]]:
        out, seen = [], set(exclude)
        for level in LEVELS:
            got = tries = 0
            while got < n_per_level:
                tries += 1
                if tries > 100 * n_per_level + 10_000:
                    raise ValueError(f"level {level} has too few distinct problems for these split sizes")
                prompt, answer = make_problem(level, rng)
                if prompt not in seen:
                    seen.add(prompt)
                    out.append((prompt, answer, level))
                    got += 1
        return out

    heldout = draw(args.heldout_per_level, set())
    pool = draw(args.pool_size // len(LEVELS), {p for p, _, _ in heldout})
    rng.shuffle(pool)
    dev = draw(args.heldout_per_level, {p for p, _, _ in heldout + pool})
    taken = {p for p, _, _ in heldout + pool + dev}
    warm = []
    while len(warm) < args.warmup_examples:  # repeats allowed (level 1 has only 2000 distinct problems)
        level = LEVELS[len(warm) % len(LEVELS)]
        prompt, answer = make_problem(level, rng)
        if prompt not in taken:
            warm.append((prompt, answer, level))
    return {"heldout": heldout, "pool": pool, "dev": dev, "warmup": warm}


# ---------------------------------------------------------------------- model and evaluation


def build_warm_model(args, splits):
    """(tokenizer, warmed state dict, warm-up record). Supervised warm-up in chunks of ``--warmup-chunk``
    steps until greedy accuracy on the dev split reaches ``--warmup-target`` (or ``--warmup-steps`` run out)."""
    from heapa.augment._sft import supervised_warmup
    from heapa.testing import ALPHABET, char_tokenizer, tiny_model

    tok = char_tokenizer(ALPHABET)
    model = tiny_model(tok, hidden=args.hidden, layers=args.layers, seed=0)
    t0 = time.perf_counter()
    examples = [(p, a) for p, a, _ in splits["warmup"]]
    losses, steps, dev = [], 0, {"accuracy": 0.0}
    while steps < args.warmup_steps and dev["accuracy"] < args.warmup_target:
        n = min(args.warmup_chunk, args.warmup_steps - steps)
        # Each chunk starts a fresh AdamW (supervised_warmup's own); seeds differ per chunk.
        losses += supervised_warmup(model, tok, examples, steps=n, batch_size=32, lr=3e-3, seed=steps)
        steps += n
        dev = evaluate(model, tok, splits["dev"])
        print(f"  warm-up {steps}: loss {np.mean(losses[-n:]):.3f}, dev accuracy {dev['accuracy']:.3f}", flush=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    record = {
        "steps": steps,
        "seconds": time.perf_counter() - t0,
        "loss_first": float(np.mean(losses[:20])),
        "loss_last": float(np.mean(losses[-20:])),
        "dev_accuracy": dev["accuracy"],
        "model_params": sum(p.numel() for p in model.parameters()),
    }
    return tok, state, record


def fresh_model(args, tok, state):
    from heapa.testing import tiny_model

    model = tiny_model(tok, hidden=args.hidden, layers=args.layers, seed=0)
    model.load_state_dict(state)
    return model


def evaluate(model, tok, heldout, batch_size: int = 256) -> dict[str, float]:
    """Greedy exact-match accuracy on the held-out problems: overall and per level."""
    import torch
    from heapa.testing import exact_match_reward

    was_training = model.training
    model.eval()
    prompts = [p for p, _, _ in heldout]
    texts = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            out = model.generate(
                **enc,
                max_new_tokens=5,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            texts += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    if was_training:
        model.train()
    correct = np.array(exact_match_reward(texts, [a for _, a, _ in heldout]))
    levels = np.array([lv for _, _, lv in heldout])
    res = {"accuracy": float(correct.mean())}
    for level in LEVELS:
        res[f"level{level}"] = float(correct[levels == level].mean())
    return res


# ---------------------------------------------------------------------- one run


def pool_overrides(arm: str) -> dict:
    """The arm's PoolConfig overrides: the named presets for heapa's arms, the simulator's for uniform."""
    from heapa import PRESETS
    from heapa.sim.samplers import SAMPLERS

    named = {"recommended": "frontier", "recommended_groups": "frontier", "heapa_paper": "paper"}
    return dict(PRESETS[named[arm]]) if arm in named else dict(SAMPLERS[arm].pool)


def group_column(arm: str) -> str | None:
    """The dataset column an arm passes as each prompt's group (``None``: no groups)."""
    return "level" if arm in GROUP_ARMS else None


def run_one(args, arm: str, seed: int, tok, state, splits) -> dict:
    import torch
    from datasets import Dataset
    from heapa import PoolConfig
    from heapa.testing import exact_match_reward, tiny_grpo_config
    from heapa.trl import HeaPAGRPOTrainer
    from transformers import PrinterCallback, TrainerCallback

    torch.set_num_threads(1)
    G, B = args.num_generations, args.prompts_per_step
    heldout = splits["heldout"]
    pool_rows = splits["pool"]
    dataset = Dataset.from_dict(
        {
            "prompt": [p for p, _, _ in pool_rows],
            "answer": [a for _, a, _ in pool_rows],
            "level": [lv for _, _, lv in pool_rows],
        }
    )
    curve = {"step": [], "rollouts": [], "accuracy": [], **{f"level{lv}": [] for lv in LEVELS}}
    per_step = {"step": [], "zero_variance_frac": [], "pass_rate": []}

    class Recorder(TrainerCallback):
        def _eval(self, step, model):
            res = evaluate(model, tok, heldout)
            curve["step"].append(step)
            curve["rollouts"].append(step * B * G)
            for k, v in res.items():
                curve[k].append(v)

        def on_train_begin(self, targs, st, control, model=None, **kw):
            self._eval(0, model)

        def on_step_end(self, targs, st, control, model=None, **kw):
            if st.global_step % args.eval_every == 0 or st.global_step == args.steps:
                self._eval(st.global_step, model)

        def on_log(self, targs, st, control, logs=None, **kw):
            if logs and "batch/zero_variance_frac" in logs:
                per_step["step"].append(st.global_step)
                per_step["zero_variance_frac"].append(logs["batch/zero_variance_frac"])
                per_step["pass_rate"].append(logs.get("batch/pass_rate"))

    with tempfile.TemporaryDirectory() as tmp:
        config = tiny_grpo_config(
            tmp,
            max_steps=args.steps,
            per_device_train_batch_size=B * G,  # counts completions
            num_generations=G,
            max_completion_length=5,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            seed=seed,
        )
        trainer = HeaPAGRPOTrainer(
            model=fresh_model(args, tok, state),
            reward_funcs=[exact_match_reward],
            args=config,
            train_dataset=dataset,
            processing_class=tok,
            pool_config=PoolConfig(capacity=max(1024, 2 * len(pool_rows)), seed=seed, **pool_overrides(arm)),
            group_column=group_column(arm),
            verifier="exact_match_reward",
        )
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(Recorder())
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        pool = trainer.heapa_pool
        ids = np.concatenate([pool.ids(s) for s in ("cold", "hard", "easy", "in_flight", "archived")])
        visits = pool.records(ids)["visits"]
    zv = np.array([np.nan if v is None else v for v in per_step["zero_variance_frac"]], dtype=float)
    return {
        "arm": arm,
        "seed": seed,
        "seconds": seconds,
        "curve": curve,
        "per_step": per_step,
        "informative_frac": float(1.0 - np.nanmean(zv)),
        "distinct_prompts_trained": int((visits > 0).sum()),
        "max_visits": int(visits.max()),
    }


# ---------------------------------------------------------------------- analysis


def ci95(values) -> dict:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "lo": None, "hi": None, "n": 1}
    half = t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": len(x)}


def rollouts_to(curve: dict, target: float) -> float | None:
    """First rollout count at which the held-out accuracy reaches ``target`` (linear interpolation between
    evaluations); ``None`` if never within the run."""
    xs, ys = curve["rollouts"], curve["accuracy"]
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if y >= target:
            if i == 0:
                return float(x)
            x0, y0 = xs[i - 1], ys[i - 1]
            return float(x0 + (target - y0) / (y - y0) * (x - x0))
    return None


def mean_curve(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.array(runs[0]["curve"]["rollouts"], dtype=float)
    ys = np.array([r["curve"]["accuracy"] for r in runs], dtype=float)
    se = ys.std(axis=0, ddof=1) / math.sqrt(len(runs)) if len(runs) > 1 else np.zeros(len(x))
    return x, ys.mean(axis=0), se


def analyse(args, runs: list[dict], budget: int) -> dict:
    by_arm = {arm: sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"]) for arm in args.arms}
    x, uni_mean, _ = mean_curve(by_arm["uniform"])
    at = int(np.argmin(np.abs(x - args.target_fraction * budget)))
    target = float(uni_mean[at])
    # Every sampling mode draws cold (never scored) prompts first, in the same order: until the first pass over
    # the pool is done all arms train on the same prompts, so the arms can differ only after `cold_end`.
    cold_end = (args.pool_size // len(LEVELS)) * len(LEVELS) * args.num_generations
    summary = {}
    for arm, rs in by_arm.items():
        for r in rs:
            r["rollouts_to_target"] = rollouts_to(r["curve"], target)
            r["final_accuracy"] = r["curve"]["accuracy"][-1]
            acc, xs = np.array(r["curve"]["accuracy"]), np.array(r["curve"]["rollouts"])
            r["mean_accuracy"] = float(acc[xs > 0].mean())  # area under the curve / budget, roughly
            after = xs > cold_end
            r["mean_accuracy_after_cold"] = float(acc[after].mean()) if after.any() else None
        summary[arm] = {
            "rollouts_to_target": ci95([r["rollouts_to_target"] for r in rs]),
            "reached_target": sum(r["rollouts_to_target"] is not None for r in rs),
            "final_accuracy": ci95([r["final_accuracy"] for r in rs]),
            "mean_accuracy": ci95([r["mean_accuracy"] for r in rs]),
            "mean_accuracy_after_cold": ci95([r["mean_accuracy_after_cold"] for r in rs]),
            "informative_frac": ci95([r["informative_frac"] for r in rs]),
            "distinct_prompts_trained": ci95([r["distinct_prompts_trained"] for r in rs]),
            "seconds": float(sum(r["seconds"] for r in rs)),
        }
    uni = {r["seed"]: r for r in by_arm["uniform"]}
    for arm, rs in by_arm.items():
        if arm == "uniform":
            continue
        ratios, diffs, mean_diffs, after_diffs = [], [], [], []
        for r in rs:
            u = uni[r["seed"]]
            # Unreached: counted at the budget (a lower bound for that seed's ratio when the arm missed).
            a = r["rollouts_to_target"] if r["rollouts_to_target"] is not None else budget
            b = u["rollouts_to_target"] if u["rollouts_to_target"] is not None else budget
            ratios.append(a / b if b > 0 else None)
            diffs.append(r["final_accuracy"] - u["final_accuracy"])
            mean_diffs.append(r["mean_accuracy"] - u["mean_accuracy"])
            if r["mean_accuracy_after_cold"] is not None:
                after_diffs.append(r["mean_accuracy_after_cold"] - u["mean_accuracy_after_cold"])
        summary[arm]["ratio_to_uniform"] = ci95(ratios)
        summary[arm]["ratio_to_uniform_per_seed"] = ratios
        summary[arm]["final_accuracy_gain_vs_uniform"] = ci95(diffs)
        summary[arm]["mean_accuracy_gain_vs_uniform"] = ci95(mean_diffs)
        summary[arm]["mean_accuracy_after_cold_gain_vs_uniform"] = ci95(after_diffs)
    summary["uniform"]["ratio_to_uniform"] = {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": len(by_arm["uniform"])}
    return {
        "target_accuracy": target,
        "target_at_rollouts": float(x[at]),
        "cold_pass_rollouts": cold_end,
        "arms": summary,
    }


def plot(
    args,
    runs: list[dict],
    result: dict,
    path: Path,
    *,
    title: str = "Tiny model, GRPO on CPU: mean over seeds, band = ±1 s.e.",
    ylabel: str = "held-out accuracy (greedy, exact match)",
    first_pass: bool = False,
) -> None:
    """Held-out accuracy per arm (mean ± s.e. over seeds) and the informative-group share, by rollouts;
    ``first_pass`` marks where the first pass over the pool ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    ax = axes[0]
    for arm in args.arms:
        rs = [r for r in runs if r["arm"] == arm]
        x, mean, se = mean_curve(rs)
        (line,) = ax.plot(x, mean, marker=".", label=f"{arm} ({len(rs)} seeds)")
        ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=0.2)
    ax.axhline(result["target_accuracy"], color="gray", ls=":", lw=1, label="target")
    if first_pass:
        ax.axvline(result["cold_pass_rollouts"], color="gray", ls="--", lw=1, label="end of the first pass")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1]
    B, G = args.prompts_per_step, args.num_generations
    k = max(1, args.steps // 20)
    for arm in args.arms:
        rs = [r for r in runs if r["arm"] == arm]
        zv = np.array([[np.nan if v is None else v for v in r["per_step"]["zero_variance_frac"]] for r in rs])
        inf = 1.0 - np.nanmean(zv, axis=0)
        smooth = np.convolve(inf, np.ones(k) / k, mode="valid")
        steps = np.arange(1, len(inf) + 1)[k - 1 :]
        ax.plot(steps * B * G, smooth, label=arm)
    ax.set_ylabel("informative groups\n" + ("(mean over seeds)" if k == 1 else f"(moving mean, {k} steps)"))
    ax.set_xlabel("rollouts (completions generated)")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- main


def report(result: dict, budget: int, seeds: int) -> None:
    print(
        f"target accuracy {result['target_accuracy']:.3f} (uniform's mean at {result['target_at_rollouts']:.0f} "
        f"of {budget} rollouts)"
    )
    for arm, s in result["arms"].items():
        rt, ratio, fin = s["rollouts_to_target"], s["ratio_to_uniform"], s["final_accuracy"]
        rt_s = "never" if rt["mean"] is None else f"{rt['mean']:.0f}"
        ci = "" if ratio.get("lo") is None else f" [{ratio['lo']:.2f}, {ratio['hi']:.2f}]"
        ratio_s = "n/a" if ratio["mean"] is None else f"{ratio['mean']:.2f}{ci}"
        print(
            f"  {arm:>11}: rollouts to target {rt_s} (reached on {s['reached_target']}/{seeds} seeds), "
            f"ratio {ratio_s}, final accuracy {fin['mean']:.3f}, mean accuracy {s['mean_accuracy']['mean']:.3f}, "
            f"informative {s['informative_frac']['mean']:.2f}"
        )


def reanalyse(args, out: Path) -> int:
    """Recompute the summary and the plot from a previous run's JSON (its runs are kept as they are)."""
    doc = json.loads(Path(args.reanalyse).read_text())
    setup = doc["setup"]
    for key in ("steps", "prompts_per_step", "num_generations", "pool_size", "arms", "target_fraction", "seeds"):
        setattr(args, key, setup[key])
    budget = setup["budget_rollouts"]
    result = analyse(args, doc["runs"], budget)
    doc.update(result)
    doc = {k: doc[k] for k in ("setup", *result, "runs", "wall_seconds")}
    (out / "efficiency_tiny.json").write_text(json.dumps(doc, indent=1, default=float))
    plot(args, doc["runs"], result, out / "efficiency_tiny.png")
    report(result, budget, args.seeds)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "uniform" not in args.arms:
        args.arms = ["uniform", *args.arms]
    if args.reanalyse:
        return reanalyse(args, out)
    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    splits = make_splits(args)
    tok, state, warm = build_warm_model(args, splits)
    start = evaluate(fresh_model(args, tok, state), tok, splits["heldout"])
    print(
        f"warm-up: {warm['steps']} steps in {warm['seconds']:.1f}s, loss {warm['loss_first']:.3f} -> "
        f"{warm['loss_last']:.3f}, dev accuracy {warm['dev_accuracy']:.3f}; held-out {start['accuracy']:.3f} "
        f"(levels {', '.join(f'{start[k]:.2f}' for k in ('level1', 'level2', 'level3'))})",
        flush=True,
    )
    budget = args.steps * args.prompts_per_step * args.num_generations
    runs = []
    for seed in range(args.seeds):
        for arm in args.arms:
            r = run_one(args, arm, seed, tok, state, splits)
            runs.append(r)
            c = r["curve"]
            print(
                f"seed {seed} {arm:>11}: accuracy {c['accuracy'][0]:.3f} -> {c['accuracy'][-1]:.3f}, "
                f"informative groups {r['informative_frac']:.2f}, {r['distinct_prompts_trained']} distinct prompts "
                f"trained, {r['seconds']:.0f}s (total {time.perf_counter() - t_start:.0f}s)",
                flush=True,
            )
    result = analyse(args, runs, budget)
    wall = time.perf_counter() - t_start
    doc = {
        "setup": {
            **{k: getattr(args, k) for k in DEFAULTS},
            "quick": args.quick,
            "arms": list(args.arms),
            "pool_configs": {arm: pool_overrides(arm) for arm in args.arms},
            "budget_rollouts": budget,
            "target_fraction": args.target_fraction,
            "max_completion_length": 5,
            "reward": "exact_match_reward (0/1), also the pool's signal",
            "levels": {
                "1": "a+b, a in 0-199, b in 0-9",
                "2": "a+b, a and b in 10-99",
                "3": "a+b, a in 100-999, b in 10-99",
            },
            "heldout_size": len(splits["heldout"]),
            "pool_size": len(splits["pool"]),
            "warmup_examples": len(splits["warmup"]),
            "warmup": warm,
            "start_accuracy": start,
        },
        **result,
        "runs": runs,
        "wall_seconds": wall,
    }
    (out / "efficiency_tiny.json").write_text(json.dumps(doc, indent=1, default=float))
    plot(args, runs, result, out / "efficiency_tiny.png")
    report(result, budget, args.seeds)
    print(f"wall time {wall:.0f}s -> {out / 'efficiency_tiny.json'}, {out / 'efficiency_tiny.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
