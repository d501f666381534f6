"""``heapa inspect PATH``: what a pool holds, read from a snapshot or a TRL checkpoint.

PATH is a file written by ``Pool.save``, a ``checkpoint-N`` folder written by ``heapa.trl`` (it holds
``heapa_pool.bin``), or a run's ``output_dir`` (its newest complete checkpoint is read). The report covers
composition, score histograms per partition, the boundary, metadata groups (``level``, ``source``, ...),
lineage depth and fan-out, and the oldest, stalest, hardest and easiest prompts. ``--json`` prints it as
one JSON object (schema in docs/inspect.md, ``"schema": 1``); ``--plot out.png`` draws it.

Everything is computed with the batch API (``Pool.ids`` / ``records`` / ``lineage`` return numpy arrays);
payloads are read only for the examples and for a fixed-size sample of metadata, so a 1M-prompt snapshot
takes about a second. This module also owns the checkpoint layout that ``heapa.trl`` writes and reads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ._pool import NO_PARENT, Pool
from .exceptions import HeapaError

__all__ = [
    "POOL_FILE",
    "SCHEMA",
    "STATE_FILE",
    "checkpoint_complete",
    "checkpoint_folders",
    "find_pool",
    "main",
    "plot",
    "render",
    "summarize",
]

#: The pool snapshot inside a checkpoint folder.
POOL_FILE = "heapa_pool.bin"
#: heapa.trl's state file, written last (atomically) when a checkpoint is saved: marks it complete.
STATE_FILE = "heapa_trainer.json"
#: Version of the ``--json`` schema (docs/inspect.md); bumped only when a field changes meaning or goes away.
SCHEMA = 1

PARTITIONS = ("cold", "hard", "easy", "in_flight", "archived")
#: stats() counters shown as they are: prompts through the pool, then engine events.
_FLOW = ("added", "sampled", "reported", "released", "evicted", "dropped")
COUNTERS = (*_FLOW, "reinsertions", "refreshes", "estimated", "orphaned", "drained")
#: Metadata keys summarised first when present; other low-cardinality scalar keys follow, up to MAX_GROUP_KEYS.
GROUP_KEYS = ("level", "difficulty", "source", "subject", "topic", "category", "type", "task", "dataset")
MAX_GROUP_KEYS = 4
MAX_GROUP_VALUES = 30
HIST_BINS = 20
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class NoPoolError(HeapaError):
    """PATH holds no heapa pool."""


# ---------------------------------------------------------------------- checkpoints


def checkpoint_folders(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``checkpoint-N`` folders of a run, oldest (smallest N) first."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def checkpoint_complete(folder: str | os.PathLike[str]) -> bool:
    """True when heapa.trl finished writing the checkpoint: its pool snapshot and a valid state file."""
    folder = Path(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "fingerprint" in state and (folder / POOL_FILE).is_file()


def find_pool(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The snapshot file PATH designates, and where it came from (``source`` in the report)."""
    path = Path(path)
    if not path.exists():
        raise NoPoolError(f"no heapa pool found in {path}: no such file or directory")
    if path.is_file():
        return path, {"kind": "snapshot", "checkpoint": None, "trainer_step": None}
    if (path / POOL_FILE).is_file():
        return path / POOL_FILE, _checkpoint_source(path)
    folders = [f for f in checkpoint_folders(path) if (f / POOL_FILE).is_file()]
    complete = [f for f in folders if checkpoint_complete(f)]
    chosen = complete[-1] if complete else (folders[-1] if folders else None)
    if chosen is None:
        raise NoPoolError(
            f"no heapa pool found in {path}: no {POOL_FILE} in it or in a checkpoint-N folder below it "
            "(pass a snapshot file, a checkpoint folder, or a run's output_dir)"
        )
    return chosen / POOL_FILE, _checkpoint_source(chosen)


def _checkpoint_source(folder: Path) -> dict[str, Any]:
    step = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        step = json.loads((folder / "trainer_state.json").read_text()).get("global_step")
    return {
        "kind": "checkpoint",
        "checkpoint": str(folder),
        "trainer_step": step,
        "complete": checkpoint_complete(folder),
    }


