"""pytest-benchmark suite: the operations of ``heapa bench`` at 10k, 100k and 1M prompts,
for heapa and the two pure-Python baselines (same registry, same scenarios, same inputs).

    .venv/bin/pytest bench --benchmark-only                       # 10k and 100k
    HEAPA_BENCH_1M=1 .venv/bin/pytest bench --benchmark-only -k heapa
    .venv/bin/pytest bench --benchmark-only -m "not baseline"     # heapa only

Every case comes from ``heapa.bench.registry.OPS``: an operation an implementation does not have
is skipped, so is a baseline operation that is O(n) per item above the size it can do (its
``max_size``), and a known crash (``crashes``) is an expected failure. The memory per prompt
(engine accounting and RSS delta) of each implementation is attached to its ``add`` case as
``extra_info``; heapa's 1M cases carry their budget check there too.
"""

from __future__ import annotations

import gc
import os
import time

import pytest
from heapa.bench import registry as reg
from heapa.bench.baselines import ReferenceCrash
from heapa.bench.runner import summarize

SIZES = (10_000, 100_000, reg.DEFAULT_SIZE)
TARGET_SECONDS = float(os.environ.get("HEAPA_BENCH_SECONDS", "2"))
MAX_ROUNDS = 1000


def _case(impl: str, size: int, op: reg.Op):
    marks = []
    if size >= 1_000_000:
        marks.append(pytest.mark.size_1m)
    if impl != reg.SUBJECT:
        marks.append(pytest.mark.baseline)
    limit = op.size_limit(impl)
    if impl not in op.impls:
        marks.append(pytest.mark.skip(reason=f"{impl} has no {op.name}"))
    elif limit is not None and size > limit:
        marks.append(pytest.mark.skip(reason=f"{impl} {op.name} is {op.skip_reason}: timed up to {limit:,} prompts"))
    if impl in op.crashes:
        marks.append(pytest.mark.xfail(raises=ReferenceCrash, strict=True, reason=op.crashes[impl]))
    return pytest.param(impl, size, op, marks=marks, id=f"{impl}-{size}-{op.name}")


# all operations of one (implementation, size) run back to back, in the
# worker's order, so they can share one pool
CASES = [_case(impl, size, op) for size in SIZES for impl in reg.IMPLS for op in reg.OPS]


@pytest.mark.parametrize(("impl", "size", "op"), CASES)
def test_pool_op(benchmark, contexts, impl, size, op):
    ctx = contexts.get(impl, size)
    runner = op.scenario(ctx)
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
    cap = min(MAX_ROUNDS, op.rep_cap or MAX_ROUNDS)
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

    items = op.items_at(size)
    benchmark.extra_info.update({"impl": impl, "size": size, "items_per_call": items, "unit": op.unit})
    if op.name == "add":
        benchmark.extra_info["memory"] = dict(ctx.memory)
    if impl != reg.SUBJECT or size != reg.DEFAULT_SIZE or benchmark.stats is None:
        return
    if op.name == "add":
        budget = {"metric": "engine_bytes_per_prompt", **reg.MEMORY_BUDGET.entry(ctx.memory["engine_bytes_per_prompt"])}
    elif op.budget:
        result = summarize([t * 1e6 for t in benchmark.stats.stats.data], items, op.unit)
        budget = op.budget.entry(result[op.budget.metric])
    else:
        return
    benchmark.extra_info["budget"] = budget
    if os.environ.get("HEAPA_BENCH_ENFORCE") == "1":
        assert budget["ok"], f"{op.name}: {budget}"
