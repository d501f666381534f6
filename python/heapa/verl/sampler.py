"""heapa as verl's curriculum sampler (verl 0.5 - 0.7.x; the API was removed in verl 0.8).

verl builds the sampler in ``create_rl_sampler`` as ``cls(data_source=dataset, data_config=config.data)`` and
calls ``sampler.update(batch=batch)`` once per training step, after the actor update. This module gives:

* :class:`HeaPASampler`: seeds a :class:`heapa.Pool` with one entry per dataset row, yields the rows of each
  training batch from the pool (drawn when the dataloader asks for the batch, i.e. after the previous step's
  ``update``: no read-ahead with ``data.dataloader_num_workers=0``, which verl requires anyway), and in
  ``update`` reports each prompt's group mean reward and pass count **by row id** (a row's score is
  ``token_level_scores.sum(-1)``). Rows are grouped by the
  id in ``extra_info["heapa_row"]``, never by position (verl reorders rows in ``_balance_batch``) and never by
  ``uid`` (a fresh uuid per prompt per step). Drawn prompts missing from the batch (e.g. groups a DAPO filter
  dropped) are released unchanged.
* :class:`HeaPADataset`: verl's ``RLHFDataset`` that writes the row id into ``extra_info["heapa_row"]``. Any
  dataset works if its rows carry that key (use :func:`add_row_id` in your own ``__getitem__``).

Options go under ``data.sampler.heapa`` (``+data.sampler.heapa.preset=frontier`` on the command line):
``preset`` (``"frontier"`` (default) or ``"paper"``), any :class:`heapa.PoolConfig` field, ``correct_threshold``
(a rollout counts as correct when its score is at least this; default: the middle of ``reward_range``),
``batch_size`` (default ``data.gen_batch_size`` or ``data.train_batch_size``). The pool's state is part of the
dataloader checkpoint (``state_dict`` / ``load_state_dict``, which torchdata's ``StatefulDataLoader`` calls).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.dataset.sampler import AbstractCurriculumSampler
from verl.utils.dataset.rl_dataset import RLHFDataset

from heapa import InvalidInputError, Pool, PoolConfig

__all__ = ["ROW_KEY", "HeaPADataset", "HeaPASampler", "add_row_id", "group_rewards"]

logger = logging.getLogger(__name__)

#: The ``extra_info`` key that carries a row's stable id (its index in the dataset).
ROW_KEY = "heapa_row"


def add_row_id(row: dict[str, Any], item: int) -> dict[str, Any]:
    """Puts the dataset index ``item`` into ``row["extra_info"]["heapa_row"]`` (a copy of extra_info)."""
    extra = dict(row.get("extra_info") or {})
    extra[ROW_KEY] = int(item)
    row["extra_info"] = extra
    return row


class HeaPADataset(RLHFDataset):
    """verl's ``RLHFDataset`` whose rows carry their stable id in ``extra_info["heapa_row"]``."""

    def __getitem__(self, item: int) -> dict[str, Any]:
        return add_row_id(super().__getitem__(item), item)


def _scores(batch: DataProto) -> np.ndarray:
    for key in ("token_level_scores", "token_level_rewards"):
        if batch.batch is not None and key in batch.batch.keys():  # noqa: SIM118 (a TensorDict)
            return batch.batch[key].sum(-1).detach().float().cpu().numpy().astype(np.float64)
    raise InvalidInputError("batch has neither token_level_scores nor token_level_rewards")


