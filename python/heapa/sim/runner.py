"""One simulated training run, and many of them in worker processes."""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._pool import Pool, PoolConfig
from .model import Scenario, sigmoid
from .samplers import Sampler


def _h(name: str) -> int:
    return zlib.crc32(name.encode())


@dataclass
class RunResult:
    scenario: str
    sampler: str
    seed: int
    #: cumulative cost (rollouts) after each step, starting at 0, and the
    #: held-out accuracy there
    cost: np.ndarray
    accuracy: np.ndarray
    #: totals over the run
    rollouts: float  # rollouts of training groups (augmentation excluded)
    aug_cost: float  # augmentation generation + validation
    aug_candidates: int
    aug_accepted: int
    informative_fraction: float
    steps: int
    pool_size: int
    #: the pool's fingerprint at the end (determinism checks)
    fingerprint: int

    def rollouts_to(self, target: float) -> float:
        """Cost at which held-out accuracy first reaches ``target`` (linear
        interpolation between steps); ``inf`` if it never does."""
        hit = np.flatnonzero(self.accuracy >= target)
        if hit.size == 0:
            return math.inf
        i = int(hit[0])
        if i == 0:
            return 0.0
        a0, a1 = self.accuracy[i - 1], self.accuracy[i]
        c0, c1 = self.cost[i - 1], self.cost[i]
        return float(c0 + (c1 - c0) * (target - a0) / (a1 - a0)) if a1 > a0 else float(c1)

    def accuracy_at(self, budget: float) -> float:
        """Held-out accuracy after ``budget`` rollouts (interpolated; a run
        that stopped early keeps its last accuracy)."""
        return float(np.interp(budget, self.cost, self.accuracy))


class Learner:
    """Ability, per-prompt latent task state (one row per prompt) and memorisation (see :mod:`heapa.sim.model`)."""

    def __init__(self, sc: Scenario, n_rows: int, eval_b: np.ndarray) -> None:
        self.sc = sc
        self.theta = sc.theta0
        self.b = np.full(n_rows, np.inf)  # latent difficulty of the prompt in each row
        self.mem = np.zeros(n_rows)  # memory strength s_i as of step last[i]
        self.last = np.zeros(n_rows)
        self.eval_b = eval_b
        self.memorising = sc.memorise > 0 or sc.generalise < 1

    def reserve(self, n_rows: int) -> None:
        """Makes rows ``0 .. n_rows - 1`` addressable (new rows: no prompt yet), growing geometrically."""
        have = self.b.shape[0]
        if n_rows <= have:
            return
        extra = max(n_rows, 2 * have) - have
        self.b = np.concatenate([self.b, np.full(extra, np.inf)])
        self.mem = np.concatenate([self.mem, np.zeros(extra)])
        self.last = np.concatenate([self.last, np.zeros(extra)])

    def strength(self, rows: np.ndarray, t: int) -> np.ndarray:
        s = self.mem[rows]
        if math.isfinite(self.sc.forget):
            s = s * np.exp(-(t - self.last[rows]) / self.sc.forget)
        return s

    def pass_prob(self, rows: np.ndarray, s: np.ndarray) -> np.ndarray:
        return sigmoid(self.theta - self.b[rows] + self.sc.memorise * s)

    def train(self, rows: np.ndarray, s: np.ndarray, k: np.ndarray, t: int) -> float:
        """One optimiser step on the trained groups (``k`` correct of ``group``
        each); returns the signal n_eff."""
        G = self.sc.group
        informative = (k > 0) & (k < G)
        u = 4.0 * k * (G - k) / (G * G) if self.sc.signal == "variance" else informative.astype(float)
        if self.memorising:
            u = u * self.sc.generalise**s
            self.mem[rows] = s + informative
            self.last[rows] = t
        n_eff = float(u.sum())
        self.theta += self.sc.lr * n_eff / (n_eff + self.sc.noise)
        return n_eff

    def accuracy(self) -> float:
        return float(sigmoid(self.theta - self.eval_b).mean())


class Rows:
    """The simulator's own prompt id -> learner row mapping: the n-th prompt added gets row n.

    Nothing here knows how the pool builds ids (nor whether it issues them in numeric order): a dict,
    read and written a batch at a time, O(batch) per call. Evicted prompts keep their rows (unused).
    """

    def __init__(self) -> None:
        self._row: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._row)

    def add(self, ids: np.ndarray) -> np.ndarray:
        """Gives each of ``ids`` (distinct, never added before) the next row; returns the rows."""
        keys = np.asarray(ids, dtype=np.uint64).reshape(-1).tolist()
        n = len(self._row)
        self._row.update(zip(keys, range(n, n + len(keys)), strict=True))
        if len(self._row) != n + len(keys):
            raise ValueError("Rows.add: an id was added twice")
        return np.arange(n, n + len(keys), dtype=np.int64)

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        """The rows of ``ids`` (``KeyError`` for an id never added)."""
        keys = np.asarray(ids, dtype=np.uint64).reshape(-1).tolist()
        return np.fromiter(map(self._row.__getitem__, keys), dtype=np.int64, count=len(keys))


