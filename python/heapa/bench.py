"""``heapa bench``: million-prompt microbenchmarks against two pure-Python baselines.

Usage::

    heapa bench [--size N] [--quick] [--json PATH] [--impls heapa,best_python,reference_design]
                [--ops add,report_512,...] [--check]

Every implementation runs in its own worker process (clean RSS readings, no
garbage-collector state carried over), on the same deterministic inputs.
The first implementation listed is the *subject*: its numbers fill
``results``, the others are compared against it in ``speedup``, and the
budgets (defined at 1M prompts) are checked on it.

A baseline operation that would take minutes at the requested size is not
run there (``null`` in the JSON); it is timed at the largest size it can do
instead, next to the subject at that same size (``fallback`` in the JSON).

The baselines live in ``bench/baselines`` of the source tree; the runner
finds them next to this package (editable installs) or through
``HEAPA_BENCH_ROOT``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_SIZE = 1_000_000
QUICK_SIZE = 20_000
BATCH = 512
INBOX_ITEMS = 10_000
CHAIN_DEPTH = 3_000
#: refresh_full re-keys live prompts too (``scope="all"``): at least as much
#: work as the reference's refresh of a fully archived pool at reinsertion.
REFRESH_SCOPE = "all"
IMPLS_DEFAULT = ("heapa", "best_python", "reference_design")

OPS = (
    "add",
    "sample_medium_512",
    "sample_mixed_512",
    "sample_uniform_512",
    "sample_prioritized_512",
    "report_512",
    "add_evict",
    "step_overhead",
    "drain_inbox_10k",
    "save",
    "load",
    "refresh_full",
)
#: diagnostics reported alongside the required operations
EXTRA_OPS = ("refresh_chain_3k",)
ALL_OPS = OPS + EXTRA_OPS
#: Order in which a worker runs them: the baselines reuse one pool across
#: scenarios, so snapshots are taken before the ops that change its size.
RUN_ORDER = (
    "add",
    "sample_medium_512",
    "sample_mixed_512",
    "sample_uniform_512",
    "sample_prioritized_512",
    "save",
    "load",
    "report_512",
    "add_evict",
    "step_overhead",
    "drain_inbox_10k",
    "refresh_full",
    "refresh_chain_3k",
)

#: Largest size at which a baseline runs an operation (its cost is O(n) or
#: worse per item there); beyond it the op is skipped and timed at this size.
MAX_SIZE = {
    "reference_design": {
        "report_512": 50_000,  # linear scan per reported prompt
        "add_evict": 50_000,  # linear scan + heapify per eviction
        "step_overhead": 50_000,  # both of the above
    },
}
SKIP_REASON = {
    "report_512": "O(n) linear scan per reported prompt",
    "add_evict": "O(n) scan + heapify per eviction",
    "step_overhead": "O(n) report scans and evictions",
}

#: Budgets from issue 4, defined at 1M prompts: (metric, comparison, limit).
BUDGETS = {
    "sample_medium_512": ("p99_us", "<=", 1_000.0),
    "report_512": ("ops_per_s", ">=", 2_000_000.0),
    "add_evict": ("ops_per_s", ">=", 500_000.0),
    "refresh_full": ("p50_us", "<=", 250_000.0),
    "save": ("p50_us", "<=", 500_000.0),
    "load": ("p50_us", "<=", 1_000_000.0),
    "step_overhead": ("p99_us", "<=", 50_000.0),
    "memory_bytes_per_prompt": ("value", "<=", 160.0),
}
SPEEDUP_BUDGETS = {("best_python", op): 10.0 for op in ("report_512", "add_evict", "sample_medium_512")}

#: What one call of each op processes, for throughput (items per second).
ITEMS = {
    "sample_medium_512": (BATCH, "prompts"),
    "sample_mixed_512": (BATCH, "prompts"),
    "sample_uniform_512": (BATCH, "prompts"),
    "sample_prioritized_512": (BATCH, "prompts"),
    "report_512": (BATCH, "updates"),
    "add_evict": (BATCH, "pairs"),
    "step_overhead": (1, "steps"),
    "drain_inbox_10k": (INBOX_ITEMS, "prompts"),
    "refresh_chain_3k": (CHAIN_DEPTH, "nodes"),
}


@dataclass(frozen=True)
class Profile:
    """How long to keep repeating one operation."""

    max_time: float  # seconds per (implementation, op), after min_reps
    min_reps: int
    max_reps: int


FULL = Profile(max_time=3.0, min_reps=3, max_reps=2000)
QUICK = Profile(max_time=0.25, min_reps=3, max_reps=300)
#: ops whose pool grows with every repetition, or that rebuild a whole pool
REP_CAP = {"drain_inbox_10k": 20, "add": 10, "save": 10, "load": 10, "refresh_full": 10, "refresh_chain_3k": 5}


# --------------------------------------------------------------------------
# implementations


def _find_bench_root() -> Path | None:
    env = os.environ.get("HEAPA_BENCH_ROOT")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [here.parents[2], Path.cwd()]
    for root in candidates:
        if (root / "bench" / "baselines" / "__init__.py").is_file():
            return root
    return None


def import_baselines():
    """Import ``bench/baselines`` under a private name (``bench`` is too common a
    name to put on ``sys.path``; this file itself is called ``bench.py``)."""
    name = "heapa_bench_baselines"
    if name in sys.modules:
        return sys.modules[name]
    root = _find_bench_root()
    if root is None:
        raise ImportError("bench/baselines not found: run from a heapa source checkout or set HEAPA_BENCH_ROOT")
    pkg = root / "bench" / "baselines"
    spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def heapa_available() -> bool:
    try:
        from heapa import Pool, PoolConfig  # noqa: F401
    except ImportError:
        return False
    return True


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
        self.name = name
        self._baselines = import_baselines()

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


# --------------------------------------------------------------------------
# measurement


def rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak RSS is the best available
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(call, before=None, after=None, profile: Profile = FULL, max_reps: int | None = None) -> list[float]:
    """Time ``call(arg)`` repeatedly (``arg = before()``); returns microseconds per call.

    The garbage collector is paused while timing (as ``timeit`` does), so
    the baselines are not charged for full collections over a million
    objects that a tuned service would avoid.
    """
    cap = min(profile.max_reps, max_reps or profile.max_reps)
    times: list[float] = []
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        while len(times) < cap:
            arg = before() if before else None
            t0 = time.perf_counter_ns()
            res = call(arg)
            t1 = time.perf_counter_ns()
            times.append((t1 - t0) / 1e3)
            if after:
                after(arg, res)
            elapsed = time.perf_counter() - start
            if len(times) >= profile.min_reps and elapsed >= profile.max_time:
                break
            if elapsed >= 3 * profile.max_time:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return times


def summarize(times_us: list[float], items: int, unit: str) -> dict:
    t = np.asarray(times_us)
    p50 = float(np.percentile(t, 50))
    return {
        "p50_us": round(p50, 3),
        "p99_us": round(float(np.percentile(t, 99)), 3),
        "mean_us": round(float(t.mean()), 3),
        "ops_per_s": round(items / (p50 / 1e6), 1) if p50 > 0 else None,
        "items_per_call": items,
        "unit": unit,
        "reps": int(t.shape[0]),
    }


# --------------------------------------------------------------------------
# scenarios


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
        self.memory: dict = {}

    def rng(self, op: str, rep: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.size, ALL_OPS.index(op), rep])

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


@dataclass
class Runner:
    """One benchmark: ``call(before())`` is timed, ``after(arg, result)`` is not."""

    call: Callable
    before: Callable | None = None
    after: Callable | None = None
    max_reps: int | None = None
    cleanup: Callable | None = None
    info: dict = field(default_factory=dict)


def scenario_add(ctx: Context) -> Runner:
    state = {"rss0": None}

    def before():
        ctx.drop_pool()
        if not ctx.memory:
            state["rss0"] = rss_bytes()
        return ctx.impl.new_pool(ctx.base_cfg)

    def call(pool):
        pool.add(ctx.prompts, rewards=ctx.rewards)
        return pool

    def after(_, pool):
        if not ctx.memory:  # first build: memory per prompt
            gc.collect()
            rss = rss_bytes() - state["rss0"]
            engine, payload = ctx.impl.engine_bytes(pool)
            n = ctx.size
            ctx.memory = {
                "rss_bytes_per_prompt": round(rss / n, 1),
                "engine_bytes_per_prompt": None if engine is None else round(engine / n, 1),
                "payload_bytes_per_prompt": None if payload is None else round(payload / n, 1),
            }
        ctx.set_pool(pool, ctx.base_cfg)

    return Runner(call, before, after, max_reps=REP_CAP["add"], info={"items": (ctx.size, "prompts")})


def scenario_sample(mode: str) -> Callable[[Context], Runner]:
    def make(ctx: Context) -> Runner:
        pool = ctx.pool(sampling=mode)
        return Runner(lambda _: pool.sample(BATCH), after=lambda _, ids: pool.release(ids))

    return make


def scenario_report(ctx: Context) -> Runner:
    pool = ctx.pool(reinsert="immediate")
    reps = iter(range(10**9))

    def before():
        ids = pool.sample(BATCH)
        return ids, _rewards(ctx.rng("report_512", next(reps)), ids.shape[0])

    return Runner(lambda arg: pool.report(*arg), before)


def scenario_add_evict(ctx: Context) -> Runner:
    pool = ctx.pool(capacity=ctx.held())
    reps = iter(range(10**9))

    def before():
        rep = next(reps)
        return [f"e{rep}_{i}" for i in range(BATCH)], _rewards(ctx.rng("add_evict", rep), BATCH)

    return Runner(lambda arg: pool.add(arg[0], rewards=arg[1]), before)


def scenario_step(ctx: Context) -> Runner:
    """One RL step's pool work: sample, report, hand 512 children to the inbox, drain."""
    pool = ctx.pool(reinsert="on_drain", capacity=ctx.held())
    reps = iter(range(10**9))

    def before():
        rep = next(reps)
        rng = ctx.rng("step_overhead", rep)
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


