"""The pool as a Ray actor: one :class:`heapa.Pool` reachable from every worker of a Ray cluster.

Requires ``pip install "heapa[ray]"``; ``import heapa`` never imports Ray, only ``import heapa.ray`` does::

    import heapa.ray
    from heapa import PoolConfig

    pool = heapa.ray.pool_actor("prompts", PoolConfig.frontier(), checkpoint="/shared/pool.heapa",
                                checkpoint_every=50)
    pool.add(prompts, answers=answers)          # seed once; the actor is detached and named
    pool.checkpoint()                           # from now on a restart comes back with these prompts
    ids = pool.step(k=512)                      # first batch
    while training:
        rewards, n_rollouts, n_correct = rollout(pool.prompts(ids))
        ids = pool.step(ids, rewards, n_rollouts, n_correct, k=512)   # report + next batch: ONE actor call

Any process of the cluster gets the same actor with ``pool_actor("prompts")`` (or ``heapa.ray.get_pool``);
``PoolClient`` objects pickle, so they can be passed to Ray tasks and actors as they are.

Design (docs/ray.md has the numbers):

* **One call per training step.** :meth:`PoolActor.step` reports the last batch, optionally releases and
  drains the inbox, and samples the next batch in one actor call. Only ids (``uint64``, 4 KiB for 512)
  cross the boundary unless ``payload=True`` asks for the prompt texts in the same call.
* **Serialised by default.** Ray runs one method of an actor at a time (``max_concurrency=1``), so every
  call, ``step`` included, is atomic with respect to the other clients. ``Pool`` is thread-safe, so
  ``pool_actor(..., max_concurrency=N)`` (a threaded actor) is also correct; then each pool operation stays
  atomic but a ``step`` is no longer atomic as a whole (another client's call may run between its report and
  its sample), which changes nothing a client can observe except the order of draws.
* **Typed errors.** A ``HeapaError`` raised inside the actor reaches ``PoolClient`` callers as exactly the
  same class (``InvalidInputError``, ``UnknownPromptError``, ...), unwrapped from Ray's ``RayTaskError``.
  Callers of the raw handle (``client.actor.step.remote(...)`` + ``ray.get``) receive Ray's dual exception,
  which is an instance of both ``RayTaskError`` and the heapa class, so ``except heapa.InvalidInputError``
  works there too.
* **Checkpoints and restarts.** With ``checkpoint=PATH`` the actor saves its pool to PATH on
  :meth:`PoolActor.checkpoint` and after every ``checkpoint_every`` reported batches (``Pool.save``:
  atomic, checksummed). When Ray restarts the actor (``max_restarts``), the new incarnation loads PATH
  (the fingerprint the last ``checkpoint()`` returned) and releases every prompt that was in flight at that
  checkpoint: those prompts are back in the pool, unchanged, never lost. Everything after the last
  checkpoint is lost: prompts added, reports, inbox items pushed or drained, and draws (the RNG rewinds).
  Batches that clients hold across a restart are stale: drop them (pass ``expect_epoch`` to make the actor
  refuse them).
"""

from __future__ import annotations

import os
import struct
import threading
import uuid
from typing import Any, NamedTuple

import numpy as np
import ray
from ray.exceptions import RayTaskError

from . import _arrays as A
from ._pool import Pool, PoolConfig
from .exceptions import HeapaError, InvalidInputError

__all__ = ["PoolActor", "PoolClient", "StepBatch", "get_pool", "pool_actor"]


class StepBatch(NamedTuple):
    """A batch with its payloads (``step(..., payload=True)``)."""

    ids: np.ndarray
    prompts: list[str]
    answers: list[str | None]
    metadata: list[Any]
    epoch: str


