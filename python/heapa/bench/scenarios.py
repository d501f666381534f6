"""What each benchmark does: the implementations' adapters, the shared inputs and one scenario per operation.

A scenario takes the :class:`Context` of one (implementation, size) and returns a :class:`Runner`:
``call(before())`` is timed, ``before`` and ``after`` are not. Scenarios know nothing about budgets,
repetition caps or report units; those live in the registry (:mod:`heapa.bench.registry`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BATCH = 512
INBOX_ITEMS = 10_000
CHAIN_DEPTH = 3_000
#: ``drain_inbox_10k`` grows the pool by ``INBOX_ITEMS`` per repetition: its capacity is sized for this many.
DRAIN_REPS = 20
#: refresh_full re-keys live prompts too (``scope="all"``): at least as much
#: work as the reference's refresh of a fully archived pool at reinsertion.
REFRESH_SCOPE = "all"


# --------------------------------------------------------------------------
# implementations


class Impl:
    """Adapter that lets one driver build, reconfigure and reload any pool."""

    name: str

    def new_pool(self, cfg: dict):
        raise NotImplementedError

    def load(self, path: str):
        raise NotImplementedError

    def reconfigure(self, pool, cfg: dict, rebuild: Callable[[dict], object]):
        """Return a pool with ``cfg`` (the same object where the config is mutable)."""
        return rebuild(cfg)

    def engine_bytes(self, pool) -> tuple[int | None, int | None]:
        st = pool.stats()
        return st.get("memory_bytes"), st.get("payload_bytes")


class HeapaImpl(Impl):
    name = "heapa"

    def __init__(self):
        from heapa import Pool, PoolConfig

        self._pool_cls, self._cfg_cls = Pool, PoolConfig

    def new_pool(self, cfg):
        return self._pool_cls(self._cfg_cls(**cfg))

    def load(self, path):
        return self._pool_cls.load(path)


class BaselineImpl(Impl):
    def __init__(self, name: str):
        from . import baselines

        self.name = name
        self._baselines = baselines

    def new_pool(self, cfg):
        return self._baselines.make_pool(self.name, **cfg)

    def load(self, path):
        return type(self.new_pool({"capacity": 1})).load(path)

    def reconfigure(self, pool, cfg, rebuild):
        # Baseline configs are plain attributes: change them in place (cheap)
        # instead of rebuilding a large pure-Python pool for every scenario.
        pool.capacity = cfg["capacity"]
        pool.sampling = self._baselines.canonical_sampling(cfg["sampling"])
        pool.reinsert = cfg["reinsert"]
        return pool


def make_impl(name: str) -> Impl:
    return HeapaImpl() if name == "heapa" else BaselineImpl(name)


def rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak RSS is the best available
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# --------------------------------------------------------------------------
# shared inputs


def _rewards(rng: np.random.Generator, n: int) -> np.ndarray:
    """Group-mean accuracies of 16 binary rollouts: 17 discrete levels in [0, 1]."""
    return rng.integers(0, 17, n) / 16.0


class Context:
    """Inputs and pools shared by the scenarios of one (implementation, size)."""

    def __init__(self, impl: Impl, size: int, seed: int = 0):
        self.impl = impl
        self.size = size
        self.seed = seed
        rng = np.random.default_rng([seed, size])
        self.prompts = [f"q{i}" for i in range(size)]
        self.rewards = _rewards(rng, size)
        self.base_cfg = {
            "capacity": size,
            "low_fraction": 0.5,
            "sampling": "medium",
            "eviction": "hardest",
            "reward_range": (0.0, 1.0),
            "reinsert": "on_drain",
            "seed": seed,
        }
        self._pool = None
        self._pool_cfg: dict | None = None
        #: the grouped cold pool of the ``*_prior`` scenarios
        self.prior_pool = None
        self.memory: dict = {}

    def rng(self, op: str, rep: int) -> np.random.Generator:
        """Inputs of repetition ``rep`` of ``op``: the same for every implementation and registry order."""
        return np.random.default_rng([self.seed, self.size, zlib.crc32(op.encode()), rep])

    def build(self, cfg: dict):
        self._pool = None  # free the old pool first
        pool = self.impl.new_pool(cfg)
        pool.add(self.prompts, rewards=self.rewards)
        return pool

    def set_pool(self, pool, cfg: dict) -> None:
        self._pool, self._pool_cfg = pool, dict(cfg)

    def pool(self, **changes):
        """The scored pool of ``size`` prompts, with config ``base_cfg | changes``."""
        cfg = {**self.base_cfg, **changes}
        if self._pool is None:
            self.set_pool(self.build(cfg), cfg)
        elif cfg != self._pool_cfg:
            self.set_pool(self.impl.reconfigure(self._pool, cfg, self.build), cfg)
        return self._pool

    def held(self) -> int:
        """Prompts held by the current pool (without reconfiguring it)."""
        return self.size if self._pool is None else int(self._pool.stats()["held"])

    def drop_pool(self) -> None:
        self._pool = self._pool_cfg = None
        gc.collect()

    def snapshot_path(self) -> str:
        if "snapshot_dir" not in self.memory:
            self.memory["snapshot_dir"] = tempfile.mkdtemp(prefix="heapa-bench-")
        return os.path.join(self.memory["snapshot_dir"], f"pool-{self.impl.name}.snap")

    def close(self) -> None:
        """Remove the snapshot directory, if a scenario made one."""
        snap_dir = self.memory.pop("snapshot_dir", None)
        if snap_dir:
            for name in os.listdir(snap_dir):
                _remove(os.path.join(snap_dir, name))
            os.rmdir(snap_dir)


@dataclass
class Runner:
    """One benchmark: ``call(before())`` is timed, ``after(arg, result)`` is not."""

    call: Callable
    before: Callable | None = None
    after: Callable | None = None
    cleanup: Callable | None = None


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _counter(ctx: Context, op: str):
    """``before`` helper: yields (rep, rng of that repetition) forever."""
    rep = 0
    while True:
        yield rep, ctx.rng(op, rep)
        rep += 1


# --------------------------------------------------------------------------
# scenarios


def scenario_add(ctx: Context) -> Runner:
    state = {"rss0": None}

    def before():
        ctx.drop_pool()
        if not ctx.memory.get("rss_bytes_per_prompt"):
            state["rss0"] = rss_bytes()
        return ctx.impl.new_pool(ctx.base_cfg)

    def call(pool):
        pool.add(ctx.prompts, rewards=ctx.rewards)
        return pool

    def after(_, pool):
        if state["rss0"] is not None:  # first build: memory per prompt
            gc.collect()
            rss = rss_bytes() - state["rss0"]
            engine, payload = ctx.impl.engine_bytes(pool)
            n = ctx.size
            ctx.memory.update(
                rss_bytes_per_prompt=round(rss / n, 1),
                engine_bytes_per_prompt=None if engine is None else round(engine / n, 1),
                payload_bytes_per_prompt=None if payload is None else round(payload / n, 1),
            )
            state["rss0"] = None
        ctx.set_pool(pool, ctx.base_cfg)

    return Runner(call, before, after)


def scenario_call(method: str) -> Callable[[Context], Runner]:
    """One call of a read-only pool method with no arguments (``stats``, ``fingerprint``)."""

    def make(ctx: Context) -> Runner:
        fn = getattr(ctx.pool(), method)
        return Runner(lambda _: fn())

    return make


def scenario_sample(mode: str) -> Callable[[Context], Runner]:
    def make(ctx: Context) -> Runner:
        pool = ctx.pool(sampling=mode)
        return Runner(lambda _: pool.sample(BATCH), after=lambda _, ids: pool.release(ids))

    return make


def scenario_report(ctx: Context) -> Runner:
    pool = ctx.pool(reinsert="immediate")
    reps = _counter(ctx, "report_512")

    def before():
        ids = pool.sample(BATCH)
        _, rng = next(reps)
        return ids, _rewards(rng, ids.shape[0])

    return Runner(lambda arg: pool.report(*arg), before)


def scenario_add_evict(ctx: Context) -> Runner:
    pool = ctx.pool(capacity=ctx.held())
    reps = _counter(ctx, "add_evict")

    def before():
        rep, rng = next(reps)
        return [f"e{rep}_{i}" for i in range(BATCH)], _rewards(rng, BATCH)

    return Runner(lambda arg: pool.add(arg[0], rewards=arg[1]), before)


def scenario_step(ctx: Context) -> Runner:
    """One RL step's pool work: sample, report, hand 512 children to the inbox, drain."""
    pool = ctx.pool(reinsert="on_drain", capacity=ctx.held())
    reps = _counter(ctx, "step_overhead")

    def before():
        rep, rng = next(reps)
        return rep, _rewards(rng, BATCH), rng.uniform(0.75, 1.33, BATCH)

    def call(arg):
        rep, rewards, difficulty = arg
        sel = pool.sample(BATCH)
        pool.report(sel, rewards[: sel.shape[0]])
        pool.inbox.push(
            [f"s{rep}_{i}" for i in range(sel.shape[0])], parents=sel, difficulty=difficulty[: sel.shape[0]]
        )
        return pool.drain_inbox()

    return Runner(call, before)


