"""The text table of ``heapa bench`` (the JSON report is built in :mod:`heapa.bench.runner`)."""

from __future__ import annotations

from . import registry as reg

_STATUS = {True: "PASS", False: "FAIL", None: "n/a"}


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


def budget_text(metric: str, cmp: str, limit: float) -> str:
    """``p50 <= 100.0 µs``, ``ops >= 2,000,000/s``, ``speedup >= 10x``..."""
    if metric.endswith("_us"):
        shown = _fmt_time(limit)
    elif metric in ("speedup", "p50_ratio"):
        shown = f"{limit:g}x"
    else:
        shown = f"{limit:,.0f}/s"
    return f"{metric.split('_')[0]} {cmp} {shown}"


def _budget_cell(b: dict | None) -> str:
    return f"{budget_text(b['metric'], b['cmp'], b['limit'])}: {_STATUS[b['ok']]}" if b else ""


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    return [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, ["-" * w for w in widths], *rows]
    ]


def _memory_lines(report: dict) -> list[str]:
    lines = ["memory per prompt (engine accounting / process RSS delta incl. payload):"]
    for impl, m in report["memory"].items():
        eng = m.get("engine_bytes_per_prompt")
        parts = [f"engine {eng:.0f} B" if eng is not None else "engine n/a"]
        for key, label in (("rss", "RSS"), ("payload", "payload"), ("snapshot", "snapshot")):
            if m.get(f"{key}_bytes_per_prompt") is not None:
                parts.append(f"{label} {m[f'{key}_bytes_per_prompt']:.0f} B")
        lines.append(f"  {impl:<18} " + ", ".join(parts))
    mb = report["budgets"].get("memory_bytes_per_prompt")
    if mb:
        lines.append(f"  budget: {report['subject']} memory <= {mb['limit']:.0f} B/prompt: {_STATUS[mb['ok']]}")
    return lines


def format_table(report: dict) -> str:
    size, subject, budgets = report["size"], report["subject"], report["budgets"]
    others = list(report["speedup"])
    env = report["env"]
    lines = [
        f"heapa bench: {size:,} prompts, subject {subject}"
        + (" (quick)" if report["quick"] else "")
        + f"; python {env['python']}, numpy {env['numpy']}, {env['cpus']} cpus",
        "",
    ]
    head = ["operation", "p50", "p99", "throughput"] + [f"vs {o}" for o in others] + ["budget"]
    rows = []
    for op, r in report["results"].items():
        row = [op, _fmt_time(r and r["p50_us"]), _fmt_time(r and r["p99_us"]), _fmt_rate(r)]
        row += [_fmt_x(report["speedup"][o].get(op)) for o in others]
        rows.append([*row, _budget_cell(budgets.get(op))])
    lines += _table(head, rows)
    lines += ["", *_memory_lines(report)]

    speed = [(k, b) for k, b in budgets.items() if b["metric"] == "speedup"]
    if speed:
        lines += ["", "speedup budgets:"]
        lines += [f"  {k} >= {b['limit']:.0f}x: {_fmt_x(b['value'])} {_STATUS[b['ok']]}" for k, b in speed]
    if report.get("scaling"):
        lines += ["", f"cost independent of the pool size (p50 at {size:,} / p50 at the smaller size):"]
        for op, s in report["scaling"].items():
            b = budgets.get(f"{op}:flat_vs_{s['size']}") or {}
            lines.append(
                f"  {op:<16} p50 {_fmt_time(s['p50_us'])} at {s['size']:,}: ratio {_fmt_x(s['ratio'])}"
                f" (<= {b.get('limit', reg.FLAT_TOLERANCE):.1f}x: {_STATUS[b.get('ok')]})"
            )
    for impl, fb in report["fallback"].items():
        lines += ["", f"{impl} at {fb['size']:,} prompts (skipped at {size:,}):"]
        for op, r in fb["results"].items():
            s = fb["subject_results"].get(op)
            lines.append(
                f"  {op:<16} {impl} p50 {_fmt_time(r and r['p50_us'])}, {subject} p50 {_fmt_time(s and s['p50_us'])}"
                f", speedup {_fmt_x(fb['speedup'].get(op))}"
            )

    # diagnostics: every implementation's result or error, below the table
    shown = set()
    runs = [(subject, report["results"]), *report["baselines"].items()]
    for op in reg.OPS:
        if not op.diagnostic or not any(op.name in r for _, r in runs):
            continue
        lines += ["", f"{op.doc}:"]
        for impl, r in runs:
            err = report["errors"].get(impl, {}).get(op.name)
            shown.add((impl, op.name))
            lines.append(f"  {impl:<18} " + (f"ERROR {err}" if err else f"p50 {_fmt_time(_p50(r.get(op.name)))}"))
    for impl, errs in report["errors"].items():
        lines += [f"error: {impl} {op}: {e}" for op, e in errs.items() if (impl, op) not in shown]
    if report["notes"]:
        lines += ["", *(f"note: {n}" for n in report["notes"])]
    return "\n".join(lines)


def _p50(r: dict | None):
    return r and r["p50_us"]


def list_ops() -> str:
    """The registry as a table: operation, items per call, budgets at DEFAULT_SIZE, who runs it, what it does."""
    rows = []
    for op in reg.OPS:
        budget = [budget_text(op.budget.metric, op.budget.cmp, op.budget.limit)] if op.budget else []
        budget += [f"{budget_text('speedup', '>=', x)} vs {b}" for b, x in op.min_speedup.items()]
        if op.flat_from:
            budget.append(f"p50 <= {reg.FLAT_TOLERANCE:g}x its p50 at {op.flat_from:,}")
        impls = ",".join(op.impls) if op.impls != reg.IMPLS else "all"
        impls += "".join(f"; {i} up to {n:,}" for i, n in op.max_size.items())
        items = f"{'N' if op.items is None else f'{op.items:,}'} {op.unit}"
        rows.append([op.name, items, "; ".join(budget) or "-", impls, op.doc])
    head = ["operation", "per call", f"budget at {reg.DEFAULT_SIZE:,}", "impls", "what one call does"]
    return "\n".join(_table(head, rows))