def scenario_drain(ctx: Context) -> Runner:
    cap_reps = REP_CAP["drain_inbox_10k"]
    pool = ctx.pool(capacity=ctx.held() + (cap_reps + 2) * INBOX_ITEMS)
    rng = ctx.rng("drain_inbox_10k", 10**6)
    parents = pool.add([f"p{i}" for i in range(INBOX_ITEMS)], rewards=_rewards(rng, INBOX_ITEMS))
    reps = iter(range(10**9))

    def before():
        rep = next(reps)
        rng = ctx.rng("drain_inbox_10k", rep)
        par = rng.choice(parents, INBOX_ITEMS)
        pushed = pool.inbox.push(
            [f"d{rep}_{i}" for i in range(INBOX_ITEMS)], parents=par, difficulty=rng.uniform(0.75, 1.33, INBOX_ITEMS)
        )
        assert pushed == INBOX_ITEMS, f"inbox accepted {pushed} of {INBOX_ITEMS}"

    return Runner(lambda _: pool.drain_inbox(), before, max_reps=cap_reps)


def _snapshot_path(ctx: Context) -> str:
    if "snapshot_dir" not in ctx.memory:
        ctx.memory["snapshot_dir"] = tempfile.mkdtemp(prefix="heapa-bench-")
    return os.path.join(ctx.memory["snapshot_dir"], f"pool-{ctx.impl.name}.snap")


