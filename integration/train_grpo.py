#!/usr/bin/env python
"""GRPO training with HeaPA prompt selection (TRL ``HeaPAGRPOTrainer``).

With no arguments it runs a self-contained CPU demo: a tiny Qwen2-style model built from a config, a
character-level tokenizer, ``a+b=`` problems at three difficulty levels and an exact-match verifier;
about 80 steps in well under a minute, with no downloads. It writes into ``--output-dir``:

  metrics.jsonl   one JSON object per logged step (TRL's metrics plus pool/*, batch/*, time/pool_ms)
  metrics.png     pass rate, pool composition and the distribution of pool scores over steps

Real use: ``--model PATH`` (a local Hugging Face model directory) and ``--dataset data.jsonl|.parquet``
(``prompt`` and ``answer`` columns; answers are checked with math-verify), optionally ``--use-vllm``.

``--augment`` adds on-policy query augmentation (``heapa.augment``): after each round the policy writes
variants of the prompts it just trained on, validated in the background by self-consistency (``--validator
self``) or an OpenAI-compatible endpoint (``--validator openai --validator-url URL``); accepted ones join
the pool as children of their prompt. The tiny demo model first gets a short supervised warm-up so that it
can write the variant format. metrics.jsonl then also holds the aug/* metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import numpy as np
from transformers import TrainerCallback

# transformers 5.2x warns on every step because TRL reads the renamed gradient-checkpointing flag.
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="local Hugging Face model directory (default: a tiny model built in memory)")
    p.add_argument("--dataset", help="JSONL/Parquet file with prompt and answer columns (default: arithmetic)")
    p.add_argument("--sampling", default="medium", choices=["medium", "mixed", "uniform", "prioritized"])
    p.add_argument("--capacity", type=int, default=1_000_000, help="pool capacity (prompts)")
    p.add_argument(
        "--preset",
        default="paper",
        choices=["paper", "frontier"],
        help="pool configuration: the paper's (quantile boundary, on-drain reinsertion) or the frontier "
        "recommended by `heapa simulate` (absolute boundary at pass rate 0.5, immediate reinsertion, "
        "revisit_fraction 0.25)",
    )
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: 80 tiny, 200 real)")
    p.add_argument("--use-vllm", action="store_true", help="generate with vLLM (GPU; TRL's own vLLM path)")
    p.add_argument("--vllm-mode", default="colocate", choices=["colocate", "server"])
    p.add_argument("--output-dir", default="runs/grpo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts-per-step", type=int, default=None, help="prompts per step and process (64 tiny, 16 real)")
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt (the group size G)")
    p.add_argument("--max-completion-length", type=int, default=None, help="tokens (3 tiny, 1024 real)")
    p.add_argument("--learning-rate", type=float, default=None, help="(3e-3 tiny, 1e-6 real)")
    p.add_argument("--augment", action="store_true", help="grow the pool with on-policy variants (heapa.augment)")
    p.add_argument(
        "--validator",
        default="self",
        choices=["self", "openai"],
        help="self: the policy's majority answer over k samples; openai: an OpenAI-compatible endpoint",
    )
    p.add_argument(
        "--validator-url", help="OpenAI-compatible base URL for --validator openai (e.g. http://host:8000/v1)"
    )
    p.add_argument("--validator-model", default="default", help="model name sent to --validator-url")
    p.add_argument("--variants-per-parent", type=int, default=2, help="variants per trained prompt (--augment)")
    p.add_argument("--warmup-steps", type=int, default=300, help="supervised format warm-up of the tiny model")
    args = p.parse_args(argv)
    if args.validator == "openai" and not args.validator_url:
        p.error("--validator openai needs --validator-url")
    return args


# ---------------------------------------------------------------------- model, data, rewards


def build_model(args, out: Path):
    """Returns (model or path, tokenizer). The tiny default is saved to disk when vLLM must load it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.model:
        tok = AutoTokenizer.from_pretrained(args.model, padding_side="left")
        if args.use_vllm:  # vLLM loads the weights from model.name_or_path itself
            return args.model, tok
        return AutoModelForCausalLM.from_pretrained(args.model, dtype="auto"), tok
    from heapa.testing import ALPHABET, char_tokenizer, tiny_model

    tok = char_tokenizer(ALPHABET + "." if args.augment else ALPHABET)  # difficulty ratios need "."
    model = tiny_model(tok, hidden=64, layers=2, seed=args.seed)
    if args.augment:
        warm_up(model, tok, build_augmentation(args, tiny=True), build_dataset(args), args)
    if args.use_vllm:
        path = out / "tiny-model"
        model.save_pretrained(path)
        tok.save_pretrained(path)
        return str(path), tok
    return model, tok