def run_one(sc: Scenario, sp: Sampler, seed: int) -> RunResult:
    """One training run of ``sp`` on ``sc``. The task (training roots and
    held-out set) depends only on (scenario, seed), so runs of different
    samplers with the same seed are paired; everything is seeded."""
    task_rng = np.random.default_rng([seed, _h(sc.name)])
    roots_b, roots_g = sc.draw_components(task_rng, sc.n_prompts)
    eval_b = sc.draw(task_rng, sc.n_eval)
    rng = np.random.default_rng([seed, _h(sc.name), _h(sp.name)])

    capacity = sc.capacity(sp.augment is not None)
    pool = Pool(PoolConfig(capacity=capacity, reward_range=(0.0, 1.0), seed=seed, **sp.pool))
    # One learner row per prompt ever added (evicted prompts keep theirs, unused).
    row_of = Rows()
    L = Learner(sc, sc.n_prompts, eval_b)
    L.b[row_of.add(pool.add(["q"] * sc.n_prompts, **add_kwargs(sc, sp, seed, roots_b, roots_g)))] = roots_b
    oracle_groups = GroupOracle(sc, roots_b, roots_g) if sp.group_oracle else None

    B, G = sc.batch, sc.group
    horizon, cap, target = sc.budget * sc.horizon_factor, sc.budget * sc.cap_factor, sc.target
    costs, accs = [0.0], [L.accuracy()]
    rollouts = aug_cost = 0.0
    groups = informative_groups = cand = accepted = 0
    t = 0
    while rollouts + aug_cost < cap and not (rollouts + aug_cost >= horizon and accs[-1] >= target):
        t += 1
        # ---- choose prompts and roll out (DAPO: repeat until B informative groups)
        parts = []
        n_kept = 0
        for _ in range(sp.max_gen_batches if sp.dapo_filter else 1):
            if oracle_groups is not None:
                rows = oracle_groups.pick(L.theta, B)  # chosen outside the pool, which is told nothing
                ids = rows.astype(np.uint64)
            elif sp.oracle:
                ids = pool.sample(len(pool))
                rows = row_of[ids]
                gap = np.abs(L.pass_prob(rows, L.strength(rows, t)) - 0.5) + 1e-9 * rng.random(ids.shape[0])
                keep = np.argsort(gap)[:B]
                rest = np.ones(ids.shape[0], dtype=bool)
                rest[keep] = False
                pool.release(ids[rest])
                ids = ids[keep]
            else:
                ids = pool.sample(B)
            n = ids.shape[0]
            if n == 0:
                break
            if oracle_groups is None:
                rows = row_of[ids]
            s = L.strength(rows, t)
            k = rng.binomial(G, L.pass_prob(rows, s))
            rollouts += n * G
            groups += n
            inf = (k > 0) & (k < G)
            informative_groups += int(inf.sum())
            if oracle_groups is not None:
                parts.append((ids, rows, s, k, inf))
                break
            pool.report(ids, k / G, n_rollouts=np.full(n, G, dtype=np.uint32), n_correct=k, step=t)
            if sp.dapo_filter:
                sel = np.flatnonzero(inf)[: B - n_kept]
                ids, rows, s, k, inf = ids[sel], rows[sel], s[sel], k[sel], inf[sel]
            parts.append((ids, rows, s, k, inf))
            n_kept += ids.shape[0]
            if n_kept >= B:
                break
        if not parts:
            break  # nothing left to draw: training cannot go on
        ids, rows, s, k, inf = (np.concatenate(c) for c in zip(*parts, strict=True))
        # ---- optimiser step
        L.train(rows, s, k, t)
        # ---- on-policy augmentation (after the step: variants come from the updated policy)
        if sp.augment is not None:
            parents, p_rows = (ids, rows) if sp.augment == "all" else (ids[inf], rows[inf])
            m = parents.shape[0]
            if m:
                cand += m
                aug_cost += m * (sc.aug_gen_cost + sc.aug_val_cost)
                delta = rng.normal(0.0, sc.aug_shift_sd, m)
                ratio = np.exp(delta / sc.aug_logit_per_log_ratio + rng.normal(0.0, sc.aug_report_noise, m))
                valid = rng.random(m) < sc.aug_valid
                wrong = rng.random(m) < sc.aug_label_noise
                child_b = np.where(wrong, np.inf, L.b[p_rows] + delta)[valid]
                child_mem = (sc.aug_inherit_memory * L.strength(p_rows, t))[valid]
                nv = int(valid.sum())
                accepted += nv
                if nv:
                    if sp.augment_via == "inbox":
                        pushed = pool.inbox.push(["v"] * nv, parents=parents[valid], difficulty=ratio[valid])
                        if pushed != nv:
                            raise RuntimeError(f"inbox accepted {pushed} of {nv} items")
                        new = pool.drain_inbox(step=t)
                    else:
                        new = pool.add(["v"] * nv, parents=parents[valid], difficulty=ratio[valid])
                    if new.shape[0] != nv:
                        raise RuntimeError(f"{new.shape[0]} ids for {nv} children")
                    new_rows = row_of.add(new)
                    L.reserve(len(row_of))
                    L.b[new_rows], L.mem[new_rows], L.last[new_rows] = child_b, child_mem, float(t)
        costs.append(rollouts + aug_cost)
        accs.append(L.accuracy())
    return RunResult(
        scenario=sc.name,
        sampler=sp.name,
        seed=seed,
        cost=np.asarray(costs),
        accuracy=np.asarray(accs),
        rollouts=rollouts,
        aug_cost=aug_cost,
        aug_candidates=cand,
        aug_accepted=accepted,
        informative_fraction=informative_groups / max(groups, 1),
        steps=t,
        pool_size=len(pool),
        fingerprint=pool.fingerprint(),
    )


