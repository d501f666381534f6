"""What flows between the steps of augmentation, one typed record per hand-over.

One candidate's life, main process then validation threads::

    Parent ──(builder)──▶ VariantRequest ─┐
                                          ├─ StepPlan.calls: GenerationCall, the same on every rank
    PolicyWork ──────────▶ SolveRequest ──┘        │ backend.generate
                                                   ▼
                             list[list[Completion]] per call (_backends)
    Completion ──parse_variant──▶ ParseResult ──▶ Candidate (_validators; filters, then the queue)
    Candidate ──Validator──▶ Verdict ──▶ ChainResult (_pipeline: accept, reject, retry or park)
    accepted Candidate ──commit──▶ pool.inbox.push (parent, difficulty, answer, metadata)

A ``SolveRequest`` carries candidates parked at a stage that needs the policy (``PolicyWork``); their
completions go back to the pipeline with ``give_back``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ._backends import Sampling
from ._validators import Candidate

__all__ = ["GenerationCall", "Parent", "SolveRequest", "StepPlan", "VariantRequest"]


class Parent(NamedTuple):
    """A prompt of the round chosen to get variants."""

    id: int  # its pool id (the children's parent)
    prompt: Any  # its training prompt (text or chat messages)
    metadata: Any  # copied to the children (``None`` without ``inherit_metadata``)


@dataclass(frozen=True)
class GenerationCall:
    """One ``backend.generate`` call: rendered prompt texts and their decoding settings.

    The only part of a plan every rank sees (it is broadcast when generation is collective)."""

    purpose: Literal["variants", "solutions"]
    texts: tuple[str, ...]
    sampling: Sampling
    add_special_tokens: bool


@dataclass(frozen=True)
class VariantRequest:
    """Variants of ``parents``: ``call`` has one prompt per parent, in the same order."""

    parents: tuple[Parent, ...]
    call: GenerationCall


@dataclass(frozen=True)
class SolveRequest:
    """Policy solutions of ``candidates`` (taken from the pipeline's parked ones), one prompt each."""

    candidates: tuple[Candidate, ...]
    call: GenerationCall


@dataclass(frozen=True)
class StepPlan:
    """The generation work of one step, decided on the main process: solutions first (their candidates
    waited longest), then variants."""

    solves: tuple[SolveRequest, ...] = ()
    variants: VariantRequest | None = None

    @property
    def calls(self) -> list[GenerationCall]:
        """The generate calls, in order (results come back in this order)."""
        return [s.call for s in self.solves] + ([self.variants.call] if self.variants is not None else [])

    def taken(self) -> list[Candidate]:
        """Candidates taken from the pipeline for solutions (to give back if the step fails)."""
        return [c for s in self.solves for c in s.candidates]
