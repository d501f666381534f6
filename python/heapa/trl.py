"""HeaPA prompt selection inside TRL's ``GRPOTrainer`` ("late binding").

Swap ``GRPOTrainer`` for ``HeaPAGRPOTrainer`` and training draws its prompts from a heapa ``Pool``
seeded from ``train_dataset``::

    from heapa import PoolConfig
    from heapa.trl import HeaPAGRPOTrainer

    trainer = HeaPAGRPOTrainer(model=model, reward_funcs=[accuracy, fmt], args=GRPOConfig(max_steps=500, ...),
                               train_dataset=ds, processing_class=tok,
                               pool_config=PoolConfig(sampling="medium"), verifier="accuracy")
    trainer.train()

One generation round:

1. The main process drains the pool's inbox and samples ``generation_batch_size // num_generations``
   prompts, *after* the previous round was reported (no dataloader read-ahead, so no lag).
2. The rows are broadcast; each rank takes its slice of the global batch in TRL's layout (every prompt
   ``num_generations`` times in a row, so a group may straddle two ranks). TRL reuses the round for
   ``num_iterations x steps_per_generation`` micro-steps as usual.
3. TRL generates and scores. ``_calculate_rewards`` gathers the ids and the main process reports each
   prompt's group mean and pass count to the pool; groups with no score are released unchanged.
4. ``_heapa_after_scoring`` runs on every rank: with ``augmentation=AugmentationConfig(...)`` the policy
   writes variants of the round's prompts right away (current weights); they are validated on background
   threads and accepted ones reach the pool's inbox with their parent and difficulty (drained at step 1
   of a later round).

The dataloader only feeds placeholder rows, which are ignored while training; ``max_steps`` sets the
length of training. The pool lives on the main process only (``heapa_pool`` is ``None`` elsewhere).
For a custom trainer, put the mixin first: ``class T(HeaPAMixin, MyGRPOSubclass)``.

Generation stays TRL's own (transformers, or vLLM with ``use_vllm`` in colocate or server mode): heapa
only decides which rows it receives. Evaluation uses ``eval_dataset`` untouched. Refused, with a message
saying why: no ``max_steps``; ``train_dataset`` missing, streaming, multimodal or lacking the prompt or
answer column; a ``heapa_id`` column; a generation batch that is not whole groups.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from datasets import Dataset
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from heapa import HeapaError, InvalidInputError, Pool, PoolConfig
from heapa._inspect import POOL_FILE, STATE_FILE, checkpoint_complete, checkpoint_folders
from heapa.augment import AugmentationConfig, Augmenter

__all__ = [
    "SUPPORTED_VERSIONS",
    "HeaPAGRPOTrainer",
    "HeaPAMixin",
    "HeaPARound",
    "METRICS",
    "TRLCompatibilityError",
    "check_trl_compatibility",
]

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = {"trl": ">=1.10,<1.17", "transformers": ">=5.0"}

# Private TRL/transformers hooks we override, with the parameter names we rely on.
_HOOKS = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_save_checkpoint": ("self", "model", "trial"),
    "_load_optimizer_and_scheduler": ("self", "checkpoint"),
    "get_batch_samples": ("self", "epoch_iterator", "num_batches", "device"),
}
# Trainer attributes read by the mixin (checked after construction).
_ATTRS = ("accelerator", "num_generations", "reward_func_names", "reward_weights", "state", "_metrics")

ID_COLUMN = "heapa_id"
_POOL_METRICS = ("size", "cold", "hard", "easy", "in_flight", "archived", "evicted", "boundary")
#: Names of the metrics the trainer logs every step (``aug/*`` come on top with augmentation).
METRICS = (*(f"pool/{k}" for k in _POOL_METRICS), "batch/pass_rate", "batch/zero_variance_frac", "time/pool_ms")
_SEED_CHUNK = 65_536


class TRLCompatibilityError(RuntimeError):
    """The installed TRL/transformers do not have the private hooks heapa overrides."""


def _supported() -> str:
    return ", ".join(f"{pkg}{spec}" for pkg, spec in SUPPORTED_VERSIONS.items())


def _installed(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def _version_problems() -> list[str]:
    problems = []
    for pkg, spec in SUPPORTED_VERSIONS.items():
        found = _installed(pkg)
        try:
            ok = Version(found) in SpecifierSet(spec, prereleases=True)
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{pkg} {found}")
    return problems


def _next_impl(cls: type, name: str):
    """The implementation of ``name`` that HeaPAMixin's ``super()`` call reaches from ``cls``."""
    mro = cls.__mro__
    for klass in mro[mro.index(HeaPAMixin) + 1 :]:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def check_trl_compatibility(cls: type) -> None:
    """Fail with a clear message unless every hook heapa overrides exists with the expected parameters."""
    for name, expected in _HOOKS.items():
        impl = _next_impl(cls, name)
        found = None if impl is None else tuple(inspect.signature(impl).parameters)
        if found != expected:
            got = "missing" if found is None else f"({', '.join(found)})"
            raise TRLCompatibilityError(
                f"heapa.trl overrides the private hook {name}({', '.join(expected)}), but the base class has {got}. "
                f"heapa.trl supports {_supported()}; installed: trl {_installed('trl')}, "
                f"transformers {_installed('transformers')}. Install a supported version."
            )
    problems = _version_problems()
    if problems:
        warnings.warn(
            f"heapa.trl is tested with {_supported()}; found {', '.join(problems)}. The hooks it overrides look "
            "compatible, but this combination is untested.",
            stacklevel=3,
        )


