"""The simulated RLVR learner: scenarios, task distributions and the learning rule.

This is a *model*, chosen to be simple and stated in full, not evidence about
LLMs. Everything a run depends on is in :class:`Scenario`.

Learner
-------
* One scalar ability ``theta`` (logit scale). Prompt ``i`` has a latent
  difficulty ``b_i``; one rollout on it is correct with probability
  ``sigmoid(theta - b_i + mem_i)`` (``mem_i`` is a per-prompt memorisation bonus,
  zero unless the scenario turns memorisation on).
* A step trains on the groups of one batch (``batch`` prompts, ``group``
  rollouts each). Only *informative* groups (some but not all rollouts correct)
  carry a GRPO gradient; each carries one unit of signal (``signal="grpo"``,
  std-normalised advantages; ``"variance"`` weighs it by 4k(G-k)/G^2), weighted by
  ``generalise ** s_i`` (``s_i`` the prompt's memory strength; 1 without
  memorisation). With ``n_eff`` the summed signal of the batch the ability moves
  by ``lr * n_eff / (n_eff + noise_scale)``: diminishing returns in the amount of
  signal per step, the gradient-noise-scale (critical batch size) model of
  McCandlish et al. 2018, with the noise scale equal to the batch size by
  default (batches are usually chosen near it).
* Memorisation (optional): an informative group on prompt ``i`` adds 1 to
  ``s_i``; the prompt's own pass rate gains ``memorise * s_i`` logits that do
  not transfer to held-out prompts, and later visits generalise less
  (``generalise ** s_i``). Forgetting (optional): ``s_i`` decays by
  ``exp(-dt / forget)`` with the steps ``dt`` since the prompt was last seen.
* Held-out accuracy: the expected pass@1 ``mean_j sigmoid(theta - b_j)`` over
  ``n_eval`` prompts drawn from the same distribution as the training roots
  (no memorisation there); noise-free given ``theta``.

Families and augmentation
-------------------------
An augmented child of parent ``p`` has difficulty ``b_p + delta``,
``delta ~ N(0, aug_shift_sd)``; the policy reports the ratio
``d = exp(delta / aug_logit_per_log_ratio + N(0, aug_report_noise))`` (HeaPA
clamps it to [0.75, 1.33]), so the report is informative but noisy. A
fraction ``1 - aug_valid`` of candidates is rejected by the validator; of
the accepted ones a fraction ``aug_label_noise`` carries a wrong answer and can
never be solved. A child inherits ``aug_inherit_memory`` of its parent's memory
strength (numeric variants of a memorised problem are partly memorised).

Cost model
----------
Every rollout counts 1. Each augmentation candidate costs ``aug_gen_cost``
(the policy generating the variant; 1 by default, although a variant is much
shorter than a reasoning rollout) plus ``aug_val_cost`` (the validator; 1 by
default), whether or not it is accepted. Pool operations are free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Scenario:
    """A task distribution, a learner and a budget (see the module docstring)."""

    name: str
    description: str = ""
    n_prompts: int = 2000
    batch: int = 64
    group: int = 8
    #: difficulty distribution: mixture of normals (weight, mean, sd), logit scale
    difficulty: tuple[tuple[float, float, float], ...] = ((1.0, 1.0, 1.5),)
    theta0: float = 0.0
    lr: float = 0.02
    #: gradient-noise scale in informative groups; None = the batch size
    noise_scale: float | None = None
    #: signal of an informative group: "grpo" (1 each, std-normalised advantages)
    #: or "variance" (4k(G-k)/G^2: the group's reward variance, as without std
    #: normalisation; favours prompts near pass rate 0.5)
    signal: Literal["grpo", "variance"] = "grpo"
    memorise: float = 0.0
    generalise: float = 1.0
    forget: float = math.inf
    n_eval: int = 2000
    #: run length: budget in steps of batch*group rollouts; time-to-target runs on
    #: to ``cap_factor`` times the budget
    budget_steps: int = 400
    cap_factor: float = 3.0
    #: every run goes on to at least this multiple of the budget (the plots' x range)
    horizon_factor: float = 1.5
    # augmentation
    aug_shift_sd: float = 0.5
    aug_logit_per_log_ratio: float = 3.5
    aug_report_noise: float = 0.1
    aug_valid: float = 0.8
    aug_label_noise: float = 0.05
    aug_inherit_memory: float = 0.5
    aug_gen_cost: float = 1.0
    aug_val_cost: float = 1.0
    #: pool capacity of augmenting samplers, in multiples of n_prompts; None:
    #: large enough never to bind (as the paper's 1M cap), so nothing is evicted
    aug_capacity: float | None = None
    # groups and priors (docs/priors.md)
    #: the trainer passes each prompt's mixture component of ``difficulty`` as its group key
    #: (``Pool.add(group=...)``): source dataset, level or topic
    observable_groups: bool = False
    #: an external difficulty predictor: the prompt's predicted pass rate, ``sigmoid(m + prior_sign *
    #: (theta0 - b - m) + prior_shift + N(0, prior_noise))`` with ``m`` the mean logit of the task
    #: distribution (``prior_sign=-1``: anti-correlated, mirrored about the mean; ``prior_shift``:
    #: miscalibrated, as a predictor made for a stronger policy); None: no priors
    prior_noise: float | None = None
    prior_sign: float = 1.0
    prior_shift: float = 0.0
    #: the confidence (pseudo-rollouts) the trainer passes with every prior
    prior_confidence: float = 4.0

    @property
    def noise(self) -> float:
        return float(self.batch if self.noise_scale is None else self.noise_scale)

    @property
    def max_steps(self) -> int:
        """Upper bound on the number of steps of any run (the cost cap at one
        batch per step)."""
        return math.ceil(self.budget_steps * self.cap_factor)

    def capacity(self, augmenting: bool) -> int:
        if not augmenting:
            return self.n_prompts
        if self.aug_capacity is None:
            return self.n_prompts + self.max_steps * self.batch
        return int(self.n_prompts * self.aug_capacity)

    @property
    def budget(self) -> float:
        """The fixed rollout budget (rollouts)."""
        return float(self.budget_steps * self.batch * self.group)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` difficulties from the scenario's mixture."""
        return self.draw_components(rng, n)[0]

    def draw_components(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` difficulties from the scenario's mixture and the mixture component of each (the
        prompt's group where ``observable_groups``); the same random draws as :meth:`draw`."""
        w = np.array([c[0] for c in self.difficulty], dtype=float)
        comp = rng.choice(len(w), size=n, p=w / w.sum())
        mu = np.array([c[1] for c in self.difficulty])[comp]
        sd = np.array([c[2] for c in self.difficulty])[comp]
        return mu + sd * rng.standard_normal(n), comp

    @property
    def has_priors(self) -> bool:
        return self.prior_noise is not None

    def mean_logit(self) -> float:
        """Mean of ``theta0 - b`` over the task distribution."""
        w = np.array([c[0] for c in self.difficulty], dtype=float)
        mu = np.array([c[1] for c in self.difficulty])
        return float(self.theta0 - (w * mu).sum() / w.sum())

    def priors(self, rng: np.random.Generator, b: np.ndarray) -> np.ndarray:
        """The external predictor's pass-rate prediction for prompts of difficulty ``b`` (for the
        initial policy ``theta0``; see ``prior_noise``)."""
        if self.prior_noise is None:
            raise ValueError(f"scenario {self.name!r} has no priors")
        m = self.mean_logit()
        logit = m + self.prior_sign * (self.theta0 - b - m) + self.prior_shift
        logit = logit + self.prior_noise * rng.standard_normal(b.shape[0])
        return np.asarray(sigmoid(logit), dtype=float)

    def initial_accuracy(self) -> float:
        """Held-out accuracy at ``theta0`` over the distribution (fixed large sample)."""
        b = self.draw(np.random.default_rng(12345), 200_000)
        return float(sigmoid(self.theta0 - b).mean())

    @property
    def target(self) -> float:
        """Target held-out accuracy: halve the initial error (fixed per scenario,
        from the task distribution only, before any sampler runs)."""
        a0 = self.initial_accuracy()
        return round(a0 + (1.0 - a0) / 2.0, 3)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["difficulty"] = [list(c) for c in self.difficulty]
        d["forget"] = None if math.isinf(self.forget) else self.forget
        d["noise_scale"] = self.noise
        d["budget_rollouts"] = self.budget
        d["target"] = self.target
        return d


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


_BASE = Scenario(name="base", description="difficulty ~ N(1, 1.5) logits around ability 0; G=8, 2000 prompts / 64")
_MEM = {"memorise": 0.2, "generalise": 0.9}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _BASE,
        replace(_BASE, name="narrow", description="difficulty spread sd 0.5", difficulty=((1.0, 1.0, 0.5),)),
        replace(_BASE, name="wide", description="difficulty spread sd 3.0", difficulty=((1.0, 1.0, 3.0),)),
        replace(
            _BASE,
            name="too_hard",
            description="difficulty ~ N(3, 1.5): most groups all-wrong",
            difficulty=((1.0, 3.0, 1.5),),
        ),
        replace(
            _BASE,
            name="too_easy",
            description="difficulty ~ N(-2, 1.5): most groups all-correct",
            difficulty=((1.0, -2.0, 1.5),),
        ),
        replace(
            _BASE,
            name="bimodal",
            description="half easy N(-2, 0.5), half hard N(3, 0.5)",
            difficulty=((0.5, -2.0, 0.5), (0.5, 3.0, 0.5)),
        ),
        replace(
            _BASE,
            name="memorisation",
            description="base + per-prompt memorisation (0.2 logit per "
            "informative visit, each repeat generalises 0.9x)",
            **_MEM,
        ),
        replace(
            _BASE,
            name="memorisation_forgetting",
            description="memorisation that decays with time constant 60 steps",
            forget=60.0,
            **_MEM,
        ),
        replace(_BASE, name="G4", description="base with 4 rollouts per prompt", group=4),
        replace(_BASE, name="G16", description="base with 16 rollouts per prompt", group=16),
        replace(
            _BASE,
            name="paper_like",
            description="pool/batch 27.3 and 16 rollouts per prompt, as the "
            "paper's 14k prompts / 512 / 16, scaled down 8x",
            n_prompts=1750,
            batch=64,
            group=16,
        ),
    )
}

#: Small scenarios for tests and smoke runs (not part of ``all``).
EXTRA_SCENARIOS: dict[str, Scenario] = {
    "tiny": replace(
        _BASE,
        name="tiny",
        description="smoke test: 200 prompts / 16, 60 steps",
        n_prompts=200,
        batch=16,
        budget_steps=60,
        lr=0.08,
        n_eval=500,
    ),
}


def grouped(n_groups: int, mean: float, between_sd: float, within_sd: float) -> tuple[tuple[float, float, float], ...]:
    """A difficulty mixture of ``n_groups`` equally likely groups whose means are evenly spaced
    normal quantiles around ``mean``, rescaled so their spread is exactly ``between_sd``, each with
    spread ``within_sd`` inside (marginal sd ``sqrt(between_sd**2 + within_sd**2)``)."""
    z = np.array([NormalDist().inv_cdf((g + 0.5) / n_groups) for g in range(n_groups)])
    z = z / z.std() if between_sd > 0 else np.zeros(n_groups)
    return tuple((1.0 / n_groups, round(mean + between_sd * float(zg), 6), within_sd) for zg in z)


#: The pool of the issue's large-pool regime: ``base``'s task, learner and budget (204,800 rollouts =
#: 25,600 prompt draws) with 100x the prompts, so a run draws 0.13 of the pool (0.38 at the 3x cap).
_LARGE = replace(_BASE, name="large", n_prompts=200_000)
#: 20 groups, between-group sd 1.2 and within-group sd 0.9 logits: the same mean and sd (1, 1.5) as
#: ``base``; the group explains 64% of the variance of difficulty.
_GROUPS20 = grouped(20, 1.0, 1.2, 0.9)

#: Scenarios of docs/priors.md: pools larger than a run draws, with groups and priors.
PRIOR_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        replace(
            _LARGE,
            description="base with 200,000 prompts (0.13 passes in the budget); no groups, no priors",
        ),
        replace(
            _LARGE,
            name="large_groups",
            description="200,000 prompts in 20 observable groups: group means 1 +- 1.2 sd, "
            "sd 0.9 inside each (same marginal mean and sd as base)",
            difficulty=_GROUPS20,
            observable_groups=True,
        ),
        replace(
            _LARGE,
            name="large_groups_1m",
            description="large_groups with 1,000,000 prompts (0.026 passes in the budget)",
            n_prompts=1_000_000,
            difficulty=_GROUPS20,
            observable_groups=True,
        ),
        replace(
            _LARGE,
            name="large_groups_weak",
            description="200,000 prompts in 20 groups that explain 25% of the variance "
            "(group means sd 0.75, sd 1.3 inside each)",
            difficulty=grouped(20, 1.0, 0.75, 1.299),
            observable_groups=True,
        ),
        replace(
            _LARGE,
            name="large_groups_flat",
            description="CONTROL: 200,000 prompts in 20 observable groups with the same "
            "distribution N(1, 1.5) each (the group says nothing)",
            difficulty=grouped(20, 1.0, 0.0, 1.5),
            observable_groups=True,
        ),
        replace(
            _LARGE,
            name="large_prior_noisy",
            description="CONTROL: 200,000 prompts, no groups; a predictor's pass rate for the "
            "initial policy with logit noise sd 1.5 (corr. 0.71 with the truth), confidence 4",
            prior_noise=1.5,
        ),
        replace(
            _LARGE,
            name="large_prior_good",
            description="200,000 prompts, no groups; a good predictor: logit noise sd 0.5 "
            "(corr. 0.95 with the truth for the initial policy), confidence 4",
            prior_noise=0.5,
        ),
        replace(
            _LARGE,
            name="large_prior_wrong",
            description="CONTROL: 200,000 prompts, no groups; priors anti-correlated with the "
            "truth (logit mirrored about the mean, noise sd 0.5), confidence 4",
            prior_noise=0.5,
            prior_sign=-1.0,
        ),
        replace(
            _LARGE,
            name="large_prior_shifted",
            description="CONTROL: 200,000 prompts, no groups; priors well ranked but miscalibrated: "
            "a predictor for a policy 3 logits stronger (noise sd 0.5), confidence 4",
            prior_noise=0.5,
            prior_shift=3.0,
        ),
        replace(
            _LARGE,
            name="large_groups_prior_noisy",
            description="large_groups + the noisy priors of large_prior_noisy",
            difficulty=_GROUPS20,
            observable_groups=True,
            prior_noise=1.5,
        ),
        replace(
            _LARGE,
            name="large_groups_prior_wrong",
            description="large_groups + the anti-correlated priors of large_prior_wrong",
            difficulty=_GROUPS20,
            observable_groups=True,
            prior_noise=0.5,
            prior_sign=-1.0,
        ),
        replace(
            _LARGE,
            name="large_groups_prior_shifted",
            description="large_groups + the miscalibrated priors of large_prior_shifted",
            difficulty=_GROUPS20,
            observable_groups=True,
            prior_noise=0.5,
            prior_shift=3.0,
        ),
    )
}

#: Small versions for tests and smoke runs: pools larger than one pass, seconds per run.
_TINY_LARGE = replace(
    _BASE,
    name="tiny_large",
    n_prompts=4000,
    batch=16,
    budget_steps=60,
    lr=0.08,
    n_eval=500,
)
EXTRA_SCENARIOS.update(
    {
        s.name: s
        for s in (
            replace(
                _TINY_LARGE,
                name="tiny_groups",
                description="smoke test: 4000 prompts in 20 groups / 16, 60 steps",
                difficulty=_GROUPS20,
                observable_groups=True,
            ),
            replace(
                _TINY_LARGE,
                name="tiny_groups_prior",
                description="smoke test: tiny_groups + noisy priors",
                difficulty=_GROUPS20,
                observable_groups=True,
                prior_noise=1.5,
            ),
            replace(
                _TINY_LARGE,
                name="tiny_prior_wrong",
                description="smoke test: 4000 prompts, anti-correlated priors",
                prior_noise=0.5,
                prior_sign=-1.0,
            ),
        )
    }
)


def get_scenario(name: str) -> Scenario:
    for table in (SCENARIOS, PRIOR_SCENARIOS, EXTRA_SCENARIOS):
        if name in table:
            return table[name]
    known = ", ".join([*SCENARIOS, *PRIOR_SCENARIOS, *EXTRA_SCENARIOS])
    raise KeyError(f"unknown scenario {name!r} (known: {known})")


def quick(s: Scenario) -> Scenario:
    """A cheaper version of a scenario (``--quick``, smoke runs): a quarter of
    the pool and of the batch (the same pool/batch ratio and group size), half
    the steps at twice the learning rate. Its numbers are not the suite's."""
    if s.name in EXTRA_SCENARIOS:
        return s
    return replace(
        s,
        n_prompts=max(s.n_prompts // 4, 50),
        batch=max(s.batch // 4, 4),
        noise_scale=None if s.noise_scale is None else s.noise_scale / 4,
        budget_steps=s.budget_steps // 2,
        lr=s.lr * 2,
        n_eval=500,
    )