def scenario_save(ctx: Context) -> Runner:
    pool = ctx.pool()
    path = _snapshot_path(ctx)

    def after(_, __):
        ctx.memory["snapshot_bytes_per_prompt"] = round(os.path.getsize(path) / ctx.size, 1)

    return Runner(
        lambda _: pool.save(path), after=after, max_reps=REP_CAP["save"], info={"items": (ctx.size, "prompts")}
    )


def scenario_load(ctx: Context) -> Runner:
    path = _snapshot_path(ctx)
    if not os.path.exists(path):
        ctx.pool().save(path)
    return Runner(
        lambda _: ctx.impl.load(path),
        max_reps=REP_CAP["load"],
        cleanup=lambda: _remove(path),
        info={"items": (ctx.size, "prompts")},
    )


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


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
    return Runner(
        lambda _: pool.refresh(mode="path", scope=REFRESH_SCOPE),
        max_reps=REP_CAP["refresh_full"],
        info={"items": (ctx.size, "nodes")},
    )


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
    return Runner(lambda _: pool.refresh(mode="path", scope="all"), max_reps=REP_CAP["refresh_chain_3k"])


SCENARIOS: dict[str, Callable[[Context], Runner]] = {
    "add": scenario_add,
    "sample_medium_512": scenario_sample("medium"),
    "sample_mixed_512": scenario_sample("mixed"),
    "sample_uniform_512": scenario_sample("uniform"),
    "sample_prioritized_512": scenario_sample("prioritized"),
    "report_512": scenario_report,
    "add_evict": scenario_add_evict,
    "step_overhead": scenario_step,
    "drain_inbox_10k": scenario_drain,
    "save": scenario_save,
    "load": scenario_load,
    "refresh_full": scenario_refresh_full,
    "refresh_chain_3k": scenario_refresh_chain,
}