#: groups in the ``*_prior`` scenarios (issue 14's setting: 1,000 groups at 1M prompts)
GROUPS = 1_000


def _prior_pool(ctx: Context):
    """N never-scored prompts in ``GROUPS`` groups, ranked by group estimate (``cold="prior"``),
    with the frontier preset's other settings; built once per context."""
    pool = getattr(ctx, "prior_pool", None)
    if pool is None:
        ctx.drop_pool()
        cfg = {**ctx.base_cfg, "boundary": "absolute", "reinsert": "immediate", "cold": "prior"}
        pool = ctx.impl.new_pool(cfg)
        pool.add(ctx.prompts, group=np.arange(ctx.size) % GROUPS)
        ctx.prior_pool = pool
    return pool


def scenario_sample_prior(ctx: Context) -> Runner:
    """``sample(512)`` of cold prompts ranked over 1,000 groups; the draw is reported untimed, so
    group estimates keep changing as in training."""
    pool = _prior_pool(ctx)
    reps = _counter(ctx, "sample_prior_512")
    return Runner(
        lambda _: pool.sample(BATCH),
        after=lambda _, ids: pool.report(ids, _rewards(next(reps)[1], ids.shape[0])),
    )


def scenario_report_prior(ctx: Context) -> Runner:
    """``report`` 512 prompts drawn from the grouped cold pool (updates their groups' evidence)."""
    pool = _prior_pool(ctx)
    reps = _counter(ctx, "report_prior_512")

    def before():
        ids = pool.sample(BATCH)
        return ids, _rewards(next(reps)[1], ids.shape[0])

    return Runner(lambda arg: pool.report(*arg), before)


