"""Tiny, fully local building blocks for tests, the example script and benchmarks.

Everything here is built in memory: a character-level tokenizer, a randomly initialised
Qwen2-style model of ~80k parameters and an arithmetic dataset with verifiable answers.
Nothing is downloaded. Needs the ``trl`` extra (torch, transformers, datasets, tokenizers).
"""

from __future__ import annotations

import os
import random
import re

# Offline first: any accidental hub access must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

__all__ = [
    "ALPHABET",
    "CHAT_TEMPLATE",
    "arithmetic_dataset",
    "char_tokenizer",
    "closeness_reward",
    "exact_match_reward",
    "tiny_grpo_config",
    "tiny_model",
]

# Digits, operators and lowercase letters: enough for arithmetic and short test texts; the rest maps to <unk>.
ALPHABET = "0123456789+-*=?:() \nabcdefghijklmnopqrstuvwxyz"
SPECIALS = ("<pad>", "<eos>", "<unk>")

# Renders message contents only, so chat prompts tokenize to the same characters as plain ones.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def char_tokenizer(alphabet: str = ALPHABET) -> PreTrainedTokenizerFast:
    """One token per character; left padding and a fusing decoder, as TRL needs."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()  # no spaces between decoded characters
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_model(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized for CPU tests (hidden=64, 2 layers: ~80k params)."""
    import torch

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(config)


def arithmetic_dataset(n: int = 256, seed: int = 0, conversational: bool = False) -> Dataset:
    """``a+b=`` problems at three levels (operands 0-4, 0-9, two-digit numbers), answer as text.

    Columns: ``prompt``, ``answer``, ``level`` (the level reaches reward functions as metadata).
    """
    rng = random.Random(seed)
    prompts, answers, levels = [], [], []
    for i in range(n):
        level = 1 + i % 3
        if level == 1:
            a, b = rng.randint(0, 4), rng.randint(0, 4)
        elif level == 2:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
        else:
            a, b = rng.randint(10, 49), rng.randint(0, 49)
        text = f"{a}+{b}="
        prompts.append([{"role": "user", "content": text}] if conversational else text)
        answers.append(str(a + b))
        levels.append(level)
    return Dataset.from_dict({"prompt": prompts, "answer": answers, "level": levels})


_LEADING_INT = re.compile(r"\s*(-?\d+)")


def _text(completion) -> str:
    # Conversational completions arrive as [{"role": "assistant", "content": ...}].
    return completion[-1]["content"] if isinstance(completion, list) else completion


def exact_match_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the number the completion starts with equals the answer exactly, else 0.0."""
    out = []
    for completion, ans in zip(completions, answer, strict=True):
        m = _LEADING_INT.match(_text(completion))
        out.append(1.0 if m is not None and m.group(1) == ans else 0.0)
    return out


def closeness_reward(completions, answer, **kwargs) -> list[float]:
    """Dense shaping for integer answers: 1 - |guess - answer| / 5, floored at 0 (0 without a number).

    A random model almost never answers exactly, so this gives GRPO a gradient from the first step.
    """
    out = []
    for completion, ans in zip(completions, answer, strict=True):
        m = _LEADING_INT.match(_text(completion))
        out.append(max(0.0, 1.0 - abs(int(m.group(1)) - int(ans)) / 5.0) if m is not None else 0.0)
    return out


def tiny_grpo_config(output_dir: str, **overrides):
    """A ``GRPOConfig`` for fast CPU runs: fp32, no gradient checkpointing, no reporters, no saving."""
    from trl import GRPOConfig

    kwargs = dict(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        report_to="none",
        gradient_checkpointing=False,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=4,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)