def _config_dict(config: PoolConfig | dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    if isinstance(config, PoolConfig):
        return config.to_dict()
    return PoolConfig.from_dict(dict(config)).to_dict()  # validated, defaults filled in


# ---- the packed wire format of PoolClient's hot calls ------------------------------------------------
# Ray serialises every argument and result of an actor call separately, and on a small machine each numpy
# array (or even each extra scalar argument) adds a sizeable fraction of an empty call. So PoolClient sends
# a whole step as ONE bytes object and the actor answers with the drawn ids as bytes. Layout: a uint64
# header [has_report, n, has_rollouts, has_correct, k, step + 1 (0: none), flags (1: drain_inbox,
# 2: payload), n_release], then
# ids uint64[n], rewards float64[n], n_rollouts uint32[n] (if any), n_correct uint32[n] (if any),
# release ids uint64[n_release].

_HEADER = 8
_HEAD = struct.Struct("<8Q")
_U32_MAX = 0xFFFFFFFF


def _wire_counts(x: Any, name: str) -> np.ndarray:
    """A count column as uint32 for the wire: numpy integer arrays take a fast path (one min/max check, no
    temporaries); anything else goes through the checks ``Pool`` applies."""
    if isinstance(x, np.ndarray) and x.ndim == 1 and x.size and x.dtype.kind in "iu":
        if x.dtype == np.uint32:
            return np.ascontiguousarray(x)
        if x.min() >= 0 and x.max() <= _U32_MAX:
            return x.astype(np.uint32)
    return A.counts(x, name)  # lists, other dtypes, and the error message for a bad value


def _pack(
    ids: Any = None,
    rewards: Any = None,
    n_rollouts: Any = None,
    n_correct: Any = None,
    *,
    k: int = 0,
    step: int | None = None,
    release_ids: Any = None,
    drain_inbox: bool = False,
    payload: bool = False,
) -> bytes:
    """One request in the packed wire format (arguments checked as ``Pool`` checks them)."""
    if (ids is None) != (rewards is None):
        raise InvalidInputError("step(): report_ids and rewards go together")
    kk = A.count(k, "k", clamp=True)
    st = 0 if step is None else A.count(step, "step") + 1
    parts: list[np.ndarray] = []
    n, nr, nc = 0, None, None
    if ids is not None:
        i = A.ids(ids)
        r = A.floats(rewards, "rewards")
        nr = None if n_rollouts is None else _wire_counts(n_rollouts, "n_rollouts")
        nc = None if n_correct is None else _wire_counts(n_correct, "n_correct")
        n = len(i)
        for name, col in (("rewards", r), ("n_rollouts", nr), ("n_correct", nc)):
            if col is not None:
                A.one_each(col, n, name, per="id")
        parts = [i, r] + [c for c in (nr, nc) if c is not None]
    n_rel = 0
    if release_ids is not None:
        rel = A.ids(release_ids, "release_ids")
        n_rel = len(rel)
        parts.append(rel)
    flags = bool(drain_inbox) | 2 * bool(payload)
    head = _HEAD.pack(ids is not None, n, nr is not None, nc is not None, kk, st, flags, n_rel)
    return b"".join([head, *parts])  # contiguous arrays join through the buffer protocol: one copy


def _unpack(buf: bytes) -> dict[str, Any]:
    """The keyword arguments of :meth:`PoolActor.step` from a packed request (exact dtypes, read-only views
    into ``buf``)."""
    try:
        has_report, n, has_nr, has_nc, k, st, flags, n_rel = _HEAD.unpack_from(buf)
        at = 8 * _HEADER
        out: dict[str, Any] = {"report_ids": None, "rewards": None, "n_rollouts": None, "n_correct": None}
        if has_report:
            out["report_ids"] = np.frombuffer(buf, np.uint64, n, at)
            at += 8 * n
            out["rewards"] = np.frombuffer(buf, np.float64, n, at)
            at += 8 * n
            if has_nr:
                out["n_rollouts"] = np.frombuffer(buf, np.uint32, n, at)
                at += 4 * n
            if has_nc:
                out["n_correct"] = np.frombuffer(buf, np.uint32, n, at)
                at += 4 * n
        rel = np.frombuffer(buf, np.uint64, n_rel, at) if n_rel else None
        at += 8 * n_rel
    except (ValueError, TypeError, struct.error) as e:
        raise InvalidInputError(f"packed request: malformed buffer ({e})") from None
    if at != len(buf):
        raise InvalidInputError(f"packed request: {len(buf)} bytes, expected {at}")
    out.update(k=k, step=None if st == 0 else st - 1, release_ids=rel)
    out.update(drain_inbox=bool(flags & 1), payload=bool(flags & 2))
    return out


def _ids_from(buf: bytes) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.uint64).copy()


