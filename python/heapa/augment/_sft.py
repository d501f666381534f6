"""A short supervised warm-up, so that a tiny demo model can write well-formed variants (and solve).

Real policies follow the augmentation instructions out of the box; the randomly initialised CPU demo
model does not, so the example script and the tests teach it the format first with a few hundred
steps of teacher forcing on (request, answer) pairs built by ``PromptBuilder.example``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from ._format import clamp_difficulty

__all__ = ["arithmetic_variant", "supervised_warmup"]

_SUM = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*=\s*$")


def arithmetic_variant(problem: str, rng: random.Random) -> tuple[str, float] | None:
    """For the demo's ``a+b=`` problems: change one operand by 1-2 (staying non-negative); the difficulty
    ratio grows with the sum (1 + 0.01 per unit). ``None`` when the problem is not of that form."""
    m = _SUM.match(problem)
    if m is None:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    for _ in range(16):
        delta = rng.choice((-2, -1, 1, 2))
        na, nb = (a + delta, b) if rng.random() < 0.5 else (a, b + delta)
        if na >= 0 and nb >= 0:
            return f"{na}+{nb}=", round(clamp_difficulty(1.0 + 0.01 * delta), 2)
    return f"{a}+{b + 1}=", 1.01


def supervised_warmup(
    model: Any,
    tokenizer: Any,
    examples: Sequence[tuple[str, str]],
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    add_special_tokens: bool = True,
) -> list[float]:
    """Teacher-forces ``(prompt, response)`` pairs (+ EOS), loss on response tokens only; returns losses.

    Leaves the model in train mode. Meant for tiny models in demos and tests, not real fine-tuning.
    """
    import torch

    if not examples:
        raise ValueError("supervised_warmup: no examples")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = []
    for prompt, response in examples:
        p = tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        encoded.append((list(p), list(r)))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        width = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (p, r) in enumerate(batch):
            seq = p + r
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(p) : len(seq)] = torch.tensor(r)
            mask[row, : len(seq)] = 1
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    return losses