def max_size(impl: str, op: str) -> int | None:
    return MAX_SIZE.get(impl, {}).get(op)


# --------------------------------------------------------------------------
# worker (one implementation, one size, in its own process)


def run_worker(impl_name: str, size: int, ops: list[str], profile: Profile, seed: int = 0) -> dict:
    impl = make_impl(impl_name)
    ctx = Context(impl, size, seed)
    results: dict[str, dict | None] = {}
    errors: dict[str, str] = {}
    if "add" not in ops:  # memory is measured on the first build
        ops = ["add", *ops]
        drop_add = True
    else:
        drop_add = False
    for op in sorted(ops, key=RUN_ORDER.index):
        try:
            runner = SCENARIOS[op](ctx)
            if op == "add" and drop_add:  # only here to build the pool and read memory
                runner.max_reps = 1
            times = measure(runner.call, runner.before, runner.after, profile, runner.max_reps)
            items, unit = runner.info.get("items") or ITEMS.get(op, (1, "calls"))
            results[op] = summarize(times, items, unit)
            if runner.cleanup:
                runner.cleanup()
        except Exception as exc:  # a baseline may crash where the reference does
            results[op] = None
            errors[op] = f"{type(exc).__name__}: {exc}"
    if drop_add:
        results.pop("add", None)
    snap_dir = ctx.memory.pop("snapshot_dir", None)
    if snap_dir:
        for name in os.listdir(snap_dir):
            _remove(os.path.join(snap_dir, name))
        os.rmdir(snap_dir)
    return {"impl": impl_name, "size": size, "results": results, "memory": ctx.memory, "errors": errors}


