"""The samplers compared by ``heapa simulate``. Every one draws through a real
:class:`heapa.Pool`; they differ in its configuration and in what the training
loop does with the groups (filtering, augmentation, what it reports and when)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .._pool import PRESETS


@dataclass(frozen=True)
class Sampler:
    name: str
    description: str
    #: PoolConfig overrides
    pool: dict[str, Any] = field(default_factory=dict)
    #: DAPO dynamic sampling: keep only informative groups, draw more batches
    #: (up to ``max_gen_batches``, verl's default) until ``batch`` are kept;
    #: every rollout is paid, surplus informative groups are discarded.
    dapo_filter: bool = False
    max_gen_batches: int = 10
    #: which trained prompts get one augmented variant each: None (off),
    #: "all" (the paper: every sampled prompt), "informative" (0 < correct < G)
    augment: Literal["all", "informative"] | None = None
    #: how children enter: "add" (pool.add with parents/difficulty) or "inbox"
    #: (pool.inbox.push + pool.drain_inbox at the step boundary)
    augment_via: Literal["add", "inbox"] = "inbox"
    #: diagnostic, not a real sampler: draw every live prompt, keep the
    #: ``batch`` whose *true* pass rate is nearest 0.5, release the rest
    oracle: bool = False
    #: group keys passed to ``Pool.add(group=...)`` where the scenario has groups or priors:
    #: "scenario" (the scenario's groups, if observable), "scenario+prior_bin" (each (group, prior
    #: bin of width 0.05) is a group of its own, so the pool measures how each bin of the
    #: predictor really does), "prior_bin" (where the scenario has a predictor, its bin is the group
    #: key and the scenario's groups are not passed; otherwise the scenario's groups) or "none"
    group_keys: Literal["scenario", "scenario+prior_bin", "prior_bin", "none"] = "scenario"
    #: priors passed to ``Pool.add(prior=, confidence=)``: "scenario" (the scenario's predictor,
    #: if it has one), "group_truth" (ORACLE: every prompt's prior is its group's true mean pass
    #: rate for the initial policy, confidence 1e6) or "none"
    priors: Literal["scenario", "group_truth", "none"] = "scenario"
    #: diagnostic, not a real sampler: each step the batch comes from the groups whose *true* mean
    #: pass rate (over their members, for the current policy) is nearest 0.5, never-drawn members
    #: first, in order of addition; prompts are chosen outside the pool (nothing is sampled from or
    #: reported to it)
    group_oracle: bool = False


_PAPER = dict(PRESETS["paper"])
#: The recommended preset without its revisit interval.
_FRONTIER = {k: v for k, v in PRESETS["frontier"].items() if k != "revisit_fraction"}
_UNIFORM = {"sampling": "uniform", "reinsert": "immediate"}

SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler(
            "uniform", "uniform over the pool, with replacement across steps (immediate reinsertion)", dict(_UNIFORM)
        ),
        Sampler(
            "uniform_epochs",
            "shuffled epochs: uniform without replacement within a pass (on_drain); what a plain dataloader does",
            {"sampling": "uniform", "reinsert": "on_drain"},
        ),
        Sampler(
            "dapo_filter",
            "DAPO dynamic sampling over shuffled epochs: all-correct/all-wrong groups are "
            "dropped and more batches drawn until the batch is full; every rollout is paid",
            {"sampling": "uniform", "reinsert": "on_drain"},
            dapo_filter=True,
        ),
        Sampler(
            "prioritized",
            "prioritized by failure rate, weight ((1-p)+0.1)^1, immediate reinsertion",
            {"sampling": "prioritized", "reinsert": "immediate"},
        ),
        Sampler(
            "heapa_paper", "HeaPA as published: median boundary, medium sampling, on-drain reinsertion", dict(_PAPER)
        ),
        Sampler(
            "heapa_frontier",
            "absolute boundary at pass rate 0.5, medium sampling, immediate reinsertion",
            dict(_FRONTIER),
        ),
        Sampler(
            "heapa_paper_augment",
            "heapa_paper + one on-policy variant of every sampled prompt "
            "(the paper's rule), added with pool.add(parents=, difficulty=)",
            dict(_PAPER),
            augment="all",
            augment_via="add",
        ),
        Sampler(
            "heapa_frontier_augment",
            "heapa_frontier + one variant of every prompt whose group was "
            "informative, through pool.inbox.push + drain_inbox",
            dict(_FRONTIER),
            augment="informative",
        ),
        Sampler(
            "heapa_frontier_revisit",
            "heapa_frontier + a minimum revisit interval (revisit_fraction=0.25: a trained "
            "prompt sits out until a quarter of the pool has been drawn)",
            dict(PRESETS["frontier"]),
        ),
        Sampler(
            "oracle_frontier",
            "DIAGNOSTIC ceiling, not a usable sampler: each step the batch prompts whose true pass rate is nearest 0.5",
            dict(_UNIFORM),
            oracle=True,
        ),
    )
}

_FRONTIER_PRIOR = {**PRESETS["frontier"], "cold": "prior"}

#: Samplers of docs/priors.md (``heapa simulate --samplers NAME``; not in the default set, so the
#: study of docs/efficiency.md is unchanged).
PRIOR_SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler(
            "heapa_frontier_prior",
            "PoolConfig.frontier(cold='prior'): heapa_frontier_revisit whose never-scored prompts wait in "
            "per-(group, prior band) queues ranked by estimate (explore 0.1, prior_strength 4); the "
            "scenario's groups and priors passed to Pool.add",
            dict(_FRONTIER_PRIOR),
        ),
        Sampler(
            "heapa_frontier_prior_hl",
            "heapa_frontier_prior with prior_half_life=25 steps (group evidence ages)",
            {**_FRONTIER_PRIOR, "prior_half_life": 25.0},
        ),
        Sampler(
            "heapa_frontier_prior_x20",
            "heapa_frontier_prior with explore=0.2",
            {**_FRONTIER_PRIOR, "explore": 0.2},
        ),
        Sampler(
            "heapa_frontier_prior_binned",
            "heapa_frontier_prior whose group keys are (group, prior bin): the pool measures each bin of "
            "the predictor, so a prior is corrected by what its bin really does",
            dict(_FRONTIER_PRIOR),
            group_keys="scenario+prior_bin",
        ),
        Sampler(
            "heapa_frontier_prior_binned_hl",
            "heapa_frontier_prior_binned with prior_half_life=25 steps",
            {**_FRONTIER_PRIOR, "prior_half_life": 25.0},
            group_keys="scenario+prior_bin",
        ),
        Sampler(
            "heapa_frontier_prior_calibrated",
            "heapa_frontier_prior_hl, and where there is a predictor its bin (width 0.05) is the group key "
            "instead of the dataset's group, so the pool measures what each bin really does",
            {**_FRONTIER_PRIOR, "prior_half_life": 25.0},
            group_keys="prior_bin",
        ),
        Sampler(
            "heapa_frontier_cold_first",
            "heapa_frontier_revisit with every never-scored prompt drawn before any scored one, first in "
            "first out (cold='fifo'): the order before cold estimates and scores were ranked on one scale",
            {**PRESETS["frontier"], "cold": "fifo"},
        ),
        Sampler(
            "heapa_frontier_prior_nogroups",
            "heapa_frontier_prior given neither groups nor priors (one FIFO cold queue)",
            dict(_FRONTIER_PRIOR),
            group_keys="none",
            priors="none",
        ),
        Sampler(
            "group_oracle",
            "DIAGNOSTIC ceiling for groups: each step the prompts (never-drawn first) of the groups whose "
            "TRUE mean pass rate for the current policy is nearest 0.5; chosen outside the pool",
            dict(_FRONTIER_PRIOR),
            group_oracle=True,
        ),
        Sampler(
            "group_oracle_static",
            "ORACLE through the engine: heapa_frontier_prior (explore 0) with every prompt's prior set to its "
            "group's TRUE mean pass rate for the initial policy, confidence 1e6 (stale as the policy learns)",
            {**_FRONTIER_PRIOR, "explore": 0.0},
            priors="group_truth",
        ),
    )
}

#: The configuration heapa recommends to users (see docs/efficiency.md for why).
RECOMMENDED = "heapa_frontier_revisit"

DEFAULT_SAMPLERS = tuple(SAMPLERS)


def get_sampler(name: str) -> Sampler:
    for table in (SAMPLERS, PRIOR_SAMPLERS):
        if name in table:
            return table[name]
    raise KeyError(f"unknown sampler {name!r} (known: {', '.join([*SAMPLERS, *PRIOR_SAMPLERS])})")
