"""Paired statistics over seeds, the JSON report and the plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .model import Scenario
from .runner import RunResult

#: two-sided 95% Student-t quantiles by degrees of freedom (no scipy needed)
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    25: 2.060,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t975(df: int) -> float:
    if df in _T975:
        return _T975[df]
    below = [k for k in _T975 if k <= df]
    return _T975[max(below)] if below else 1.96


def mean_ci(x: Sequence[float]) -> dict[str, Any]:
    """Mean and 95% Student-t interval over seeds (``None`` entries if undefined)."""
    a = np.asarray(x, dtype=float)
    if a.size == 0 or not np.isfinite(a).all():
        return {"mean": None, "ci95": [None, None]}
    m = float(a.mean())
    if a.size < 2:
        return {"mean": m, "ci95": [m, m]}
    h = t975(a.size - 1) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return {"mean": m, "ci95": [m - h, m + h]}


def summarise(
    sc: Scenario,
    runs: dict[str, list[RunResult]],
    baseline: str = "uniform",
    reference: str = "group_oracle",
) -> dict[str, Any]:
    """Per-sampler paired statistics for one scenario.

    A run that never reaches the target within ``cap_factor * budget`` rollouts
    is *censored*: its rollouts_to_target counts as the cap (so means are lower
    bounds) and ``reached`` says how many seeds got there. Where ``reference``
    (the group oracle) ran too, ``ratio_to_<reference>`` is the paired ratio to it.
    """
    target, budget = sc.target, sc.budget
    cap = budget * sc.cap_factor
    base = {r.seed: r for r in runs.get(baseline, [])}
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        to = np.array([r.rollouts_to(target) for r in rs])
        reached = np.isfinite(to)
        to_c = np.where(reached, to, cap)
        acc = np.array([r.accuracy_at(budget) for r in rs])
        entry: dict[str, Any] = {
            "rollouts_to_target": mean_ci(to_c),
            "reached": f"{int(reached.sum())}/{len(rs)}",
            "final_accuracy": mean_ci(acc),
            "informative_fraction": mean_ci([r.informative_fraction for r in rs]),
            "augmented_accepted": mean_ci([r.aug_accepted for r in rs]),
            "final_pool_size": mean_ci([r.pool_size for r in rs]),
        }
        if base:
            b_to = np.array([base[r.seed].rollouts_to(target) for r in rs])
            b_to = np.where(np.isfinite(b_to), b_to, cap)
            b_acc = np.array([base[r.seed].accuracy_at(budget) for r in rs])
            entry["ratio_to_uniform"] = mean_ci(to_c / b_to)
            entry["accuracy_gain_vs_uniform"] = mean_ci(acc - b_acc)
        ref = {r.seed: r for r in runs.get(reference, [])}
        if ref and all(r.seed in ref for r in rs):
            r_to = np.array([ref[r.seed].rollouts_to(target) for r in rs])
            entry[f"ratio_to_{reference}"] = mean_ci(to_c / np.where(np.isfinite(r_to), r_to, cap))
        out[name] = entry
    return out


def mean_curve(rs: Sequence[RunResult], grid: np.ndarray) -> np.ndarray:
    return np.mean([np.interp(grid, r.cost, r.accuracy) for r in rs], axis=0)


#: line colour and style per sampler
STYLE = {
    "uniform": ("tab:blue", "--"),
    "uniform_epochs": ("tab:cyan", "--"),
    "dapo_filter": ("tab:green", "-"),
    "prioritized": ("tab:red", "-"),
    "heapa_paper": ("tab:purple", "-"),
    "heapa_frontier": ("tab:brown", "-"),
    "heapa_paper_augment": ("tab:pink", "-"),
    "heapa_frontier_augment": ("tab:olive", "-"),
    "heapa_frontier_revisit": ("black", "-"),
    "oracle_frontier": ("grey", ":"),
    "heapa_frontier_prior": ("tab:orange", "-"),
    "heapa_frontier_prior_hl": ("gold", "-"),
    "heapa_frontier_prior_calibrated": ("darkred", "-"),
    "heapa_frontier_prior_binned": ("tab:pink", "-."),
    "heapa_frontier_prior_binned_hl": ("tab:olive", "-."),
    "heapa_frontier_prior_nogroups": ("tab:cyan", "-."),
    "group_oracle": ("dimgrey", ":"),
    "group_oracle_static": ("silver", ":"),
}


def plot_scenario(ax: Any, sc: Scenario, runs: dict[str, list[RunResult]], recommended: str) -> None:
    """Mean held-out accuracy over seeds against cost, one line per sampler."""
    grid = np.linspace(0.0, sc.budget * sc.horizon_factor, 240)
    for name, rs in runs.items():
        y = mean_curve(rs, grid)
        rec = name == recommended
        color, ls = STYLE.get(name, (None, "-"))
        ax.plot(
            grid / 1e3,
            y,
            label=name + (" (recommended)" if rec else ""),
            lw=2.8 if rec else 1.3,
            ls=ls,
            color="black" if rec else color,
            zorder=3 if rec else 2,
        )
    ax.axhline(sc.target, color="grey", lw=0.8, ls=":")
    ax.axvline(sc.budget / 1e3, color="grey", lw=0.8, ls=":")
    ax.set_title(f"{sc.name} (target {sc.target}, budget {sc.budget / 1e3:.0f}k)", fontsize=9)
    ax.set_xlabel("rollouts, thousands (augmentation cost included)")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)


def plot_all(
    scenarios: Sequence[Scenario],
    runs: dict[str, dict[str, list[RunResult]]],
    recommended: str,
    path: str,
) -> list[str]:
    """Writes the plots; returns the paths written. ``path`` ending in ``.png``:
    that scenario's plot, or with several scenarios the overview grid;
    otherwise a directory: ``<scenario>.png`` each, plus ``overview.png``."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def one(sc: Scenario, out: str) -> str:
        fig, ax = plt.subplots(figsize=(8, 5))
        plot_scenario(ax, sc, runs[sc.name], recommended)
        ax.legend(fontsize=7, loc="upper left", framealpha=0.85)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out

    def overview(out: str) -> str:
        n = len(scenarios)
        cols = min(4, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows + 1.2), squeeze=False)
        for ax, sc in zip(axes.flat, scenarios, strict=False):
            plot_scenario(ax, sc, runs[sc.name], recommended)
            ax.set_xlabel("rollouts (k)", fontsize=8)
            ax.set_ylabel("accuracy", fontsize=8)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
        fig.tight_layout(rect=(0, 1.1 / (3.4 * rows + 1.2), 1, 1))
        fig.savefig(out, dpi=90)
        plt.close(fig)
        return out

    if path.endswith(".png"):
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        return [one(scenarios[0], path) if len(scenarios) == 1 else overview(path)]
    os.makedirs(path, exist_ok=True)
    written = [one(sc, os.path.join(path, f"{sc.name}.png")) for sc in scenarios]
    if len(scenarios) > 1:
        written.append(overview(os.path.join(path, "overview.png")))
    return written


