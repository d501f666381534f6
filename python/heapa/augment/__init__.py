"""On-policy query augmentation with asynchronous validation (``heapa.augment``).

After each training step the current policy writes variants of the prompts it just trained on (a
tagged NEW / DIFFICULTY answer, parsed from the response only); cheap filters and validators check them
on background threads; accepted children enter the pool through its lock-free inbox with their parent,
the policy's difficulty ratio and a ground-truth answer, and get HeaPA's estimate when drained.

Typical use inside TRL (``heapa.trl.HeaPAGRPOTrainer`` wires this for you)::

    from heapa.augment import AugmentationConfig, Augmenter

    aug = Augmenter.from_trainer(trainer, AugmentationConfig(validator="self", variants_per_parent=2))
    aug.after_round(trainer, scored_round)      # every rank, right after a round is scored
    with aug.paused():                          # checkpoint: pool and pipeline at one instant
        pool.save(path); state = aug.state_dict()

Without a trainer: ``Augmenter(config, pool=pool, backend=..., tokenizer=...)`` and
``aug.after_step(None, parent_ids, pass_rates, step, prompts=..., scores=...)``.

What flows from step to step is typed: ``heapa.augment._records`` draws one candidate's life. The
supervised warm-up of the tiny demo model (``heapa.augment._sft``) is for demos and tests only.
"""

from ._augmenter import STATE_FILE, AugmentationConfig, Augmenter
from ._backends import (
    Completion,
    GenerationBackend,
    Sampling,
    TransformersBackend,
    VLLMBackend,
    truncate_at_stop,
)
from ._filters import (
    CharsetFilter,
    DecontaminationFilter,
    DedupFilter,
    LengthFilter,
    normalize_text,
    text_key,
)
from ._format import (
    COMPACT_TEMPLATE,
    DEFAULT_TEMPLATE,
    DIFFICULTY_RANGE,
    ParseResult,
    TaggedFormat,
    clamp_difficulty,
    parse_variant,
)
from ._pipeline import ValidationPipeline
from ._prompt import PromptBuilder
from ._validators import (
    Candidate,
    OpenAIValidator,
    SelfConsistencyValidator,
    Validator,
    Verdict,
    answers_equivalent,
    extract_answer,
    majority_answer,
    normalize_answer,
)

__all__ = [
    "COMPACT_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "DIFFICULTY_RANGE",
    "STATE_FILE",
    "AugmentationConfig",
    "Augmenter",
    "Candidate",
    "CharsetFilter",
    "Completion",
    "DecontaminationFilter",
    "DedupFilter",
    "GenerationBackend",
    "LengthFilter",
    "OpenAIValidator",
    "ParseResult",
    "PromptBuilder",
    "Sampling",
    "SelfConsistencyValidator",
    "TaggedFormat",
    "TransformersBackend",
    "VLLMBackend",
    "ValidationPipeline",
    "Validator",
    "Verdict",
    "answers_equivalent",
    "clamp_difficulty",
    "extract_answer",
    "majority_answer",
    "normalize_answer",
    "normalize_text",
    "parse_variant",
    "text_key",
    "truncate_at_stop",
]
