"""pytest-benchmark suite: the operations of ``heapa bench`` at 10k, 100k and 1M prompts,
for heapa and the two pure-Python baselines (same scenarios, same inputs).

    .venv/bin/pytest bench --benchmark-only                       # 10k and 100k
    HEAPA_BENCH_1M=1 .venv/bin/pytest bench --benchmark-only -k heapa
    .venv/bin/pytest bench --benchmark-only -m "not baseline"     # heapa only

A baseline operation that is O(n) per item is skipped above the size it can
do (see ``heapa.bench.MAX_SIZE``). The memory per prompt (engine accounting
and RSS delta) of each implementation is attached to its ``add`` case as
``extra_info``; heapa's 1M cases carry their budget check there too.
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest
from heapa import bench as hb

SIZES = (10_000, 100_000, 1_000_000)
IMPLS = ("heapa", "best_python", "reference_design")
TARGET_SECONDS = float(os.environ.get("HEAPA_BENCH_SECONDS", "2"))
MAX_ROUNDS = 1000


def _case(impl: str, size: int, op: str):
    marks = []
    if size >= 1_000_000:
        marks.append(pytest.mark.size_1m)
    if impl != "heapa":
        marks.append(pytest.mark.baseline)
    limit = hb.max_size(impl, op)
    if limit is not None and size > limit:
        reason = f"{impl} {op} is {hb.SKIP_REASON.get(op, 'too slow')}: timed up to {limit:,} prompts"
        marks.append(pytest.mark.skip(reason=reason))
    if impl == "reference_design" and op == "refresh_chain_3k":
        crash = hb.import_baselines().ReferenceCrash
        marks.append(pytest.mark.xfail(raises=crash, strict=True, reason="recursive DFS overflows, like the reference"))
    if impl == "heapa" and not hb.heapa_available():
        marks.append(pytest.mark.skip(reason="heapa extension not built (make develop)"))
    return pytest.param(impl, size, op, marks=marks, id=f"{impl}-{size}-{op}")


# all operations of one (implementation, size) run back to back, in the
# worker's order, so they can share one pool
CASES = [_case(impl, size, op) for size in SIZES for impl in IMPLS for op in hb.RUN_ORDER]


def _budget(op: str, times_us: list[float], items: int, memory: dict) -> dict | None:
    if op not in hb.BUDGETS:
        return None
    metric, cmp, limit = hb.BUDGETS[op]
    t = np.asarray(times_us)
    value = {
        "p50_us": float(np.percentile(t, 50)),
        "p99_us": float(np.percentile(t, 99)),
        "ops_per_s": items / (float(np.percentile(t, 50)) / 1e6),
    }[metric]
    ok = value <= limit if cmp == "<=" else value >= limit
    return {"metric": metric, "limit": limit, "value": round(value, 3), "ok": ok}


@pytest.mark.parametrize(("impl", "size", "op"), CASES)
def test_pool_op(benchmark, contexts, impl, size, op):
    ctx = contexts.get(impl, size)
    runner = hb.SCENARIOS[op](ctx)
    pending = []  # (arg, result) of the previous round, for runner.after

    def finish_previous():
        if pending and runner.after:
            runner.after(*pending.pop())
        pending.clear()

    def setup():
        finish_previous()
        return ((runner.before() if runner.before else None),), {}

    def target(arg):
        res = runner.call(arg)
        pending.append((arg, res))
        return res

    # calibrate: one untimed round sets how many rounds fit the target time
    t0 = time.perf_counter()
    args, _ = setup()
    target(*args)
    once = time.perf_counter() - t0
    cap = min(MAX_ROUNDS, runner.max_reps or MAX_ROUNDS)
    rounds = max(1, min(cap, int(TARGET_SECONDS / max(once, 1e-9))))

    gc.collect()
    gc.disable()  # as in `heapa bench`: no full collections inside timed calls
    try:
        benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)
    finally:
        gc.enable()
        finish_previous()
        if runner.cleanup:
            runner.cleanup()

    items, unit = runner.info.get("items") or hb.ITEMS.get(op, (1, "calls"))
    benchmark.extra_info.update({"impl": impl, "size": size, "items_per_call": items, "unit": unit})
    if op == "add":
        benchmark.extra_info["memory"] = dict(ctx.memory)
    if impl == "heapa" and size == hb.DEFAULT_SIZE:
        times_us = [t * 1e6 for t in benchmark.stats.stats.data]
        budget = _budget(op, times_us, items, ctx.memory)
        if op == "add":
            engine = ctx.memory.get("engine_bytes_per_prompt")
            limit = hb.BUDGETS["memory_bytes_per_prompt"][2]
            budget = {"metric": "engine_bytes_per_prompt", "limit": limit, "value": engine, "ok": engine <= limit}
        if budget:
            benchmark.extra_info["budget"] = budget
            if os.environ.get("HEAPA_BENCH_ENFORCE") == "1":
                assert budget["ok"], f"{op}: {budget}"