def _cell(e: dict[str, Any] | None, key: str) -> str:
    if e is None or e.get(key, {}).get("mean") is None:
        return "-"
    m, (lo, hi) = e[key]["mean"], e[key]["ci95"]
    done, total = e["reached"].split("/")
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]" + ("*" if done != total else "")


def markdown_table(
    report: dict[str, Any],
    key: str = "ratio_to_uniform",
    samplers: Sequence[str] | None = None,
    by: str = "sampler",
) -> str:
    """A markdown table of ``key`` from a JSON report: ``mean [lo, hi]`` (95% interval over seeds);
    ``*`` where some seeds never reached the target (counted at the cap, so the ratio is a lower
    bound). One row per sampler and a column per scenario (``by="sampler"``), or the transpose
    (``by="scenario"``)."""
    scen = report["scenarios"]
    names = list(samplers) if samplers else list(next(iter(scen.values()))["samplers"])
    if by == "scenario":
        lines = ["| scenario | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for sc_name, sc in scen.items():
            lines.append(f"| {sc_name} | " + " | ".join(_cell(sc["samplers"].get(sp), key) for sp in names) + " |")
        return "\n".join(lines)
    lines = ["| sampler | " + " | ".join(scen) + " |", "|---" * (len(scen) + 1) + "|"]
    for sp in names:
        lines.append(f"| {sp} | " + " | ".join(_cell(sc["samplers"].get(sp), key) for sc in scen.values()) + " |")
    return "\n".join(lines)
