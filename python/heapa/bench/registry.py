"""The one list of benchmark operations.

Each :class:`Op` says what is timed (its scenario), what one call processes (for throughput), the
budget it must meet at :data:`DEFAULT_SIZE` prompts, which implementations run it and up to which
size. The runner (``heapa bench``), its report and the pytest-benchmark suite (``bench/``) read
everything from :data:`OPS`; nothing else keeps a per-operation table.

:data:`OPS` is in *run order*: a worker runs the operations of one (implementation, size) in this
order on one shared pool, so the snapshots (``save``/``load``) come before the operations that
change the pool's size, and the read-only ones right after the pool is built. Reports list them in
the same order.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from . import scenarios as sc

DEFAULT_SIZE = 1_000_000
QUICK_SIZE = 20_000
SUBJECT = "heapa"
BASELINES = ("best_python", "reference_design")
IMPLS = (SUBJECT, *BASELINES)
#: ``flat_from`` checks: the p50 at the run's size may be at most this many times the p50 at ``flat_from``.
FLAT_TOLERANCE = 2.0

_CMP = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Budget:
    """``metric cmp limit`` on the subject; ``metric`` is a key of an op's result (``p50_us``, ``ops_per_s``...)."""

    metric: str
    cmp: str
    limit: float

    def __post_init__(self):
        if self.cmp not in _CMP:
            raise ValueError(f"cmp must be one of {list(_CMP)}, got {self.cmp!r}")

    def ok(self, value: float | None) -> bool | None:
        return None if value is None else bool(_CMP[self.cmp](value, self.limit))

    def entry(self, value: float | None) -> dict:
        """The budget's row in a report: ``{"metric", "cmp", "limit", "value", "ok"}``."""
        return {"metric": self.metric, "cmp": self.cmp, "limit": self.limit, "value": value, "ok": self.ok(value)}