def build_augmentation(args, tiny: bool):
    from heapa.augment import COMPACT_TEMPLATE, AugmentationConfig, TaggedFormat

    kw = dict(
        validator=args.validator,
        validator_url=args.validator_url,
        validator_model=args.validator_model,
        variants_per_parent=args.variants_per_parent,
    )
    if tiny:  # 128-position model, lower-case alphabet: compact tagged format, short generations
        kw.update(
            template=COMPACT_TEMPLATE,
            fmt=TaggedFormat(new="new", difficulty="difficulty", end="end", original="original"),
            use_chat_template=False,
            min_chars=3,
            max_new_tokens=32,
            self_consistency_k=4,
            solve_max_new_tokens=3,
        )
    return AugmentationConfig(**kw)


def warm_up(model, tok, augmentation, dataset, args) -> None:
    """Teaches the random tiny model the variant format (and some sums) so that --augment has something to do."""
    import random

    from heapa.augment import arithmetic_variant, supervised_warmup

    builder = augmentation.make_builder(tok)
    rng = random.Random(args.seed)
    examples = []
    for prompt, answer in zip(dataset["prompt"], dataset["answer"], strict=True):
        variant = arithmetic_variant(prompt, rng)
        if variant is not None:
            examples.append(builder.example(prompt, *variant))
        examples.append((prompt, answer))
    supervised_warmup(model, tok, examples, steps=args.warmup_steps, batch_size=16, lr=1e-2, seed=args.seed)


def build_dataset(args):
    from datasets import load_dataset

    if not args.dataset:
        from heapa.testing import arithmetic_dataset

        return arithmetic_dataset(n=1024, seed=args.seed)
    kind = "parquet" if args.dataset.endswith(".parquet") else "json"
    return load_dataset(kind, data_files=args.dataset, split="train")


