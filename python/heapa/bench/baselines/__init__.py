"""Pure-Python baselines for heapa's microbenchmarks.

Two re-implementations of the same prompt-pool semantics as ``heapa.Pool``,
written from the documented behaviour (``reference-spec.md`` and issues 2-3),
so one benchmark driver can run all three side by side:

* :mod:`.reference_design` -- the reference implementation's *approach*:
  ``heapq`` twin heaps with lazy deletion and a periodic deep clean, linear
  scans for updates and for hardest-item eviction (+ full ``heapify``),
  dict-of-sets lineage with a recursive DFS, ``pickle`` checkpoints.
* :mod:`.best_python` -- the best reasonable pure-Python design of the same
  semantics: ``heapq`` + dense integer ids + lazy deletion by sequence number,
  numpy for batch work, iterative (level-synchronous) lineage passes.

Both expose the subset of the ``heapa.Pool`` API the benchmarks use:
``add``, ``sample``, ``report``, ``release``, ``refresh``, ``inbox.push``,
``drain_inbox``, ``save``, ``load`` (classmethod), ``stats`` and ``len()``.

Shared semantics (scores are normalised to [-1, 1], higher = easier):

* unscored prompts wait in a FIFO *cold* queue and are sampled first;
* scored prompts are split at the ``low_fraction`` quantile into a *hard* and
  an *easy* side (``best_python`` keeps the split exact, ``reference_design``
  approximates it with the reference's lazy <= 4-move rebalance);
* sampled prompts are *in flight* until ``report`` (-> archive, or straight
  back to the heaps with ``reinsert="immediate"``) or ``release``;
* with ``reinsert="on_drain"`` the archive returns, shuffled, when ``sample``
  finds fewer than ``k`` live prompts;
* ``capacity`` bounds every held prompt (live + archived + in flight); the
  hardest scored prompt (live or archived, new ones included) is evicted
  first, cold prompts last (oldest first), in-flight prompts never.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

#: sentinel for "no parent" in ``parents`` arrays (u64::MAX).
NO_PARENT = np.iinfo(np.uint64).max

# Prompt states (used by ``best_python``'s state column and by tests).
COLD, HARD, EASY, IN_FLIGHT, ARCHIVED, EVICTED = range(6)

SAMPLING_MODES = ("medium", "mixed", "uniform", "prioritized")
_SAMPLING_ALIASES = {"easy_medium_mixed": "mixed", "mixed_easy_medium": "mixed"}

DIFFICULTY_MIN, DIFFICULTY_MAX = 0.75, 1.33


class CapacityError(RuntimeError):
    """Raised when a batch cannot fit even after evicting everything evictable."""


class ReferenceCrash(RuntimeError):
    """The reference design hit a failure the reference itself would crash on.

    Raised by ``reference_design.refresh`` when its recursive acyclicity DFS
    overflows the interpreter stack (reference bug B11).
    """


def check_supported(boundary: str, eviction: str, reinsert: str) -> None:
    """The subset of heapa's configuration both baselines implement."""
    if boundary != "quantile":
        raise NotImplementedError("baselines implement boundary='quantile' only")
    if eviction != "hardest":
        raise NotImplementedError("baselines implement eviction='hardest' only")
    if reinsert not in ("on_drain", "immediate"):
        raise ValueError(f"bad reinsert {reinsert!r}")


def check_refresh_args(mode: str, scope: str) -> None:
    if mode not in ("path", "children"):
        raise ValueError(f"mode must be 'path' or 'children', got {mode!r}")
    if scope not in ("archive", "all"):
        raise ValueError(f"scope must be 'archive' or 'all', got {scope!r}")


def canonical_sampling(mode: str) -> str:
    mode = _SAMPLING_ALIASES.get(mode, mode)
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    return mode


def target_hard(n_scored: int, low_fraction: float) -> int:
    """Number of scored prompts that belong on the hard side."""
    return int(low_fraction * n_scored + 0.5)


def to_score(rewards, reward_range) -> np.ndarray:
    """User-scale rewards -> normalised scores in [-1, 1]."""
    lo, hi = reward_range
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError("rewards must be one-dimensional")
    if not np.all(np.isfinite(r)) or np.any(r < lo) or np.any(r > hi):
        raise ValueError(f"rewards must be finite and within {reward_range}")
    return 2.0 * (r - lo) / (hi - lo) - 1.0


def from_score(scores, reward_range) -> np.ndarray:
    lo, hi = reward_range
    return lo + (np.asarray(scores, dtype=np.float64) + 1.0) * 0.5 * (hi - lo)


def clamp_difficulty(difficulty, n: int) -> np.ndarray:
    if difficulty is None:
        return np.ones(n, dtype=np.float64)
    d = np.asarray(difficulty, dtype=np.float64)
    if d.shape != (n,):
        raise ValueError(f"difficulty must have shape ({n},), got {d.shape}")
    return np.clip(np.where(np.isfinite(d), d, 1.0), DIFFICULTY_MIN, DIFFICULTY_MAX)