@dataclass(frozen=True)
class HeaPARound:
    """One generation round as seen by every rank (identical on all of them)."""

    step: int  # trainer global_step when the round was generated
    ids: np.ndarray  # uint64, one per prompt group, in global batch order
    rows: list[dict]  # one row per group: decoded prompt, answer, metadata and heapa_id
    rewards: np.ndarray  # group mean of the pool signal; NaN when unscorable (then released)
    n_rollouts: np.ndarray  # scored completions per group
    n_correct: np.ndarray  # completions whose signal is above the pass threshold
    fingerprint: int | None  # pool fingerprint right after the choice, if round_fingerprints=True
    extra: dict = field(default_factory=dict)


class HeaPAMixin:
    """Adds HeaPA prompt selection to a GRPO-style TRL trainer. Keyword arguments added to the trainer's:

    pool_config: ``PoolConfig`` for the pool (default ``PoolConfig(seed=args.seed)``).
    augmentation: ``heapa.augment.AugmentationConfig`` to grow the pool with on-policy variants of the prompts
        just trained on, validated on background threads (``None``: off). The ``Augmenter`` is
        ``self.heapa_augmenter`` (built by ``heapa_build_augmenter``); its ``aug/*`` metrics are logged with
        the trainer's, and checkpoints carry its validation queue (``heapa_augment.json``).
    prompt_column / answer_column: dataset columns of the prompt and the reference answer
        (``answer_column=None`` if there is none). Other columns travel as metadata and reach the
        reward functions under their own names, plus ``heapa_id``.
    group_column / prior_column: optional dataset columns giving each prompt's group (int or str: source,
        level, topic…) and a predicted pass rate (reward scale; None/NaN = none), with ``prior_confidence``
        pseudo-rollouts behind each prior. They rank never-scored prompts when
        ``pool_config.cold == "prior"`` (see ``Pool.add``); the columns also travel as metadata.
    verifier: name or index of the reward function whose output measures success (its group mean is
        the prompt's score). ``None`` uses the ``reward_weights``-weighted total, as TRL does.
    pass_threshold: a completion passes when the signal is above it (default: the middle of
        ``pool_config.reward_range``).
    round_fingerprints: broadcast ``pool.fingerprint()`` with every choice (``HeaPARound.fingerprint``),
        to compare runs round by round. Off by default: it hashes the whole pool (~12 ms at 1M prompts).
    """

    heapa_pool: Pool | None

    def __init__(
        self,
        *args: Any,
        pool_config: PoolConfig | None = None,
        augmentation: AugmentationConfig | None = None,
        prompt_column: str = "prompt",
        answer_column: str | None = "answer",
        group_column: str | None = None,
        prior_column: str | None = None,
        prior_confidence: float = 0.0,
        verifier: str | int | None = None,
        pass_threshold: float | None = None,
        round_fingerprints: bool = False,
        **kwargs: Any,
    ) -> None:
        check_trl_compatibility(type(self))
        if augmentation is not None and not isinstance(augmentation, AugmentationConfig):
            raise TypeError(
                "heapa.trl: augmentation must be a heapa.augment.AugmentationConfig or None, "
                f"got {type(augmentation).__name__}"
            )
        bound = inspect.signature(_next_impl(type(self), "__init__")).bind(self, *args, **kwargs)
        targs = bound.arguments.get("args")
        dataset = bound.arguments.get("train_dataset")
        _check_args(targs)
        _check_dataset(dataset, prompt_column, answer_column, group_column, prior_column)
        if targs.save_total_limit == 1:
            logger.warning(
                "heapa.trl: with save_total_limit=1, transformers deletes the previous checkpoint before heapa's "
                "files are written into the new one: a process killed in between leaves no complete checkpoint to "
                "resume from. Use save_total_limit >= 2."
            )

        # The dataloader drives the step loop only: hand TRL placeholder rows, about one epoch's worth.
        per_round = targs.generation_batch_size // targs.num_generations
        n_rows = per_round * max(1, len(dataset) // per_round)
        bound.arguments["train_dataset"] = Dataset.from_dict({"prompt": [""] * n_rows})
        super().__init__(*bound.args[1:], **bound.kwargs)

        missing = [a for a in _ATTRS if not hasattr(self, a)]
        if missing:
            raise TRLCompatibilityError(
                f"heapa.trl needs trainer attributes {missing}, absent here. Supported: {_supported()}."
            )
        self.heapa_augmentation = augmentation
        self._heapa_fingerprints = round_fingerprints
        self._heapa_prompt_column = prompt_column
        self._heapa_answer_column = answer_column
        self._heapa_group_column = group_column
        self._heapa_prior_column = prior_column
        self._heapa_prior_confidence = float(prior_confidence)
        self._heapa_meta_columns = [c for c in dataset.column_names if c not in (prompt_column, answer_column)]
        self._heapa_chat = isinstance(dataset[0][prompt_column], list)
        self._heapa_verifier = self._resolve_verifier(verifier)
        config = pool_config if pool_config is not None else PoolConfig(seed=targs.seed)
        lo, hi = self._heapa_range = config.reward_range
        self._heapa_threshold = float(pass_threshold) if pass_threshold is not None else (lo + hi) / 2
        self._heapa_pending: np.ndarray | None = None  # chosen on main, not yet reported or released
        self._heapa_choice: dict | None = None  # this round's broadcast payload, while it is being scored
        self._heapa_round: HeaPARound | None = None
        self._heapa_seconds = 0.0
        self.heapa_pool = None
        if self.accelerator.is_main_process:
            self.heapa_pool = Pool(config)
            self._heapa_seed(dataset)
        self.heapa_augmenter: Augmenter | None = None
        if augmentation is not None:  # every rank: generation may be collective (ZeRO-3, colocated vLLM)
            self.heapa_augmenter = self.heapa_build_augmenter(augmentation)
            self.add_callback(self.heapa_augmenter.trainer_callback())

    # ------------------------------------------------------------------ setup

    def _resolve_verifier(self, verifier: str | int | None) -> int | None:
        names = list(self.reward_func_names)
        if verifier is None:
            return None
        if isinstance(verifier, int) and 0 <= verifier < len(names):
            return verifier
        if isinstance(verifier, str) and verifier in names:
            return names.index(verifier)
        raise ValueError(f"heapa.trl: verifier={verifier!r} is not one of the reward functions {names} (or an index).")

    def _heapa_seed(self, dataset: Dataset) -> None:
        """Add every dataset row to the pool, in chunks to bound memory."""
        converted = False
        for start in range(0, len(dataset), _SEED_CHUNK):
            chunk = dataset[start : start + _SEED_CHUNK]
            prompts = [self.heapa_encode_prompt(p) for p in chunk[self._heapa_prompt_column]]
            answers = None
            if self._heapa_answer_column is not None:
                raw = chunk[self._heapa_answer_column]
                answers = [a if a is None or isinstance(a, str) else str(a) for a in raw]
                converted |= answers != raw
            metadata = None
            if self._heapa_meta_columns:
                values = zip(*(chunk[c] for c in self._heapa_meta_columns), strict=True)
                metadata = [dict(zip(self._heapa_meta_columns, v, strict=True)) for v in values]
            group = chunk[self._heapa_group_column] if self._heapa_group_column is not None else None
            prior = confidence = None
            if self._heapa_prior_column is not None:
                prior = np.array([np.nan if p is None else p for p in chunk[self._heapa_prior_column]], dtype=float)
                confidence = np.where(np.isnan(prior), np.nan, self._heapa_prior_confidence)
            self.heapa_pool.add(
                prompts, answers=answers, metadata=metadata, group=group, prior=prior, confidence=confidence
            )
        if converted:
            logger.warning("heapa.trl: non-string answers were converted with str(); reward functions receive text.")

    def heapa_build_augmenter(self, config: AugmentationConfig) -> Augmenter:
        """The ``Augmenter`` for ``augmentation=config`` (override to pass a custom backend or validators)."""
        return Augmenter.from_trainer(self, config)

    def heapa_encode_prompt(self, prompt: str | list[dict]) -> str:
        """Pool text for a prompt: conversational prompts are stored as JSON."""
        if self._heapa_chat:
            return json.dumps(prompt, ensure_ascii=False)
        if not isinstance(prompt, str):
            raise InvalidInputError(f"heapa.trl: expected a text prompt, got {type(prompt).__name__}")
        return prompt

    def heapa_decode_prompt(self, text: str) -> str | list[dict]:
        return json.loads(text) if self._heapa_chat else text

    # ------------------------------------------------------------------ one round

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:  # evaluation keeps TRL's own rows
            return super()._generate_and_score_completions(inputs)
        t0 = time.perf_counter()
        inputs = self._heapa_choose(len(inputs))
        self._heapa_seconds = time.perf_counter() - t0
        try:
            out = super()._generate_and_score_completions(inputs)
            if self._heapa_pending is not None:  # a subclass skipped _calculate_rewards: nothing was scored
                logger.warning("heapa.trl: a round finished without rewards; its prompts were released.")
                self._heapa_release_pending()
        except BaseException:
            self._heapa_release_pending()
            raise
        finally:
            self._heapa_choice = None
        if self._heapa_round is not None:
            self._heapa_after_scoring(self._heapa_round)
            self._heapa_log_metrics()
        return out

    def _heapa_choose(self, n_local: int) -> list[dict]:
        """Choose this round's prompts on the main process; return this rank's rows in TRL's layout."""
        G = self.num_generations
        k = n_local * self.accelerator.num_processes // G
        payload = None
        if self.accelerator.is_main_process:
            pool = self.heapa_pool
            self._heapa_drain()
            ids = pool.sample(k)
            if len(ids) < k:
                pool.release(ids)
                payload = {
                    "error": f"heapa.trl: the pool could supply only {len(ids)} of the {k} prompts a round "
                    f"needs (stats: {pool.stats()}). Add prompts, lower the batch size, or disable drop_solved."
                }
            else:
                self._heapa_pending = ids
                fingerprint = int(pool.fingerprint()) if self._heapa_fingerprints else None
                payload = {"ids": ids, "rows": self._heapa_rows(ids), "fingerprint": fingerprint}
        box = [payload]
        broadcast_object_list(box, from_process=0)  # collective: every rank must reach it
        payload = box[0]
        if "error" in payload:
            raise HeapaError(payload["error"])
        self._heapa_choice, self._heapa_round = payload, None
        rows = payload["rows"]
        r0 = self.accelerator.process_index * n_local
        # Row j of the global batch belongs to prompt j // G: the layout RepeatSampler produces.
        return [dict(rows[j // G]) for j in range(r0, r0 + n_local)]

    def _heapa_drain(self) -> None:
        """Main process, at a step boundary: what producers pushed to the inbox joins the pool."""
        drained = self.heapa_pool.drain_inbox(step=self.state.global_step)
        if self.heapa_augmenter is not None:
            self.heapa_augmenter.on_drained(drained)  # their estimates, for the estimate-vs-actual metric

    def _heapa_rows(self, ids: np.ndarray) -> list[dict]:
        pool = self.heapa_pool
        metas = pool.metadata(ids)
        # TRL builds reward kwargs from the first row's keys, so every row carries the same keys.
        template = dict.fromkeys(self._heapa_meta_columns)
        for meta in metas:
            if meta:
                template.update(dict.fromkeys(meta))
        answers = pool.answers(ids) if self._heapa_answer_column is not None else [None] * len(ids)
        rows = []
        for i, text, answer, meta in zip(ids.tolist(), pool.prompts(ids), answers, metas, strict=True):
            row = {"prompt": self.heapa_decode_prompt(text)}
            if self._heapa_answer_column is not None:
                row[self._heapa_answer_column] = answer
            row.update(template)
            if meta:
                row.update(meta)
            row[ID_COLUMN] = i
            rows.append(row)
        return rows

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        if self.model.training and self._heapa_choice is not None:
            t0 = time.perf_counter()
            ids = gather_object([row[ID_COLUMN] for row in inputs])  # collective; rank-major = rows of `rewards`
            self._heapa_score(np.asarray(ids, dtype=np.uint64), rewards)
            self._heapa_seconds += time.perf_counter() - t0
        return rewards

    def _heapa_signal(self, rewards: torch.Tensor) -> torch.Tensor:
        """Per-completion signal the pool learns from: the verifier's reward or TRL's weighted total."""
        rewards = rewards.detach().float().cpu()
        if self._heapa_verifier is not None:
            return rewards[:, self._heapa_verifier]
        total = (rewards * self.reward_weights.detach().float().cpu()).nansum(dim=1)
        total[rewards.isnan().all(dim=1)] = torch.nan  # unscorable rows stay unscored
        return total

    def _heapa_score(self, ids: np.ndarray, rewards: torch.Tensor) -> None:
        G = self.num_generations
        groups = ids.reshape(-1, G)
        expected = np.asarray(self._heapa_choice["ids"], dtype=np.uint64)
        if (groups != groups[:, :1]).any() or not np.array_equal(groups[:, 0], expected):
            raise RuntimeError(
                "heapa.trl: the completions are not laid out as one group of num_generations rows per chosen "
                "prompt; refusing to report misattributed rewards."
            )
        signal = self._heapa_signal(rewards).view(-1, G).numpy().astype(np.float64)
        valid = ~np.isnan(signal)
        n_rollouts = valid.sum(axis=1)
        n_correct = ((signal > self._heapa_threshold) & valid).sum(axis=1)
        scored = n_rollouts > 0
        means = np.full(len(expected), np.nan)
        means[scored] = np.nansum(signal[scored], axis=1) / n_rollouts[scored]
        lo, hi = self._heapa_range
        outside = scored & ((means < lo) | (means > hi))
        if outside.any():  # checked on every rank, so all of them stop together
            j = int(np.flatnonzero(outside)[0])
            what = "weighted total reward" if self._heapa_verifier is None else "verifier reward"
            raise InvalidInputError(
                f"heapa.trl: prompt {expected[j]} has a group-mean {what} of {means[j]:g}, outside "
                f"PoolConfig.reward_range {self._heapa_range}; set reward_range to the reward's range or choose "
                "another verifier."
            )
        if self.accelerator.is_main_process:
            pool = self.heapa_pool
            pool.report(
                expected[scored],
                means[scored],
                n_rollouts=n_rollouts[scored],
                n_correct=n_correct[scored],
                step=self.state.global_step,
            )
            if not scored.all():
                pool.release(expected[~scored])
            self._heapa_pending = None
        spread = np.where(valid, signal, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN groups
            zero_var = np.nanmax(spread, axis=1) == np.nanmin(spread, axis=1)
        self._heapa_round = HeaPARound(
            step=int(self.state.global_step),
            ids=expected,
            rows=self._heapa_choice["rows"],
            rewards=means,
            n_rollouts=n_rollouts,
            n_correct=n_correct,
            fingerprint=self._heapa_choice["fingerprint"],
            extra={
                "pass_rate": float(n_correct.sum() / max(1, n_rollouts.sum())),
                "zero_variance_frac": float(zero_var[scored].mean()) if scored.any() else float("nan"),
            },
        )

    def _heapa_release_pending(self) -> None:
        if self._heapa_pending is None:
            return
        ids, self._heapa_pending = self._heapa_pending, None
        try:
            self.heapa_pool.release(ids)
        except HeapaError:  # never mask the error that got us here
            logger.exception("heapa.trl: could not release %d in-flight prompts", len(ids))

    def _heapa_after_scoring(self, scored: HeaPARound) -> None:
        """Called on every rank right after a training round was scored and reported.

        The engine (vLLM or the model) still holds the policy that produced this round's rollouts, so this is
        where on-policy augmentation runs (``Augmenter.after_round``): the policy writes variants of
        ``scored.rows`` (and solves earlier candidates for self-consistency), background threads validate
        them, and accepted children go to ``self.heapa_pool.inbox``, drained at the next choice.
        """
        if self.heapa_augmenter is not None:
            self.heapa_augmenter.after_round(self, scored)

    def _heapa_log_metrics(self) -> None:
        metrics = self._metrics["train"]
        rnd = self._heapa_round
        metrics["batch/pass_rate"].append(rnd.extra["pass_rate"])
        metrics["batch/zero_variance_frac"].append(rnd.extra["zero_variance_frac"])
        if self.heapa_pool is not None:
            t0 = time.perf_counter()
            stats = self.heapa_pool.stats()
            self._heapa_seconds += time.perf_counter() - t0
            for key in _POOL_METRICS:
                metrics[f"pool/{key}"].append(float(stats[key]))  # NaN boundary: log() reports None
        metrics["time/pool_ms"].append(1000.0 * self._heapa_seconds)

    # ------------------------------------------------------------------ checkpoints

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """TRL's ``train``; ``resume_from_checkpoint=True`` takes the newest *complete* checkpoint in
        ``output_dir`` (transformers takes the newest folder, which a process killed while saving leaves
        half-written)."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = self._heapa_resume_point()
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _heapa_resume_point(self) -> str | bool:
        folders = checkpoint_folders(self.args.output_dir)
        if not folders:
            return True  # transformers' own message: no checkpoint found
        complete = [f for f in folders if checkpoint_complete(f)]
        if not complete:
            raise ValueError(
                f"heapa.trl: no complete checkpoint in {self.args.output_dir}: {[f.name for f in folders]} lack "
                f"{STATE_FILE} (written last; the process stopped while saving). Start the run again without "
                "resume_from_checkpoint."
            )
        skipped = [f.name for f in folders[folders.index(complete[-1]) + 1 :]]
        if skipped:
            logger.warning(
                "heapa.trl: skipping incomplete checkpoint(s) %s (no %s: the process stopped while saving); "
                "resuming from %s.",
                skipped,
                STATE_FILE,
                complete[-1].name,
            )
        return str(complete[-1])

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # transformers resumes a finished run one step too far when max_steps is not a multiple of the epoch
        # length (it skips global_step % steps_per_epoch batches of the last epoch and trains the next one):
        # that step would draw, generate and report a round past max_steps. No batch, and training stops.
        if self.state.global_step >= self.args.max_steps:
            self.control.should_training_stop = True
            return [], None
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.heapa_pool is None or not self.args.should_save:
            return
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        aug = self.heapa_augmenter
        # Pool and validation queue at one instant (no verdict or insertion in between): a resumed run
        # loses nothing and inserts nothing twice.
        with aug.paused() if aug is not None else contextlib.nullcontext():
            if aug is not None:
                # A resumed run rebuilds its duplicate filter from the pool, which cannot list its inbox: drain
                # it now, as the next round would (nothing samples in between).
                aug.pipeline.flush()
                self._heapa_drain()
            self.heapa_pool.save(os.path.join(folder, POOL_FILE))
            fingerprint = int(self.heapa_pool.fingerprint())
            if aug is not None:
                aug.save(folder)
        # Written last and atomically: its presence marks a complete checkpoint (train(resume_from_checkpoint=True)
        # skips a folder without it, left by a process killed while writing the checkpoint).
        state = {"format": 1, "chat": self._heapa_chat, "fingerprint": fingerprint}
        path = os.path.join(folder, STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or self.heapa_pool is None:
            return
        if self.state.global_step >= self.args.max_steps:
            logger.warning(
                "heapa.trl: %s is at step %d and max_steps is %d: the run is complete. Resuming it trains nothing "
                "and leaves the pool as it was saved; raise max_steps to train further.",
                checkpoint,
                self.state.global_step,
                self.args.max_steps,
            )
        path = os.path.join(checkpoint, POOL_FILE)
        if not os.path.exists(path):
            logger.warning("heapa.trl: %s has no pool snapshot; keeping the pool seeded from the dataset.", checkpoint)
            return
        if not checkpoint_complete(checkpoint):
            raise HeapaError(
                f"heapa.trl: {checkpoint} is incomplete (no valid {STATE_FILE}: the process stopped while writing "
                "it). Resume from an earlier checkpoint, or with resume_from_checkpoint=True, which skips "
                "incomplete ones."
            )
        with open(os.path.join(checkpoint, STATE_FILE)) as f:
            state = json.load(f)
        if state["chat"] != self._heapa_chat:
            raise ValueError(
                f"heapa.trl: the checkpoint's pool holds {'conversational' if state['chat'] else 'plain'} prompts "
                "but train_dataset has the other kind; resume with the dataset the run started with."
            )
        pool = Pool.load(path)
        if int(pool.fingerprint()) != state["fingerprint"]:
            raise HeapaError(f"heapa.trl: the pool snapshot in {checkpoint} does not match its recorded fingerprint.")
        self.heapa_pool = pool
        if self.heapa_augmenter is not None:  # the checkpoint's validation queue, if it has one
            self.heapa_augmenter.load(checkpoint, pool=pool)


class HeaPAGRPOTrainer(HeaPAMixin, GRPOTrainer):
    """``GRPOTrainer`` whose prompts come from a HeaPA pool; see ``HeaPAMixin`` for the extra arguments."""


# ---------------------------------------------------------------------- validation (before TRL builds anything)


def _check_args(args) -> None:
    if args is None:
        raise ValueError("heapa.trl: pass args=GRPOConfig(..., max_steps=N); HeaPA training is sized by max_steps.")
    if args.max_steps is None or args.max_steps <= 0:
        raise ValueError(
            "heapa.trl: set GRPOConfig(max_steps=N). Prompts come from a pool that changes while training, "
            "so epochs over train_dataset do not define the length of training."
        )
    G = args.num_generations
    if G is None or G < 2 or args.generation_batch_size % G:
        raise ValueError(
            f"heapa.trl: generation_batch_size ({args.generation_batch_size}) must be a multiple of "
            f"num_generations ({G}) >= 2: each round trains whole groups of num_generations completions."
        )


def _check_dataset(
    dataset, prompt_column: str, answer_column: str | None, group_column: str | None, prior_column: str | None
) -> None:
    if not isinstance(dataset, Dataset):
        kind = "None" if dataset is None else type(dataset).__name__
        raise TypeError(
            f"heapa.trl: train_dataset must be a datasets.Dataset that seeds the pool, got {kind}. "
            "Streaming (IterableDataset) seeding is not supported yet."
        )
    columns = dataset.column_names
    roles = (
        ("prompt_column", prompt_column),
        ("answer_column", answer_column),
        ("group_column", group_column),
        ("prior_column", prior_column),
    )
    for role, col in roles:
        if col is not None and col not in columns:
            hint = " (pass answer_column=None if there is no reference answer)" if role == "answer_column" else ""
            raise ValueError(f"heapa.trl: train_dataset has no column {col!r} ({role}); columns: {columns}{hint}.")
    if ID_COLUMN in columns:
        raise ValueError(f"heapa.trl: column {ID_COLUMN!r} is reserved for pool ids; rename it in train_dataset.")
    if {"image", "images"} & set(columns):
        raise ValueError("heapa.trl: multimodal datasets (image/images columns) are not supported yet.")
    if len(dataset) == 0:
        raise ValueError("heapa.trl: train_dataset is empty; the pool needs seed prompts.")
