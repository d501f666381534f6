"""``heapa simulate``: a simulated RLVR learner comparing prompt samplers, every
one driven through the real :class:`heapa.Pool`.

Usage::

    heapa simulate [--scenario NAME|all|priors ...] [--samplers NAME ...] [--seeds N]
                   [--json PATH] [--plot PATH] [--quick] [--workers N] [--cache PATH]
                   [--noise-scale X] [--signal grpo|variance] [--aug-cost GEN VAL]

(also ``python -m heapa.sim``). The learner, the scenarios and the cost model are described in
:mod:`heapa.sim.model` and ``docs/efficiency.md``; the large-pool scenarios with groups and
priors (``priors``, :data:`PRIOR_SCENARIOS`) and their samplers (:data:`PRIOR_SAMPLERS`) in
``docs/priors.md``. It is a model, not evidence
about LLMs: it shows what each sampling mechanism can and cannot do under
stated assumptions.

Metrics, per scenario and sampler, paired by seed (the same training pool and
held-out set for every sampler): rollouts to reach the scenario's target
held-out accuracy (runs go on to ``cap_factor`` x the budget; a run that never
gets there counts as the cap), its ratio to ``uniform`` on the same seed,
and held-out accuracy at the fixed rollout budget; means with 95% Student-t
intervals over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from dataclasses import MISSING, asdict, fields, replace
from typing import Any

import numpy as np

from .model import EXTRA_SCENARIOS, PRIOR_SCENARIOS, SCENARIOS, Scenario, get_scenario, quick
from .report import plot_all, summarise
from .runner import Learner, RunResult, default_workers, run_many, run_one
from .samplers import DEFAULT_SAMPLERS, PRIOR_SAMPLERS, RECOMMENDED, SAMPLERS, Sampler, get_sampler

__all__ = [
    "DEFAULT_SAMPLERS",
    "EXTRA_SCENARIOS",
    "PRIOR_SAMPLERS",
    "PRIOR_SCENARIOS",
    "RECOMMENDED",
    "SAMPLERS",
    "SCENARIOS",
    "Learner",
    "RunResult",
    "Sampler",
    "Scenario",
    "get_sampler",
    "get_scenario",
    "main",
    "run_one",
    "run_suite",
]

BASELINE = "uniform"

COST_MODEL = (
    "every rollout of a training group counts 1 (DAPO's discarded groups included); each augmentation "
    "candidate counts aug_gen_cost (the policy writing the variant) + aug_val_cost (the validator), "
    "accepted or not; pool operations are free"
)


def run_suite(
    scenarios: list[Scenario],
    samplers: list[Sampler],
    seeds: int,
    workers: int = 1,
    log: Any = None,
    cache: str | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, list[RunResult]]]]:
    """Runs every (scenario, sampler, seed) and returns the JSON report and the runs. With ``cache``
    (a JSON-lines file) every finished run is appended there and runs already there (same
    parameters, same engine build) are not run again, so an interrupted study resumes where it
    stopped."""
    names = [s.name for s in samplers]
    if BASELINE not in names:
        samplers = [get_sampler(BASELINE), *samplers]
    jobs = [(sc, sp, seed) for sc in scenarios for sp in samplers for seed in range(seeds)]
    cached = _load_cache(cache) if cache else {}
    digest = {(sc.name, sp.name): _params_digest(sc, sp) for sc in scenarios for sp in samplers}

    engine = _engine_digest()

    def key(scenario: str, sampler: str, seed: int) -> str:
        return f"{scenario}|{sampler}|{seed}|{digest[scenario, sampler]}|{engine}"

    known = {(sc.name, sp.name, seed): cached.get(key(sc.name, sp.name, seed)) for sc, sp, seed in jobs}
    todo = [job for job in jobs if known[job[0].name, job[1].name, job[2]] is None]
    out = open(cache, "a") if cache else None  # noqa: SIM115 (closed below)
    done = [len(jobs) - len(todo)]
    if log is not None and done[0]:
        print(f"  {done[0]}/{len(jobs)} runs from {cache}", file=log, flush=True)

    def progress(r: RunResult) -> None:
        done[0] += 1
        if out is not None:
            out.write(json.dumps({"key": key(r.scenario, r.sampler, r.seed), "run": _run_to_dict(r)}) + "\n")
            out.flush()
        if log is not None and (done[0] % 25 == 0 or done[0] == len(jobs)):
            print(f"  {done[0]}/{len(jobs)} runs", file=log, flush=True)

    try:
        fresh = iter(run_many(todo, workers=workers, progress=progress))
    finally:
        if out is not None:
            out.close()
    results = [known[sc.name, sp.name, seed] or next(fresh) for sc, sp, seed in jobs]
    runs: dict[str, dict[str, list[RunResult]]] = {sc.name: {sp.name: [] for sp in samplers} for sc in scenarios}
    for r in results:
        runs[r.scenario][r.sampler].append(r)
    report: dict[str, Any] = {
        "recommended": RECOMMENDED,
        "baseline": BASELINE,
        "seeds": seeds,
        "cost_model": COST_MODEL,
        "samplers_described": {sp.name: sp.description for sp in samplers},
        "scenarios": {},
    }
    for sc in scenarios:
        report["scenarios"][sc.name] = {
            "description": sc.description,
            "target": sc.target,
            "initial_accuracy": round(sc.initial_accuracy(), 4),
            "budget_rollouts": sc.budget,
            "cap_rollouts": sc.budget * sc.cap_factor,
            "params": sc.to_dict(),
            "samplers": summarise(sc, runs[sc.name], baseline=BASELINE),
        }
    return report, runs


def _params_digest(sc: Scenario, sp: Sampler) -> str:
    """A digest of the parameters of a (scenario, sampler) pair that differ from the defaults (a
    changed one is run again; a new field with a default keeps the cache valid)."""

    def changed(obj: Any) -> dict[str, Any]:
        return {f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) != _default(f)}

    params = json.dumps([changed(sc), changed(sp)], sort_keys=True, default=str)
    return f"{zlib.crc32(params.encode()):08x}"


def _engine_digest() -> str:
    """A digest of the compiled engine (the extension module's bytes): runs cached with another build
    of the engine are run again."""
    from .. import _heapa

    with open(_heapa.__file__, "rb") as f:
        return f"{zlib.crc32(f.read()):08x}"


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _run_to_dict(r: RunResult) -> dict[str, Any]:
    d = asdict(r)
    d["cost"], d["accuracy"] = r.cost.tolist(), r.accuracy.tolist()
    return d


def _load_cache(path: str) -> dict[str, RunResult]:
    """Runs recorded by an earlier (possibly interrupted) call with the same ``--cache``."""
    runs: dict[str, RunResult] = {}
    if not os.path.exists(path):
        return runs
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            d = e["run"]
            d["cost"], d["accuracy"] = np.asarray(d["cost"]), np.asarray(d["accuracy"])
            runs[e["key"]] = RunResult(**d)
    return runs


def _fmt(e: dict[str, Any] | None, digits: int = 3) -> str:
    if not e or e.get("mean") is None:
        return "-"
    lo, hi = e["ci95"]
    return f"{e['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_table(report: dict[str, Any]) -> str:
    """The per-scenario ratio table (plain text)."""
    lines = []
    for name, sc in report["scenarios"].items():
        lines.append(f"== {name}: target accuracy {sc['target']}, budget {sc['budget_rollouts']:.0f} rollouts")
        lines.append(f"  {'sampler':34s} {'ratio to uniform (95% CI)':28s} {'reached':8s} accuracy at budget")
        for sp, e in sc["samplers"].items():
            mark = " *" if sp == report["recommended"] else ""
            lines.append(
                f"  {sp + mark:34s} {_fmt(e.get('ratio_to_uniform')):28s} {e['reached']:8s} {_fmt(e['final_accuracy'])}"
            )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="heapa simulate",
        description="Simulated RLVR learner comparing prompt samplers through the real heapa Pool "
        "(a model, not evidence about LLMs; see docs/efficiency.md).",
    )
    p.add_argument(
        "--scenario",
        nargs="+",
        default=["base"],
        help=f"scenario name(s), 'all' ({', '.join(SCENARIOS)}) or 'priors' ({', '.join(PRIOR_SCENARIOS)}; "
        f"docs/priors.md); extra: {', '.join(EXTRA_SCENARIOS)}",
    )
    p.add_argument(
        "--samplers",
        nargs="+",
        default=None,
        help=f"sampler names, space or comma separated (default: all of {', '.join(DEFAULT_SAMPLERS)}); "
        f"'{BASELINE}' is always added; also {', '.join(PRIOR_SAMPLERS)} (docs/priors.md)",
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; 2 with --quick)")
    p.add_argument("--json", metavar="PATH", help="write the JSON report here")
    p.add_argument(
        "--plot",
        metavar="PATH",
        help="a directory (one PNG per scenario + overview.png) or a .png file "
        "(the scenario's plot, or the overview for several)",
    )
    p.add_argument("--quick", action="store_true", help="smaller, shorter scenarios (smoke runs)")
    p.add_argument(
        "--pool-size",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="run every scenario at each of these pool sizes instead of its own (named <scenario>@<N>): "
        "the same task, learner and budget, more or fewer passes over the pool",
    )
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count, max 8)")
    p.add_argument(
        "--noise-scale",
        type=float,
        default=None,
        metavar="X",
        help="sensitivity: gradient-noise scale as a multiple of the batch size (default 1)",
    )
    p.add_argument(
        "--signal",
        choices=("grpo", "variance"),
        default=None,
        help="sensitivity: learning signal of an informative group (default grpo)",
    )
    p.add_argument(
        "--aug-cost",
        type=float,
        nargs=2,
        default=None,
        metavar=("GEN", "VAL"),
        help="sensitivity: rollout-equivalents per augmentation candidate (default 1 1)",
    )
    p.add_argument(
        "--cache",
        metavar="PATH",
        help="JSON-lines file of finished runs: appended to as runs finish; runs already there are not "
        "run again (resume an interrupted study)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress or table on stdout/stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    names = [n for a in args.scenario for n in a.split(",") if n]
    try:
        scenarios = []
        for n in names:
            table = {"all": SCENARIOS, "priors": PRIOR_SCENARIOS}.get(n)
            scenarios += list(table.values()) if table else [get_scenario(n)]
        sampler_names = (
            DEFAULT_SAMPLERS if args.samplers is None else [n for a in args.samplers for n in a.split(",") if n]
        )
        samplers = [get_sampler(n) for n in sampler_names]
    except KeyError as e:
        print(f"heapa simulate: {e.args[0]}", file=sys.stderr)
        return 2
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 5)
    if seeds < 1:
        print("heapa simulate: --seeds must be at least 1", file=sys.stderr)
        return 2
    if args.quick:
        scenarios = [quick(s) for s in scenarios]
    if args.pool_size:
        if min(args.pool_size) < 1:
            print("heapa simulate: --pool-size must be at least 1", file=sys.stderr)
            return 2
        scenarios = [replace(s, name=f"{s.name}@{n}", n_prompts=n) for s in scenarios for n in args.pool_size]
    overrides: dict[str, Any] = {}
    if args.signal:
        overrides["signal"] = args.signal
    if args.aug_cost:
        overrides["aug_gen_cost"], overrides["aug_val_cost"] = args.aug_cost
    scenarios = [
        replace(s, **overrides, **({"noise_scale": args.noise_scale * s.batch} if args.noise_scale else {}))
        for s in scenarios
    ]
    workers = args.workers or default_workers()
    log = None if args.quiet else sys.stderr
    t0 = time.perf_counter()
    if log:
        print(
            f"heapa simulate: {len(scenarios)} scenario(s) x {len(samplers)} sampler(s) x {seeds} seed(s), "
            f"{workers} worker(s)",
            file=log,
            flush=True,
        )
    report, runs = run_suite(scenarios, samplers, seeds, workers=workers, log=log, cache=args.cache)
    report["command"] = "heapa simulate " + " ".join(sys.argv[1:] if argv is None else argv)
    report["quick"] = bool(args.quick)
    report["overrides"] = {**overrides, **({"noise_scale_factor": args.noise_scale} if args.noise_scale else {})}
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, allow_nan=False)
            f.write("\n")
    if args.plot:
        written = plot_all(scenarios, runs, RECOMMENDED, args.plot)
        if log:
            print(f"plots: {', '.join(written)}", file=log)
    if not args.quiet:
        print(format_table(report))
    return 0
