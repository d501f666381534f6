"""One simulated training run, and many of them in worker processes."""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

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
    """Ability, per-slot latent task state and memorisation (see :mod:`heapa.sim.model`)."""

    def __init__(self, sc: Scenario, n_slots: int, eval_b: np.ndarray) -> None:
        self.sc = sc
        self.theta = sc.theta0
        self.b = np.full(n_slots, np.inf)  # latent difficulty of the prompt in each pool slot
        self.mem = np.zeros(n_slots)  # memory strength s_i as of step last[i]
        self.last = np.zeros(n_slots)
        self.eval_b = eval_b
        self.memorising = sc.memorise > 0 or sc.generalise < 1

    def strength(self, slots: np.ndarray, t: int) -> np.ndarray:
        s = self.mem[slots]
        if math.isfinite(self.sc.forget):
            s = s * np.exp(-(t - self.last[slots]) / self.sc.forget)
        return s

    def pass_prob(self, slots: np.ndarray, s: np.ndarray) -> np.ndarray:
        return sigmoid(self.theta - self.b[slots] + self.sc.memorise * s)

    def train(self, slots: np.ndarray, s: np.ndarray, k: np.ndarray, t: int) -> float:
        """One optimiser step on the trained groups (``k`` correct of ``group``
        each); returns the signal n_eff."""
        G = self.sc.group
        informative = (k > 0) & (k < G)
        u = 4.0 * k * (G - k) / (G * G) if self.sc.signal == "variance" else informative.astype(float)
        if self.memorising:
            u = u * self.sc.generalise**s
            self.mem[slots] = s + informative
            self.last[slots] = t
        n_eff = float(u.sum())
        self.theta += self.sc.lr * n_eff / (n_eff + self.sc.noise)
        return n_eff

    def accuracy(self) -> float:
        return float(sigmoid(self.theta - self.eval_b).mean())


def _write_slots(arr: np.ndarray, slots: np.ndarray, values: np.ndarray) -> None:
    """``arr[slots] = values`` where a repeated slot takes its last value (a
    slot reused within one add holds the newest prompt)."""
    if slots.size == 0:
        return
    u, first = np.unique(slots[::-1], return_index=True)
    arr[u] = values[::-1][first]


def run_one(sc: Scenario, sp: Sampler, seed: int) -> RunResult:
    """One training run of ``sp`` on ``sc``. The task (training roots and
    held-out set) depends only on (scenario, seed), so runs of different
    samplers with the same seed are paired; everything is seeded."""
    task_rng = np.random.default_rng([seed, _h(sc.name)])
    roots_b = sc.draw(task_rng, sc.n_prompts)
    eval_b = sc.draw(task_rng, sc.n_eval)
    rng = np.random.default_rng([seed, _h(sc.name), _h(sp.name)])

    capacity = sc.capacity(sp.augment is not None)
    pool = Pool(PoolConfig(capacity=capacity, reward_range=(0.0, 1.0), seed=seed, **sp.pool))
    # id = generation * (capacity + 1) + slot; slot `capacity` holds ids evicted on arrival
    modulus = capacity + 1
    L = Learner(sc, modulus, eval_b)
    _write_slots(L.b, (pool.add(["q"] * sc.n_prompts) % modulus).astype(np.int64), roots_b)

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
            if sp.oracle:
                ids = pool.sample(len(pool))
                slots = (ids % modulus).astype(np.int64)
                gap = np.abs(L.pass_prob(slots, L.strength(slots, t)) - 0.5) + 1e-9 * rng.random(ids.shape[0])
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
            slots = (ids % modulus).astype(np.int64)
            s = L.strength(slots, t)
            k = rng.binomial(G, L.pass_prob(slots, s))
            rollouts += n * G
            groups += n
            inf = (k > 0) & (k < G)
            informative_groups += int(inf.sum())
            pool.report(ids, k / G, n_rollouts=np.full(n, G, dtype=np.uint32), n_correct=k, step=t)
            if sp.dapo_filter:
                sel = np.flatnonzero(inf)[: B - n_kept]
                ids, slots, s, k, inf = ids[sel], slots[sel], s[sel], k[sel], inf[sel]
            parts.append((ids, slots, s, k, inf))
            n_kept += ids.shape[0]
            if n_kept >= B:
                break
        if not parts:
            break  # nothing left to draw: training cannot go on
        ids, slots, s, k, inf = (np.concatenate(c) for c in zip(*parts, strict=True))
        # ---- optimiser step
        L.train(slots, s, k, t)
        # ---- on-policy augmentation (after the step: variants come from the updated policy)
        if sp.augment is not None:
            parents, p_slots = (ids, slots) if sp.augment == "all" else (ids[inf], slots[inf])
            m = parents.shape[0]
            if m:
                cand += m
                aug_cost += m * (sc.aug_gen_cost + sc.aug_val_cost)
                delta = rng.normal(0.0, sc.aug_shift_sd, m)
                ratio = np.exp(delta / sc.aug_logit_per_log_ratio + rng.normal(0.0, sc.aug_report_noise, m))
                valid = rng.random(m) < sc.aug_valid
                wrong = rng.random(m) < sc.aug_label_noise
                child_b = np.where(wrong, np.inf, L.b[p_slots] + delta)[valid]
                child_mem = (sc.aug_inherit_memory * L.strength(p_slots, t))[valid]
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
                    ns = (new % modulus).astype(np.int64)
                    _write_slots(L.b, ns, child_b)
                    _write_slots(L.mem, ns, child_mem)
                    _write_slots(L.last, ns, np.full(nv, float(t)))
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