def spawn_worker(impl: str, size: int, ops: list[str], quick: bool, seed: int) -> dict:
    """Run ``run_worker`` in a fresh interpreter and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="heapa-bench-") as tmp:
        out = os.path.join(tmp, "result.json")
        argv = [
            "--worker",
            impl,
            "--size",
            str(size),
            "--ops",
            ",".join(ops),
            "--seed",
            str(seed),
            "--out",
            out,
        ] + (["--quick"] if quick else [])
        # run this file as a script without putting its directory on sys.path
        bootstrap = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        env = dict(os.environ)
        # single-threaded numpy: idle BLAS worker threads spin and steal the
        # second core on small machines
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        root = _find_bench_root()
        if root is not None:
            env.setdefault("HEAPA_BENCH_ROOT", str(root))
        proc = subprocess.run(
            [sys.executable, "-c", bootstrap, os.path.abspath(__file__), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        if proc.returncode != 0 or not os.path.exists(out):
            tail = proc.stderr.strip().splitlines()[-5:]
            return {
                "impl": impl,
                "size": size,
                "results": dict.fromkeys(ops),
                "memory": {},
                "errors": {"worker": f"exit {proc.returncode}: " + " | ".join(tail)},
            }
        with open(out) as f:
            return json.load(f)


# --------------------------------------------------------------------------
# report


def _speedups(subject: dict, other: dict, ops) -> dict:
    out = {}
    for op in ops:
        s, o = subject.get(op), other.get(op)
        out[op] = round(o["p50_us"] / s["p50_us"], 2) if s and o and s["p50_us"] > 0 else None
    return out


def _check(value, cmp: str, limit: float) -> bool | None:
    if value is None:
        return None
    return value <= limit if cmp == "<=" else value >= limit


def evaluate_budgets(results: dict, memory_per_prompt, speedup: dict) -> dict:
    budgets = {}
    for op, (metric, cmp, limit) in BUDGETS.items():
        value = memory_per_prompt if op == "memory_bytes_per_prompt" else (results.get(op) or {}).get(metric)
        budgets[op] = {"metric": metric, "cmp": cmp, "limit": limit, "value": value, "ok": _check(value, cmp, limit)}
    for (base, op), limit in SPEEDUP_BUDGETS.items():
        if base not in speedup:  # that baseline was not run
            continue
        value = speedup[base].get(op)
        budgets[f"{op}:speedup_vs_{base}"] = {
            "metric": "speedup",
            "cmp": ">=",
            "limit": limit,
            "value": value,
            "ok": _check(value, ">=", limit),
        }
    return budgets


def run(
    size: int,
    quick: bool,
    impls: list[str],
    ops: list[str],
    seed: int = 0,
    log=print,
) -> dict:
    subject = impls[0]
    workers = {}
    skipped: dict[str, dict[str, int]] = {}
    for impl in impls:
        here = [op for op in ops if (max_size(impl, op) or size) >= size]
        skipped[impl] = {op: max_size(impl, op) for op in ops if op not in here}
        log(f"  running {impl} at {size:,} prompts ({len(here)} ops)...")
        t0 = time.perf_counter()
        workers[impl] = spawn_worker(impl, size, here, quick, seed)
        log(f"    done in {time.perf_counter() - t0:.1f} s")
        for op in skipped[impl]:
            workers[impl]["results"][op] = None

    # operations a baseline could not do at this size: time them at the
    # largest size it can do, next to the subject at that same size
    by_size: dict[int, set[str]] = {}
    for ops_skipped in skipped.values():
        for op, fb_size in ops_skipped.items():
            by_size.setdefault(fb_size, set()).add(op)
    subject_at = {}
    for fb_size, fb_ops in sorted(by_size.items()):
        log(f"  running {subject} at {fb_size:,} prompts for the baselines' skipped ops...")
        subject_at[fb_size] = spawn_worker(subject, fb_size, sorted(fb_ops, key=ALL_OPS.index), quick, seed)
    fallback: dict[str, dict] = {}
    for impl, ops_skipped in skipped.items():
        for fb_size in sorted(set(ops_skipped.values())):
            fb_ops = [op for op in ops if ops_skipped.get(op) == fb_size]
            log(f"  running {impl} at {fb_size:,} prompts for {', '.join(fb_ops)} (skipped at {size:,})...")
            base = spawn_worker(impl, fb_size, fb_ops, quick, seed)
            subj = subject_at[fb_size]["results"]
            entry = fallback.setdefault(
                impl, {"size": fb_size, "reason": {}, "results": {}, "subject_results": {}, "speedup": {}, "errors": {}}
            )
            entry["reason"].update({op: SKIP_REASON.get(op, "too slow") for op in fb_ops})
            entry["results"].update({op: base["results"].get(op) for op in fb_ops})
            entry["subject_results"].update({op: subj.get(op) for op in fb_ops})
            entry["speedup"].update(_speedups(subj, base["results"], fb_ops))
            entry["errors"].update(base["errors"])

    sub = workers[subject]
    speedup = {impl: _speedups(sub["results"], workers[impl]["results"], ops) for impl in impls[1:]}
    mem = sub["memory"]
    memory_per_prompt = mem.get("engine_bytes_per_prompt")
    if memory_per_prompt is None:
        memory_per_prompt = mem.get("rss_bytes_per_prompt")
    report = {
        "size": size,
        "quick": quick,
        "subject": subject,
        "results": {op: sub["results"].get(op) for op in ops if op in sub["results"]},
        "memory_bytes_per_prompt": memory_per_prompt,
        "memory": {impl: workers[impl]["memory"] for impl in impls},
        "speedup": speedup,
        "baselines": {impl: workers[impl]["results"] for impl in impls[1:]},
        "fallback": fallback,
        "errors": {impl: workers[impl]["errors"] for impl in impls if workers[impl]["errors"]},
        "notes": [],
        "env": _env(),
    }
    report["budgets"] = evaluate_budgets(report["results"], memory_per_prompt, speedup)
    if size != DEFAULT_SIZE:
        report["notes"].append(f"budgets are defined at {DEFAULT_SIZE:,} prompts; this run used {size:,}")
    for impl, ops_skipped in skipped.items():
        for op, fb in ops_skipped.items():
            report["notes"].append(
                f"{impl} skipped {op} at {size:,} ({SKIP_REASON.get(op, 'too slow')}); timed at {fb:,} instead"
            )
    if "refresh_full" in ops:
        report["notes"].append(
            f"refresh_full uses scope={REFRESH_SCOPE!r} on a {size:,}-node forest (half roots, half children)"
        )
    return report


def _env() -> dict:
    env = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        import heapa

        env["heapa"] = getattr(heapa, "__version__", "unknown")
    except ImportError:
        env["heapa"] = None
    return env


def _fmt_time(us) -> str:
    if us is None:
        return "-"
    if us < 1_000:
        return f"{us:.1f} µs"
    if us < 1_000_000:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def _fmt_rate(r: dict | None) -> str:
    if not r or r.get("ops_per_s") is None:
        return "-"
    v = r["ops_per_s"]
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.2f}{suffix} {r['unit']}/s"
    return f"{v:.1f} {r['unit']}/s"


def _fmt_x(x) -> str:
    if x is None:
        return "null"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x"


def format_table(report: dict) -> str:
    size, subject = report["size"], report["subject"]
    others = list(report["speedup"])
    lines = [
        f"heapa bench: {size:,} prompts, subject {subject}"
        + (" (quick)" if report["quick"] else "")
        + f"; python {report['env']['python']}, numpy {report['env']['numpy']}, {report['env']['cpus']} cpus",
        "",
    ]
    head = ["operation", "p50", "p99", "throughput"] + [f"vs {o}" for o in others] + ["budget"]
    rows = []
    budgets = report["budgets"]
    for op, r in report["results"].items():
        b = budgets.get(op)
        btxt = ""
        if b:
            limit = b["limit"]
            shown = _fmt_time(limit) if b["metric"].endswith("_us") else f"{limit:,.0f}/s"
            status = {True: "PASS", False: "FAIL", None: "n/a"}[b["ok"]]
            btxt = f"{b['metric'].split('_')[0]} {b['cmp']} {shown}: {status}"
        row = [op, _fmt_time(r and r["p50_us"]), _fmt_time(r and r["p99_us"]), _fmt_rate(r)]
        row += [_fmt_x(report["speedup"][o].get(op)) for o in others]
        rows.append([*row, btxt])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for row in [head, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())

    lines.append("")
    lines.append("memory per prompt (engine accounting / process RSS delta incl. payload):")
    for impl, m in report["memory"].items():
        eng = m.get("engine_bytes_per_prompt")
        parts = [f"engine {eng:.0f} B" if eng is not None else "engine n/a"]
        if m.get("rss_bytes_per_prompt") is not None:
            parts.append(f"RSS {m['rss_bytes_per_prompt']:.0f} B")
        if m.get("payload_bytes_per_prompt") is not None:
            parts.append(f"payload {m['payload_bytes_per_prompt']:.0f} B")
        if m.get("snapshot_bytes_per_prompt") is not None:
            parts.append(f"snapshot {m['snapshot_bytes_per_prompt']:.0f} B")
        lines.append(f"  {impl:<18} " + ", ".join(parts))
    mb = budgets.get("memory_bytes_per_prompt")
    if mb:
        status = {True: "PASS", False: "FAIL", None: "n/a"}[mb["ok"]]
        lines.append(f"  budget: {subject} memory <= {mb['limit']:.0f} B/prompt: {status}")
    speed = [(k, b) for k, b in budgets.items() if ":speedup_vs_" in k]
    if speed:
        lines.append("")
        lines.append("speedup budgets:")
        for k, b in speed:
            status = {True: "PASS", False: "FAIL", None: "n/a"}[b["ok"]]
            lines.append(f"  {k} >= {b['limit']:.0f}x: {_fmt_x(b['value'])} {status}")
    for impl, fb in report["fallback"].items():
        lines.append("")
        lines.append(f"{impl} at {fb['size']:,} prompts (skipped at {size:,}):")
        for op, r in fb["results"].items():
            s = fb["subject_results"].get(op)
            lines.append(
                f"  {op:<16} {impl} p50 {_fmt_time(r and r['p50_us'])}, {subject} p50 {_fmt_time(s and s['p50_us'])}"
                f", speedup {_fmt_x(fb['speedup'].get(op))}"
            )
    extra = {
        impl: (r.get("refresh_chain_3k") if impl != subject else report["results"].get("refresh_chain_3k"))
        for impl, r in [(subject, report["results"]), *report["baselines"].items()]
    }
    if any(v is not None for v in extra.values()) or report["errors"]:
        lines.append("")
        lines.append(f"refresh of a {CHAIN_DEPTH:,}-deep lineage chain:")
        for impl, r in extra.items():
            err = report["errors"].get(impl, {}).get("refresh_chain_3k")
            lines.append(f"  {impl:<18} " + (f"ERROR {err}" if err else f"p50 {_fmt_time(r and r['p50_us'])}"))
    other_errors = {
        impl: {op: e for op, e in errs.items() if op != "refresh_chain_3k"} for impl, errs in report["errors"].items()
    }
    for impl, errs in other_errors.items():
        for op, e in errs.items():
            lines.append(f"error: {impl} {op}: {e}")
    if report["notes"]:
        lines.append("")
        lines.extend(f"note: {n}" for n in report["notes"])
    return "\n".join(lines)


# --------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="heapa bench", description="Million-prompt microbenchmarks of heapa's pool engine."
    )
    p.add_argument(
        "--size", type=int, default=None, help=f"prompts in the pool (default {DEFAULT_SIZE:,}; --quick {QUICK_SIZE:,})"
    )
    p.add_argument("--quick", action="store_true", help="small pool and few repetitions (well under a minute)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument(
        "--impls",
        default=None,
        help="comma-separated implementations; the first is the subject (default: "
        + ",".join(IMPLS_DEFAULT)
        + "; heapa alone where bench/baselines is not available)",
    )
    p.add_argument("--ops", default=",".join(ALL_OPS), help="comma-separated operations (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="exit with status 1 if a budget fails")
    # internal: one implementation in a worker process
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quick = args.quick
    size = args.size or (QUICK_SIZE if quick else DEFAULT_SIZE)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = [op for op in ops if op not in ALL_OPS]
    if unknown:
        print(f"heapa bench: unknown operation(s) {unknown}; known: {', '.join(ALL_OPS)}", file=sys.stderr)
        return 2
    if size < 4 * BATCH:
        print(f"heapa bench: --size must be at least {4 * BATCH}", file=sys.stderr)
        return 2

    if args.worker:
        result = run_worker(args.worker, size, ops, QUICK if quick else FULL, args.seed)
        with open(args.out, "w") as f:
            json.dump(result, f)
        return 0

    if args.impls is None:
        impls = list(IMPLS_DEFAULT)
        if _find_bench_root() is None:
            print(
                "heapa bench: bench/baselines not found (not a source checkout): running heapa alone", file=sys.stderr
            )
            impls = ["heapa"]
    else:
        impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    if "heapa" in impls and not heapa_available():
        print(
            "heapa bench: the heapa extension is not importable (build it with `make develop`); "
            "use --impls best_python,reference_design to benchmark the baselines alone",
            file=sys.stderr,
        )
        return 2
    if any(i != "heapa" for i in impls):
        try:
            import_baselines()
        except ImportError as exc:
            print(f"heapa bench: {exc}; use --impls heapa to run without baselines", file=sys.stderr)
            return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    report = run(size, quick, impls, ops, args.seed, log=log)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if args.check and any(b["ok"] is False for b in report["budgets"].values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