def scenario_step_prior(ctx: Context) -> Runner:
    """One step's pool traffic in the grouped cold pool: sample 512, report them."""
    pool = _prior_pool(ctx)
    reps = _counter(ctx, "step_prior")

    def call(rewards):
        ids = pool.sample(BATCH)
        pool.report(ids, rewards[: ids.shape[0]])

    return Runner(call, lambda: _rewards(next(reps)[1], BATCH))


def scenario_drain(ctx: Context) -> Runner:
    pool = ctx.pool(capacity=ctx.held() + (DRAIN_REPS + 2) * INBOX_ITEMS)
    rng = ctx.rng("drain_inbox_10k", 10**6)
    parents = pool.add([f"p{i}" for i in range(INBOX_ITEMS)], rewards=_rewards(rng, INBOX_ITEMS))
    reps = _counter(ctx, "drain_inbox_10k")

    def before():
        rep, rng = next(reps)
        par = rng.choice(parents, INBOX_ITEMS)
        pushed = pool.inbox.push(
            [f"d{rep}_{i}" for i in range(INBOX_ITEMS)], parents=par, difficulty=rng.uniform(0.75, 1.33, INBOX_ITEMS)
        )
        assert pushed == INBOX_ITEMS, f"inbox accepted {pushed} of {INBOX_ITEMS}"

    return Runner(lambda _: pool.drain_inbox(), before)


def scenario_save(ctx: Context) -> Runner:
    pool = ctx.pool()
    path = ctx.snapshot_path()

    def after(_, __):
        ctx.memory["snapshot_bytes_per_prompt"] = round(os.path.getsize(path) / ctx.size, 1)

    return Runner(lambda _: pool.save(path), after=after)


def scenario_load(ctx: Context) -> Runner:
    path = ctx.snapshot_path()
    if not os.path.exists(path):
        ctx.pool().save(path)
    return Runner(lambda _: ctx.impl.load(path), cleanup=lambda: _remove(path))


def build_forest(impl: Impl, size: int, seed: int):
    """A scored forest of ``size`` prompts: half roots, half children of earlier prompts."""
    rng = np.random.default_rng([seed, size, 77])
    cfg = {"capacity": size, "reinsert": "on_drain", "seed": seed}
    pool = impl.new_pool(cfg)
    n_roots = size - size // 2
    ids = [pool.add([f"r{i}" for i in range(n_roots)], rewards=_rewards(rng, n_roots))]
    n_added = n_roots
    chunks = 16
    for c in range(chunks):
        m = (size - n_added) // (chunks - c)
        if m == 0:
            continue
        known = np.concatenate(ids)
        parents = known[rng.integers(0, known.shape[0], m)]
        ids.append(
            pool.add(
                [f"f{c}_{i}" for i in range(m)],
                rewards=_rewards(rng, m),
                parents=parents,
                difficulty=rng.uniform(0.75, 1.33, m),
            )
        )
        n_added += m
    return pool


def scenario_refresh_full(ctx: Context) -> Runner:
    ctx.drop_pool()
    pool = build_forest(ctx.impl, ctx.size, ctx.seed)
    return Runner(lambda _: pool.refresh(mode="path", scope=REFRESH_SCOPE))


def build_chain(impl: Impl, depth: int, seed: int):
    rng = np.random.default_rng([seed, depth, 78])
    pool = impl.new_pool({"capacity": depth, "seed": seed})
    rewards = _rewards(rng, depth)
    prev = pool.add(["c0"], rewards=rewards[:1])
    for i in range(1, depth):
        prev = pool.add([f"c{i}"], rewards=rewards[i : i + 1], parents=prev, difficulty=np.ones(1))
    return pool


def scenario_refresh_chain(ctx: Context) -> Runner:
    pool = build_chain(ctx.impl, CHAIN_DEPTH, ctx.seed)
    return Runner(lambda _: pool.refresh(mode="path", scope="all"))