def group_rewards(batch: DataProto, correct_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per prompt of a verl batch: (row ids, mean score, rollouts, rollouts scoring >= ``correct_threshold``).

    Rows are grouped by ``extra_info["heapa_row"]`` whatever their order.
    """
    extra = batch.non_tensor_batch.get("extra_info")
    if extra is None:
        raise InvalidInputError(
            "batch has no extra_info: use heapa.verl.HeaPADataset (data.custom_cls) or put the dataset index "
            f"into extra_info[{ROW_KEY!r}]"
        )
    try:
        rows = np.fromiter((int(e[ROW_KEY]) for e in extra), dtype=np.int64, count=len(extra))
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"a row's extra_info lacks {ROW_KEY!r}: use heapa.verl.HeaPADataset (data.custom_cls) or add_row_id"
        ) from None
    scores = _scores(batch)
    if len(scores) != len(rows):
        raise InvalidInputError(f"batch has {len(scores)} scores for {len(rows)} rows")
    uniq, inv = np.unique(rows, return_inverse=True)
    n = np.bincount(inv, minlength=len(uniq))
    mean = np.bincount(inv, weights=scores, minlength=len(uniq)) / n
    correct = np.bincount(inv, weights=(scores >= correct_threshold), minlength=len(uniq)).astype(np.int64)
    return uniq, mean, n.astype(np.int64), correct


def _options(data_config: Any) -> dict[str, Any]:
    sampler_cfg = data_config.get("sampler") if hasattr(data_config, "get") else None
    opts = sampler_cfg.get("heapa") if sampler_cfg is not None and hasattr(sampler_cfg, "get") else None
    if opts is None:
        return {}
    if not isinstance(opts, Mapping):  # an OmegaConf DictConfig is a Mapping; anything else is a mistake
        raise InvalidInputError(f"data.sampler.heapa: expected a mapping, got {type(opts).__name__}")
    return {str(k): (list(v) if k == "reward_range" else v) for k, v in dict(opts).items()}


class HeaPASampler(AbstractCurriculumSampler):
    """verl curriculum sampler backed by a heapa pool (see the module docstring)."""

    def __init__(self, data_source: Sized, data_config: Any) -> None:
        opts = _options(data_config)
        preset = opts.pop("preset", "frontier")
        self.correct_threshold = opts.pop("correct_threshold", None)
        bs = opts.pop("batch_size", None)
        if bs is None:
            bs = data_config.get("gen_batch_size") or data_config.get("train_batch_size")
        if not isinstance(bs, int) or bs <= 0:
            raise InvalidInputError(f"batch size: expected a positive int (data.train_batch_size), got {bs!r}")
        self.batch_size = bs
        if "seed" not in opts and data_config.get("seed") is not None:
            opts["seed"] = int(data_config.get("seed"))
        n = len(data_source)
        opts.setdefault("capacity", max(n, 1))
        if preset == "frontier":
            config = PoolConfig.frontier(**opts)
        elif preset == "paper":
            config = PoolConfig.paper(**opts)
        elif preset in (None, "none", "default"):
            config = PoolConfig.from_dict(opts)
        else:
            raise InvalidInputError(f"data.sampler.heapa.preset: expected 'frontier' or 'paper', got {preset!r}")
        if self.correct_threshold is None:
            lo, hi = config.reward_range
            self.correct_threshold = (lo + hi) / 2
        self.n_rows = n
        self.pool = Pool(config)
        # One pool entry per dataset row; the text is the row id (the dataset holds the prompt itself).
        self._row_ids = self.pool.add([f"row {i}" for i in range(n)], metadata=[{ROW_KEY: i} for i in range(n)])
        self._index()
        self._pending: set[int] = set()
        self.updates = 0

    def _index(self) -> None:
        self._order = np.argsort(self._row_ids)
        self._sorted = self._row_ids[self._order]

    def _rows_of(self, ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self._sorted, ids)
        return self._order[pos]

    # ---- torch Sampler -----------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_rows

    def __iter__(self) -> Iterator[int]:
        yielded = 0
        while yielded < self.n_rows:
            want = min(self.batch_size, self.n_rows - yielded)
            ids = self.pool.sample(want)
            if len(ids) < want and self._pending:  # update() was not called: nothing can come back otherwise
                logger.warning("heapa: sampler.update() was not called for %d drawn prompts", len(self._pending))
                self._release_pending()
                ids = np.concatenate([ids, self.pool.sample(want - len(ids))])
            if len(ids) == 0:
                return
            self._pending.update(int(i) for i in ids)
            for row in self._rows_of(ids).tolist():
                yielded += 1
                yield int(row)

    def _release_pending(self) -> None:
        if self._pending:
            self.pool.release(np.fromiter(self._pending, dtype=np.uint64, count=len(self._pending)))
            self._pending.clear()

    # ---- verl's curriculum hook ----------------------------------------------------------

    def update(self, batch: DataProto) -> None:
        """Reports the batch's prompts (group mean, rollouts, passes) by row id; releases the drawn prompts
        the batch does not contain."""
        rows, mean, n, correct = group_rewards(batch, float(self.correct_threshold))
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise InvalidInputError(f"extra_info[{ROW_KEY!r}] outside the dataset (0..{self.n_rows - 1})")
        ids = self._row_ids[rows]
        drawn = np.fromiter((int(i) in self._pending for i in ids), dtype=bool, count=len(ids))
        if not drawn.all():
            logger.warning("heapa: %d prompt(s) in the batch were not drawn by this sampler; ignored", (~drawn).sum())
        lo, hi = self.pool.config.reward_range
        clipped = np.clip(mean[drawn], lo, hi)
        if not np.array_equal(clipped, mean[drawn]):
            logger.warning("heapa: group means outside reward_range [%s, %s] were clipped", lo, hi)
        self.updates += 1
        self.pool.report(ids[drawn], clipped, n[drawn], correct[drawn], step=self.updates)
        self._pending.difference_update(int(i) for i in ids[drawn])
        self._release_pending()

    # ---- checkpoints (StatefulDataLoader) ---------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.to_bytes(), "row_ids": self._row_ids.copy(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the pool; prompts that were in flight when it was saved are released (never lost)."""
        pool = Pool.from_bytes(state["pool"])
        pool.release_in_flight()
        self.pool = pool
        self._row_ids = np.asarray(state["row_ids"], dtype=np.uint64)
        self.n_rows = len(self._row_ids)
        self.updates = int(state["updates"])
        self._pending.clear()
        self._index()