def math_verify_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when math-verify finds the completion's final answer equal to the reference, else 0.0."""
    from math_verify import parse, verify

    out = []
    for completion, ans in zip(completions, answer, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        gold = parse(ans) or parse(f"${ans}$")
        out.append(1.0 if gold and verify(gold, parse(text)) else 0.0)
    return out


def build_rewards(args):
    """(reward functions, weights, verifier name): the verifier's pass rate is what the pool learns from."""
    if args.dataset:
        return [math_verify_reward], [1.0], "math_verify_reward"
    from heapa.testing import closeness_reward, exact_match_reward

    # Exact match is the verifier; closeness only shapes the gradient of a model that starts random.
    return [exact_match_reward, closeness_reward], [1.0, 0.5], "exact_match_reward"


def preset(name: str) -> dict:
    """Pool settings of ``--preset``: the configurations ``heapa simulate`` compares (one source)."""
    from heapa.sim.samplers import RECOMMENDED, SAMPLERS

    return dict(SAMPLERS[{"paper": "heapa_paper", "frontier": RECOMMENDED}[name]].pool)


# ---------------------------------------------------------------------- logging


class Reporter(TrainerCallback):
    """Progress bar, metrics.jsonl and per-step histograms of pool scores; added on the main process only."""

    def __init__(self, path: Path, total: int, trainer):
        from heapa.trl import METRICS
        from tqdm.auto import tqdm

        self.keys = METRICS
        self.trainer = trainer
        self.edges = score_edges(trainer.heapa_pool.config.reward_range, trainer.num_generations)
        self.file = open(path, "w")  # noqa: SIM115 (closed in on_train_end)
        self.bar = tqdm(total=total, desc="GRPO+HeaPA", unit="step", dynamic_ncols=True)
        self.hist_steps, self.hists = [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "train_runtime" in logs:  # skip the end-of-training summary
            return
        row = {"step": state.global_step, **{k: logs.get(k) for k in self.keys}, **logs}
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        self.file.write(json.dumps(row, default=float, allow_nan=False) + "\n")
        self.file.flush()
        self.bar.set_postfix(
            pass_rate=f"{logs.get('batch/pass_rate') or 0:.2f}",
            hard=int(logs.get("pool/hard") or 0),
            easy=int(logs.get("pool/easy") or 0),
            cold=int(logs.get("pool/cold") or 0),
            refresh=False,
        )
        self._snapshot_scores(state.global_step)

    def _snapshot_scores(self, step: int):
        pool = self.trainer.heapa_pool
        scores = pool.records(scored_ids(pool))["score"]
        hist, _ = np.histogram(scores[~np.isnan(scores)], bins=self.edges)
        self.hist_steps.append(step)
        self.hists.append(hist)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()
        self.file.close()


def score_edges(reward_range, group_size: int) -> np.ndarray:
    """Histogram edges centred on the group means a 0/1 verifier can produce (k / G)."""
    lo, hi = reward_range
    half = (hi - lo) / (2 * group_size)
    return np.linspace(lo - half, hi + half, group_size + 2)


def scored_ids(pool) -> np.ndarray:
    return np.concatenate([pool.ids(state) for state in ("hard", "easy", "archived")])


def plot(metrics_path: Path, reporter, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = np.array([r["step"] for r in rows])

    def col(key):
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax = axes[0]
    ax.plot(steps, col("batch/pass_rate"), label="batch pass rate (verifier)")
    ax.plot(steps, col("batch/zero_variance_frac"), label="zero-variance groups", alpha=0.6)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left")
    ax.set_title("What the sampled batches looked like")

    ax = axes[1]
    states = ["pool/cold", "pool/hard", "pool/easy", "pool/archived", "pool/in_flight"]
    ax.stackplot(steps, *[np.nan_to_num(col(k)) for k in states], labels=[s.split("/")[1] for s in states])
    ax.legend(loc="lower left", ncol=5, fontsize=8)
    ax.set_ylabel("prompts")
    ax.set_title("Pool composition")

    ax = axes[2]
    if reporter.hists:
        grid = np.log1p(np.array(reporter.hists, dtype=float).T)  # log: the 0-score bin dwarfs the rest
        ax.imshow(
            grid,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            extent=(reporter.hist_steps[0] - 0.5, reporter.hist_steps[-1] + 0.5, *reporter.edges[[0, -1]]),
        )
    ax.plot(steps, col("pool/boundary"), color="red", lw=1.5, label="hard/easy boundary")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("prompt score")
    ax.set_xlabel("step")
    ax.set_title("Distribution of scored prompts in the pool")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def summarize(trainer) -> str:
    pool = trainer.heapa_pool
    stats = pool.stats()
    keys = ("held", "size", "cold", "hard", "easy", "in_flight", "archived", "evicted", "sampled", "reported")
    lines = ["pool summary (size = cold + hard + easy; archived prompts return when the pool drains):"]
    lines += [f"  {k:>10}: {stats[k]}" for k in keys] + [f"  {'boundary':>10}: {stats['boundary']:.3f}"]
    ids = scored_ids(pool)
    if len(ids):
        rec = pool.records(ids)
        q = np.quantile(rec["score"], [0.1, 0.5, 0.9])
        lines.append(f"  {len(ids)} prompts scored; score quantiles 10/50/90%: {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}")
        levels = np.array([(m or {}).get("level", -1) for m in pool.metadata(ids)])
        for level in sorted(set(levels.tolist()) - {-1}):
            mask = levels == level
            lines.append(f"  level {level}: mean score {rec['score'][mask].mean():.2f} over {int(mask.sum())} prompts")
    return "\n".join(lines)


def summarize_augmentation(m: dict[str, float]) -> str:
    counts = ", ".join(f"{m.get(f'aug/{k}', 0):.0f} {k}" for k in ("proposed", "parsed", "accepted", "drained"))
    rejected = sorted(
        ((k.split("/", 2)[2], v) for k, v in m.items() if k.startswith("aug/rejected/")), key=lambda kv: -kv[1]
    )
    lines = [f"augmentation: {counts} (drained = entered the pool); still validating: {m['aug/queue_depth']:.0f}"]
    lines.append("  rejected: " + (", ".join(f"{reason} {v:.0f}" for reason, v in rejected) or "none"))
    if "aug/est_pairs" in m:
        lines.append(
            f"  estimate vs group mean of {m['aug/est_pairs']:.0f} trained children: mean error "
            f"{m['aug/est_error_mean']:+.3f}, mean |error| {m['aug/est_abs_error']:.3f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiny = args.model is None

    import torch

    cuda = torch.cuda.is_available()
    if tiny and not cuda:
        torch.set_num_threads(1)  # tiny models run fastest single-threaded; avoids stalls on small machines
    from heapa import PoolConfig
    from heapa.trl import HeaPAGRPOTrainer
    from transformers import PrinterCallback
    from trl import GRPOConfig

    G = args.num_generations
    prompts_per_step = args.prompts_per_step or (64 if tiny else 16)
    max_steps = args.max_steps or (80 if tiny else 200)
    funcs, weights, verifier = build_rewards(args)
    config = GRPOConfig(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=prompts_per_step * G,  # counts completions, not prompts
        num_generations=G,
        max_completion_length=args.max_completion_length or (3 if tiny else 1024),
        learning_rate=args.learning_rate or (3e-3 if tiny else 1e-6),
        lr_scheduler_type="constant" if tiny else "linear",
        reward_weights=weights,
        use_cpu=not cuda,
        bf16=cuda,
        gradient_checkpointing=not tiny,
        use_vllm=args.use_vllm,
        vllm_mode=args.vllm_mode,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
    )
    model, tok = build_model(args, out)
    trainer = HeaPAGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=build_dataset(args),
        processing_class=tok,
        pool_config=PoolConfig(
            **{**preset(args.preset), "capacity": args.capacity, "sampling": args.sampling, "seed": args.seed}
        ),
        verifier=verifier,
        augmentation=build_augmentation(args, tiny) if args.augment else None,
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar replaces the per-step dict printout
    main_process = trainer.heapa_pool is not None  # the pool lives on the main process only
    if main_process:
        reporter = Reporter(out / "metrics.jsonl", total=max_steps, trainer=trainer)
        trainer.add_callback(reporter)

    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0
    if not main_process:
        return 0
    plot(out / "metrics.jsonl", reporter, out / "metrics.png")
    print(summarize(trainer))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first = [r["batch/pass_rate"] for r in rows[:10]]
    last = [r["batch/pass_rate"] for r in rows[-10:]]
    print(f"pass rate: first 10 steps {np.mean(first):.3f} -> last 10 steps {np.mean(last):.3f}")
    if trainer.heapa_augmenter is not None:
        print(summarize_augmentation(trainer.heapa_augmenter.metrics()))
    pool_ms = [r["time/pool_ms"] for r in rows if r.get("time/pool_ms") is not None]
    print(
        f"trained {max_steps} steps in {elapsed:.1f}s ({elapsed / max_steps * 1000:.0f} ms/step; "
        f"pool {np.median(pool_ms):.2f} ms/step median) -> {out / 'metrics.jsonl'}, {out / 'metrics.png'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