class PoolActor:
    """The Ray actor class: owns one :class:`heapa.Pool`; every method is one batch operation.

    Create it through :func:`pool_actor` (named, detached, restartable); ``ray.remote(PoolActor)`` works too.
    Arguments and results are numpy arrays and plain Python values, as with :class:`heapa.Pool`.
    """

    def __init__(
        self,
        config: PoolConfig | dict[str, Any] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 0,
    ) -> None:
        self._checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self._every = A.count(checkpoint_every, "checkpoint_every")
        if self._every and self._checkpoint is None:
            raise InvalidInputError("checkpoint_every needs a checkpoint path")
        self._lock = threading.Lock()  # the step counter, for threaded actors
        self._reports = 0
        self._epoch = uuid.uuid4().hex
        cfg = _config_dict(config)
        self._restored: dict[str, Any] | None = None
        if self._checkpoint is not None and os.path.exists(self._checkpoint):
            pool = Pool.load(self._checkpoint)
            if cfg is not None and pool.config.to_dict() != cfg:
                diff = sorted(k for k in cfg if cfg[k] != pool.config.to_dict().get(k))
                raise InvalidInputError(
                    f"checkpoint {self._checkpoint} holds a pool with another config (fields {diff} differ); "
                    "pass config=None to resume it as saved, or another checkpoint path"
                )
            loaded = pool.fingerprint()
            released = pool.release_in_flight()
            self._restored = {
                "path": self._checkpoint,
                "loaded_fingerprint": loaded,
                "released": len(released),
                "fingerprint": pool.fingerprint(),
            }
        else:
            pool = Pool(PoolConfig.from_dict(cfg) if cfg is not None else PoolConfig())
        self._pool = pool

    # ---- actor bookkeeping -------------------------------------------------------

    def ping(self) -> None:
        """Does nothing: the cost of this call is Ray's floor for one actor round trip."""

    def info(self) -> dict[str, Any]:
        """Config, checkpoint path and interval, this incarnation's epoch and what it restored (or None)."""
        return {
            "config": self._pool.config.to_dict(),
            "checkpoint": self._checkpoint,
            "checkpoint_every": self._every,
            "epoch": self._epoch,
            "restored": self._restored,
            "reports": self._reports,
        }

    def epoch(self) -> str:
        """A token that changes when the actor restarts (pass it back as ``expect_epoch``)."""
        return self._epoch

    def checkpoint(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Saves the pool (to ``path``, default the actor's checkpoint path).

        Returns ``{"path", "fingerprint", "in_flight"}``: the fingerprint of the state saved. A restarted
        actor loads exactly this state, then releases the ``in_flight`` prompts (so its fingerprint equals
        this one when nothing was in flight).
        """
        return self._save(path)

    def _save(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        target = self._checkpoint if path is None else os.fspath(path)
        if target is None:
            raise InvalidInputError("checkpoint(): no path given and the actor has no checkpoint path")
        self._pool.save(target)  # under the pool's lock: the file is one consistent state
        return {"path": target, "fingerprint": self._pool.fingerprint(), "in_flight": self._pool.stats()["in_flight"]}

    def _reported(self) -> None:
        if not self._every:
            return
        with self._lock:
            self._reports += 1
            due = self._reports % self._every == 0
        if due:
            self._save()

    def _check_epoch(self, expect_epoch: str | None) -> None:
        if expect_epoch is not None and expect_epoch != self._epoch:
            raise InvalidInputError(
                f"stale batch: it was drawn from actor epoch {expect_epoch}, but the actor restarted "
                f"(epoch {self._epoch}) and released or rewound it; drop the batch and sample again"
            )

    # ---- the batch API (heapa.Pool's methods) ----------------------------------

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
        return self._pool.add(
            prompts, answers, rewards, metadata, parents, difficulty, group=group, prior=prior, confidence=confidence
        )

    def groups(self) -> dict:
        return self._pool.groups()

    def sample(self, k: int) -> np.ndarray:
        return self._pool.sample(k)

    def report(
        self,
        ids: Any,
        rewards: Any,
        n_rollouts: Any = None,
        n_correct: Any = None,
        step: int | None = None,
        expect_epoch: str | None = None,
    ) -> None:
        self._check_epoch(expect_epoch)
        self._pool.report(ids, rewards, n_rollouts, n_correct, step)
        self._reported()

    def release(self, ids: Any, expect_epoch: str | None = None) -> None:
        self._check_epoch(expect_epoch)
        self._pool.release(ids)

    def step(
        self,
        report_ids: Any = None,
        rewards: Any = None,
        n_rollouts: Any = None,
        n_correct: Any = None,
        *,
        k: int,
        step: int | None = None,
        release_ids: Any = None,
        drain_inbox: bool = False,
        payload: bool = False,
        expect_epoch: str | None = None,
    ) -> np.ndarray | StepBatch:
        """One training step's pool traffic in one call: report the last batch (``report_ids`` with their
        ``rewards`` and optional counts), release ``release_ids`` (drawn, never trained), drain the inbox
        (``drain_inbox=True``, with ``step``), then sample ``k`` ids.

        Returns the ids, or a :class:`StepBatch` with the prompts, answers and metadata when ``payload``.
        ``k`` and ``expect_epoch`` are checked before anything changes; the report and the release are each
        validated whole before they apply (a bad release after a good report leaves the report applied).

        """
        kk = A.count(k, "k", clamp=True)
        self._check_epoch(expect_epoch)
        if (report_ids is None) != (rewards is None):
            raise InvalidInputError("step(): report_ids and rewards go together")
        if report_ids is not None:
            report_ids = A.ids(report_ids)
            rewards = A.floats(rewards, "rewards")
            n_rollouts = None if n_rollouts is None else A.counts(n_rollouts, "n_rollouts")
            n_correct = None if n_correct is None else A.counts(n_correct, "n_correct")
        if release_ids is not None:
            release_ids = A.ids(release_ids, "release_ids")
        return self._step(report_ids, rewards, n_rollouts, n_correct, kk, step, release_ids, drain_inbox, payload)

    def _step(
        self,
        report_ids: np.ndarray | None,
        rewards: np.ndarray | None,
        n_rollouts: np.ndarray | None,
        n_correct: np.ndarray | None,
        k: int,
        step: int | None,
        release_ids: np.ndarray | None,
        drain_inbox: bool,
        payload: bool,
    ) -> np.ndarray | StepBatch:
        """:meth:`step` on arrays of the engine's exact dtypes (uint64 ids, float64 rewards, uint32 counts):
        straight to the engine, without converting or re-checking them (lengths, ids and values are checked
        by the engine)."""
        core = self._pool._core
        s = None if step is None else A.count(step, "step")
        if report_ids is not None:
            core.report(report_ids, rewards, n_rollouts, n_correct, s)
            self._reported()
        if release_ids is not None:
            core.release(release_ids)
        if drain_inbox:
            core.drain_inbox(None, s)
        ids = core.sample(min(k, A.UNBOUNDED))
        if not payload:
            return ids
        pool = self._pool
        return StepBatch(ids, pool.prompts(ids), pool.answers(ids), pool.metadata(ids), self._epoch)

    def step_packed(
        self, request: bytes, expect_epoch: str | None = None
    ) -> bytes | tuple[bytes, list[str], list[str | None], list[Any], str]:
        """:meth:`step` in the packed wire format (what :class:`PoolClient` sends): one bytes object in, the
        ids as bytes out (with the payload columns and the epoch when the request asks for them). The request's
        arrays already have the engine's dtypes, so they go to the engine as they are."""
        args = _unpack(request)
        self._check_epoch(expect_epoch)
        out = self._step(**args)
        if isinstance(out, StepBatch):
            return (out.ids.tobytes(), out.prompts, out.answers, out.metadata, out.epoch)
        return out.tobytes()

    def refresh(
        self,
        mode: str = "path",
        temperature: float = 1.0,
        blend: float = 0.5,
        direction: str = "reference",
        scope: str = "archive",
    ) -> int:
        return self._pool.refresh(mode, temperature, blend, direction, scope)  # type: ignore[arg-type]

    def drain_inbox(self, max: int | None = None, step: int | None = None) -> np.ndarray:  # noqa: A002
        return self._pool.drain_inbox(max, step)

    def inbox_push(
        self,
        prompts: Any,
        answers: Any = None,
        metadata: Any = None,
        parents: Any = None,
        difficulty: Any = None,
    ) -> int:
        """``pool.inbox.push``: returns how many items were accepted (the inbox is bounded)."""
        return self._pool.inbox.push(prompts, answers, metadata, parents, difficulty)

    def inbox_len(self) -> int:
        return len(self._pool.inbox)

    def prompts(self, ids: Any) -> list[str]:
        return self._pool.prompts(ids)

    def answers(self, ids: Any) -> list[str | None]:
        return self._pool.answers(ids)

    def metadata(self, ids: Any) -> list[Any]:
        return self._pool.metadata(ids)

    def records(self, ids: Any) -> dict[str, np.ndarray]:
        return self._pool.records(ids)

    def lineage(self, ids: Any) -> dict[str, np.ndarray]:
        return self._pool.lineage(ids)

    def ids(self, state: str) -> np.ndarray:
        return self._pool.ids(state)  # type: ignore[arg-type]

    def stats(self) -> dict[str, Any]:
        return self._pool.stats()

    def fingerprint(self) -> int:
        return self._pool.fingerprint()

    def size(self) -> int:
        """``len(pool)``: prompts held."""
        return len(self._pool)

    def save(self, path: str | os.PathLike[str]) -> None:
        self._pool.save(path)

    def to_bytes(self) -> bytes:
        """The whole pool as bytes (``Pool.from_bytes`` rebuilds it in the caller's process)."""
        return self._pool.to_bytes()


def _unwrap(err: RayTaskError) -> BaseException:
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, HeapaError) else err


