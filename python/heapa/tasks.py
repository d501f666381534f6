"""A graded math task set built locally: arithmetic at several levels up to short word problems.

Nothing is downloaded. Every problem is a chat prompt (one user message: the problem, then
``INSTRUCTION``) with a reference answer and a ``level``; the levels are graded for small instruct models
(SmolLM2-135M-Instruct answers level 1 about 5-10% of the time at temperature 1, levels 3-5 almost never)::

    1  one-digit addition and subtraction          What is 7 + 5?
    2  one-digit multiplication, two-digit + one   What is 6 * 8? / What is 47 + 6?
    3  two-digit addition and subtraction          What is 63 - 28?
    4  two-step arithmetic                         What is 4 * 7 + 13? / What is 35 + 19 - 8?
    5  one- and two-step word problems             Mia has 12 apples and buys 7 more. ...

``math_tasks(train_size, seed=...)`` returns ``train``, ``heldout`` and ``dev`` splits that never share a
problem (compared by the underlying arithmetic, so a word problem with other names is the same problem).
The held-out and dev splits depend only on the seed and their per-level sizes, never on ``train_size``:
growing the training pool keeps the evaluation fixed. Answers are checked with math-verify
(``math_verify_reward``); ``evaluate`` measures greedy held-out accuracy per level.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INSTRUCTION",
    "LEVELS",
    "PROBLEM_PATTERN",
    "Problem",
    "evaluate",
    "level_capacity",
    "math_tasks",
    "math_verify_reward",
    "problems",
    "reference_answer",
    "to_messages",
]

#: What each level holds (the keys are the values of the ``level`` column).
LEVELS: dict[int, str] = {
    1: "one-digit addition and subtraction",
    2: "one-digit multiplication; two-digit plus one-digit addition",
    3: "two-digit addition and subtraction",
    4: "two-step arithmetic",
    5: "one- and two-step word problems",
}
INSTRUCTION = "Answer with just the number."
#: Finds the bare problem inside a prompt's text (``heapa.augment.PromptBuilder(problem_pattern=...)``), so
#: that augmented children keep the instruction.
PROBLEM_PATTERN = r"^(?P<problem>.*?)\s*" + re.escape(INSTRUCTION) + r"\s*$"

_NAMES = ("Mia", "Leo", "Ava", "Sam", "Noah", "Emma", "Omar", "Lina", "Ravi", "Zoe", "Tom", "Ana")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells", "stamps", "coins")
# Word problems: (template, answer from the numbers). Names and items are decoration; the
# template index and the numbers identify the problem.
_WORD = (
    ("{n} has {a} {i}. {n} buys {b} more. How many {i} does {n} have now?", lambda a, b: a + b),
    ("{n} has {a} {i} and gives {b} of them to a friend. How many {i} are left?", lambda a, b: a - b),
    ("There are {a} boxes with {b} {i} in each box. How many {i} are there in total?", lambda a, b: a * b),
    (
        "{n} had {a} {i}, bought {b} more and then gave away {c}. How many {i} does {n} have now?",
        lambda a, b, c: a + b - c,
    ),
    (
        "{n} buys {a} packs of {i} with {b} in each pack and already had {c}. How many {i} does {n} have now?",
        lambda a, b, c: a * b + c,
    ),
)


@dataclass(frozen=True)
class Problem:
    text: str  # the bare problem (without the instruction)
    answer: str
    level: int
    key: tuple  # identity for disjoint splits: the arithmetic, not its wording


def to_messages(problem: str) -> list[dict[str, str]]:
    """The chat prompt of a bare problem."""
    return [{"role": "user", "content": f"{problem} {INSTRUCTION}"}]


def _arith(level: int, op: str, a: int, b: int, c: int | None = None, op2: str | None = None) -> Problem:
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
    if c is None:
        return Problem(f"What is {a} {op} {b}?", str(ops[op](a, b)), level, ("arith", op, a, b))
    value = ops[op2](ops[op](a, b), c)
    return Problem(f"What is {a} {op} {b} {op2} {c}?", str(value), level, ("arith", op, a, b, op2, c))


def _finite(level: int) -> list[Problem] | None:
    """Every problem of a small level, in a fixed order (``None`` for levels too large to enumerate)."""
    if level == 1:
        add = [_arith(1, "+", a, b) for a, b in itertools.product(range(10), repeat=2)]
        sub = [_arith(1, "-", a, b) for a, b in itertools.product(range(10), repeat=2) if a >= b]
        return add + sub
    if level == 2:
        mul = [_arith(2, "*", a, b) for a, b in itertools.product(range(2, 10), repeat=2)]
        add = [_arith(2, "+", a, b) for a, b in itertools.product(range(10, 100), range(1, 10))]
        return mul + add
    return None


def _random(level: int, rng: random.Random) -> Problem:
    if level == 3:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            return _arith(3, "+", a, b)
        return _arith(3, "-", max(a, b), min(a, b))
    if level == 4:
        if rng.random() < 0.5:
            return _arith(4, "*", rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 30), "+")
        a, b = rng.randint(10, 60), rng.randint(2, 30)
        return _arith(4, "+", a, b, rng.randint(1, a + b - 1), "-")
    if level == 5:
        t = rng.randrange(len(_WORD))
        template, solve = _WORD[t]
        if t == 0:
            nums: tuple[int, ...] = (rng.randint(3, 30), rng.randint(2, 20))
        elif t == 1:
            a = rng.randint(5, 30)
            nums = (a, rng.randint(1, a - 1))
        elif t == 2:
            nums = (rng.randint(2, 9), rng.randint(2, 12))
        elif t == 3:
            a, b = rng.randint(5, 30), rng.randint(2, 20)
            nums = (a, b, rng.randint(1, a + b - 1))
        else:
            nums = (rng.randint(2, 6), rng.randint(2, 10), rng.randint(1, 20))
        text = template.format(n=rng.choice(_NAMES), i=rng.choice(_ITEMS), **dict(zip("abc", nums, strict=False)))
        return Problem(text, str(solve(*nums)), 5, ("word", t, *nums))
    raise ValueError(f"heapa.tasks: unknown level {level}; levels are {sorted(LEVELS)}")


def level_capacity(level: int) -> int | None:
    """How many distinct problems a level has (``None``: too many to matter)."""
    if level not in LEVELS:
        raise ValueError(f"heapa.tasks: unknown level {level}; levels are {sorted(LEVELS)}")
    found = _finite(level)
    return None if found is None else len(found)


def problems(level: int, seed: int = 0) -> Iterator[Problem]:
    """Distinct problems of one level in a random order fixed by ``seed`` (finite for levels 1-2)."""
    rng = random.Random(f"heapa.tasks/{seed}/{level}")
    found = _finite(level)
    if found is not None:
        rng.shuffle(found)
        yield from found
        return
    seen: set[tuple] = set()
    misses = 0
    while misses < 10_000:
        p = _random(level, rng)
        if p.key in seen:
            misses += 1
            continue
        seen.add(p.key)
        misses = 0
        yield p


def _allocate(n: int, levels: Sequence[int], room: dict[int, int | None]) -> dict[int, int]:
    """Splits ``n`` as evenly as possible over ``levels``; a level that runs out passes its share on."""
    counts = dict.fromkeys(levels, 0)
    open_levels = list(levels)
    left = n
    while left > 0 and open_levels:
        share, extra = divmod(left, len(open_levels))
        for j, lv in enumerate(list(open_levels)):
            want = share + (1 if j < extra else 0)
            cap = room[lv]
            take = want if cap is None else min(want, cap - counts[lv])
            counts[lv] += take
            left -= take
            if cap is not None and counts[lv] >= cap:
                open_levels.remove(lv)
    if left > 0:
        total = sum(c for c in room.values() if c is not None)
        raise ValueError(f"heapa.tasks: levels {list(levels)} hold only {total} training problems; asked for {n}")
    return counts


def math_tasks(
    train_size: int = 1000,
    *,
    heldout_per_level: int = 20,
    dev_per_level: int = 10,
    levels: Sequence[int] = tuple(LEVELS),
    seed: int = 0,
) -> Any:
    """``datasets.DatasetDict`` with ``train``, ``heldout`` and ``dev`` splits, pairwise disjoint.

    Columns: ``prompt`` (chat messages), ``answer`` (text), ``level``. ``train`` is spread evenly over
    ``levels`` (a level with too few problems left passes its share to the others) and shuffled, so
    that a pool's first pass mixes the levels; ``heldout`` and ``dev`` are ordered by level.
    """
    from datasets import Dataset, DatasetDict

    levels = list(dict.fromkeys(levels))
    if not levels:
        raise ValueError("heapa.tasks: levels is empty")
    for name, value in (("train_size", train_size), ("heldout_per_level", heldout_per_level)):
        if value < 0:
            raise ValueError(f"heapa.tasks: {name} must be >= 0, got {value}")
    if dev_per_level < 0:
        raise ValueError(f"heapa.tasks: dev_per_level must be >= 0, got {dev_per_level}")
    reserved = heldout_per_level + dev_per_level
    room: dict[int, int | None] = {}
    for lv in levels:
        cap = level_capacity(lv)
        if cap is not None and cap < reserved:
            raise ValueError(
                f"heapa.tasks: level {lv} has {cap} problems, fewer than heldout_per_level + dev_per_level = {reserved}"
            )
        room[lv] = None if cap is None else cap - reserved
    counts = _allocate(train_size, levels, room)
    splits: dict[str, list[Problem]] = {"heldout": [], "dev": [], "train": []}
    for lv in levels:
        stream = problems(lv, seed)
        for split, k in (("heldout", heldout_per_level), ("dev", dev_per_level), ("train", counts[lv])):
            got = list(itertools.islice(stream, k))
            if len(got) < k:
                raise ValueError(f"heapa.tasks: level {lv} ran out of distinct problems ({split} needs {k})")
            splits[split] += got
    random.Random(f"heapa.tasks/{seed}/order").shuffle(splits["train"])

    def table(rows: list[Problem]) -> Any:
        return Dataset.from_dict(
            {
                "prompt": [to_messages(p.text) for p in rows],
                "answer": [p.answer for p in rows],
                "level": [p.level for p in rows],
            }
        )

    return DatasetDict({name: table(rows) for name, rows in splits.items()})


# ---------------------------------------------------------------------- answers

_EXPR = re.compile(r"^\s*What is\s+(\d+)\s*([-+*x])\s*(\d+)(?:\s*([-+*x])\s*(\d+))?\s*\?\s*$", re.I)


def reference_answer(problem: str) -> str | None:
    """The exact answer of a ``What is <a> <op> <b> [<op> <c>]?`` problem (left to right, ``*`` first),
    ``None`` for any other text. Used to check what self-consistency accepted for augmented variants."""
    m = _EXPR.match(problem)
    if m is None:
        return None
    nums = [int(m.group(i)) for i in (1, 3, 5) if m.group(i) is not None]
    ops = ["*" if o in "*xX" else o for o in (m.group(2), m.group(4)) if o is not None]
    if len(ops) == 2 and ops[1] == "*" and ops[0] != "*":  # precedence: a + b * c
        nums, ops = [nums[0], nums[1] * nums[2]], [ops[0]]
    value = nums[0]
    for op, x in zip(ops, nums[1:], strict=True):
        value = value + x if op == "+" else value - x if op == "-" else value * x
    return str(value)


def _completion_text(completion: Any) -> str:
    # Conversational completions arrive as [{"role": "assistant", "content": ...}].
    return completion[-1]["content"] if isinstance(completion, list) else completion


def math_verify_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when math-verify finds the completion's final answer equal to the reference, else 0.0."""
    from math_verify import parse, verify

    out = []
    for completion, ans in zip(completions, answer, strict=True):
        gold = parse(ans) or parse(f"${ans}$")
        out.append(1.0 if gold and verify(gold, parse(_completion_text(completion))) else 0.0)
    return out


def evaluate(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    *,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    return_texts: bool = False,
) -> dict[str, Any]:
    """Greedy accuracy (``math_verify_reward``) on a split: ``accuracy``, ``level<k>`` per level, ``n``.

    Prompts are rendered with the tokenizer's chat template, as TRL renders them for training.
    """
    import numpy as np
    import torch

    prompts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list) else p
        for p in dataset["prompt"]
    ]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                out = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, top_p=None, top_k=None
                )
                texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    correct = np.array(math_verify_reward(texts, list(dataset["answer"])))
    levels = np.array(dataset["level"])
    res: dict[str, Any] = {"accuracy": float(correct.mean()) if len(correct) else float("nan"), "n": len(correct)}
    for lv in sorted(set(levels.tolist())):
        res[f"level{lv}"] = float(correct[levels == lv].mean())
    if return_texts:
        res["texts"] = texts
    return res
