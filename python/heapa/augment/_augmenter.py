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

from ._backends import GenerationBackend, Sampling, TransformersBackend, VLLMBackend, tokenizer_of
from ._filters import CharsetFilter, DecontaminationFilter, DedupFilter, LengthFilter, text_key
from ._format import TaggedFormat, parse_variant
from ._pipeline import ValidationPipeline
from ._prompt import PromptBuilder
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

    Parents: ``parents="all"`` (every prompt of the round, as the reference) or ``"band"`` (pass rate
    within ``pass_rate_band``, inclusive; the slime port used (0.1, 0.7)); ``variants_per_parent``;
    ``max_per_step`` variants requested per step at most; ``every_n_steps``; ``max_depth`` of lineage
    chains (``None`` = unbounded); ``skip_when_full``: skip a step when the pool's free capacity cannot
    hold what it would request (the reference's gate).

    Generation: ``max_new_tokens`` (about 400 is plenty for a problem statement), ``temperature``,
    ``top_p``, ``stop`` (default: the format's stops, all after the difficulty line), ``template`` /
    ``fmt`` / ``system_prompt`` / ``use_chat_template`` / ``chat_template_kwargs`` / ``problem_pattern``
    (see ``PromptBuilder``), ``require_difficulty``, ``backend`` ("auto": vLLM when the trainer uses it).

    Validation: ``validators`` (a list of ``Validator`` objects) or the shortcut ``validator="self"``
    (``SelfConsistencyValidator`` with the policy as solver: ``self_consistency_k`` samples,
    ``agreement`` share, ``solve_max_new_tokens``, at most ``solve_per_step`` candidates solved per step)
    or ``"openai"`` (``OpenAIValidator`` at ``validator_url``). Filters: ``dedup`` against everything the
    pool holds, ``min_chars``/``max_chars``, ``forbid_cjk``/``allowed_chars``, ``decontaminate`` (texts
    of an evaluation set, ``decontamination_ngram`` words).

    Pipeline: ``workers`` threads, at most ``max_queue`` candidates held, ``max_requeues`` after a
    transient validator failure; ``inherit_metadata`` copies the parent's metadata to the child;
    ``drain_in_after_step`` drains the inbox at the start of ``after_step``; ``log_metrics`` appends
    ``metrics()`` to the trainer's logged metrics.
    """

    parents: Literal["all", "band"] = "all"
    pass_rate_band: tuple[float, float] = (0.0, 1.0)
    variants_per_parent: int = 1
    max_per_step: int = 64
    every_n_steps: int = 1
    max_depth: int | None = None
    skip_when_full: bool = True

    max_new_tokens: int = 400
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] | None = None
    template: str | None = None
    fmt: TaggedFormat = field(default_factory=TaggedFormat)
    system_prompt: str | None = None
    use_chat_template: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    problem_pattern: str | None = None
    require_difficulty: bool = True
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    generation_batch_size: int = 32

    validator: Literal["self", "openai"] = "self"
    validators: Sequence[Validator] | None = None
    validator_url: str | None = None
    validator_model: str = "default"
    validator_timeout: float = 60.0
    validator_max_retries: int = 3
    validator_concurrency: int = 4
    self_consistency_k: int = 8
    agreement: float = 0.5
    solve_max_new_tokens: int = 1024
    solve_temperature: float = 1.0
    solve_per_step: int = 64
    answer_extractor: Callable[[str], str | None] | None = None

    dedup: bool = True
    min_chars: int = 8
    max_chars: int = 4000
    forbid_cjk: bool = True
    allowed_chars: str | None = None
    decontaminate: Sequence[str] | None = None
    decontamination_ngram: int = 8

    workers: int = 4
    max_queue: int = 1024
    max_requeues: int = 1
    inherit_metadata: bool = True
    drain_in_after_step: bool = True
    log_metrics: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.parents not in ("all", "band"):
            raise ValueError(f"AugmentationConfig.parents: 'all' or 'band', got {self.parents!r}")
        lo, hi = self.pass_rate_band
        if not lo <= hi:
            raise ValueError(f"AugmentationConfig.pass_rate_band: expected lo <= hi, got {self.pass_rate_band}")
        self.pass_rate_band = (float(lo), float(hi))
        for name in ("variants_per_parent", "every_n_steps", "max_new_tokens", "generation_batch_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"AugmentationConfig.{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("max_per_step", "solve_per_step", "max_queue", "max_requeues"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentationConfig.{name}: expected >= 0, got {getattr(self, name)}")
        if self.validator not in ("self", "openai"):
            raise ValueError(f"AugmentationConfig.validator: 'self' or 'openai', got {self.validator!r}")
        if self.validators is None and self.validator == "openai" and not self.validator_url:
            raise ValueError("AugmentationConfig: validator='openai' needs validator_url")
        if self.backend not in ("auto", "vllm", "transformers"):
            raise ValueError(f"AugmentationConfig.backend: 'auto', 'vllm' or 'transformers', got {self.backend!r}")

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
        self._taken: list[tuple[Candidate, Validator]] = []
        self._solve_groups: list[list[Candidate]] = []
        self._parents: list[tuple[int, Any, Any]] = []
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
            c.info["dedup_key"] = self.dedup.reserve(c.problem)

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
        plan: list[tuple[str, list[str], Sampling, bool]] | None = None
        if dist.is_main:
            pool = getattr(trainer, "heapa_pool", None) if trainer is not None else None
            if pool is not None and pool is not self.pool:
                self.attach(pool)
            try:
                ids = np.asarray(parent_ids, dtype=np.uint64).reshape(-1)
                self._begin_step(ids, scores, int(step))
                plan = self._plan(ids, np.asarray(pass_rates, dtype=np.float64).reshape(-1), prompts, int(step))
                self._drain(int(step))
            except Exception:  # never leave the other ranks waiting at the broadcast below
                logger.exception("heapa.augment: preparing this step's augmentation failed; skipping it")
                self.counts["errors/plan"] += 1
                self.pipeline.give_back(None, [c for c, _ in self._taken])
                self._taken, self._solve_groups, self._parents = [], [], []
                plan = []
        collective = dist.world > 1 and self.backend is not None and bool(getattr(self.backend, "collective", False))
        if collective:
            plan = dist.broadcast(plan)
        elif not dist.is_main:
            return
        results: list[Any] = []
        failed = False
        for kind, texts, sampling, add_special in plan or []:
            t0 = time.perf_counter()
            try:
                results.append(self._generate(dist, texts, sampling, add_special, collective))
            except Exception:
                if collective:
                    raise  # ranks would fall out of step
                logger.exception("heapa.augment: generation failed (%s); skipping this step's augmentation", kind)
                self.counts["errors/generation"] += 1
                failed = True
                break
            finally:
                key = "gen_seconds" if kind == "variants" else "solve_seconds"
                self._gauges[key] = self._gauges.get(key, 0.0) + time.perf_counter() - t0
        if dist.is_main:
            self._ingest(plan or [], None if failed else results, int(step))
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

    def _plan(
        self, ids: np.ndarray, rates: np.ndarray, prompts: Sequence[Any] | None, step: int
    ) -> list[tuple[str, list[str], Sampling, bool]]:
        cfg = self.config
        plan: list[tuple[str, list[str], Sampling, bool]] = []
        self._taken, self._solve_groups, self._parents = [], [], []
        if self.backend is None or self.pool is None:
            return plan
        # 1. Policy solutions for candidates parked at a policy stage (they have waited longest).
        if cfg.solve_per_step and self.pipeline.parked():
            self._taken = self.pipeline.take_parked(cfg.solve_per_step)
            groups: dict[tuple[str, bool], list[Candidate]] = {}
            texts: dict[tuple[str, bool], list[str]] = {}
            samplings: dict[tuple[str, bool], Sampling] = {}
            for c, v in self._taken:
                text, add_special = self.builder.render(self._child_prompt(c))
                key = (v.name, add_special)
                groups.setdefault(key, []).append(c)
                texts.setdefault(key, []).append(text)
                samplings[key] = getattr(v, "sampling", Sampling(n=8, max_new_tokens=cfg.solve_max_new_tokens))
            for key, cands in groups.items():
                self._solve_groups.append(cands)
                plan.append(("solve", texts[key], samplings[key], key[1]))
        # 2. Variants of this round's prompts.
        if step % cfg.every_n_steps or cfg.max_per_step == 0 or not len(ids):
            return plan
        self.counts["steps"] += 1
        parents = self._choose_parents(ids, rates, prompts)
        if parents:
            texts_v = [self.builder.build(self.builder.problem_of(p)) for _, p, _ in parents]
            plan.append(("variants", texts_v, cfg.sampling(step), self.builder.add_special_tokens))
            self._parents = parents
            self.counts["requested"] += len(parents) * cfg.variants_per_parent
        return plan

    def _choose_parents(
        self, ids: np.ndarray, rates: np.ndarray, prompts: Sequence[Any] | None
    ) -> list[tuple[int, Any, Any]]:
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
        return list(zip(chosen.tolist(), parent_prompts, metas, strict=True))

    def _generate(
        self, dist: _Dist, texts: list[str], sampling: Sampling, add_special: bool, collective: bool
    ) -> list[Any] | None:
        backend = self.backend
        if not collective:
            return backend.generate(texts, sampling, add_special_tokens=add_special)
        # Every rank generates its shard; ranks of one tensor-parallel group share a shard.
        group = int(getattr(backend, "group_size", 1))
        n_shards = max(1, dist.world // group)
        shard = dist.rank // group
        per = -(-len(texts) // n_shards)
        mine = texts[shard * per : (shard + 1) * per]
        real = len(mine)
        if per and real < per:  # equal work on every rank: ZeRO-3 forward passes are collective
            mine = mine + [texts[0]] * (per - real)
        out = backend.generate(mine, sampling, add_special_tokens=add_special)[:real] if per else []
        gathered = dist.gather(out if dist.rank % group == 0 else None)
        if not dist.is_main:
            return None
        return [row for part in gathered if part is not None for row in part]

    def _ingest(self, plan: list[Any], results: list[Any] | None, step: int) -> None:
        solve_results: list[Any] = []
        variant_result = None
        if results is not None:
            for (kind, *_), res in zip(plan, results, strict=False):
                if kind == "solve":
                    solve_results.append(res)
                else:
                    variant_result = res
        # Policy solutions go back to their candidates (or the candidates wait for the next step).
        for i, cands in enumerate(self._solve_groups):
            if i < len(solve_results) and solve_results[i] is not None:
                outs = {c.uid: [x.text for x in row] for c, row in zip(cands, solve_results[i], strict=True)}
                self.counts["solved"] += len(cands)
                self.pipeline.give_back(outs, cands)
            else:
                self.pipeline.give_back(None, cands)
        self._solve_groups = []
        self._taken = []
        if variant_result is None:
            self._parents = []
            return
        cfg = self.config
        fresh: list[Candidate] = []
        for (pid, prompt, meta), row in zip(self._parents, variant_result, strict=True):
            parent_problem = self.builder.problem_of(prompt)
            for comp in row:
                self.counts["proposed"] += 1
                res = parse_variant(
                    comp.text, self.builder.fmt, cued=self.builder.cued, require_difficulty=cfg.require_difficulty
                )
                if not res.ok:
                    self.counts["rejected/malformed"] += 1
                    self.counts[f"malformed/{res.reason}"] += 1
                    continue
                self.counts["parsed"] += 1
                self._difficulty[0] += 1
                self._difficulty[1] += res.difficulty
                c = Candidate(pid, prompt, res.problem, res.difficulty, step, parent_problem, metadata=meta)
                c.info["child_prompt"] = self._child_prompt(c)
                reason = self._filter(c)
                if reason:
                    self.counts[f"rejected/{reason}"] += 1
                else:
                    fresh.append(c)
        self._parents = []
        taken = self.pipeline.submit(fresh)
        for c in fresh[taken:]:  # only if the queue shrank under us (it cannot: workers only free room)
            self.counts["rejected/queue_full"] += 1
            self._settle(c, False)

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
            c.info["dedup_key"] = key
        return ""

    # ------------------------------------------------------------------ pipeline callbacks (worker threads)

    def _child_prompt(self, c: Candidate) -> Any:
        return self.builder.make_child(c.parent_prompt, c.problem)

    def _on_change(self, c: Candidate) -> None:
        c.info["child_prompt"] = self._child_prompt(c)

    def _check_commit(self, c: Candidate) -> str | None:
        if not valid_text(self.encode(self._child_prompt(c))):  # what the inbox will store
            return "invalid_text"
        if self.dedup is None:
            return None
        old = c.info.get("dedup_key")
        if old is not None and text_key(c.problem) == old:
            return None
        new = self.dedup.reserve(c.problem)  # a validator rewrote the problem: check the new text
        if new is None:
            return "duplicate"
        self.dedup.settle(old, False)
        c.info["dedup_key"] = new
        return None

    def _settle(self, c: Candidate, accepted: bool) -> None:
        if self.dedup is not None:
            self.dedup.settle(c.info.get("dedup_key"), accepted)

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