#: Width of a prior bin (the engine's prior bands: 20 over [0, 1]).
PRIOR_BINS = 20


def add_kwargs(sc: Scenario, sp: Sampler, seed: int, b: np.ndarray, comp: np.ndarray) -> dict[str, Any]:
    """What the simulated trainer passes to ``Pool.add`` with the training prompts: the scenario's
    group keys (where they are observable) and priors with their confidence (where the scenario has a
    predictor), as the sampler asks (see :class:`Sampler`). Nothing for scenarios without either."""
    kw: dict[str, Any] = {}
    prior = None
    if sp.priors == "scenario" and sc.has_priors:
        # The predictor's noise has its own stream: the task and every other draw stay as they are.
        prior = sc.priors(np.random.default_rng([seed, _h(sc.name), _h("prior")]), b)
        kw["prior"], kw["confidence"] = prior, np.full(b.shape[0], sc.prior_confidence)
    elif sp.priors == "group_truth" and sc.observable_groups:
        p0 = sigmoid(sc.theta0 - b)
        mean = np.bincount(comp, weights=p0) / np.maximum(np.bincount(comp), 1)
        kw["prior"], kw["confidence"] = mean[comp], np.full(b.shape[0], 1e6)
    keys = comp.astype(np.int64) if sc.observable_groups and sp.group_keys != "none" else None
    if sp.group_keys in ("scenario+prior_bin", "prior_bin") and prior is not None:
        band = np.minimum((prior * PRIOR_BINS).astype(np.int64), PRIOR_BINS - 1)
        keys = band if keys is None or sp.group_keys == "prior_bin" else (keys + 1) * (PRIOR_BINS + 1) + band
    if keys is not None:
        kw["group"] = keys
    return kw


class GroupOracle:
    """The group oracle's choice (see ``Sampler.group_oracle``): the true mean pass rate of every
    group for the current ability, never-drawn members of the group nearest 0.5 first."""

    def __init__(self, sc: Scenario, b: np.ndarray, comp: np.ndarray, target: float = 0.5) -> None:
        self.b = b
        self.comp = comp if sc.observable_groups else np.zeros_like(comp)
        self.count = np.bincount(self.comp)
        order = np.argsort(self.comp, kind="stable")  # each group's rows in order of addition
        self.members = np.split(order, np.cumsum(self.count)[:-1])
        self.next = np.zeros(len(self.members), dtype=np.int64)
        self.target = target

    def pick(self, theta: float, k: int) -> np.ndarray:
        mean = np.bincount(self.comp, weights=sigmoid(theta - self.b), minlength=len(self.count))
        gap = np.abs(mean / np.maximum(self.count, 1) - self.target)
        out: list[np.ndarray] = []
        need = k
        for g in np.argsort(gap, kind="stable"):
            if need == 0:
                break
            got = self.members[g][self.next[g] : self.next[g] + need]
            self.next[g] += got.shape[0]
            need -= got.shape[0]
            out.append(got)
        if need:  # every member drawn once: a new pass
            self.next[:] = 0
            out.append(self.pick(theta, need))
        return np.concatenate(out).astype(np.int64)


def _run_job(job: tuple[Scenario, Sampler, int]) -> RunResult:
    return run_one(*job)


def run_many(
    jobs: Sequence[tuple[Scenario, Sampler, int]],
    workers: int = 1,
    progress: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Runs jobs, in worker processes when ``workers > 1``; results in job order
    (each run is self-contained and seeded, so the order does not matter)."""
    out: list[RunResult] = []
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            out.append(_run_job(job))
            if progress:
                progress(out[-1])
        return out
    with ProcessPoolExecutor(max_workers=workers) as ex:
        for r in ex.map(_run_job, jobs, chunksize=4):
            out.append(r)
            if progress:
                progress(r)
    return out


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))
