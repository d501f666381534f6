"""The asynchronous validation pipeline: bounded queues, background workers, commit to the inbox.

Candidates wait in a bounded queue; worker threads run the validator chain and hand accepted ones to
``commit`` (which pushes them to the pool's lock-free inbox and returns how many it took; the rest are
retried). Stages that need the policy park the candidate until the main process attaches completions
(``take_parked`` / ``give_back``), so the policy only ever runs on the training thread.

Every candidate ends in exactly one of: accepted (counted once, inserted once), rejected/<reason>, or
still held (queued, parked, being validated, or accepted and waiting for inbox room). The held ones are
what ``state_dict`` captures; ``paused()`` stops commits so that a pool snapshot and the pipeline state
can be taken at the same instant (nothing lost, nothing inserted twice on resume).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from ._validators import Candidate, Validator, Verdict, valid_text

__all__ = ["ChainResult", "Outcome", "PolicyWork", "ValidationPipeline"]

logger = logging.getLogger("heapa.augment")

STATE_VERSION = 1

# What ``commit`` raises for a batch holding an item it can never take (the pool binding raises
# InvalidInputError, a ValueError, or UnicodeEncodeError for text that is not valid UTF-8).
_INPUT_ERRORS = (ValueError, TypeError)


class PolicyWork(NamedTuple):
    """A parked candidate and the validator whose stage needs policy completions for it."""

    candidate: Candidate
    validator: Validator


class Outcome(enum.Enum):
    """Where a candidate goes after a run of the validator chain."""

    ACCEPT = "accept"  # every validator accepted: on to the commit check and the inbox
    REJECT = "reject"  # a final rejection
    RETRY = "retry"  # a transient failure: back to the queue (up to max_requeues)
    PARK = "park"  # the next stage needs the policy: wait for the main process


class ChainResult(NamedTuple):
    """A run of the validator chain on one candidate: the outcome and the verdict that decided it."""

    outcome: Outcome
    verdict: Verdict | None = None


class ValidationPipeline:
    """Runs ``validators`` on ``workers`` threads over at most ``max_queue`` held candidates.

    commit: ``commit(candidates) -> int``: inserts a prefix of the accepted candidates, returns its length;
        raises ``ValueError`` / ``TypeError`` (inserting nothing) when an item can never be inserted: such
        items are found by bisection and rejected (``invalid_input``), the others inserted.
    require_answer: a candidate leaving the chain without a ground-truth answer is rejected (``no_answer``).
    max_requeues: how often a transient validator failure sends a candidate back to the queue before it
        is rejected with that validator's error reason.
    on_result: ``on_result(candidate, accepted, reason)``, called under the pipeline lock.
    check_commit: ``check_commit(candidate) -> reason | None``, a last check before an accept counts.
    on_change: called after a validator rewrote the problem (to refresh derived fields).
    """

    def __init__(
        self,
        validators: Sequence[Validator],
        commit: Callable[[list[Candidate]], int],
        *,
        workers: int = 2,
        max_queue: int = 1024,
        max_requeues: int = 1,
        require_answer: bool = True,
        on_result: Callable[[Candidate, bool, str], None] | None = None,
        check_commit: Callable[[Candidate], str | None] | None = None,
        on_change: Callable[[Candidate], None] | None = None,
        latency_window: int = 512,
        flush_interval: float = 0.2,
    ) -> None:
        if workers < 1 or max_queue < 1 or max_requeues < 0:
            raise ValueError("ValidationPipeline: workers >= 1, max_queue >= 1, max_requeues >= 0 required")
        names = [v.name for v in validators]
        if len(set(names)) != len(names):
            raise ValueError(f"ValidationPipeline: validator names must be unique, got {names}")
        self.validators = list(validators)
        self._commit = commit
        self.workers = int(workers)
        self.max_queue = int(max_queue)
        self.max_requeues = int(max_requeues)
        self.require_answer = require_answer
        self._on_result = on_result
        self._check_commit = check_commit
        self._on_change = on_change
        self._flush_interval = flush_interval
        self._cv = threading.Condition(threading.RLock())
        self._queue: deque[Candidate] = deque()
        self._parked: deque[Candidate] = deque()
        self._taken: dict[str, Candidate] = {}  # parked candidates the main process is generating for
        self._inflight: dict[str, dict[str, Any]] = {}  # uid -> snapshot taken when a worker picked it up
        self._pending: deque[Candidate] = deque()  # accepted, waiting for room in the inbox
        self._latency: deque[float] = deque(maxlen=latency_window)
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._drain = False
        self._generation = 0
        self.counts: Counter[str] = Counter()

    # ------------------------------------------------------------------ sizes

    def depth(self) -> int:
        """Candidates held before a verdict: queued, parked (incl. taken) and being validated."""
        with self._cv:
            return len(self._queue) + len(self._parked) + len(self._taken) + len(self._inflight)

    def room(self) -> int:
        return max(0, self.max_queue - self.depth())

    def sizes(self) -> dict[str, int]:
        with self._cv:
            return {
                "queued": len(self._queue),
                "parked": len(self._parked) + len(self._taken),
                "in_flight": len(self._inflight),
                "pending_insert": len(self._pending),
            }

    def latency(self) -> dict[str, float]:
        """Seconds from enqueue to verdict over the recent window (empty dict before the first)."""
        with self._cv:
            xs = sorted(self._latency)
        if not xs:
            return {}
        return {
            "mean": sum(xs) / len(xs),
            "p50": xs[len(xs) // 2],
            "p95": xs[min(len(xs) - 1, int(0.95 * len(xs)))],
            "max": xs[-1],
        }

    # ------------------------------------------------------------------ input

    def submit(self, candidates: Sequence[Candidate]) -> int:
        """Enqueues candidates while there is room; returns how many were taken (a prefix)."""
        with self._cv:
            n = min(len(candidates), self.room())
            for c in candidates[:n]:
                self._route(c)
            self.counts["enqueued"] += n
            self._cv.notify_all()
            return n

    def _next_needs_policy(self, c: Candidate) -> bool:
        if c.stage >= len(self.validators):
            return False
        v = self.validators[c.stage]
        return bool(getattr(v, "needs_policy", False)) and v.name not in c.policy_outputs

    def _route(self, c: Candidate, front: bool = False) -> None:
        # A stage that needs the policy waits for the main process; everything else goes to the workers.
        target = self._parked if self._next_needs_policy(c) else self._queue
        if front:
            target.appendleft(c)
        else:
            target.append(c)

    # ------------------------------------------------------------------ policy stage (main process)

    def parked(self) -> int:
        with self._cv:
            return len(self._parked)

    def take_parked(self, max_items: int) -> list[PolicyWork]:
        """Parked candidates (oldest first) with the validator that needs policy completions for each."""
        with self._cv:
            out = []
            while self._parked and len(out) < max_items:
                c = self._parked.popleft()
                self._taken[c.uid] = c
                out.append(PolicyWork(c, self.validators[c.stage]))
            return out

    def give_back(self, completions: dict[str, list[str]] | None, items: Sequence[Candidate]) -> None:
        """Attaches the policy's completions (by uid) and sends the candidates on; ``None`` = generation
        failed, park them again."""
        with self._cv:
            for c in reversed(items):
                if self._taken.pop(c.uid, None) is None:
                    continue  # dropped by load_state_dict meanwhile
                if completions is not None and c.uid in completions:
                    c.policy_outputs[self.validators[c.stage].name] = list(completions[c.uid])
                self._route(c, front=True)
            self._cv.notify_all()

    # ------------------------------------------------------------------ workers

    def start(self) -> None:
        """Starts the workers (again after ``close``; threads abandoned by ``close`` just exit)."""
        with self._cv:
            if self._threads and not self._closing:
                return
            for v in self.validators:  # undo close(): a restart works like a fresh start
                reopen = getattr(v, "start", None)
                if callable(reopen):
                    reopen()
            self._closing = False
            self._drain = False
            self._generation += 1
            self._threads = [
                threading.Thread(target=self._work, args=(self._generation,), name=f"heapa-validate-{i}", daemon=True)
                for i in range(self.workers)
            ]
            threads = list(self._threads)
        for t in threads:
            t.start()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _work(self, generation: int) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closing and generation == self._generation:
                    if self._pending:
                        self._flush_locked()
                    self._cv.wait(self._flush_interval)
                if generation != self._generation or (self._closing and (not self._drain or not self._queue)):
                    return
                c = self._queue.popleft()
                self._inflight[c.uid] = c.to_dict()
            try:
                result = self._run_chain(c)
            except Exception:  # a callback (on_change) failed: the worker must survive it
                logger.exception("heapa.augment: validating candidate %s failed", c.uid)
                result = ChainResult(Outcome.REJECT, Verdict.reject("exception"))
            with self._cv:
                self._complete(c, result)

    def _run_chain(self, c: Candidate) -> ChainResult:
        while c.stage < len(self.validators):
            if self._next_needs_policy(c):
                return ChainResult(Outcome.PARK)
            v = self.validators[c.stage]
            try:
                verdict = v.validate(c)
            except Exception:
                logger.exception("heapa.augment: validator %s raised on candidate %s", v.name, c.uid)
                verdict = Verdict.reject(f"{v.name}_exception")
            if verdict.info:
                c.info.update(verdict.info)
            if not verdict.accepted:
                return ChainResult(Outcome.RETRY if verdict.retryable else Outcome.REJECT, verdict)
            changed = verdict.problem is not None and verdict.problem != c.problem
            if changed:
                c.problem = verdict.problem
            if verdict.answer is not None:
                c.answer = verdict.answer
            if verdict.difficulty is not None:
                c.difficulty = verdict.difficulty
            if changed and self._on_change is not None:
                self._on_change(c)
            c.stage += 1
        if not (valid_text(c.problem) and valid_text(c.answer)):
            return ChainResult(Outcome.REJECT, Verdict.reject("invalid_text"))  # e.g. a lone surrogate
        if self.require_answer and not c.answer:
            return ChainResult(Outcome.REJECT, Verdict.reject("no_answer"))
        return ChainResult(Outcome.ACCEPT)

    def _complete(self, c: Candidate, result: ChainResult) -> None:
        outcome, verdict = result
        if self._inflight.pop(c.uid, None) is None:
            self.counts["late_results"] += 1  # abandoned at shutdown or reset: the snapshot was kept
            return
        if outcome is Outcome.PARK:
            self._route(c)
        elif outcome is Outcome.RETRY:
            if self._closing:
                self._queue.appendleft(c)  # interrupted by shutdown: keep it, unjudged
            elif c.requeues < self.max_requeues:
                c.requeues += 1
                self.counts["requeued"] += 1
                self._queue.append(c)
            else:
                self._finish(c, False, verdict.reason if verdict else "error")
        elif outcome is Outcome.REJECT:
            self._finish(c, False, verdict.reason if verdict else "rejected")
        else:
            try:
                reason = self._check_commit(c) if self._check_commit is not None else None
            except Exception:
                logger.exception("heapa.augment: the commit check failed on candidate %s", c.uid)
                reason = "commit_check_error"
            if reason:
                self._finish(c, False, reason)
            else:
                self._finish(c, True, "")
                self._pending.append(c)
                self._flush_locked()
        self._cv.notify_all()

    def _finish(self, c: Candidate, accepted: bool, reason: str) -> None:
        self._latency.append(max(0.0, time.time() - c.enqueued_at))
        self.counts["accepted" if accepted else f"rejected/{reason}"] += 1
        if self._on_result is not None:
            try:
                self._on_result(c, accepted, reason)
            except Exception:
                logger.exception("heapa.augment: on_result callback failed")

    def _flush_locked(self) -> int:
        if not self._pending:
            return 0
        before = self.counts["inserted"]
        if not self._push_locked(list(self._pending)):
            self.counts["inbox_full"] += 1
        return self.counts["inserted"] - before

    def _push_locked(self, batch: list[Candidate]) -> bool:
        """Inserts ``batch`` (the front of ``_pending``); True when every item went in or was rejected.

        A batch with an item that can never go in is refused whole: bisect down to such items, reject
        them and insert the rest (retrying them would block everything behind them for ever).
        """
        try:
            n = int(self._commit(batch))
        except _INPUT_ERRORS as exc:
            if len(batch) > 1:
                mid = len(batch) // 2
                return self._push_locked(batch[:mid]) and self._push_locked(batch[mid:])
            self._pending.popleft()
            self._unaccept(batch[0], "invalid_input", exc)
            return True
        except Exception:
            logger.exception("heapa.augment: inserting %d accepted candidates failed; will retry", len(batch))
            return False
        n = max(0, min(n, len(batch)))
        for _ in range(n):
            self._pending.popleft()
        self.counts["inserted"] += n
        return n == len(batch)

    def _unaccept(self, c: Candidate, reason: str, exc: Exception) -> None:
        # Counted accepted already: move it to rejected/<reason> so accepted = inserted + pending still holds.
        logger.warning("heapa.augment: the inbox refused candidate %s (%s); rejecting it", c.uid, exc)
        self.counts["accepted"] -= 1
        self.counts[f"rejected/{reason}"] += 1
        if self._on_result is not None:
            try:
                self._on_result(c, False, reason)
            except Exception:
                logger.exception("heapa.augment: on_result callback failed")

    def flush(self) -> int:
        """Retries inserting accepted candidates the inbox had no room for; returns how many went in."""
        with self._cv:
            return self._flush_locked()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Blocks until nothing is queued or in flight (parked candidates wait for the main process)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
            return True

    def close(self, timeout: float = 5.0, *, drain: bool = False) -> None:
        """Stops the workers. ``drain``: validate everything queued first (parked candidates stay).

        Work still running after ``timeout`` is abandoned: the candidate returns to the queue as it was
        picked up (so ``state_dict`` still holds it) and a late verdict is ignored.
        """
        with self._cv:
            self._closing = True
            self._drain = drain
            self._cv.notify_all()
        if not drain:
            for v in self.validators:
                stop = getattr(v, "close", None)
                if callable(stop):
                    stop()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        with self._cv:
            abandoned = [Candidate.from_dict(s) for s in self._inflight.values()]
            self._inflight.clear()
            for c in reversed(abandoned):
                self._queue.appendleft(c)
            self.counts["abandoned"] += len(abandoned)
            self._flush_locked()
            self._threads = [t for t in self._threads if t.is_alive()]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Holds the pipeline lock: no verdict or insertion happens inside (workers keep validating)."""
        with self._cv:
            yield

    # ------------------------------------------------------------------ checkpoints

    def held(self) -> list[Candidate]:
        """Every candidate without a final verdict, oldest first (snapshots for those being validated)."""
        with self._cv:
            return [
                *(Candidate.from_dict(s) for s in self._inflight.values()),
                *self._taken.values(),
                *self._parked,
                *self._queue,
            ]

    def accepted_pending(self) -> list[Candidate]:
        """Accepted candidates still waiting for room in the inbox."""
        with self._cv:
            return list(self._pending)

    def state_dict(self) -> dict[str, Any]:
        with self._cv:
            return {
                "version": STATE_VERSION,
                "queue": [c.to_dict() for c in self.held()],
                "pending_insert": [c.to_dict() for c in self._pending],
                "counts": dict(self.counts),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"ValidationPipeline: unsupported state version {state.get('version')!r}")
        with self._cv:
            self._queue.clear()
            self._parked.clear()
            self._taken.clear()
            self._inflight.clear()  # results of work running now will be ignored
            self._pending = deque(Candidate.from_dict(d) for d in state["pending_insert"])
            for d in state["queue"]:
                self._route(Candidate.from_dict(d))
            self.counts = Counter(state.get("counts", {}))
            self._cv.notify_all()
