"""``Augmenter``: on-policy query augmentation with asynchronous validation, driven once per step.

Right after a training round is scored (the policy still holds the weights that produced it), the
trainer calls ``after_round`` / ``after_step`` on every rank. On the main process the augmenter

1. drains the pool's inbox (children accepted since the last step enter the pool, with estimates) and
   records the estimate of each, to compare with the group mean once the child is trained (B9);
2. chooses parents among the prompts just trained (all of them, or a pass-rate band), subject to a
   per-step cap, the room left in the validation queue (back-pressure) and the pool's free capacity;
3. generates variants with the current policy (the ``GenerationBackend``), plus, for validators that
   need the policy (self-consistency), its solutions for candidates waiting for them;
4. parses the responses (response text only), runs the cheap filters, and queues the survivors.

Validation runs on background threads and never blocks a step; accepted children are pushed to
``pool.inbox`` with parent, difficulty and ground-truth answer. ``state_dict`` / ``load_state_dict``
carry everything not yet in the pool across a checkpoint; take them inside ``paused()`` together with
``pool.save`` so that nothing is lost or inserted twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..exceptions import InvalidInputError
from ._backends import Completion, GenerationBackend, Sampling, TransformersBackend, VLLMBackend, tokenizer_of
from ._filters import CharsetFilter, DecontaminationFilter, DedupFilter, LengthFilter, text_key
from ._format import TaggedFormat, parse_variant
from ._pipeline import ValidationPipeline
from ._prompt import PromptBuilder
from ._records import GenerationCall, Parent, SolveRequest, StepPlan, VariantRequest
from ._validators import Candidate, OpenAIValidator, SelfConsistencyValidator, Validator, valid_text

__all__ = ["AugmentationConfig", "Augmenter"]

logger = logging.getLogger("heapa.augment")

STATE_FILE = "heapa_augment.json"
_STATES = ("cold", "hard", "easy", "in_flight", "archived")
_CHUNK = 65_536
_MAX_TRACKED = 1_000_000


@dataclass
class AugmentationConfig:
    """Everything ``Augmenter.from_trainer`` needs; the defaults follow the paper with its bugs fixed.

    One flat dataclass (pass the fields by name), grouped below in the order of the pipeline: which parents
    and how many variants, generation, the variant format and its parsing, the cheap filters, validation,
    the validation queue and insertion into the pool, checkpoints and logging. Every field carries a
    ``metadata["help"]`` string (a CLI can be generated from it, e.g. with ``transformers.HfArgumentParser``).
    Invalid settings raise ``heapa.exceptions.InvalidInputError`` (a ``ValueError``) naming the field.
    """

    # ---------------------------------------------------------------- parents: which prompts get variants
    parents: Literal["all", "band"] = field(
        default="all",
        metadata={
            "help": "Which prompts of the round become parents: 'all' (as the reference) or 'band' (pass rate within "
            "pass_rate_band)."
        },
    )
    pass_rate_band: tuple[float, float] = field(
        default=(0.0, 1.0),
        metadata={
            "help": "With parents='band': the inclusive (low, high) pass-rate band; the slime port used (0.1, 0.7)."
        },
    )
    variants_per_parent: int = field(default=1, metadata={"help": "Variants generated per parent."})
    max_per_step: int = field(
        default=64, metadata={"help": "At most this many variants requested per step (0 disables augmentation)."}
    )
    every_n_steps: int = field(default=1, metadata={"help": "Augment on steps divisible by this."})
    max_depth: int | None = field(
        default=None,
        metadata={"help": "Parents deeper than this in their lineage chain get no variants (None: no limit)."},
    )
    skip_when_full: bool = field(
        default=True,
        metadata={
            "help": "Skip a step when the pool's free capacity cannot hold what it requests (the reference's gate)."
        },
    )

    # ---------------------------------------------------------------- generation: the policy writes variants
    max_new_tokens: int = field(
        default=400, metadata={"help": "Tokens per generated variant (about 400 is plenty for a problem statement)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of variant generation."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of variant generation."})
    stop: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Stop strings (None: the format's, all after the difficulty line)."}
    )
    backend: Literal["auto", "vllm", "transformers"] = field(
        default="auto",
        metadata={"help": "Generation backend: 'auto' (vLLM when the trainer uses it), 'vllm' or 'transformers'."},
    )
    generation_batch_size: int = field(
        default=32, metadata={"help": "Prompts per generate call of the transformers backend."}
    )
    seed: int | None = field(
        default=None, metadata={"help": "Seed of parent choice and generation (None: the trainer's seed)."}
    )

    # ---------------------------------------------------------------- format: the request and its parsing
    template: str | None = field(
        default=None, metadata={"help": "Instruction template with {problem} (None: PromptBuilder's default)."}
    )
    fmt: TaggedFormat = field(
        default_factory=TaggedFormat, metadata={"help": "Tag words of the NEW / DIFFICULTY format."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message of chat-templated requests."})
    use_chat_template: bool | None = field(
        default=None, metadata={"help": "Render requests with the tokenizer's chat template (None: if it has one)."}
    )
    chat_template_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Extra keyword arguments of apply_chat_template."}
    )
    problem_pattern: str | None = field(
        default=None,
        metadata={"help": "Regex whose first group is the bare problem inside a training prompt (see PromptBuilder)."},
    )
    require_difficulty: bool = field(
        default=True, metadata={"help": "A response without a DIFFICULTY line is malformed (else difficulty 1.0)."}
    )

    # ---------------------------------------------------------------- filters: cheap checks before the queue
    dedup: bool = field(
        default=True, metadata={"help": "Reject variants whose normalised text the pool (or the queue) already holds."}
    )
    min_chars: int = field(default=8, metadata={"help": "Shortest problem text accepted, in characters."})
    max_chars: int = field(default=4000, metadata={"help": "Longest problem text accepted, in characters."})
    forbid_cjk: bool = field(default=True, metadata={"help": "Reject problems containing CJK characters."})
    allowed_chars: str | None = field(
        default=None, metadata={"help": "If set: reject problems with a character outside this set."}
    )
    decontaminate: Sequence[str] | None = field(
        default=None, metadata={"help": "Texts of an evaluation set: reject variants sharing an n-gram."}
    )
    decontamination_ngram: int = field(default=8, metadata={"help": "Words per n-gram of decontaminate."})

    # ---------------------------------------------------------------- validation: ground truth for each variant
    validator: Literal["self", "openai"] = field(
        default="self",
        metadata={
            "help": "Shortcut when validators is None: 'self' (SelfConsistencyValidator, the policy "
            "solves) or 'openai' (OpenAIValidator at validator_url)."
        },
    )
    validators: Sequence[Validator] | None = field(
        default=None, metadata={"help": "The validator chain (overrides validator)."}
    )
    validator_url: str | None = field(
        default=None, metadata={"help": "validator='openai': base URL of an OpenAI-compatible endpoint."}
    )
    validator_model: str = field(
        default="default", metadata={"help": "validator='openai': model name sent to the endpoint."}
    )
    validator_timeout: float = field(default=60.0, metadata={"help": "validator='openai': seconds per request."})
    validator_max_retries: int = field(default=3, metadata={"help": "validator='openai': retries of a failed request."})
    validator_concurrency: int = field(default=4, metadata={"help": "validator='openai': requests in flight at most."})
    self_consistency_k: int = field(default=8, metadata={"help": "validator='self': solutions sampled per candidate."})
    agreement: float = field(
        default=0.5, metadata={"help": "validator='self': share of the k solutions the majority answer needs."}
    )
    solve_max_new_tokens: int = field(default=1024, metadata={"help": "validator='self': tokens per solution."})
    solve_temperature: float = field(
        default=1.0, metadata={"help": "validator='self': sampling temperature of solutions."}
    )
    solve_per_step: int = field(
        default=64, metadata={"help": "Candidates the policy solves per step at most (0: none)."}
    )
    answer_extractor: Callable[[str], str | None] | None = field(
        default=None, metadata={"help": "validator='self': solution text -> final answer (None: extract_answer)."}
    )

    # ---------------------------------------------------------------- queue and insertion: back-pressure
    workers: int = field(default=4, metadata={"help": "Validation threads."})
    max_queue: int = field(
        default=1024,
        metadata={"help": "Candidates held before a verdict at most; parents are skipped when it is full."},
    )
    max_requeues: int = field(
        default=1, metadata={"help": "Retries of a candidate after a transient validator failure."}
    )
    inherit_metadata: bool = field(default=True, metadata={"help": "Children get their parent's metadata."})
    drain_in_after_step: bool = field(
        default=True, metadata={"help": "Drain the pool's inbox at the start of each after_step."}
    )

    # ---------------------------------------------------------------- checkpoints and logging
    # (checkpoints carry the held candidates: Augmenter.state_dict / save, taken inside paused())
    log_metrics: bool = field(default=True, metadata={"help": "Append aug/* metrics to the trainer's logged metrics."})

    def __post_init__(self) -> None:
        def require(name: str, ok: Callable[[Any], bool], expected: str) -> None:
            value = getattr(self, name)
            try:
                good = bool(ok(value))
            except (TypeError, ValueError):
                good = False
            if not good:
                raise InvalidInputError(f"AugmentationConfig.{name}: expected {expected}, got {value!r}")

        require("parents", lambda v: v in ("all", "band"), "'all' or 'band'")
        require("pass_rate_band", lambda v: len(v) == 2 and float(v[0]) <= float(v[1]), "(low, high) with low <= high")
        self.pass_rate_band = (float(self.pass_rate_band[0]), float(self.pass_rate_band[1]))
        for name in (
            "variants_per_parent",
            "every_n_steps",
            "max_new_tokens",
            "generation_batch_size",
            "self_consistency_k",
            "solve_max_new_tokens",
            "validator_concurrency",
            "decontamination_ngram",
            "workers",
        ):
            require(name, lambda v: v >= 1, ">= 1")
        for name in (
            "max_per_step",
            "min_chars",
            "validator_max_retries",
            "solve_per_step",
            "max_queue",
            "max_requeues",
        ):
            require(name, lambda v: v >= 0, ">= 0")
        require("max_depth", lambda v: v is None or v >= 0, "None or >= 0")
        require("temperature", lambda v: v >= 0, ">= 0")
        require("solve_temperature", lambda v: v >= 0, ">= 0")
        require("top_p", lambda v: 0 < v <= 1, "0 < top_p <= 1")
        require("backend", lambda v: v in ("auto", "vllm", "transformers"), "'auto', 'vllm' or 'transformers'")
        require("max_chars", lambda v: v >= self.min_chars, f">= min_chars ({self.min_chars})")
        require("validator", lambda v: v in ("self", "openai"), "'self' or 'openai'")
        require("validator_timeout", lambda v: v > 0, "> 0")
        require("agreement", lambda v: 0 < v <= 1, "0 < agreement <= 1")
        if self.validators is None and self.validator == "openai":
            require("validator_url", bool, "a URL when validator='openai'")

    def sampling(self, step: int = 0) -> Sampling:
        stop = self.fmt.stops() if self.stop is None else tuple(self.stop)
        seed = None if self.seed is None else self.seed + step
        return Sampling(self.variants_per_parent, self.max_new_tokens, self.temperature, self.top_p, stop, seed)

    def make_builder(self, tokenizer: Any = None) -> PromptBuilder:
        """The ``PromptBuilder`` these settings describe (use it to build warm-up examples, too)."""
        return PromptBuilder(
            tokenizer,
            template=self.template,
            fmt=self.fmt,
            system_prompt=self.system_prompt,
            use_chat_template=self.use_chat_template,
            chat_template_kwargs=self.chat_template_kwargs,
            problem_pattern=self.problem_pattern,
        )

    def build_validators(self) -> list[Validator]:
        if self.validators is not None:
            return list(self.validators)
        if self.validator == "openai":
            return [
                OpenAIValidator(
                    self.validator_url or "",
                    self.validator_model,
                    timeout=self.validator_timeout,
                    max_retries=self.validator_max_retries,
                    max_concurrency=self.validator_concurrency,
                )
            ]
        return [
            SelfConsistencyValidator(
                self.self_consistency_k,
                self.agreement,
                max_new_tokens=self.solve_max_new_tokens,
                temperature=self.solve_temperature,
                extract=self.answer_extractor,
            )
        ]

    def build_filters(self) -> list[Validator]:
        filters: list[Validator] = [
            LengthFilter(self.min_chars, self.max_chars),
            CharsetFilter(forbid_cjk=self.forbid_cjk, allowed=self.allowed_chars),
        ]
        if self.decontaminate:
            filters.append(DecontaminationFilter(self.decontaminate, n=self.decontamination_ngram))
        return filters


class _Dist:
    """The few collectives ``after_step`` needs (no-ops on one process)."""

    def __init__(self, accelerator: Any = None) -> None:
        self.world = int(getattr(accelerator, "num_processes", 1) or 1)
        self.rank = int(getattr(accelerator, "process_index", 0) or 0)
        self.is_main = bool(getattr(accelerator, "is_main_process", True))

    def broadcast(self, obj: Any) -> Any:
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        from accelerate.utils import gather_object

        return list(gather_object([obj]))


def _default_encode(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)


def _default_decode(text: str) -> Any:
    return text


class Augmenter:
    """On-policy augmentation for a heapa ``Pool`` (see the module docstring for one step's work).

    pool: the pool children go into (main process; ``None`` on other ranks).
    backend: a ``GenerationBackend`` (the current policy). builder: a ``PromptBuilder`` (default: one
    from ``config`` and ``tokenizer``). validators: the chain (default ``config.build_validators()``).
    encode / decode: pool text <-> training prompt (the trainer's ``heapa_encode_prompt`` /
    ``heapa_decode_prompt``; default: text as is, chat messages as JSON).
    """

    def __init__(
        self,
        config: AugmentationConfig | None = None,
        *,
        pool: Any = None,
        backend: GenerationBackend | None = None,
        builder: PromptBuilder | None = None,
        tokenizer: Any = None,
        validators: Sequence[Validator] | None = None,
        filters: Sequence[Validator] | None = None,
        encode: Callable[[Any], str] | None = None,
        decode: Callable[[str], Any] | None = None,
    ) -> None:
        cfg = config if config is not None else AugmentationConfig()
        self.config = cfg
        self.backend = backend
        self.builder = builder or cfg.make_builder(tokenizer)
        self.validators = list(validators) if validators is not None else cfg.build_validators()
        self.filters = list(filters) if filters is not None else cfg.build_filters()
        self.dedup = DedupFilter() if cfg.dedup else None
        self.encode = encode or _default_encode
        self.decode = decode or _default_decode
        self.pipeline = ValidationPipeline(
            self.validators,
            self._commit,
            workers=cfg.workers,
            max_queue=cfg.max_queue,
            max_requeues=cfg.max_requeues,
            on_result=self._on_result,
            check_commit=self._check_commit,
            on_change=self._on_change,
        )
        self.counts: Counter[str] = Counter()
        self._rng = np.random.default_rng(cfg.seed)
        self._estimates: OrderedDict[int, float] = OrderedDict()  # child id -> estimate, until trained
        self._est_err = [0, 0.0, 0.0]  # pairs, sum of (actual - estimate), sum of |actual - estimate|
        self._difficulty = [0, 0.0]
        self._gauges: dict[str, float] = {}
        self.pool: Any = None
        if pool is not None:
            self.attach(pool)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_trainer(cls, trainer: Any, config: AugmentationConfig | None = None, **kwargs: Any) -> Augmenter:
        """Builds an augmenter for a ``HeaPAGRPOTrainer`` (call on every rank after the pool is seeded).

        The backend reuses the trainer's vLLM engine when ``args.use_vllm`` (unless
        ``config.backend="transformers"``), else generates with ``trainer.model``; threads start on the
        main process only.
        """
        cfg = config if config is not None else AugmentationConfig()
        if cfg.seed is None:
            cfg = _replace(cfg, seed=int(getattr(trainer.args, "seed", 0)))
        if "backend" not in kwargs:
            use_vllm = bool(getattr(trainer.args, "use_vllm", False))
            if cfg.backend == "vllm" or (cfg.backend == "auto" and use_vllm):
                kwargs["backend"] = VLLMBackend.from_trainer(trainer)
            else:
                kwargs["backend"] = TransformersBackend.from_trainer(trainer, batch_size=cfg.generation_batch_size)
        kwargs.setdefault("tokenizer", tokenizer_of(trainer.processing_class))
        kwargs.setdefault("encode", getattr(trainer, "heapa_encode_prompt", None))
        kwargs.setdefault("decode", getattr(trainer, "heapa_decode_prompt", None))
        aug = cls(cfg, pool=getattr(trainer, "heapa_pool", None), **kwargs)
        if _Dist(getattr(trainer, "accelerator", None)).is_main:
            aug.start()
        return aug

    def attach(self, pool: Any) -> None:
        """Uses ``pool`` (e.g. after a checkpoint replaced it) and rebuilds the duplicate filter from it."""
        with self.pipeline.paused():
            self.pool = pool
            self._rebuild_dedup()

    def _rebuild_dedup(self) -> None:
        if self.dedup is None or self.pool is None:
            return
        self.dedup.clear()
        for state in _STATES:
            ids = self.pool.ids(state)
            for start in range(0, len(ids), _CHUNK):
                texts = self.pool.prompts(ids[start : start + _CHUNK])
                self.dedup.add(self.builder.problem_of(self.decode(t)) for t in texts)
        self.dedup.add(c.problem for c in self.pipeline.accepted_pending())  # accepted, not in the pool yet
        for c in self.pipeline.held():
            c.dedup_key = self.dedup.reserve(c.problem)

    def start(self) -> None:
        """Starts the validation threads (main process)."""
        self.pipeline.start()

    def close(self, timeout: float = 5.0, *, drain: bool = False) -> None:
        """Stops validation. Queued work stays in ``state_dict``; ``drain`` validates the queue first."""
        self.pipeline.close(timeout, drain=drain)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No verdict or insertion happens inside: save the pool and ``state_dict()`` here together."""
        with self.pipeline.paused():
            yield

    # ------------------------------------------------------------------ the step hook

    def after_round(self, trainer: Any, scored: Any) -> None:
        """``after_step`` from a ``heapa.trl.HeaPARound`` (ids, rows, rewards, n_rollouts, n_correct, step)."""
        n_roll = np.asarray(scored.n_rollouts, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = np.where(n_roll > 0, np.asarray(scored.n_correct, dtype=np.float64) / n_roll, np.nan)
        prompts = [row.get("prompt") for row in scored.rows] if getattr(scored, "rows", None) else None
        self.after_step(trainer, scored.ids, rates, scored.step, prompts=prompts, scores=scored.rewards)

    def after_step(
        self,
        trainer: Any,
        parent_ids: Any,
        pass_rates: Any,
        step: int,
        *,
        prompts: Sequence[Any] | None = None,
        scores: Any = None,
    ) -> None:
        """Call on every rank right after a training round was scored (collective when the backend is).

        parent_ids: the round's prompt ids; pass_rates: their pass rates (NaN = unscored, never a parent);
        prompts: their training prompts (default: read from the pool); scores: their group-mean rewards
        (to measure the estimate error of augmented children).
        """
        dist = _Dist(getattr(trainer, "accelerator", None))
        plan = StepPlan()
        calls: list[GenerationCall] | None = None
        if dist.is_main:
            pool = getattr(trainer, "heapa_pool", None) if trainer is not None else None
            if pool is not None and pool is not self.pool:
                self.attach(pool)
            try:
                ids = np.asarray(parent_ids, dtype=np.uint64).reshape(-1)
                self._begin_step(ids, scores, int(step))
                plan = StepPlan(solves=self._plan_solutions())
                rates = np.asarray(pass_rates, dtype=np.float64).reshape(-1)
                plan = StepPlan(plan.solves, self._plan_variants(ids, rates, prompts, int(step)))
                self._drain(int(step))
            except Exception:  # never leave the other ranks waiting at the broadcast below
                logger.exception("heapa.augment: preparing this step's augmentation failed; skipping it")
                self.counts["errors/plan"] += 1
                self.pipeline.give_back(None, plan.taken())
                plan = StepPlan()
            calls = plan.calls
        collective = dist.world > 1 and self.backend is not None and bool(getattr(self.backend, "collective", False))
        if collective:
            calls = dist.broadcast(calls)
        elif not dist.is_main:
            return
        results: list[list[list[Completion]] | None] | None = []
        for call in calls or []:
            t0 = time.perf_counter()
            try:
                results.append(self._generate(dist, call, collective))
            except Exception:
                if collective:
                    raise  # ranks would fall out of step
                logger.exception(
                    "heapa.augment: generation failed (%s); skipping this step's augmentation", call.purpose
                )
                self.counts["errors/generation"] += 1
                results = None
                break
            finally:
                key = "gen_seconds" if call.purpose == "variants" else "solve_seconds"
                self._gauges[key] = self._gauges.get(key, 0.0) + time.perf_counter() - t0
        if dist.is_main:
            self._ingest(plan, results, int(step))
            if self.config.log_metrics and trainer is not None:
                self.log_to(trainer)

    # ------------------------------------------------------------------ main-process steps

    def _begin_step(self, ids: np.ndarray, scores: Any, step: int) -> None:
        self._gauges = {"gen_seconds": 0.0, "solve_seconds": 0.0}
        pool = self.pool
        if pool is None:
            return
        self.pipeline.flush()
        if not len(ids):
            return
        if scores is not None:
            s = np.asarray(scores, dtype=np.float64).reshape(-1)
            for i, actual in zip(ids.tolist(), s.tolist(), strict=True):
                est = self._estimates.pop(i, None) if math.isfinite(actual) else None
                if est is not None:
                    self._est_err[0] += 1
                    self._est_err[1] += actual - est
                    self._est_err[2] += abs(actual - est)
        try:
            parents = pool.lineage(ids)["parent"]
        except KeyError:  # UnknownPromptError: a prompt of the round is gone
            return
        self._gauges["batch_share"] = float(np.mean(parents != np.uint64(pool.NO_PARENT)))

    def _drain(self, step: int) -> None:
        # After the parents were read: children entering the pool may evict prompts.
        if self.pool is not None and self.config.drain_in_after_step:
            self.on_drained(self.pool.drain_inbox(step=step))

    def on_drained(self, ids: Any) -> None:
        """Records the estimates of children that just entered the pool (call with ``drain_inbox``'s ids)."""
        ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
        self.counts["drained"] += len(ids)
        if not len(ids) or self.pool is None:
            return
        rec = self.pool.records(ids)
        for i, score, estimated in zip(ids.tolist(), rec["score"].tolist(), rec["estimated"].tolist(), strict=True):
            if estimated and math.isfinite(score):
                self._estimates[i] = score
        while len(self._estimates) > _MAX_TRACKED:
            self._estimates.popitem(last=False)

    def _plan_solutions(self) -> tuple[SolveRequest, ...]:
        """Policy solutions for candidates parked at a policy stage (they have waited longest), one
        generate call per (validator, special-tokens) group."""
        cfg = self.config
        if self.backend is None or self.pool is None or not cfg.solve_per_step or not self.pipeline.parked():
            return ()
        taken = self.pipeline.take_parked(cfg.solve_per_step)
        try:
            groups: dict[tuple[str, bool], list[tuple[Candidate, str]]] = {}
            samplings: dict[tuple[str, bool], Sampling] = {}
            for work in taken:
                text, add_special = self.builder.render(self._child_prompt(work.candidate))
                key = (work.validator.name, add_special)
                groups.setdefault(key, []).append((work.candidate, text))
                samplings[key] = getattr(
                    work.validator, "sampling", Sampling(n=8, max_new_tokens=cfg.solve_max_new_tokens)
                )
            return tuple(
                SolveRequest(
                    tuple(c for c, _ in group),
                    GenerationCall("solutions", tuple(t for _, t in group), samplings[key], key[1]),
                )
                for key, group in groups.items()
            )
        except Exception:
            self.pipeline.give_back(None, [w.candidate for w in taken])
            raise

    def _plan_variants(
        self, ids: np.ndarray, rates: np.ndarray, prompts: Sequence[Any] | None, step: int
    ) -> VariantRequest | None:
        """Variants of this round's prompts (``None`` when this step makes none)."""
        cfg = self.config
        if self.backend is None or self.pool is None:
            return None
        if step % cfg.every_n_steps or cfg.max_per_step == 0 or not len(ids):
            return None
        self.counts["steps"] += 1
        parents = self._choose_parents(ids, rates, prompts)
        if not parents:
            return None
        texts = tuple(self.builder.build(self.builder.problem_of(p.prompt)) for p in parents)
        self.counts["requested"] += len(parents) * cfg.variants_per_parent
        call = GenerationCall("variants", texts, cfg.sampling(step), self.builder.add_special_tokens)
        return VariantRequest(tuple(parents), call)

    def _choose_parents(self, ids: np.ndarray, rates: np.ndarray, prompts: Sequence[Any] | None) -> list[Parent]:
        cfg = self.config
        m = cfg.variants_per_parent
        ok = np.isfinite(rates)
        if cfg.parents == "band":
            lo, hi = cfg.pass_rate_band
            ok &= (rates >= lo) & (rates <= hi)
        idx: list[int] = []
        seen: set[int] = set()
        for i in np.flatnonzero(ok).tolist():  # each parent once, in round order
            if int(ids[i]) not in seen:
                seen.add(int(ids[i]))
                idx.append(i)
        if cfg.max_depth is not None and idx:
            depth = self.pool.lineage(ids[idx])["depth"]
            idx = [i for i, d in zip(idx, depth.tolist(), strict=True) if d < cfg.max_depth]
        if not idx:
            self.counts["skipped/no_parents"] += 1
            return []
        wanted = len(idx) * m
        room = self.pipeline.room()
        budget = min(cfg.max_per_step, room)
        if wanted > cfg.max_per_step:
            self.counts["skipped/cap"] += wanted - cfg.max_per_step
        if room < min(wanted, cfg.max_per_step):
            self.counts["skipped/backpressure"] += min(wanted, cfg.max_per_step) - room
        n_parents = min(len(idx), budget // m)
        if n_parents == 0:
            return []
        if cfg.skip_when_full:
            st = self.pool.stats()
            free = st["capacity"] - st["held"] - len(self.pool.inbox) - self.pipeline.depth()
            if free < n_parents * m:
                self.counts["skipped/capacity"] += n_parents * m
                return []
        if n_parents < len(idx):
            pick = np.sort(self._rng.choice(len(idx), size=n_parents, replace=False))
            idx = [idx[i] for i in pick.tolist()]
        chosen = ids[idx]
        if prompts is not None:
            parent_prompts = [prompts[i] for i in idx]
        else:
            parent_prompts = [self.decode(t) for t in self.pool.prompts(chosen)]
        metas = self.pool.metadata(chosen) if cfg.inherit_metadata else [None] * len(idx)
        return [Parent(*p) for p in zip(chosen.tolist(), parent_prompts, metas, strict=True)]

    def _generate(self, dist: _Dist, call: GenerationCall, collective: bool) -> list[list[Completion]] | None:
        backend = self.backend
        texts = list(call.texts)
        if not collective:
            return backend.generate(texts, call.sampling, add_special_tokens=call.add_special_tokens)
        # Every rank generates its shard; ranks of one tensor-parallel group share a shard.
        group = int(getattr(backend, "group_size", 1))
        n_shards = max(1, dist.world // group)
        shard = dist.rank // group
        per = -(-len(texts) // n_shards)
        mine = texts[shard * per : (shard + 1) * per]
        real = len(mine)
        if per and real < per:  # equal work on every rank: ZeRO-3 forward passes are collective
            mine = mine + [texts[0]] * (per - real)
        out = backend.generate(mine, call.sampling, add_special_tokens=call.add_special_tokens)[:real] if per else []
        gathered = dist.gather(out if dist.rank % group == 0 else None)
        if not dist.is_main:
            return None
        return [row for part in gathered if part is not None for row in part]

    def _ingest(self, plan: StepPlan, results: list[list[list[Completion]] | None] | None, step: int) -> None:
        """Completions back to their requests; ``results``: one per ``plan.calls``, or ``None`` when
        generation failed (the parked candidates wait for the next step, the variants are dropped)."""
        # Policy solutions go back to their candidates.
        for i, solve in enumerate(plan.solves):
            rows = results[i] if results is not None else None
            if rows is not None:
                outs = {c.uid: [x.text for x in row] for c, row in zip(solve.candidates, rows, strict=True)}
                self.counts["solved"] += len(solve.candidates)
                self.pipeline.give_back(outs, solve.candidates)
            else:
                self.pipeline.give_back(None, solve.candidates)
        if plan.variants is None or results is None or results[-1] is None:
            return
        fresh: list[Candidate] = []
        for parent, row in zip(plan.variants.parents, results[-1], strict=True):
            parent_problem = self.builder.problem_of(parent.prompt)
            for comp in row:
                c = self._candidate(parent, parent_problem, comp, step)
                if c is not None:
                    fresh.append(c)
        taken = self.pipeline.submit(fresh)
        for c in fresh[taken:]:  # only if the queue shrank under us (it cannot: workers only free room)
            self.counts["rejected/queue_full"] += 1
            self._settle(c, False)

    def _candidate(self, parent: Parent, parent_problem: str, comp: Completion, step: int) -> Candidate | None:
        """One completion parsed and filtered: a ``Candidate`` for the queue, or ``None`` (counted)."""
        self.counts["proposed"] += 1
        res = parse_variant(
            comp.text, self.builder.fmt, cued=self.builder.cued, require_difficulty=self.config.require_difficulty
        )
        if not res.ok:
            self.counts["rejected/malformed"] += 1
            self.counts[f"malformed/{res.reason}"] += 1
            return None
        self.counts["parsed"] += 1
        self._difficulty[0] += 1
        self._difficulty[1] += res.difficulty
        c = Candidate(
            parent.id, parent.prompt, res.problem, res.difficulty, step, parent_problem, metadata=parent.metadata
        )
        c.child_prompt = self._child_prompt(c)
        reason = self._filter(c)
        if reason:
            self.counts[f"rejected/{reason}"] += 1
            return None
        return c

    def _filter(self, c: Candidate) -> str:
        if not valid_text(c.problem):  # the pool could never store it (and the dedup hash cannot encode it)
            return "invalid_text"
        for f in self.filters:
            v = f.validate(c)
            if not v.accepted:
                return v.reason or f.name
        if self.dedup is not None:
            key = self.dedup.reserve(c.problem)
            if key is None:
                return "duplicate"
            c.dedup_key = key
        return ""

    # ------------------------------------------------------------------ pipeline callbacks (worker threads)

    def _child_prompt(self, c: Candidate) -> Any:
        return self.builder.make_child(c.parent_prompt, c.problem)

    def _on_change(self, c: Candidate) -> None:
        c.child_prompt = self._child_prompt(c)

    def _check_commit(self, c: Candidate) -> str | None:
        if not valid_text(self.encode(self._child_prompt(c))):  # what the inbox will store
            return "invalid_text"
        if self.dedup is None:
            return None
        old = c.dedup_key
        if old is not None and text_key(c.problem) == old:
            return None
        new = self.dedup.reserve(c.problem)  # a validator rewrote the problem: check the new text
        if new is None:
            return "duplicate"
        self.dedup.settle(old, False)
        c.dedup_key = new
        return None

    def _settle(self, c: Candidate, accepted: bool) -> None:
        if self.dedup is not None:
            self.dedup.settle(c.dedup_key, accepted)

    def _on_result(self, c: Candidate, accepted: bool, reason: str) -> None:
        self._settle(c, accepted)

    def _commit(self, cands: list[Candidate]) -> int:
        pool = self.pool
        if pool is None:
            return 0
        return pool.inbox.push(
            [self.encode(self._child_prompt(c)) for c in cands],
            answers=[c.answer for c in cands],
            parents=np.asarray([c.parent_id for c in cands], dtype=np.uint64),
            difficulty=np.asarray([c.difficulty for c in cands], dtype=np.float64),
            metadata=[c.metadata if self.config.inherit_metadata else None for c in cands],
        )

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, float]:
        """Cumulative counts (``aug/proposed``, ``aug/parsed``, ``aug/accepted``, ``aug/rejected/<reason>``,
        ``aug/inserted``, ...), queue sizes, validation latency, acceptance rate, share of augmented prompts
        in the last batch, estimate-vs-actual error of trained children, validator statistics."""
        with self.pipeline.paused():
            pc = Counter(self.pipeline.counts)
            sizes = self.pipeline.sizes()
            depth = self.pipeline.depth()
        counts = self.counts + pc
        m: dict[str, float] = {}
        for key in (
            "proposed",
            "parsed",
            "accepted",
            "inserted",
            "requested",
            "enqueued",
            "drained",
            "solved",
            "steps",
        ):
            m[f"aug/{key}"] = float(counts[key])
        rejected = 0
        for key, v in sorted(counts.items()):
            if key.startswith(("rejected/", "skipped/", "malformed/", "errors/")):
                m[f"aug/{key}"] = float(v)
                rejected += v if key.startswith("rejected/") else 0
        for key in ("requeued", "abandoned", "inbox_full", "late_results"):
            if counts[key]:
                m[f"aug/{key}"] = float(counts[key])
        m["aug/rejected"] = float(rejected)
        decided = counts["accepted"] + rejected
        if decided:
            m["aug/acceptance_rate"] = counts["accepted"] / decided
        m["aug/queue_depth"] = float(depth)
        for key, v in sizes.items():
            m[f"aug/{key}"] = float(v)
        for key, v in self.pipeline.latency().items():
            m[f"aug/latency_{key}_s"] = v
        for key, v in self._gauges.items():
            m[f"aug/{key}"] = v
        if self._difficulty[0]:
            m["aug/difficulty_mean"] = self._difficulty[1] / self._difficulty[0]
        n, s, a = self._est_err
        if n:
            m["aug/est_pairs"] = float(n)
            m["aug/est_error_mean"] = s / n
            m["aug/est_abs_error"] = a / n
        for v in self.validators:
            for key, val in sorted(getattr(v, "stats", {}).items()):
                m[f"aug/{v.name}/{key}"] = float(val)
        return m

    def log_to(self, trainer: Any) -> None:
        """Appends ``metrics()`` to a TRL trainer's logged metrics (they reach ``metrics.jsonl``)."""
        store = getattr(trainer, "_metrics", None)
        if not isinstance(store, dict) or "train" not in store:
            return
        train = store["train"]
        per_step = {f"aug/{key}" for key in self._gauges}
        for key, v in self.metrics().items():
            # TRL averages each list over the logging window: right for per-step values; cumulative counts
            # and current sizes must show their latest value instead.
            if key in per_step:
                train[key].append(float(v))
            else:
                train[key] = [float(v)]

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the held candidates (queued, parked, being validated, accepted but not
        yet in the inbox), counters, tracked estimates and the RNG. Take it inside ``paused()`` together
        with ``pool.save`` (the inbox's contents are part of the pool snapshot)."""
        with self.pipeline.paused():
            return {
                "version": 1,
                "pipeline": self.pipeline.state_dict(),
                "counts": dict(self.counts),
                "estimates": [[k, v] for k, v in self._estimates.items()],
                "est_err": list(self._est_err),
                "difficulty": list(self._difficulty),
                "rng": self._rng.bit_generator.state,
                "dedup_rejected": self.dedup.rejected_keys() if self.dedup is not None else [],
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"Augmenter: unsupported state version {state.get('version')!r}")
        with self.pipeline.paused():
            self.pipeline.load_state_dict(state["pipeline"])
            self.counts = Counter(state.get("counts", {}))
            self._estimates = OrderedDict((int(k), float(v)) for k, v in state.get("estimates", []))
            self._est_err = list(state.get("est_err", [0, 0.0, 0.0]))
            self._difficulty = list(state.get("difficulty", [0, 0.0]))
            if "rng" in state:
                self._rng.bit_generator.state = state["rng"]
            self._rebuild_dedup()
            if self.dedup is not None:
                self.dedup.remember_rejected_keys(state.get("dedup_rejected", []))

    def save(self, folder: str) -> str:
        """Writes ``state_dict()`` as ``heapa_augment.json`` into ``folder``; returns the path."""
        import os

        path = os.path.join(folder, STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state_dict(), f)
        os.replace(tmp, path)
        return path

    def load(self, folder: str, *, pool: Any = None) -> bool:
        """Restores from ``folder/heapa_augment.json``; returns False when the file is absent.

        pool: the pool restored from the same checkpoint, attached first (the duplicate filter is rebuilt
        from it once).
        """
        import os

        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            if pool is not None:
                self.attach(pool)
            return False
        with open(path) as f:
            state = json.load(f)
        with self.pipeline.paused():
            if pool is not None:
                self.pool = pool
            self.load_state_dict(state)
        return True

    def trainer_callback(self) -> Any:
        """A ``transformers.TrainerCallback`` that starts validation at ``on_train_begin`` and stops it at
        ``on_train_end`` (held work stays in ``state_dict``)."""
        from transformers import TrainerCallback

        aug = self

        class _AugmentCallback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.is_world_process_zero:
                    aug.start()

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                aug.close()

        return _AugmentCallback()


def _replace(cfg: AugmentationConfig, **changes: Any) -> AugmentationConfig:
    import dataclasses

    return dataclasses.replace(cfg, **changes)
