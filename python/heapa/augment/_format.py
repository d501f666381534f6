"""The tagged NEW / DIFFICULTY format the policy answers in, and its parser.

The policy is asked for a variant of a problem in a small tagged format::

    NEW:
    <the new problem>
    DIFFICULTY: 1.05
    END

Parsing works on the *response text only* (the reference decoded part of the left-padded prompt as if it
were output and often picked up its few-shot example, B12). Tags are matched case-insensitively at the
start of a line, tolerating Markdown decoration (``**NEW:**``, ``### NEW:``). The difficulty is the
first number after the DIFFICULTY tag, clamped to [0.75, 1.33]. Stop strings are placed *after* the
difficulty line (the END and ORIGINAL tags), so stopping never cuts off the number (B5).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = [
    "COMPACT_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "DIFFICULTY_RANGE",
    "ParseResult",
    "TaggedFormat",
    "clamp_difficulty",
    "parse_variant",
]

#: The policy's self-reported difficulty ratio is clamped to this range (as in the paper and the engine).
DIFFICULTY_RANGE = (0.75, 1.33)

#: Instructions for capable instruction-tuned models. ``{problem}`` is the parent's bare problem; the tag
#: placeholders ``{new}``, ``{difficulty}``, ``{end}``, ``{original}`` are filled from the ``TaggedFormat``.
DEFAULT_TEMPLATE = """\
You are an expert writer of math problems. Write a NEW problem that is similar to the ORIGINAL problem \
by changing only its numeric values (constants, coefficients, exponents, lengths, bounds) by small amounts. \
Keep the topic, the structure, the variables and the quantity asked for the same. Do not write code, a \
solution, an answer or any explanation.

Then rate how hard the NEW problem is compared with the ORIGINAL as one number: 1.00 means equally hard, \
above 1 harder, below 1 easier (between 0.75 and 1.33).

Reply in exactly this format:
{new}:
<the new problem>
{difficulty}: <number>
{end}

Example.
{original}:
In isosceles triangle ABC, AB = AC = 10 and BC = 12. Find the length of the altitude from A to BC.
{new}:
In isosceles triangle ABC, AB = AC = 13 and BC = 10. Find the length of the altitude from A to BC.
{difficulty}: 1.03
{end}

Now the real one.
{original}:
{problem}
"""

#: A minimal template for tiny models with short contexts (tests, the CPU demo): just the tagged parent.
COMPACT_TEMPLATE = "{original}:{problem}\n"

_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?")


def clamp_difficulty(d: float) -> float:
    lo, hi = DIFFICULTY_RANGE
    return min(hi, max(lo, float(d)))


@dataclass(frozen=True)
class TaggedFormat:
    """Tag words of the format (matched case-insensitively, each followed by ``:`` except ``end``)."""

    new: str = "NEW"
    difficulty: str = "DIFFICULTY"
    end: str = "END"
    original: str = "ORIGINAL"
    #: Extra stop strings for generation, on top of the END and ORIGINAL lines. They must only be able to
    #: occur *after* a well-formed difficulty line (otherwise the output is malformed anyway).
    extra_stops: tuple[str, ...] = ("\\boxed", "Solution:")
    _res: dict = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("new", "difficulty", "end", "original"):
            tag = getattr(self, name)
            if not isinstance(tag, str) or not tag.strip() or "\n" in tag:
                raise ValueError(f"TaggedFormat.{name}: expected a non-empty one-line tag, got {tag!r}")
        deco = r"^[ \t#>*_]*"
        res = {
            name: re.compile(deco + re.escape(getattr(self, name)) + r"[ \t*_]*:[ \t*_]*", re.I | re.M)
            for name in ("new", "difficulty", "original")
        }
        res["end"] = re.compile(deco + re.escape(self.end) + r"\b", re.I | re.M)
        object.__setattr__(self, "_res", res)

    @property
    def cue(self) -> str:
        """What a completion-style (non-chat) prompt ends with, so that the model writes the new problem."""
        return f"{self.new}:\n"

    def stops(self) -> tuple[str, ...]:
        """Stop strings for generation: all of them come after the difficulty line of a well-formed answer."""
        return (f"\n{self.end}", f"\n{self.original}:", *self.extra_stops)

    def render(self, problem: str, difficulty: float) -> str:
        """A well-formed answer (e.g. as a supervised warm-up target), without the cue."""
        return f"{problem.strip()}\n{self.difficulty}: {difficulty:.2f}\n{self.end}"

    def fill(self, template: str, problem: str) -> str:
        """Substitutes the placeholders; ``str.format`` is avoided so braces in problems are safe."""
        out = template
        for name in ("new", "difficulty", "end", "original"):
            out = out.replace("{" + name + "}", getattr(self, name))
        return out.replace("{problem}", problem)

    def regex(self, name: str) -> re.Pattern[str]:
        return self._res[name]


DEFAULT_FORMAT = TaggedFormat()


@dataclass(frozen=True)
class ParseResult:
    """Outcome of parsing one response: ``problem``/``difficulty`` when ``ok``, else a ``reason``."""

    problem: str | None
    difficulty: float | None
    reason: str = ""  # "", "no_new", "empty", "no_difficulty", "bad_difficulty"
    raw_difficulty: str | None = None

    @property
    def ok(self) -> bool:
        return not self.reason


def parse_variant(
    response: str,
    fmt: TaggedFormat = DEFAULT_FORMAT,
    *,
    cued: bool = False,
    require_difficulty: bool = True,
) -> ParseResult:
    """Parses a policy response (the generated text only, never the prompt).

    ``cued``: the prompt ended with the NEW tag, so the response may start directly with the problem.
    Without a DIFFICULTY tag the result is malformed (``require_difficulty``) or uses 1.0.
    """
    text = response.replace("\r\n", "\n")
    m = fmt.regex("new").search(text)
    if m is not None:
        start = m.end()
    elif cued:
        start = 0
    else:
        return ParseResult(None, None, "no_new")
    body = text[start:]
    cut = len(body)
    for name in ("difficulty", "end", "original", "new"):
        t = fmt.regex(name).search(body)
        if t is not None:
            cut = min(cut, t.start())
    problem = _strip_problem(body[:cut])
    if not problem:
        return ParseResult(None, None, "empty")
    d = fmt.regex("difficulty").search(body, cut)
    if d is None:
        if require_difficulty:
            return ParseResult(problem, None, "no_difficulty")
        return ParseResult(problem, 1.0)
    rest = body[d.end() :]
    end = fmt.regex("end").search(rest)
    window = rest[: end.start()] if end is not None else rest
    lines = [ln for ln in window.split("\n") if ln.strip()]
    raw = lines[0].strip() if lines else ""
    num = _NUMBER.search(raw)
    if num is None:
        return ParseResult(problem, None, "bad_difficulty", raw)
    value = _to_float(num.group(0))
    if value is not None and raw[num.end() : num.end() + 1] == "%":
        value /= 100.0
    if value is None or not math.isfinite(value) or value <= 0:
        return ParseResult(problem, None, "bad_difficulty", raw)
    return ParseResult(problem, clamp_difficulty(value), "", raw)


def _to_float(s: str) -> float | None:
    s = s.replace(",", ".")
    try:
        return float(s)
    except ValueError:
        return None


def _strip_problem(s: str) -> str:
    s = s.strip()
    # A fenced block around the whole problem is decoration, not content.
    if s.startswith("```") and s.endswith("```") and len(s) >= 6:
        s = s[3:-3].strip()
    return s.strip("* \t\n")