def child_estimate(parent_score, d):
    """HeaPA estimate for a new child: s/d if s >= 0 else s*d, clipped to [-1, 1]."""
    s = np.asarray(parent_score, dtype=np.float64)
    return np.clip(np.where(s >= 0, s / d, s * d), -1.0, 1.0)


def adjust(v, d, direction: str):
    """Difficulty adjustment g(v, d) applied to a child's value during refresh."""
    if direction == "reference":
        return np.where(v >= 0, v / d, v * d)
    if direction == "inverse":
        return np.where(v >= 0, v * d, v / d)
    raise ValueError(f"direction must be 'reference' or 'inverse', got {direction!r}")


def adjust_scalar(v: float, d: float, direction: str) -> float:
    if direction == "reference":
        return v / d if v >= 0 else v * d
    return v * d if v >= 0 else v / d


class Inbox:
    """Bounded, thread-safe hand-off queue (the reference uses a deque + lock)."""

    def __init__(self, capacity: int = 65536):
        self.capacity = int(capacity)
        self._items: deque = deque()
        self._lock = threading.Lock()
        self.pushed = 0
        self.rejected = 0

    def push(self, prompts, answers=None, parents=None, difficulty=None, metadata=None) -> int:
        n = len(prompts)
        with self._lock:
            room = max(0, self.capacity - len(self._items))
            take = min(n, room)
            for i in range(take):
                self._items.append(
                    (
                        prompts[i],
                        None if answers is None else answers[i],
                        None if parents is None else int(parents[i]),
                        1.0 if difficulty is None else float(difficulty[i]),
                        None if metadata is None else metadata[i],
                    )
                )
            self.pushed += take
            self.rejected += n - take
        return take

    def take(self, max_items: int | None = None) -> list[tuple]:
        with self._lock:
            n = len(self._items) if max_items is None else min(max_items, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self):
        return {"capacity": self.capacity, "items": list(self._items), "pushed": self.pushed, "rejected": self.rejected}

    def __setstate__(self, state):
        self.__init__(state["capacity"])
        self._items.extend(state["items"])
        self.pushed, self.rejected = state["pushed"], state["rejected"]


class BaselinePool:
    """Configuration shared by both baselines: the subset of ``PoolConfig`` they implement."""

    #: Range ``low_fraction`` is clipped to.
    LOW_FRACTION_RANGE = (0.0, 1.0)

    def __init__(
        self,
        capacity: int = 1_000_000,
        boundary: str = "quantile",
        low_fraction: float = 0.5,
        sampling: str = "medium",
        eviction: str = "hardest",
        reward_range: tuple[float, float] = (0.0, 1.0),
        reinsert: str = "on_drain",
        refresh: str | None = None,
        inbox_capacity: int = 65536,
        seed: int = 0,
        epsilon: float = 0.1,
        temperature: float = 1.0,
        **_unused,
    ):
        check_supported(boundary, eviction, reinsert)
        lo, hi = self.LOW_FRACTION_RANGE
        self.capacity = int(capacity)
        self.low_fraction = min(max(float(low_fraction), lo), hi)
        self.sampling = canonical_sampling(sampling)
        self.reward_range = (float(reward_range[0]), float(reward_range[1]))
        self.reinsert = reinsert
        self.refresh_mode = refresh
        self.epsilon = float(epsilon)
        self.temperature = float(temperature)
        self._rng = np.random.default_rng(seed)
        self.inbox = Inbox(inbox_capacity)

    def _in_flight_count(self) -> int:
        raise NotImplementedError

    def add(self, prompts, answers=None, rewards=None, metadata=None, parents=None, difficulty=None) -> np.ndarray:
        raise NotImplementedError

    def drain_inbox(self, max=None, step=None) -> np.ndarray:  # noqa: A002 - mirrors heapa's API
        """Admits up to ``max`` queued children through ``add``; returns their ids."""
        if self._in_flight_count() >= self.capacity:  # nothing could be admitted
            return np.empty(0, dtype=np.uint64)
        items = self.inbox.take(max)
        if not items:
            return np.empty(0, dtype=np.uint64)
        prompts, kwargs = split_inbox_items(items)
        return self.add(prompts, **kwargs)


def split_inbox_items(items: list[tuple]):
    """Inbox tuples -> keyword arguments for ``add`` (parents only if any)."""
    prompts = [it[0] for it in items]
    answers = [it[1] for it in items]
    parents = [it[2] for it in items]
    difficulty = np.array([it[3] for it in items], dtype=np.float64)
    kwargs = {"answers": answers if any(a is not None for a in answers) else None}
    if any(p is not None for p in parents):
        kwargs["parents"] = np.array([NO_PARENT if p is None else p for p in parents], dtype=np.uint64)
        kwargs["difficulty"] = difficulty
    return prompts, kwargs


def make_pool(name: str, **config):
    """Build a baseline pool by name (``"best_python"`` or ``"reference_design"``)."""
    if name == "best_python":
        from .best_python import BestPythonPool

        return BestPythonPool(**config)
    if name == "reference_design":
        from .reference_design import ReferenceDesignPool

        return ReferenceDesignPool(**config)
    raise ValueError(f"unknown baseline {name!r}")


BASELINES = ("best_python", "reference_design")
