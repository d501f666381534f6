"""``heapa bench`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import registry as reg
from .report import format_table, list_ops
from .runner import FULL, QUICK, run, run_worker
from .scenarios import BATCH


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="heapa bench", description="Million-prompt microbenchmarks of heapa's pool engine."
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"prompts in the pool (default {reg.DEFAULT_SIZE:,}; --quick {reg.QUICK_SIZE:,})",
    )
    p.add_argument("--quick", action="store_true", help="small pool and few repetitions (well under a minute)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument(
        "--impls",
        default=",".join(reg.IMPLS),
        help="comma-separated implementations; the first is the subject (default: %(default)s)",
    )
    p.add_argument("--ops", default=",".join(reg.NAMES), help="comma-separated operations (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="exit with status 1 if a budget fails")
    p.add_argument("--list", action="store_true", help="list the operations and their budgets, and exit")
    # internal: one implementation in a worker process
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        print(list_ops())
        return 0
    quick = args.quick
    size = args.size or (reg.QUICK_SIZE if quick else reg.DEFAULT_SIZE)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = [op for op in ops if op not in reg.BY_NAME]
    if unknown:
        print(f"heapa bench: unknown operation(s) {unknown}; known: {', '.join(reg.NAMES)}", file=sys.stderr)
        return 2
    if size < 4 * BATCH:
        print(f"heapa bench: --size must be at least {4 * BATCH}", file=sys.stderr)
        return 2

    if args.worker:
        result = run_worker(args.worker, size, reg.get(ops), QUICK if quick else FULL, args.seed)
        with open(args.out, "w") as f:
            json.dump(result, f)
        return 0

    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = [i for i in impls if i not in reg.IMPLS]
    if unknown or not impls:
        print(f"heapa bench: unknown implementation(s) {unknown}; known: {', '.join(reg.IMPLS)}", file=sys.stderr)
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
