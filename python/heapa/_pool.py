"""`Pool` and `PoolConfig`: the public face of the Rust engine.

Everything here is argument conversion; the algorithm lives in
``rust/heapa-core``. Each method is one call into the engine per batch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from . import _arrays as A
from ._heapa import CONFIG_FIELDS, NO_PARENT, PoolCore, validate_config
from .exceptions import InvalidInputError, SnapshotError

#: Names of the partitions, indexed by the engine's state codes.
STATES = np.array(["free", "cold", "hard", "easy", "in_flight", "archived"])


#: Named configurations (overrides of the defaults): ``PoolConfig.paper()`` and ``PoolConfig.frontier()``.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"boundary": "quantile", "low_fraction": 0.5, "sampling": "medium", "reinsert": "on_drain"},
    "frontier": {
        "boundary": "absolute",
        "target": 0.5,
        "sampling": "medium",
        "reinsert": "immediate",
        "revisit_fraction": 0.25,
        # Never-scored prompts ranked by group / prior estimates (plain FIFO when add() passes
        # neither); group evidence ages so estimates follow the improving policy (docs/priors.md).
        "cold": "prior",
        "prior_half_life": 25.0,
    },
}


@dataclass(frozen=True)
class PoolConfig:
    """Configuration of a HeaPA pool (validated on construction).

    See the README for what each knob does; defaults follow the HeaPA paper's
    reference trainer with its bugs fixed.
    """

    #: Maximum number of prompts held (live + archived + in flight).
    capacity: int = 1_000_000
    #: ``"quantile"``: split hard/easy at the ``low_fraction`` quantile (paper);
    #: ``"absolute"``: split at the fixed score ``target``.
    boundary: Literal["quantile", "absolute"] = "quantile"
    low_fraction: float = 0.5
    #: Absolute boundary, in the user's reward scale (e.g. pass rate 0.5).
    target: float = 0.5
    sampling: Literal["medium", "mixed", "easy_medium_mixed", "uniform", "prioritized"] = "medium"
    eviction: Literal["hardest", "easiest"] = "hardest"
    #: The scale of reported rewards; internally normalised to [-1, 1].
    reward_range: tuple[float, float] = (0.0, 1.0)
    #: Per-prompt statistic: ``"latest"`` group mean (paper), ``"ema"``, or ``"posterior"``: results weighted by
    #: their rollouts, earlier evidence (a prior's ``confidence`` included) aged by ``prior_half_life``.
    stat: Literal["latest", "ema", "posterior"] = "latest"
    ema_alpha: float = 0.3
    reinsert: Literal["on_drain", "immediate"] = "on_drain"
    #: Drop prompts whose score is the maximum when they return to the heaps.
    drop_solved: bool = False
    priority_epsilon: float = 0.1
    priority_temperature: float = 1.0
    #: Lineage refresh run before each on-drain reinsertion (None = off).
    refresh: Literal["path", "children"] | None = None
    refresh_temperature: float = 1.0
    refresh_blend: float = 0.5
    refresh_direction: Literal["reference", "inverse"] = "reference"
    refresh_scope: Literal["archive", "all"] = "archive"
    #: Bound of the lock-free inbox (items).
    inbox_capacity: int = 65_536
    #: Steps drained inbox items wait before entering the pool.
    delay_steps: int = 0
    #: Minimum revisit interval (``reinsert="immediate"`` only): a trained
    #: prompt sits out (counted as archived) until ``revisit_fraction * held``
    #: more prompts have been drawn; it comes back early only if a draw would
    #: otherwise come up short. 0 = off.
    revisit_fraction: float = 0.0
    #: Order of never-scored prompts: ``"fifo"`` (paper), or ``"prior"``: by the estimate of
    #: their group (``Pool.add(group=...)``) and explicit prior (``prior=``), nearest ``target``
    #: first, so the frontier rule applies before a prompt is ever scored (with medium sampling and
    #: an absolute boundary, on one scale with scored prompts: a nearer score goes first).
    cold: Literal["fifo", "prior"] = "fifo"
    #: ``cold="prior"``: share of each batch's cold draws taken from uniformly chosen
    #: groups (keeps visiting groups whose estimate looks poor).
    explore: float = 0.1
    #: Pseudo-observations of the pool-wide pass rate in each group's estimate.
    prior_strength: float = 4.0
    #: Steps after which a group observation counts half (0 = never ages).
    prior_half_life: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        validate_config(self.to_dict())  # every field's type and range, in the engine
        object.__setattr__(self, "reward_range", tuple(float(x) for x in self.reward_range))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def paper(cls, **overrides: Any) -> PoolConfig:
        """HeaPA as published: split at the median score, draw around it, return trained prompts
        once the pool has been drawn through (on-drain reinsertion)."""
        return cls.from_dict({**PRESETS["paper"], **overrides})

    @classmethod
    def frontier(cls, **overrides: Any) -> PoolConfig:
        """What heapa recommends (docs/efficiency.md, docs/priors.md): split at pass rate ``target`` (0.5),
        draw around it, return trained prompts at once but hold each out until a quarter of the pool has
        been drawn; rank never-scored prompts by their group's and prior's estimates (``cold="prior"``)."""
        return cls.from_dict({**PRESETS["frontier"], **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoolConfig:
        """The config with these fields (unknown names are an error)."""
        unknown = sorted(set(d) - set(CONFIG_FIELDS))
        if unknown:
            raise InvalidInputError(f"unknown config field(s) {unknown}: expected names from {list(CONFIG_FIELDS)}")
        return cls(**{k: (tuple(v) if k == "reward_range" else v) for k, v in d.items()})


class Inbox:
    """Lock-free, bounded hand-off from validator threads to the pool.

    ``push`` never takes the pool's lock; items enter the pool at the next
    :meth:`Pool.drain_inbox`.
    """

    def __init__(self, core: PoolCore) -> None:
        self._core = core

    def push(
        self,
        prompts: Any,
        answers: Any = None,
        metadata: Any = None,
        parents: Any = None,
        difficulty: Any = None,
    ) -> int:
        """Enqueues items in order until full; returns how many were accepted.

        Arguments are those of :meth:`Pool.add` (no rewards: children enter
        with HeaPA's estimate from their parent), checked the same way.
        """
        n = A.length(prompts, "prompts")
        par = None if parents is None else A.ids(parents, "parents")
        dif = None if difficulty is None else A.floats(difficulty, "difficulty")
        return self._core.inbox_push(prompts, answers, A.metadata(metadata, n), par, dif)

    def __len__(self) -> int:
        return self._core.inbox_len()

    @property
    def capacity(self) -> int:
        return self._core.inbox_capacity()


class Pool:
    """A bounded, evolving HeaPA prompt pool.

    Prompts are identified by uint64 ids returned from :meth:`add`. Rewards are
    in ``config.reward_range``; everything returned is in that scale too.
    Thread-safe (one internal lock; the GIL is released for O(n) work).
    """

    #: ``parent`` value of a prompt without a living parent.
    NO_PARENT: int = NO_PARENT

    def __init__(self, config: PoolConfig | None = None, **overrides: Any) -> None:
        if config is None or overrides:
            base = PoolConfig().to_dict() if config is None else config.to_dict()
            config = PoolConfig.from_dict({**base, **overrides})
        self._init(PoolCore(config.to_dict()), config)

    def _init(self, core: PoolCore, config: PoolConfig) -> None:
        self._core = core
        self.config = config
        self.inbox = Inbox(core)

    @classmethod
    def _wrap(cls, core: PoolCore) -> Pool:
        pool = cls.__new__(cls)
        pool._init(core, PoolConfig.from_dict(core.config()))
        return pool

    # ---- mutation --------------------------------------------------------------

    def add(
        self,
        prompts: Any,
        answers: Any = None,
        rewards: Any = None,
        metadata: Any = None,
        parents: Any = None,
        difficulty: Any = None,
        group: Any = None,
        prior: Any = None,
        confidence: Any = None,
    ) -> np.ndarray:
        """Adds prompts; returns their ids (uint64).

        ``rewards`` (user scale) makes prompts enter scored. ``parents`` makes
        each prompt the child of an existing prompt; without a reward it gets
        HeaPA's estimate from the parent's score and ``difficulty`` (the
        policy's self-reported ratio, clamped to [0.75, 1.33]).

        ``group`` (one int or str per prompt, or None: source dataset, level,
        topic…) pools what reports show about a group into an estimate for its
        never-scored members; children inherit their parent's group. ``prior``
        (predicted pass rate in reward scale, NaN = none) is an explicit
        estimate for an unscored prompt, ``confidence`` its weight in
        pseudo-rollouts (blended into the first measured score when
        ``n_rollouts`` is reported). Both rank cold prompts when
        ``cold="prior"``.
        """
        n = A.length(prompts, "prompts")
        rew = None if rewards is None else A.floats(rewards, "rewards")
        par = None if parents is None else A.ids(parents, "parents")
        dif = None if difficulty is None else A.floats(difficulty, "difficulty")
        grp = None if group is None else A.group_keys(group, n)
        pri = None if prior is None else A.floats(prior, "prior")
        con = None if confidence is None else A.floats(confidence, "confidence")
        return self._core.add(prompts, answers, rew, A.metadata(metadata, n), par, dif, grp, pri, con)

    def groups(self) -> dict[int | str, dict[str, float]]:
        """What reports have shown about each group: ``observations`` (decayed count of reported
        prompts), ``pass_rate`` (their mean, NaN if none) and ``estimate`` (shrunk toward the
        pool-wide rate by ``prior_strength``; what ranks the group's cold prompts)."""
        return {
            A.group_key(key): {"observations": n, "pass_rate": rate, "estimate": est}
            for key, n, rate, est in self._core.groups()
        }

    def sample(self, k: int) -> np.ndarray:
        """Draws up to ``k`` prompt ids (cold first, then by ``sampling``; with ``cold="prior"``, medium
        sampling and an absolute boundary, scored prompts nearer the target than every cold estimate
        go before those cold prompts).

        Returns fewer than ``k`` when the pool holds fewer; never blocks.
        Drawn prompts are in flight until :meth:`report` or :meth:`release`.
        """
        return self._core.sample(A.count(k, "k", clamp=True))

    def report(
        self,
        ids: Any,
        rewards: Any,
        n_rollouts: Any = None,
        n_correct: Any = None,
        step: int | None = None,
    ) -> None:
        """Records each in-flight prompt's group-mean reward, by id."""
        i = A.ids(ids)
        r = A.floats(rewards, "rewards")
        nr = None if n_rollouts is None else A.counts(n_rollouts, "n_rollouts")
        nc = None if n_correct is None else A.counts(n_correct, "n_correct")
        s = None if step is None else A.count(step, "step")
        self._core.report(i, r, nr, nc, s)

    def release(self, ids: Any) -> None:
        """Returns in-flight prompts that were never reported, unchanged."""
        self._core.release(A.ids(ids))

    def release_in_flight(self) -> np.ndarray:
        """Releases every prompt in flight and returns their ids: what a pool restored from a
        checkpoint does first, since the rollouts of the prompts it had drawn are gone."""
        ids = self.ids("in_flight")
        self.release(ids)
        return ids

    def refresh(
        self,
        mode: Literal["path", "children"] = "path",
        temperature: float = 1.0,
        blend: float = 0.5,
        direction: Literal["reference", "inverse"] = "reference",
        scope: Literal["archive", "all"] = "archive",
    ) -> int:
        """Topology-aware re-estimation over the lineage forest (PathAgg /
        ChildAgg). Returns how many prompts received a new value."""
        return self._core.refresh(mode, temperature, blend, direction, scope)

    def drain_inbox(self, max: int | None = None, step: int | None = None) -> np.ndarray:  # noqa: A002
        """Moves queued inbox items into the pool; returns the ids added."""
        m = None if max is None else A.count(max, "max")
        s = None if step is None else A.count(step, "step")
        return self._core.drain_inbox(m, s)

    # ---- queries ---------------------------------------------------------------

    def prompts(self, ids: Any) -> list[str]:
        return self._core.prompts(A.ids(ids))

    def answers(self, ids: Any) -> list[str | None]:
        return self._core.answers(A.ids(ids))

    def metadata(self, ids: Any) -> list[Any]:
        i = A.ids(ids)
        try:
            return [None if b is None else json.loads(b) for b in self._core.metadata_raw(i)]
        except ValueError as e:  # only reachable through a damaged snapshot
            raise SnapshotError(f"stored metadata is not valid JSON ({e})") from None

    def records(self, ids: Any) -> dict[str, np.ndarray]:
        """Per-prompt statistics: score (user scale, NaN if unscored), visits,
        rollouts, correct, last_step (-1 if never), state (name), estimated,
        parent (``NO_PARENT`` for roots), difficulty."""
        r = self._core.records(A.ids(ids))
        r["state"] = STATES[r.pop("state_code")]
        return r

    def lineage(self, ids: Any) -> dict[str, np.ndarray]:
        """parent (``NO_PARENT`` for a root), depth, n_children, n_leaves."""
        return self._core.lineage(A.ids(ids))

    def ids(self, state: Literal["cold", "hard", "easy", "in_flight", "archived"]) -> np.ndarray:
        """All ids in one partition (cold in FIFO order; scored hardest first)."""
        return self._core.ids(state)

    def stats(self) -> dict[str, Any]:
        return self._core.stats()

    def fingerprint(self) -> int:
        """Digest of the whole state: equal pools give equal fingerprints."""
        return self._core.fingerprint()

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"Pool(held={s['held']}/{s['capacity']}, cold={s['cold']}, hard={s['hard']}, "
            f"easy={s['easy']}, in_flight={s['in_flight']}, archived={s['archived']})"
        )

    # ---- persistence -------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes a versioned, checksummed snapshot atomically."""
        self._core.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pool:
        return cls._wrap(PoolCore.load(os.fspath(path)))

    def to_bytes(self) -> bytes:
        return self._core.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Pool:
        return cls._wrap(PoolCore.from_bytes(bytes(data)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pool.from_bytes, (self.to_bytes(),))
