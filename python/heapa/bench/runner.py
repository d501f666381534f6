"""Timing, the worker processes and the JSON report of ``heapa bench``.

Every implementation runs in its own worker process (clean RSS readings, no garbage-collector state
carried over), on the same deterministic inputs. The first implementation is the *subject*: its
numbers fill ``results``, the others are compared against it in ``speedup``, and the budgets
(defined at :data:`~heapa.bench.registry.DEFAULT_SIZE` prompts) are checked on it.

The subject is also run at other sizes, in one worker per size: where a baseline skips an operation
(``max_size``), next to that baseline at its fallback size (``fallback`` in the report); where an
operation's cost must not grow with the pool (``flat_from``), at that size (``scaling``).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from . import registry as reg
from .registry import Op
from .scenarios import Context, make_impl


@dataclass(frozen=True)
class Profile:
    """How long to keep repeating one operation."""

    max_time: float  # seconds per (implementation, op), after min_reps
    min_reps: int
    max_reps: int


FULL = Profile(max_time=3.0, min_reps=3, max_reps=2000)
QUICK = Profile(max_time=0.25, min_reps=3, max_reps=300)


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
    """One op's result: ``p50_us``, ``p99_us``, ``mean_us``, ``ops_per_s`` (items at the p50), ..."""
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
# worker (one implementation, one size, in its own process)


def run_worker(impl_name: str, size: int, ops: list[Op], profile: Profile, seed: int = 0) -> dict:
    ctx = Context(make_impl(impl_name), size, seed)
    results: dict[str, dict | None] = {}
    errors: dict[str, str] = {}
    drop_add = all(op.name != "add" for op in ops)
    if drop_add:  # memory is measured on the first build
        ops = [reg.BY_NAME["add"], *ops]
    try:
        for op in sorted(ops, key=reg.OPS.index):
            try:
                runner = op.scenario(ctx)
                # "add" only here to build the pool and read memory: once
                cap = 1 if (drop_add and op.name == "add") else op.rep_cap
                times = measure(runner.call, runner.before, runner.after, profile, cap)
                results[op.name] = summarize(times, op.items_at(size), op.unit)
                if runner.cleanup:
                    runner.cleanup()
            except Exception as exc:  # a baseline may crash where the reference does
                results[op.name] = None
                errors[op.name] = f"{type(exc).__name__}: {exc}"
    finally:
        ctx.close()
    if drop_add:
        results.pop("add", None)
    return {"impl": impl_name, "size": size, "results": results, "memory": ctx.memory, "errors": errors}


def spawn_worker(impl: str, size: int, ops: list[Op], quick: bool, seed: int) -> dict:
    """Run ``run_worker`` in a fresh interpreter (``python -m heapa.bench --worker``) and return its result."""
    with tempfile.TemporaryDirectory(prefix="heapa-bench-") as tmp:
        out = os.path.join(tmp, "result.json")
        argv = ["--worker", impl, "--size", str(size), "--ops", ",".join(op.name for op in ops)]
        argv += ["--seed", str(seed), "--out", out] + (["--quick"] if quick else [])
        env = dict(os.environ)
        # single-threaded numpy: idle BLAS worker threads spin and steal the
        # second core on small machines
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        proc = subprocess.run(
            [sys.executable, "-m", "heapa.bench", *argv],
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
                "results": {op.name: None for op in ops},
                "memory": {},
                "errors": {"worker": f"exit {proc.returncode}: " + " | ".join(tail)},
            }
        with open(out) as f:
            return json.load(f)


# --------------------------------------------------------------------------
# report


def _speedups(subject: dict, other: dict, names) -> dict:
    out = {}
    for name in names:
        s, o = subject.get(name), other.get(name)
        out[name] = round(o["p50_us"] / s["p50_us"], 2) if s and o and s["p50_us"] > 0 else None
    return out


def _p50(result: dict | None) -> float | None:
    return result["p50_us"] if result else None


def evaluate_budgets(results: dict, memory_per_prompt, speedup: dict, scaling: dict | None = None) -> dict:
    """Every budget of the registry on the subject's results: ``{key: Budget.entry(value)}``.

    Keys: the op's name, ``memory_bytes_per_prompt``, ``OP:speedup_vs_BASELINE`` (for the
    baselines that ran) and ``OP:flat_vs_SIZE`` (where the op was also timed at ``flat_from``).
    """
    budgets = {}
    for op in reg.OPS:
        if op.budget:
            budgets[op.name] = op.budget.entry((results.get(op.name) or {}).get(op.budget.metric))
    budgets["memory_bytes_per_prompt"] = reg.MEMORY_BUDGET.entry(memory_per_prompt)
    for op in reg.OPS:
        for base, limit in op.min_speedup.items():
            if base in speedup:  # that baseline was run
                budgets[f"{op.name}:speedup_vs_{base}"] = reg.Budget("speedup", ">=", limit).entry(
                    speedup[base].get(op.name)
                )
    for name, s in (scaling or {}).items():
        budgets[f"{name}:flat_vs_{s['size']}"] = reg.Budget("p50_ratio", "<=", reg.FLAT_TOLERANCE).entry(s["ratio"])
    return budgets


