"""heapa for slime (THUDM/slime): the pool as slime's data source, and the hook that scores every group.

Flags (docs/slime.md)::

    --data-source-path heapa.slime.HeaPADataSource
    --rollout-all-samples-process-path heapa.slime.report_all_samples
    --custom-config-path heapa.yaml        # optional: heapa_preset, heapa_config, heapa_correct_threshold, ...

* :class:`HeaPADataSource` (slime's ``DataSource``): seeds a :class:`heapa.Pool` from ``--prompt-data`` (JSONL,
  ``--input-key`` / ``--label-key`` / ``--metadata-key``), and ``get_samples(n)`` draws ``n`` prompts from it, each
  as a group of ``--n-samples-per-prompt`` ``Sample`` objects whose ``metadata["heapa_id"]`` is the prompt's
  pool id. ``add_samples(groups)`` (slime hands back groups it did not use, e.g. aborted by a partial rollout)
  releases them unchanged. ``save(rollout_id)`` / ``load(rollout_id)`` write and read the pool snapshot under
  ``--save`` / ``--load`` (``rollout/heapa_pool_{rollout_id}.heapa``); ``__len__`` is the number of prompts held.
* :func:`report_all_samples` (``--rollout-all-samples-process-path``): slime calls it with **every** group
  generated in the rollout step, including those its dynamic filter dropped (zero reward variance: all
  right or all wrong). It reports each group's mean reward and pass count by ``heapa_id``, so the easy and
  the impossible prompts are scored too, not only the informative ones.

Options are attributes of slime's ``args`` (``--custom-config-path`` YAML keys become attributes):
``heapa_preset`` (``"frontier"`` default, or ``"paper"``), ``heapa_config`` (a dict of ``PoolConfig`` fields),
``heapa_correct_threshold`` (a sample passes when its reward is at least this; default the middle of
``reward_range``), ``heapa_actor`` (name of a :mod:`heapa.ray` pool actor to use instead of an in-process pool,
with ``heapa_checkpoint``). ``args.rollout_seed`` seeds the pool unless ``heapa_config`` sets ``seed``.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
import re
from typing import Any

import numpy as np
from slime.rollout.data_source import DataSource
from slime.utils.types import Sample

from heapa import InvalidInputError, Pool, PoolConfig

__all__ = ["ID_KEY", "HeaPADataSource", "report_all_samples"]

logger = logging.getLogger(__name__)

#: The ``Sample.metadata`` key that carries the prompt's pool id.
ID_KEY = "heapa_id"
#: Pool metadata flag of a prompt given as chat messages (stored as JSON text).
CHAT_KEY = "heapa_chat"


def _arg(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def _read_prompts(args: Any) -> tuple[list[str], list[str | None], list[Any]]:
    path = _arg(args, "prompt_data")
    if path is None:
        return [], [], []
    input_key = _arg(args, "input_key", "input")
    label_key = _arg(args, "label_key")
    metadata_key = _arg(args, "metadata_key", "metadata")
    prompts: list[str] = []
    labels: list[str | None] = []
    meta: list[Any] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if input_key not in row:
                raise InvalidInputError(f"{path}:{line_no}: no {input_key!r} field (--input-key)")
            p = row[input_key]
            m = row.get(metadata_key)
            if not isinstance(p, str):  # chat messages: stored as JSON, flagged so get_samples decodes them
                p = json.dumps(p)
                m = {**(m if isinstance(m, dict) else {} if m is None else {"value": m}), CHAT_KEY: True}
            prompts.append(p)
            labels.append(None if label_key is None or row.get(label_key) is None else str(row[label_key]))
            meta.append(m)
    return prompts, labels, meta


class HeaPADataSource(DataSource):
    """slime ``DataSource`` backed by a heapa pool (see the module docstring)."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.n_per_prompt = int(_arg(args, "n_samples_per_prompt", 1))
        overrides = dict(_arg(args, "heapa_config", {}))
        if "seed" not in overrides and _arg(args, "rollout_seed") is not None:
            overrides["seed"] = int(args.rollout_seed)
        prompts, labels, meta = _read_prompts(args)
        overrides.setdefault("capacity", max(2 * len(prompts), 1024))
        preset = _arg(args, "heapa_preset", "frontier")
        if preset not in ("frontier", "paper"):
            raise InvalidInputError(f"heapa_preset: expected 'frontier' or 'paper', got {preset!r}")
        config = PoolConfig.frontier(**overrides) if preset == "frontier" else PoolConfig.paper(**overrides)
        lo, hi = config.reward_range
        self.correct_threshold = float(_arg(args, "heapa_correct_threshold", (lo + hi) / 2))
        actor = _arg(args, "heapa_actor")
        if actor is not None:
            from heapa.ray import pool_actor

            self.pool: Any = pool_actor(actor, config, checkpoint=_arg(args, "heapa_checkpoint"))
            fresh = len(self.pool) == 0
        else:
            self.pool = Pool(config)
            fresh = True
        if fresh and prompts:
            self.pool.add(prompts, answers=labels, metadata=meta)
        self._in_flight: set[int] = set()
        self._group = 0
        self.rollouts = 0

    # ---- slime's DataSource -------------------------------------------------------------

    def get_samples(self, num_samples: int) -> list[list[Sample]]:
        """``num_samples`` prompts from the pool, each as a group of ``n_samples_per_prompt`` samples."""
        ids = self.pool.sample(num_samples)
        prompts, answers, metas = self.pool.prompts(ids), self.pool.answers(ids), self.pool.metadata(ids)
        groups: list[list[Sample]] = []
        for pid, prompt, answer, meta in zip(ids.tolist(), prompts, answers, metas, strict=True):
            self._in_flight.add(pid)
            chat = isinstance(meta, dict) and meta.get(CHAT_KEY)
            text: Any = json.loads(prompt) if chat else prompt
            base = {**(meta if isinstance(meta, dict) else {} if meta is None else {"value": meta}), ID_KEY: pid}
            base.pop(CHAT_KEY, None)
            group = []
            for j in range(self.n_per_prompt):
                group.append(
                    Sample(
                        group_index=self._group,
                        index=self._group * self.n_per_prompt + j,
                        prompt=copy.deepcopy(text),
                        label=answer,
                        metadata=dict(base),
                    )
                )
            self._group += 1
            groups.append(group)
        return groups

    def add_samples(self, samples: list[list[Sample]]) -> None:
        """Groups slime hands back unused: released to the pool unchanged."""
        ids = sorted({_id_of(g) for g in samples if g} & self._in_flight)
        if ids:
            self.pool.release(np.array(ids, dtype=np.uint64))
            self._in_flight.difference_update(ids)

    def report_groups(self, groups: list[list[Sample]]) -> int:
        """Reports each group's mean reward and pass count by ``heapa_id``; returns how many were reported.

        Groups whose prompt is not in flight from this data source (already reported, or handed back) are
        skipped; samples marked ``remove_sample`` or aborted do not count.
        """
        ids, means, n, correct = [], [], [], []
        for g in groups:
            if not g:
                continue
            pid = _id_of(g)
            if pid not in self._in_flight or pid in ids:
                continue
            rewards = [
                float(s.get_reward_value(self.args))
                for s in g
                if not s.remove_sample and s.status != Sample.Status.ABORTED and s.reward is not None
            ]
            if not rewards:
                continue
            ids.append(pid)
            means.append(float(np.mean(rewards)))
            n.append(len(rewards))
            correct.append(sum(r >= self.correct_threshold for r in rewards))
        if not ids:
            return 0
        lo, hi = self.pool.config.reward_range if isinstance(self.pool, Pool) else self._range()
        self.rollouts += 1
        self.pool.report(
            np.array(ids, dtype=np.uint64), np.clip(means, lo, hi), np.array(n), np.array(correct), step=self.rollouts
        )
        self._in_flight.difference_update(ids)
        return len(ids)

    def _range(self) -> tuple[float, float]:
        return tuple(self.pool.info()["config"]["reward_range"])  # type: ignore[return-value]

    def save(self, rollout_id: int) -> None:
        directory = _arg(self.args, "save")
        if directory is None:
            return
        path = os.path.join(directory, "rollout", f"heapa_pool_{rollout_id}.heapa")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(self.pool, Pool):
            self.pool.save(path)
        else:
            self.pool.checkpoint(path)

    def load(self, rollout_id: int | None = None) -> None:
        """Restores the pool saved at ``rollout_id`` (default: the newest) under ``--load``; prompts that were in
        flight when it was saved are released. Nothing to load is not an error (a fresh run)."""
        directory = _arg(self.args, "load")
        if directory is None:
            return
        if rollout_id is None:
            found = []
            for p in glob.glob(os.path.join(directory, "rollout", "heapa_pool_*.heapa")):
                m = re.fullmatch(r"heapa_pool_(\d+)\.heapa", os.path.basename(p))
                if m:
                    found.append(int(m.group(1)))
            if not found:
                return
            rollout_id = max(found)
        path = os.path.join(directory, "rollout", f"heapa_pool_{rollout_id}.heapa")
        if not os.path.exists(path):
            return
        if not isinstance(self.pool, Pool):
            logger.info("heapa: pool actor restores itself from its own checkpoint; %s not loaded", path)
            return
        pool = Pool.load(path)
        pool.release_in_flight()
        self.pool = pool
        self._in_flight.clear()

    def __len__(self) -> int:
        return len(self.pool)


def _id_of(group: list[Sample]) -> int:
    try:
        return int(group[0].metadata[ID_KEY])
    except (KeyError, TypeError, AttributeError):
        raise InvalidInputError(
            f"a sample group lacks metadata[{ID_KEY!r}]: it did not come from heapa.slime.HeaPADataSource"
        ) from None


def report_all_samples(args: Any, all_samples: list[list[Sample]], data_source: Any) -> None:
    """The ``--rollout-all-samples-process-path`` hook: reports every group of the rollout step, including the
    ones the dynamic filter dropped, to the heapa data source."""
    if not isinstance(data_source, HeaPADataSource):
        raise InvalidInputError(
            f"report_all_samples needs --data-source-path heapa.slime.HeaPADataSource, got {type(data_source)}"
        )
    data_source.report_groups(all_samples)