def _call(ref: Any) -> Any:
    try:
        return ray.get(ref)
    except RayTaskError as err:
        exc = _unwrap(err)
        if exc is err:
            raise
        raise exc from None


class PoolClient:
    """A blocking handle on a pool actor with :class:`heapa.Pool`'s methods (one actor call each).

    ``actor`` is the raw Ray handle for pipelined calls (``client.actor.step.remote(...)``). Heapa errors
    are re-raised as their own classes. Picklable: pass it to Ray tasks and actors.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def __reduce__(self) -> tuple[Any, ...]:
        return (PoolClient, (self.actor,))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or not callable(getattr(PoolActor, name, None)):
            raise AttributeError(name)
        method = getattr(self.actor, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return _call(method.remote(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = getattr(PoolActor, name).__doc__
        return call

    # The hot calls, spelled out: they travel in the packed wire format (one bytes object each way).
    def step(
        self,
        report_ids: Any = None,
        rewards: Any = None,
        n_rollouts: Any = None,
        n_correct: Any = None,
        *,
        k: int,
        step: int | None = None,
        release_ids: Any = None,
        drain_inbox: bool = False,
        payload: bool = False,
        expect_epoch: str | None = None,
    ) -> np.ndarray | StepBatch:
        """:meth:`PoolActor.step` in one actor call: report the last batch, release, drain, sample ``k``."""
        request = _pack(
            report_ids,
            rewards,
            n_rollouts,
            n_correct,
            k=k,
            step=step,
            release_ids=release_ids,
            drain_inbox=drain_inbox,
            payload=payload,
        )
        method = self.actor.step_packed
        ref = method.remote(request) if expect_epoch is None else method.remote(request, expect_epoch)
        out = _call(ref)
        if isinstance(out, tuple):
            return StepBatch(_ids_from(out[0]), *out[1:])
        return _ids_from(out)

    def sample(self, k: int) -> np.ndarray:
        """Draws up to ``k`` ids (one call, packed)."""
        return self.step(k=k)  # type: ignore[return-value]

    def report(
        self,
        ids: Any,
        rewards: Any,
        n_rollouts: Any = None,
        n_correct: Any = None,
        step: int | None = None,
        expect_epoch: str | None = None,
    ) -> None:
        """Reports a batch by id (one call, packed)."""
        self.step(ids, rewards, n_rollouts, n_correct, k=0, step=step, expect_epoch=expect_epoch)

    def release(self, ids: Any, expect_epoch: str | None = None) -> None:
        """Releases in-flight ids (one call, packed)."""
        self.step(k=0, release_ids=ids, expect_epoch=expect_epoch)

    def __len__(self) -> int:
        return int(_call(self.actor.size.remote()))

    def __repr__(self) -> str:
        return f"PoolClient({self.actor!r})"


def pool_actor(
    name: str,
    config: PoolConfig | dict[str, Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    checkpoint_every: int = 0,
    namespace: str | None = None,
    max_restarts: int = -1,
    max_concurrency: int = 1,
    num_cpus: float = 0,
    detached: bool = True,
    **options: Any,
) -> PoolClient:
    """Gets the pool actor called ``name``, or creates it.

    Created detached (it outlives the driver; stop it with ``ray.kill(client.actor)``) and restartable
    (``max_restarts``, -1 = always); a new or restarted actor resumes from ``checkpoint`` when the file
    exists. ``checkpoint_every`` = N saves after every N reported batches (0: only on ``checkpoint()``).
    ``num_cpus`` reserves CPUs for it (0: it mostly waits for calls); other keyword arguments go to Ray's
    ``.options()`` (``resources``, ``scheduling_strategy``, ...).

    When the actor exists already, ``config`` and ``checkpoint`` (if given) must match its own, else
    ``InvalidInputError``.
    """
    cfg = _config_dict(config)
    ckpt = None if checkpoint is None else os.path.abspath(os.fspath(checkpoint))
    opts: dict[str, Any] = {
        "name": name,
        "get_if_exists": True,
        "max_restarts": max_restarts,
        "max_task_retries": 0,  # a call that died with the actor is not replayed on the restored state
        "max_concurrency": max_concurrency,
        "num_cpus": num_cpus,
        **options,
    }
    if namespace is not None:
        opts["namespace"] = namespace
    if detached:
        opts["lifetime"] = "detached"
    handle = ray.remote(PoolActor).options(**opts).remote(cfg, ckpt, checkpoint_every)
    client = PoolClient(handle)
    info = client.info()
    if cfg is not None and info["config"] != cfg:
        diff = sorted(k for k in cfg if cfg[k] != info["config"].get(k))
        raise InvalidInputError(f"pool actor {name!r} exists with another config (fields {diff} differ)")
    if ckpt is not None and info["checkpoint"] != ckpt:
        raise InvalidInputError(f"pool actor {name!r} exists with checkpoint {info['checkpoint']!r}, not {ckpt!r}")
    return client


def get_pool(name: str, namespace: str | None = None) -> PoolClient:
    """The existing pool actor called ``name`` (``ValueError`` from Ray if there is none)."""
    return PoolClient(ray.get_actor(name, namespace=namespace))