# ---------------------------------------------------------------------- the report


def summarize(pool: Pool, top: int = 5, sample: int = 20_000, width: int = 80, seed: int = 0) -> dict[str, Any]:
    """The report as a JSON-ready dict (schema ``SCHEMA``, docs/inspect.md). ``top`` examples per list,
    metadata read from at most ``sample`` prompts (uniform, seeded), prompt text cut to ``width`` chars."""
    stats = pool.stats()
    cfg = pool.config
    parts = {s: pool.ids(s) for s in PARTITIONS}
    ids = np.concatenate([parts[s] for s in PARTITIONS])
    state = np.repeat(np.arange(len(PARTITIONS)), [len(parts[s]) for s in PARTITIONS])
    rec = pool.records(ids)
    lin = pool.lineage(ids)
    score = rec["score"]
    scored = ~np.isnan(score)
    lo, hi = cfg.reward_range
    edges = np.linspace(lo, hi, HIST_BINS + 1)

    histogram = {}
    for k, name in enumerate(PARTITIONS):
        s = score[(state == k) & scored]
        counts = np.histogram(np.clip(s, lo, hi), bins=edges)[0]
        histogram[name] = {
            "count": int((state == k).sum()),
            "scored": len(s),
            "mean": _num(s.mean()) if len(s) else None,
            "counts": counts.tolist(),
        }
    boundary = _num(stats["boundary"])
    report = {
        "schema": SCHEMA,
        "config": cfg.to_dict(),
        "composition": {
            "capacity": stats["capacity"],
            "held": stats["held"],
            "free": stats["capacity"] - stats["held"],
            "live": stats["size"],
            **{name: stats[name] for name in PARTITIONS},
            "inbox_queued": stats["inbox_queued"],
            "delayed": stats["delayed"],
            "step": stats["step"],
            "memory_bytes": stats["memory_bytes"],
        },
        "counters": {k: stats[k] for k in COUNTERS},
        "boundary": {
            "value": boundary,
            "mode": cfg.boundary,
            "low_fraction": cfg.low_fraction if cfg.boundary == "quantile" else None,
            "target": cfg.target if cfg.boundary == "absolute" else None,
        },
        "scores": {
            "reward_range": [lo, hi],
            "edges": [round(float(e), 12) for e in edges],
            "scored": int(scored.sum()),
            "unscored": int((~scored).sum()),
            "estimated": int((rec["estimated"] & scored).sum()),
            "partitions": histogram,
        },
        "visits": {
            "never_trained": int((rec["last_step"] < 0).sum()),
            "mean": _num(rec["visits"].mean()) if len(ids) else None,
            "max": int(rec["visits"].max()) if len(ids) else 0,
            "distribution": _distribution(rec["visits"]),
        },
        "lineage": _lineage(lin),
        "groups": _groups(pool, ids, state, score, sample, seed),
    }
    report["examples"] = _examples(pool, ids, state, rec, lin, top, width)
    return report


def _num(x: Any) -> float | None:
    """A JSON number, or None for NaN / infinity."""
    x = float(x)
    return x if math.isfinite(x) else None


def _distribution(values: np.ndarray) -> dict[str, int]:
    """Counts per value: exact up to 9, then power-of-two buckets ("10-15", "16-31", ...)."""
    if len(values) == 0:
        return {}
    counts = np.bincount(np.minimum(values, 10).astype(np.int64))
    out = {str(v): int(c) for v, c in enumerate(counts[:10]) if c}
    big = values[values >= 10].astype(np.int64)
    if len(big):
        exp = np.floor(np.log2(big)).astype(np.int64)
        for e, c in zip(*np.unique(exp, return_counts=True), strict=True):
            lo, hi = max(10, 1 << int(e)), (1 << (int(e) + 1)) - 1
            out[f"{lo}-{hi}"] = int(c)
    return out