def run(size: int, quick: bool, impls: list[str], ops: list[str], seed: int = 0, log=print) -> dict:
    """Run ``ops`` (names) on every implementation at ``size``; returns the report (see bench/README.md)."""
    selected = reg.get(ops)
    subject = impls[0]
    workers = {}
    skipped: dict[str, dict[str, int]] = {}  # impl -> {op: fallback size}
    absent: dict[str, list[str]] = {}  # impl -> ops it does not have
    for impl in impls:
        here = [op for op in selected if op.runs_at(impl, size)]
        absent[impl] = [op.name for op in selected if impl not in op.impls]
        skipped[impl] = {op.name: op.size_limit(impl) for op in selected if op not in here and impl in op.impls}
        log(f"  running {impl} at {size:,} prompts ({len(here)} ops)...")
        t0 = time.perf_counter()
        workers[impl] = spawn_worker(impl, size, here, quick, seed)
        log(f"    done in {time.perf_counter() - t0:.1f} s")
        for name in [*skipped[impl], *absent[impl]]:
            workers[impl]["results"][name] = None

    # the subject at other sizes: the baselines' fallback sizes and the flat_from sizes
    extra: dict[int, set[str]] = {}
    for ops_skipped in skipped.values():
        for name, fb_size in ops_skipped.items():
            extra.setdefault(fb_size, set()).add(name)
    flat = [op for op in selected if op.flat_from and op.flat_from < size and op.runs_at(subject, op.flat_from)]
    for op in flat:
        extra.setdefault(op.flat_from, set()).add(op.name)
    subject_at = {}
    for at, names in sorted(extra.items()):
        log(f"  running {subject} at {at:,} prompts for {', '.join(n for n in reg.NAMES if n in names)}...")
        subject_at[at] = spawn_worker(subject, at, reg.get(names), quick, seed)

    fallback: dict[str, dict] = {}
    for impl, ops_skipped in skipped.items():
        for fb_size in sorted(set(ops_skipped.values())):
            fb_ops = [op for op in selected if ops_skipped.get(op.name) == fb_size]
            names = [op.name for op in fb_ops]
            log(f"  running {impl} at {fb_size:,} prompts for {', '.join(names)} (skipped at {size:,})...")
            base = spawn_worker(impl, fb_size, fb_ops, quick, seed)
            subj = subject_at[fb_size]["results"]
            entry = fallback.setdefault(
                impl, {"size": fb_size, "reason": {}, "results": {}, "subject_results": {}, "speedup": {}, "errors": {}}
            )
            entry["reason"].update({op.name: op.skip_reason for op in fb_ops})
            entry["results"].update({n: base["results"].get(n) for n in names})
            entry["subject_results"].update({n: subj.get(n) for n in names})
            entry["speedup"].update(_speedups(subj, base["results"], names))
            entry["errors"].update(base["errors"])

    sub = workers[subject]
    names = [op.name for op in selected]
    scaling = {}
    for op in flat:
        small, large = _p50(subject_at[op.flat_from]["results"].get(op.name)), _p50(sub["results"].get(op.name))
        ratio = round(large / small, 2) if small and large is not None else None
        scaling[op.name] = {"size": op.flat_from, "p50_us": small, "ratio": ratio}
    speedup = {impl: _speedups(sub["results"], workers[impl]["results"], names) for impl in impls[1:]}
    mem = sub["memory"]
    memory_per_prompt = mem.get("engine_bytes_per_prompt")
    if memory_per_prompt is None:
        memory_per_prompt = mem.get("rss_bytes_per_prompt")
    errors = {impl: workers[impl]["errors"] for impl in impls if workers[impl]["errors"]}
    for at, w in subject_at.items():
        for name, err in w["errors"].items():
            errors.setdefault(subject, {})[f"{name}@{at}"] = err
    report = {
        "size": size,
        "quick": quick,
        "subject": subject,
        "results": {n: sub["results"].get(n) for n in names if n in sub["results"]},
        "memory_bytes_per_prompt": memory_per_prompt,
        "memory": {impl: workers[impl]["memory"] for impl in impls},
        "speedup": speedup,
        "baselines": {impl: workers[impl]["results"] for impl in impls[1:]},
        "fallback": fallback,
        "scaling": scaling,
        "errors": errors,
        "notes": [],
        "env": _env(),
    }
    report["budgets"] = evaluate_budgets(report["results"], memory_per_prompt, speedup, scaling)
    notes = report["notes"]
    if size != reg.DEFAULT_SIZE:
        notes.append(f"budgets are defined at {reg.DEFAULT_SIZE:,} prompts; this run used {size:,}")
    for impl, ops_skipped in skipped.items():
        for name, fb in ops_skipped.items():
            why = reg.BY_NAME[name].skip_reason
            notes.append(f"{impl} skipped {name} at {size:,} ({why}); timed at {fb:,} instead")
    for impl, names_absent in absent.items():
        if names_absent:
            notes.append(f"{impl} has no {', '.join(names_absent)} (null)")
    for op in selected:
        if op.flat_from and op not in flat:
            notes.append(f"{op.name}: flat-cost check needs a size above {op.flat_from:,}")
        if op.note:
            notes.append(op.note.format(size=size))
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