def _frozen(d: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Op:
    name: str
    #: builds the timed call from a :class:`~heapa.bench.scenarios.Context`
    scenario: Callable[[sc.Context], sc.Runner] = field(repr=False)
    #: what one timed call does (``--list``, bench/README.md)
    doc: str
    #: items one call processes, for ``ops_per_s``; ``None``: the pool size
    items: int | None = 1
    unit: str = "calls"
    #: checked on the subject at DEFAULT_SIZE prompts (issue 4's and later budgets)
    budget: Budget | None = None
    #: baseline name -> the subject's minimum speedup over it (baseline p50 / subject p50)
    min_speedup: Mapping[str, float] = field(default_factory=_frozen, hash=False)
    #: the cost must not grow with the pool: also timed at this size on the subject; the ratio of the
    #: two p50s is a budget (at most FLAT_TOLERANCE)
    flat_from: int | None = None
    #: implementations that have this operation (the others report ``null``, with no fallback)
    impls: tuple[str, ...] = IMPLS
    #: implementation -> largest size it runs this op at (O(n) or worse per item); above it the op is
    #: skipped and timed at that size instead, next to the subject at that size
    max_size: Mapping[str, int] = field(default_factory=_frozen, hash=False)
    skip_reason: str = "too slow"
    #: most repetitions (ops whose pool grows with every repetition, or that rebuild a whole pool)
    rep_cap: int | None = None
    #: implementation -> why it is expected to fail (the error is reported; pytest marks it xfail)
    crashes: Mapping[str, str] = field(default_factory=_frozen, hash=False)
    #: a diagnostic, listed with each implementation's result (or error) below the table
    diagnostic: bool = False
    #: added to the report's notes when the op runs (``{size}`` is filled in)
    note: str = ""

    def __post_init__(self):
        for name in ("min_speedup", "max_size", "crashes"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def items_at(self, size: int) -> int:
        return size if self.items is None else self.items

    def size_limit(self, impl: str) -> int | None:
        return self.max_size.get(impl)

    def runs_at(self, impl: str, size: int) -> bool:
        limit = self.size_limit(impl)
        return impl in self.impls and (limit is None or size <= limit)


def _sample(mode: str, budget: Budget | None = None, **kw) -> Op:
    return Op(
        f"sample_{mode}_512",
        sc.scenario_sample(mode),
        f'`sample(512)` with `sampling="{mode}"` from N scored prompts (released untimed)',
        items=sc.BATCH,
        unit="prompts",
        budget=budget,
        **kw,
    )


_REF_LINEAR = 50_000  # reference_design's O(n)-per-item operations stop here

OPS: tuple[Op, ...] = (
    Op(
        "add",
        sc.scenario_add,
        "bulk-add N scored prompts to an empty pool",
        items=None,
        unit="prompts",
        rep_cap=10,
    ),
    Op(
        "stats",
        sc.scenario_call("stats"),
        "one `stats()` call on the N-prompt pool (should cost the same at 10k and 1M)",
        budget=Budget("p50_us", "<=", 20.0),
        flat_from=10_000,
    ),
    Op(
        "fingerprint",
        sc.scenario_call("fingerprint"),
        "one `fingerprint()` call on the N-prompt pool (no budget yet; the baselines have none)",
        impls=(SUBJECT,),
    ),
    _sample("medium", Budget("p99_us", "<=", 1_000.0), min_speedup={"best_python": 10.0}),
    _sample("mixed"),
    _sample("uniform", Budget("p50_us", "<=", 100.0)),
    _sample("prioritized", Budget("p50_us", "<=", 100.0)),
    Op(
        "save",
        sc.scenario_save,
        "snapshot of the N-prompt pool",
        items=None,
        unit="prompts",
        budget=Budget("p50_us", "<=", 500_000.0),
        rep_cap=10,
    ),
    Op(
        "load",
        sc.scenario_load,
        "load that snapshot back",
        items=None,
        unit="prompts",
        budget=Budget("p50_us", "<=", 1_000_000.0),
        rep_cap=10,
    ),
    Op(
        "report_512",
        sc.scenario_report,
        '`report` 512 sampled prompts (`reinsert="immediate"`: includes heap repositioning)',
        items=sc.BATCH,
        unit="updates",
        budget=Budget("ops_per_s", ">=", 2_000_000.0),
        min_speedup={"best_python": 10.0},
        max_size={"reference_design": _REF_LINEAR},
        skip_reason="O(n) linear scan per reported prompt",
    ),
    Op(
        "add_evict",
        sc.scenario_add_evict,
        "add 512 scored prompts to a full pool (512 evictions)",
        items=sc.BATCH,
        unit="pairs",
        budget=Budget("ops_per_s", ">=", 500_000.0),
        min_speedup={"best_python": 10.0},
        max_size={"reference_design": _REF_LINEAR},
        skip_reason="O(n) scan + heapify per eviction",
    ),
    Op(
        "step_overhead",
        sc.scenario_step,
        "sample 512 + report 512 + push 512 children to the inbox + drain, full pool",
        unit="steps",
        budget=Budget("p99_us", "<=", 50_000.0),
        max_size={"reference_design": _REF_LINEAR},
        skip_reason="O(n) report scans and evictions",
    ),
    Op(
        "drain_inbox_10k",
        sc.scenario_drain,
        "drain 10k queued children (estimates + lineage)",
        items=sc.INBOX_ITEMS,
        unit="prompts",
        rep_cap=sc.DRAIN_REPS,
    ),
    Op(
        "refresh_full",
        sc.scenario_refresh_full,
        f'PathAgg refresh, `scope="{sc.REFRESH_SCOPE}"`, over an N-node forest (half roots, half children)',
        items=None,
        unit="nodes",
        budget=Budget("p50_us", "<=", 250_000.0),
        rep_cap=10,
        note=f"refresh_full uses scope={sc.REFRESH_SCOPE!r} on a {{size:,}}-node forest (half roots, half children)",
    ),
    Op(
        "refresh_chain_3k",
        sc.scenario_refresh_chain,
        f"refresh of a {sc.CHAIN_DEPTH:,}-deep lineage chain",
        items=sc.CHAIN_DEPTH,
        unit="nodes",
        rep_cap=5,
        crashes={"reference_design": "recursive DFS overflows, like the reference"},
        diagnostic=True,
    ),
    Op(
        "sample_prior_512",
        sc.scenario_sample_prior,
        f'`sample(512)` from N never-scored prompts in {sc.GROUPS:,} groups, `cold="prior"` (reported untimed)',
        items=sc.BATCH,
        unit="prompts",
        budget=Budget("p99_us", "<=", 1_000.0),
        impls=(SUBJECT,),
    ),
    Op(
        "report_prior_512",
        sc.scenario_report_prior,
        "`report` 512 prompts drawn from that pool (their groups' evidence included)",
        items=sc.BATCH,
        unit="updates",
        budget=Budget("ops_per_s", ">=", 2_000_000.0),
        impls=(SUBJECT,),
    ),
    Op(
        "step_prior",
        sc.scenario_step_prior,
        f'sample 512 + report 512 in that pool ({sc.GROUPS:,} groups, `cold="prior"`)',
        unit="steps",
        budget=Budget("p50_us", "<=", 2_000.0),
        impls=(SUBJECT,),
    ),
)

#: the engine's own memory accounting per prompt, on the subject at DEFAULT_SIZE
MEMORY_BUDGET = Budget("value", "<=", 160.0)

BY_NAME: Mapping[str, Op] = MappingProxyType({op.name: op for op in OPS})
NAMES: tuple[str, ...] = tuple(BY_NAME)
assert len(NAMES) == len(OPS), "duplicate operation name"


def get(names) -> list[Op]:
    """The named operations, in run order (``KeyError`` for an unknown name)."""
    wanted = {BY_NAME[n].name for n in names}
    return [op for op in OPS if op.name in wanted]
