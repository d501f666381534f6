"""heapa for verl >= 0.8 (the v1 trainer, ``trainer.use_v1``): a pool-drawn dataset and a replay buffer.

verl 0.8 removed the curriculum sampler API (``heapa.verl.sampler`` covers 0.5 - 0.7.x). The v1 trainer keeps
two hooks, and this module fills both:

* :class:`HeaPAPoolDataset` (``data.custom_cls``): verl's ``RLHFDataset`` whose ``__getitem__`` ignores the
  index the dataloader's sampler asks for and **draws the row from a heapa pool** instead (one pool entry
  per dataset row). The drawn prompt's pool id and row index go into ``extra_info`` (``heapa_id``,
  ``heapa_row``); verl copies every prompt field into each trajectory it stores in TransferQueue, so the id
  comes back with the rollouts. The validation dataset (``data.val_files``) is a plain ``RLHFDataset``.
* :class:`HeaPAReplayBuffer` (``trainer.v1.sampler.custom_sampler``): verl's own ``ReplayBuffer`` (sync
  trainer) or ``ReplayBufferAsync`` (other trainer modes) with two hooks added. When a batch is selected for
  training (``_materialize_batch``) and when groups are cleared without training (``_clear_groups``: groups a
  DAPO filter evicted, surplus groups discarded, off-policy-stale groups), it reads their trajectories from
  TransferQueue (``kv_batch_get(..., select_fields=["rm_scores", "extra_info"])``) and reports each prompt's
  mean reward (``rm_scores.sum()`` per trajectory), rollout count and pass count to the pool **by the id in
  extra_info** (never by ``uid``, a fresh uuid per step). Failed groups (a rollout raised) are released.

The dataset and the replay buffer live in the trainer process and meet through a process-local registry
keyed by the pool name (``data.heapa.pool`` = ``sampler_kwargs.pool``, default ``"default"``); hence
``data.dataloader_num_workers=0`` (checked). The config to paste is in docs/verl.md.

Nothing here is imported by ``import heapa`` or ``import heapa.verl``; this module imports verl and
``transfer_queue``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
from verl.utils.dataset.rl_dataset import RLHFDataset

from heapa import InvalidInputError, Pool, PoolConfig

__all__ = ["ID_KEY", "ROW_KEY", "HeaPAPoolDataset", "HeaPAReplayBuffer", "HeaPAReplayBufferAsync", "PoolSource"]

logger = logging.getLogger(__name__)

#: ``extra_info`` keys: the drawn prompt's pool id and its dataset row.
ID_KEY = "heapa_id"
ROW_KEY = "heapa_row"


def _mapping(cfg: Any, where: str) -> dict[str, Any]:
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):  # an OmegaConf DictConfig is a Mapping
        raise InvalidInputError(f"{where}: expected a mapping, got {type(cfg).__name__}")
    return {str(k): (list(v) if k == "reward_range" else v) for k, v in dict(cfg).items()}


def _pool_config(preset: Any, opts: dict[str, Any]) -> PoolConfig:
    if preset == "frontier":
        return PoolConfig.frontier(**opts)
    if preset == "paper":
        return PoolConfig.paper(**opts)
    if preset in (None, "none", "default"):
        return PoolConfig.from_dict(opts)
    raise InvalidInputError(f"data.heapa.preset: expected 'frontier' or 'paper', got {preset!r}")


class PoolSource:
    """One pool shared by a :class:`HeaPAPoolDataset` and a :class:`HeaPAReplayBuffer` in one process.

    ``drawn`` maps each id the dataset drew and nobody has reported or released yet to the step it was drawn
    at (``clock``, the replay buffer's last ``global_steps``).
    """

    def __init__(self, pool: Pool, row_ids: np.ndarray, correct_threshold: float) -> None:
        self.pool = pool
        self.row_ids = np.asarray(row_ids, dtype=np.uint64)
        self.correct_threshold = float(correct_threshold)
        self.drawn: dict[int, int] = {}
        self.clock = 0
        self._index()

    def _index(self) -> None:
        self._order = np.argsort(self.row_ids)
        self._sorted = self.row_ids[self._order]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        return self._order[np.searchsorted(self._sorted, ids)]

    def draw(self) -> tuple[int, int] | None:
        """One prompt: (pool id, dataset row), or None when every prompt is in flight."""
        ids = self.pool.sample(1)
        if len(ids) == 0:
            return None
        pid = int(ids[0])
        self.drawn[pid] = self.clock
        return pid, int(self.rows_of(ids)[0])

    def settle(self, ids: np.ndarray) -> np.ndarray:
        """Keeps the ids that are drawn and unsettled, and marks them settled."""
        mask = np.fromiter((int(i) in self.drawn for i in ids), dtype=bool, count=len(ids))
        for i in ids[mask].tolist():
            del self.drawn[int(i)]
        return mask

    def report(self, ids: np.ndarray, mean: np.ndarray, n: np.ndarray, correct: np.ndarray, step: int) -> int:
        keep = self.settle(ids)
        if not keep.all():
            logger.warning("heapa: %d group(s) were not drawn (or were released) by this pool; ignored", (~keep).sum())
        if keep.any():
            lo, hi = self.pool.config.reward_range
            m = np.clip(mean[keep], lo, hi)
            if not np.array_equal(m, mean[keep]):
                logger.warning("heapa: group means outside reward_range [%s, %s] were clipped", lo, hi)
            self.pool.report(ids[keep], m, n[keep], correct[keep], step=step)
        return int(keep.sum())

    def release(self, ids: np.ndarray) -> int:
        keep = self.settle(ids)
        if keep.any():
            self.pool.release(ids[keep])
        return int(keep.sum())

    def release_older_than(self, steps: int) -> int:
        """Releases ids drawn more than ``steps`` steps ago (groups that vanished without trajectories)."""
        old = [i for i, s in self.drawn.items() if self.clock - s > steps]
        return self.release(np.array(old, dtype=np.uint64)) if old else 0

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.to_bytes(), "row_ids": self.row_ids.copy(), "clock": self.clock}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the pool; prompts in flight when it was saved are released (never lost)."""
        pool = Pool.from_bytes(state["pool"])
        pool.release_in_flight()
        self.pool = pool
        self.row_ids = np.asarray(state["row_ids"], dtype=np.uint64)
        self.clock = int(state.get("clock", 0))
        self.drawn.clear()
        self._index()


#: name -> PoolSource, in this process (the trainer's): how the dataset and the replay buffer meet.
_SOURCES: dict[str, PoolSource] = {}


def get_source(name: str = "default") -> PoolSource:
    """The pool registered under ``name`` by a :class:`HeaPAPoolDataset` in this process."""
    try:
        return _SOURCES[name]
    except KeyError:
        raise InvalidInputError(
            f"no heapa pool named {name!r} in this process: set data.custom_cls to heapa.verl.v1.HeaPAPoolDataset "
            "(with data.heapa.pool equal to sampler_kwargs.pool) and data.dataloader_num_workers=0"
        ) from None


def _files(x: Any) -> list[str] | None:
    if x is None:
        return None
    return [str(x)] if isinstance(x, str) else [str(f) for f in x]


def _same_files(a: Any, b: Any) -> bool:
    fa, fb = _files(a), _files(b)
    return fa is not None and fa == fb


class HeaPAPoolDataset(RLHFDataset):
    """verl's ``RLHFDataset`` whose training rows are drawn from a heapa pool (see the module docstring).

    Options under ``data.heapa`` (``+data.heapa.preset=frontier``): ``pool`` (registry name, default
    ``"default"``), ``preset`` (``frontier``, the default, or ``paper``), any :class:`heapa.PoolConfig` field,
    ``correct_threshold`` (a rollout passes when its score is at least this; default the middle of
    ``reward_range``). ``data.seed`` seeds the pool. Built for ``data.val_files`` it is a plain dataset.
    """

    def __init__(self, data_files: Any, tokenizer: Any, config: Any, processor: Any = None, max_samples: int = -1):
        super().__init__(
            data_files=data_files, tokenizer=tokenizer, config=config, processor=processor, max_samples=max_samples
        )
        get = config.get if hasattr(config, "get") else (lambda k, d=None: d)
        self.heapa_source: PoolSource | None = None
        if _same_files(data_files, get("val_files")) and not _same_files(data_files, get("train_files")):
            return  # the validation set: every row, in order, no pool
        opts = _mapping(get("heapa"), "data.heapa")
        self.heapa_pool_name = str(opts.pop("pool", "default"))
        preset = opts.pop("preset", "frontier")
        threshold = opts.pop("correct_threshold", None)
        workers = get("dataloader_num_workers", 0)
        if workers not in (0, None):
            raise InvalidInputError(
                f"heapa.verl.v1 needs data.dataloader_num_workers=0 (got {workers}): the dataset draws from the "
                "trainer process's pool, which dataloader worker processes cannot share"
            )
        if "seed" not in opts and get("seed") is not None:
            opts["seed"] = int(get("seed"))
        n = len(self.dataframe)
        opts.setdefault("capacity", max(n, 1))
        config_ = _pool_config(preset, opts)
        if threshold is None:
            lo, hi = config_.reward_range
            threshold = (lo + hi) / 2
        pool = Pool(config_)
        row_ids = pool.add([f"row {i}" for i in range(n)], metadata=[{ROW_KEY: i} for i in range(n)])
        self.heapa_source = PoolSource(pool, row_ids, float(threshold))
        if self.heapa_pool_name in _SOURCES:
            logger.warning("heapa: pool %r replaced by a new HeaPAPoolDataset", self.heapa_pool_name)
        _SOURCES[self.heapa_pool_name] = self.heapa_source

    def __getitem__(self, item: int) -> dict[str, Any]:
        src = self.heapa_source
        if src is None:
            return super().__getitem__(item)
        got = src.draw()
        if got is None:
            raise InvalidInputError(
                f"heapa: all {len(src.row_ids)} prompts of pool {self.heapa_pool_name!r} are in flight; the replay "
                "buffer reports or releases them (is trainer.v1.sampler.custom_sampler set to HeaPAReplayBuffer?)"
            )
        pid, row = got
        out = super().__getitem__(row)
        extra = dict(out.get("extra_info") or {})
        extra[ID_KEY] = pid
        extra[ROW_KEY] = row
        out["extra_info"] = extra
        return out

    # torchdata's StatefulDataLoader saves and restores these with verl's dataloader state.
    def state_dict(self) -> dict[str, Any]:
        return {} if self.heapa_source is None else {"heapa": self.heapa_source.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.heapa_source is not None and state and "heapa" in state:
            self.heapa_source.load_state_dict(state["heapa"])


def _scores(values: Any) -> np.ndarray:
    """One score per trajectory: ``rm_scores`` summed over its tokens (a jagged tensor or a list of tensors)."""
    return np.array([float(v.sum()) for v in values], dtype=np.float64)


def _extra_ids(values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for j, e in enumerate(values):
        e = getattr(e, "data", e)
        try:
            out[j] = int(e[ID_KEY])
        except (KeyError, TypeError, IndexError):
            out[j] = -1
    return out


_BASE_KWARGS = (
    "poll_interval",
    "filter_groups_metric",
    "train_batch_size",
    "gen_batch_size",
    "max_inflight_gen_batches",
    "sync_refill_failed_groups",
)


class HeaPAReplayBuffer(ReplayBuffer):
    """verl's v1 replay buffer that reports every finished group to the heapa pool (module docstring).

    verl builds it as ``cls(trainer_mode=..., trainer_config=..., max_off_policy_threshold=...,
    max_off_policy_strategy=..., sampler_kwargs=..., refill_fn=...)``; for a trainer mode other than
    ``"sync"`` the instance is a :class:`HeaPAReplayBufferAsync`. ``sampler_kwargs``: ``pool`` (default
    ``"default"``), ``release_after_steps`` (release ids still unsettled this many steps after their draw:
    groups that vanished without a trajectory; default 16, 0 = never), and verl's own replay-buffer options
    that it does not pass to custom samplers: ``filter_groups_metric`` (``"reward"`` turns the DAPO filter
    on), ``train_batch_size``, ``gen_batch_size``, ``max_inflight_gen_batches``, ``sync_refill_failed_groups``,
    ``poll_interval``.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> HeaPAReplayBuffer:
        mode = kwargs.get("trainer_mode", args[0] if args else "sync")
        if cls is HeaPAReplayBuffer and mode != "sync":
            cls = HeaPAReplayBufferAsync
        return super().__new__(cls)

    def __init__(
        self,
        trainer_mode: str,
        trainer_config: Any,
        max_off_policy_threshold: int | None,
        max_off_policy_strategy: str,
        sampler_kwargs: Any,
        refill_fn: Any = None,
        **kwargs: Any,
    ) -> None:
        opts = _mapping(sampler_kwargs, "trainer.v1.sampler.sampler_kwargs")
        self.heapa_pool_name = str(opts.pop("pool", "default"))
        self.heapa_release_after = int(opts.pop("release_after_steps", 16))
        base = {k: opts.pop(k) for k in _BASE_KWARGS if k in opts}
        if base.get("filter_groups_metric") is not None:
            base.setdefault("gen_batch_size", 1)  # what verl's trainer forces when filter_groups is on
        if opts:
            raise InvalidInputError(f"trainer.v1.sampler.sampler_kwargs: unknown heapa options {sorted(opts)}")
        base.update(kwargs)
        super().__init__(
            trainer_mode,
            trainer_config,
            max_off_policy_threshold,
            max_off_policy_strategy,
            sampler_kwargs,
            refill_fn=refill_fn,
            **base,
        )
        self._global_steps = 0
        self.heapa_metrics: dict[str, float] = {}

    @property
    def heapa(self) -> PoolSource:
        return get_source(self.heapa_pool_name)

    def _count(self, key: str, n: int) -> None:
        if n:
            self.heapa_metrics[f"heapa/{key}"] = self.heapa_metrics.get(f"heapa/{key}", 0) + n

    def _trajectory_keys(self, partition_id: str, uids: set[str] | list[str], snapshot: Any = None) -> list[str]:
        part = self.partitions[partition_id] if snapshot is None else snapshot
        uids = set(uids)
        return [key for key in part if key.split("_")[0] in uids]

    def _settle_groups(self, partition_id: str, uids: Any, snapshot: Any = None, why: str = "trained") -> None:
        """Reports the groups ``uids`` (all their trajectories have rm_scores) or, failing that, releases them."""
        if partition_id == "val" or not uids:
            return
        src = self.heapa
        failed = set(uids) & self.failure_keys[partition_id]
        keys = self._trajectory_keys(partition_id, set(uids) - failed, snapshot)
        fkeys = self._trajectory_keys(partition_id, failed, snapshot)
        if fkeys:
            ids = _extra_ids(
                tq.kv_batch_get(keys=fkeys, partition_id=partition_id, select_fields=["extra_info"])["extra_info"]
            )
            self._count("released_failed", src.release(np.unique(ids[ids >= 0]).astype(np.uint64)))
        if not keys:
            return
        try:
            data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["rm_scores", "extra_info"])
            ids, scores = _extra_ids(data["extra_info"]), _scores(data["rm_scores"])
        except Exception as e:  # no rm_scores yet: a colocated reward model scores after sampling
            logger.warning(
                "heapa: could not read rm_scores of %d trajectories (%s); their prompts are released. "
                "heapa needs rewards at sampling time (rule-based reward or a reward model with "
                "its own resource pool)",
                len(keys),
                e,
            )
            data = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["extra_info"])
            ids = _extra_ids(data["extra_info"])
            self._count("released_unscored", src.release(np.unique(ids[ids >= 0]).astype(np.uint64)))
            return
        ok = ids >= 0
        if not ok.all():
            logger.warning("heapa: %d trajectories carry no extra_info[%r]; ignored", (~ok).sum(), ID_KEY)
        ids, scores = ids[ok], scores[ok]
        if len(ids) == 0:
            return
        uniq, inv = np.unique(ids, return_inverse=True)
        n = np.bincount(inv, minlength=len(uniq))
        mean = np.bincount(inv, weights=scores, minlength=len(uniq)) / n
        correct = np.bincount(inv, weights=scores >= src.correct_threshold, minlength=len(uniq)).astype(np.int64)
        self._count(
            f"reported_{why}",
            src.report(uniq.astype(np.uint64), mean, n.astype(np.int64), correct, step=int(self._global_steps)),
        )

    # ---- verl's hooks ------------------------------------------------------------------------

    def _clear_groups(self, partition_id: str, uids: set[str]) -> None:
        """Groups cleared without training (DAPO-filtered, surplus, stale, failed): reported, then cleared."""
        self._settle_groups(partition_id, uids, why="dropped")
        super()._clear_groups(partition_id, uids)

    def _materialize_batch(self, partition_id: str, selected_prompt_uids: list[str], partition_snapshot: dict) -> Any:
        self._settle_groups(partition_id, selected_prompt_uids, partition_snapshot, why="trained")
        return super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict]:
        if partition_id != "val":
            self._global_steps = global_steps
            src = self.heapa
            src.clock = int(global_steps)
            if self.heapa_release_after > 0:
                self._count("released_stale", src.release_older_than(self.heapa_release_after))
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id != "val":
            metrics = dict(metrics)
            metrics.update(self.heapa_metrics)
            metrics["heapa/in_flight"] = len(self.heapa.drawn)
            self.heapa_metrics = {}
        return batch, metrics


class HeaPAReplayBufferAsync(HeaPAReplayBuffer, ReplayBufferAsync):
    """:class:`HeaPAReplayBuffer` over verl's ``ReplayBufferAsync`` (trainer modes other than ``"sync"``)."""