def _lineage(lin: dict[str, np.ndarray]) -> dict[str, Any]:
    depth, fan = lin["depth"], lin["n_children"]
    parents = fan > 0
    return {
        "roots": int((lin["parent"] == NO_PARENT).sum()),
        "children": int((lin["parent"] != NO_PARENT).sum()),
        "max_depth": int(depth.max()) if len(depth) else 0,
        "depth": _distribution(depth),
        "parents": int(parents.sum()),
        "max_fan_out": int(fan.max()) if len(fan) else 0,
        "mean_fan_out": _num(fan[parents].mean()) if parents.any() else None,
        "fan_out": _distribution(fan[parents]),
    }


def _groups(pool: Pool, ids: np.ndarray, state: np.ndarray, score: np.ndarray, sample: int, seed: int) -> dict:
    """Count, partition split and mean score per value of common metadata keys, on a uniform sample."""
    n = len(ids)
    pick = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    metas = pool.metadata(ids[pick])
    seen: Counter[str] = Counter()
    for m in metas:
        if isinstance(m, dict):
            seen.update(k for k, v in m.items() if isinstance(v, (str, int, float, bool)) or v is None)
    keys = [k for k in GROUP_KEYS if k in seen] + [k for k, _ in seen.most_common() if k not in GROUP_KEYS]
    hard, easy = PARTITIONS.index("hard"), PARTITIONS.index("easy")
    out: dict[str, Any] = {}
    for key in keys:
        if len(out) == MAX_GROUP_KEYS:
            break
        values = [m.get(key) if isinstance(m, dict) else None for m in metas]
        distinct = set(map(_key, values))
        if len(distinct) > MAX_GROUP_VALUES or (key not in GROUP_KEYS and len(distinct) < 2):
            continue  # free text or ids, or a constant: not a grouping
        labels = np.array([_key(v) for v in values], dtype=object)
        rows = {}
        for label in sorted(distinct, key=_order):
            at = labels == label
            s = score[pick][at]
            s = s[~np.isnan(s)]
            st = state[pick][at]
            rows[label] = {
                "count": int(at.sum()),
                "share": float(at.mean()),
                "scored": len(s),
                "mean_score": _num(s.mean()) if len(s) else None,
                "hard": int((st == hard).sum()),
                "easy": int((st == easy).sum()),
            }
        out[key] = {"sampled": len(pick), "of": n, "values": rows}
    return out


def _key(v: Any) -> str:
    return "(missing)" if v is None else json.dumps(v) if not isinstance(v, str) else v


def _order(label: str) -> tuple:
    """Numbers in numeric order, then text, then missing."""
    if label == "(missing)":
        return (2, 0.0, label)
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _examples(pool, ids, state, rec, lin, top, width) -> dict[str, list[dict]]:
    score, visits, last = rec["score"], rec["visits"].astype(np.int64), rec["last_step"]
    scored = np.flatnonzero(~np.isnan(score))
    trained = np.flatnonzero(last >= 0)
    pick = {
        # ids are issued in insertion order until evictions free slots (then approximately: see docs/inspect.md)
        "oldest": np.argsort(ids, kind="stable")[:top],
        "stalest": trained[np.lexsort((ids[trained], last[trained]))[:top]],
        # ties (many prompts at 0 or 1) go to the most visited: the best-established scores
        "hardest": scored[np.lexsort((-visits[scored], score[scored]))[:top]],
        "easiest": scored[np.lexsort((-visits[scored], -score[scored]))[:top]],
    }
    out = {}
    for name, rows in pick.items():
        texts = pool.prompts(ids[rows]) if len(rows) else []
        out[name] = [
            {
                "id": int(ids[r]),
                "prompt": _cut(t, width),
                "state": PARTITIONS[state[r]],
                "score": _num(score[r]),
                "estimated": bool(rec["estimated"][r]),
                "visits": int(visits[r]),
                "last_step": int(last[r]),
                "depth": int(lin["depth"][r]),
            }
            for r, t in zip(rows.tolist(), texts, strict=True)
        ]
    return out


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------- text and picture


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    c, sc, src = report["composition"], report["scores"], report["source"]
    lines = [f"heapa pool: {src['path']} ({src['kind']}"]
    if src["kind"] == "checkpoint":
        lines[0] += f", trainer step {src['trainer_step']}" + ("" if src.get("complete") else ", INCOMPLETE")
    lines[0] += f", {src['file_bytes'] / 1e6:.1f} MB)"
    lines.append(
        f"  held {c['held']:,} / {c['capacity']:,} ({c['free']:,} free)  step {c['step']}  "
        f"memory {c['memory_bytes'] / 1e6:.1f} MB"
    )
    lines.append("  " + "  ".join(f"{p} {c[p]:,}" for p in PARTITIONS) + f"  inbox {c['inbox_queued']:,}")
    k = report["counters"]
    lines.append("  counters: " + "  ".join(f"{name} {k[name]:,}" for name in k))
    b = report["boundary"]
    how = f"quantile {b['low_fraction']}" if b["mode"] == "quantile" else f"target {b['target']}"
    lines.append(f"  boundary {_f(b['value'])} ({how})")
    lines.append("")
    lo, hi = sc["reward_range"]
    lines.append(
        f"scores in [{lo:g}, {hi:g}], {HIST_BINS} bins ({sc['scored']:,} scored, {sc['unscored']:,} unscored, "
        f"{sc['estimated']:,} estimated)"
    )
    for name, h in sc["partitions"].items():
        if h["count"]:
            lines.append(
                f"  {name:<9} {_spark(h['counts'])}  n={h['count']:,} scored={h['scored']:,} mean={_f(h['mean'])}"
            )
    v = report["visits"]
    lines.append(f"visits: mean {_f(v['mean'])}, max {v['max']}, never trained {v['never_trained']:,}")
    lines.append("  " + _dist(v["distribution"]))
    ln = report["lineage"]
    lines.append("")
    lines.append(f"lineage: {ln['roots']:,} roots, {ln['children']:,} children, max depth {ln['max_depth']}")
    lines.append("  depth    " + _dist(ln["depth"]))
    if ln["parents"]:
        lines.append(f"  fan-out  {_dist(ln['fan_out'])}  (over {ln['parents']:,} parents, max {ln['max_fan_out']})")
    for key, g in report["groups"].items():
        lines.append("")
        of = f"sample of {g['sampled']:,}" if g["sampled"] < g["of"] else f"all {g['of']:,}"
        lines.append(f"metadata {key!r} ({of}):")
        for label, r in g["values"].items():
            lines.append(
                f"  {label[:24]:<24} {r['count']:>8,} ({100 * r['share']:5.1f}%)  mean score {_f(r['mean_score'])}"
                f"  hard {r['hard']:,} easy {r['easy']:,}"
            )
    for name, rows in report["examples"].items():
        lines.append("")
        lines.append(f"{name}:")
        for r in rows:
            lines.append(
                f"  {r['id']:>12} {r['state']:<9} score {_f(r['score'])}{'~' if r['estimated'] else ' '} "
                f"visits {r['visits']:<4} last {r['last_step']:<6} {r['prompt']!r}"
            )
        if not rows:
            lines.append("  (none)")
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _spark(counts: list[int]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    top = max(counts) or 1
    return "".join(bars[0] if c == 0 else bars[max(1, round(8 * c / top))] for c in counts)


def _dist(d: dict[str, int]) -> str:
    return "  ".join(f"{k}: {v:,}" for k, v in d.items()) or "(empty)"


def plot(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Draws the report (score histograms per partition, composition, groups, lineage) to an image file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc, c = report["scores"], report["composition"]
    colors = {"cold": "#9e9e9e", "hard": "#d62728", "easy": "#2ca02c", "in_flight": "#1f77b4", "archived": "#ff7f0e"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    edges = np.asarray(sc["edges"])
    bottom = np.zeros(len(edges) - 1)
    for name, h in sc["partitions"].items():
        if h["scored"]:
            ax.bar(
                edges[:-1],
                h["counts"],
                width=np.diff(edges),
                bottom=bottom,
                align="edge",
                label=name,
                color=colors[name],
                edgecolor="white",
                linewidth=0.3,
            )
            bottom += h["counts"]
    if report["boundary"]["value"] is not None:
        ax.axvline(report["boundary"]["value"], color="black", linestyle="--", linewidth=1, label="boundary")
    ax.set(title=f"scores by partition ({sc['scored']:,} scored)", xlabel="score", ylabel="prompts")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    names = [*PARTITIONS, "free"]
    ax.barh(
        names,
        [c[n] for n in names],
        color=[*(colors[n] for n in PARTITIONS), "#eeeeee"],
        edgecolor="black",
        linewidth=0.3,
    )
    ax.invert_yaxis()
    ax.set(title=f"composition: {c['held']:,} held of {c['capacity']:,}", xlabel="prompts")

    ax = axes[1, 0]
    groups = report["groups"]
    if groups:
        key, g = next(iter(groups.items()))
        labels = list(g["values"])
        means = [g["values"][k]["mean_score"] for k in labels]
        ax.bar(range(len(labels)), [m if m is not None else 0 for m in means], color="#1f77b4")
        ax.set_xticks(range(len(labels)), [label[:12] for label in labels], rotation=30 if len(labels) > 6 else 0)
        for i, k in enumerate(labels):
            ax.annotate(f"n={g['values'][k]['count']:,}", (i, 0), ha="center", va="bottom", fontsize=7, color="white")
        ax.set(title=f"mean score by metadata {key!r}", ylabel="mean score", ylim=sc["reward_range"])
    else:
        ax.text(0.5, 0.5, "no metadata groups", ha="center", va="center")
        ax.set_axis_off()

    ax = axes[1, 1]
    ln = report["lineage"]
    depth = ln["depth"]
    ax.bar(list(depth), list(depth.values()), color="#9467bd", label="depth")
    ax.set_yscale("log")
    ax.set(
        title=f"lineage: depth (max {ln['max_depth']}), {ln['children']:,} children",
        xlabel="depth",
        ylabel="prompts (log)",
    )
    if ln["parents"]:
        ax.text(
            0.98,
            0.95,
            "fan-out per parent\n" + "\n".join(f"{k}: {v:,}" for k, v in ln["fan_out"].items()),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            family="monospace",
        )
    fig.suptitle(f"heapa inspect: {Path(report['source']['path']).name} (step {c['step']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- command line


def inspect_path(path: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """Finds the pool PATH designates, loads it and returns its report."""
    file, source = find_pool(path)
    pool = Pool.load(file)
    report = summarize(pool, **kwargs)
    report["source"] = {"path": str(file), **source, "file_bytes": file.stat().st_size}
    return {"schema": report.pop("schema"), "source": report.pop("source"), **report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="heapa inspect",
        description="What a heapa pool holds: a Pool.save snapshot, a heapa.trl checkpoint-N folder, or a run's "
        "output_dir (its newest complete checkpoint).",
    )
    p.add_argument("path", help="snapshot file, checkpoint folder or run directory")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object (docs/inspect.md)")
    p.add_argument("--plot", metavar="PNG", help="also draw the report to this image file (matplotlib)")
    p.add_argument("--top", type=int, default=5, help="examples per list (default 5)")
    p.add_argument("--sample", type=int, default=20_000, help="prompts whose metadata is read (default 20000)")
    p.add_argument("--width", type=int, default=80, help="characters of prompt text shown (default 80)")
    args = p.parse_args(argv)
    if args.top < 0 or args.sample < 1 or args.width < 8:
        p.error("--top must be >= 0, --sample >= 1 and --width >= 8")
    try:
        report = inspect_path(args.path, top=args.top, sample=args.sample, width=args.width)
    except (HeapaError, OSError) as e:  # SnapshotError is both; a directory or permission problem is OSError
        print(f"heapa inspect: {e}", file=sys.stderr)
        return 1
    if args.plot:
        try:
            plot(report, args.plot)
        except ImportError:
            print("heapa inspect: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 1
        except (OSError, ValueError) as e:
            print(f"heapa inspect: cannot write {args.plot}: {e}", file=sys.stderr)
            return 1
    try:
        print(json.dumps(report) if args.json else render(report), flush=True)
    except BrokenPipeError:  # `heapa inspect ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
