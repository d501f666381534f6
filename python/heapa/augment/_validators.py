"""Candidates, verdicts and validators.

A ``Validator`` looks at one ``Candidate`` and returns a ``Verdict``: accept (optionally with a cleaned
problem, a ground-truth answer, a difficulty) or reject with a reason. Validators run on background
threads, in order; the first rejection ends the chain. A validator that needs the *policy* to generate
(``needs_policy``, e.g. ``SelfConsistencyValidator`` without a solver) gets its completions from the
main process at the next step boundary, so generation only ever happens with the current weights on
the training thread.

* ``SelfConsistencyValidator``: the policy (or any solver) answers the child prompt k times; the
  majority final answer must reach an agreement threshold and becomes the ground truth. Answers are
  compared exactly first, then numerically, then with math-verify.
* ``OpenAIValidator``: any OpenAI-compatible chat-completions endpoint cleans, judges and solves the
  candidate, returning JSON. Bounded concurrency, timeouts, retries with backoff; a "solvable" verdict
  without an answer is a rejection (the reference's B2).
"""

from __future__ import annotations

import decimal
import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

from ._backends import Sampling
from ._format import clamp_difficulty
from ._http import RequestCancelled, RequestGroup, post_json

__all__ = [
    "Candidate",
    "OpenAIValidator",
    "SelfConsistencyValidator",
    "Validator",
    "Verdict",
    "answers_equivalent",
    "extract_answer",
    "majority_answer",
    "normalize_answer",
    "valid_text",
]

logger = logging.getLogger("heapa.augment")


def valid_text(s: Any) -> bool:
    """``None`` or a string the pool can store (UTF-8 encodable: no lone surrogates)."""
    if s is None:
        return True
    if not isinstance(s, str):
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Candidate:
    """A parsed variant on its way through validation (JSON-serialisable, for checkpoints).

    Made from a ``ParseResult`` of one completion; validators return ``Verdict`` s that may rewrite
    ``problem`` and set ``answer`` / ``difficulty``; an accepted candidate becomes a pool prompt (the
    encoded ``child_prompt``, with ``answer``, ``parent_id``, ``difficulty`` and ``metadata``).
    """

    parent_id: int
    parent_prompt: Any  # the parent's training prompt (text or chat messages)
    problem: str  # the new bare problem (cleaned by validators as they go)
    difficulty: float  # the policy's self-reported ratio, clamped
    step: int = 0
    parent_problem: str = ""
    answer: str | None = None
    metadata: Any = None  # stored with the child in the pool
    info: dict[str, Any] = field(default_factory=dict)  # validators' diagnostics (Verdict.info)
    policy_outputs: dict[str, list[str]] = field(default_factory=dict)
    stage: int = 0  # index of the next validator to run
    requeues: int = 0
    enqueued_at: float = field(default_factory=time.time)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    child_prompt: Any = None  # the training prompt the child will have (kept current as ``problem`` changes)
    dedup_key: str | None = None  # the key the duplicate filter reserved for ``problem``

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # deep copy, and proves it is JSON-serialisable

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        d = dict(d)
        info = dict(d.get("info") or {})
        for key in ("child_prompt", "dedup_key"):  # checkpoints before they were fields kept them in info
            if key in info and d.get(key) is None:
                d[key] = info.pop(key)
        d["info"] = info
        return cls(**d)


@dataclass
class Verdict:
    """A validator's decision. ``retryable``: a transient failure, not a judgement of the candidate."""

    accepted: bool
    reason: str = ""
    problem: str | None = None
    answer: str | None = None
    difficulty: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    retryable: bool = False

    @classmethod
    def accept(cls, **kw: Any) -> Verdict:
        return cls(True, **kw)

    @classmethod
    def reject(cls, reason: str, **kw: Any) -> Verdict:
        return cls(False, reason, **kw)


@runtime_checkable
class Validator(Protocol):
    """``validate`` runs on a background thread and must be thread-safe."""

    name: str

    def validate(self, candidate: Candidate) -> Verdict: ...


# ---------------------------------------------------------------------- answers

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"(?im)^[^\S\n]*[*#>_ ]*(?:final\s+)?answer\s*(?:is)?\s*[:\uff1a]\s*(.+?)\s*$")
_NUM = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _last_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start : i - 1]
    return None


def normalize_answer(ans: str) -> str:
    """Light normalisation for comparing answers: spacing, ``$``, trailing period, thousands separators."""
    s = ans.strip()
    s = s.strip("$").strip()
    for pat in ("\\!", "\\,", "\\;", "\\ ", "\\displaystyle"):
        s = s.replace(pat, "")
    s = _THOUSANDS.sub("", s)
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[6:-1]
    return s


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: the last ``\\boxed{}``, else an ``Answer:`` line, else the last number."""
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return normalize_answer(boxed)
    lines = _ANSWER_LINE.findall(text)
    if lines:
        s = normalize_answer(lines[-1])
        if s:
            return s
    nums = _NUM.findall(text)
    return normalize_answer(nums[-1]) if nums else None


_FRACTION = re.compile(r"[-+]?\d+/\d+")
_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE]([-+]?\d+))?")
_MAX_NUMBER_CHARS = 1000  # longer numerals are compared as text
_MAX_EXPONENT = 1000


def _as_number(s: str) -> Fraction | None:
    """The exact value of an integer, decimal or fraction literal (floats would call 10**17 and 10**17+1
    equal, and two different 400-digit integers both inf)."""
    if len(s) > _MAX_NUMBER_CHARS:
        return None
    try:
        if _FRACTION.fullmatch(s):
            num, den = s.split("/")
            return Fraction(int(num), int(den)) if int(den) else None
        m = _DECIMAL.fullmatch(s)
        if m and (m.group(1) is None or abs(int(m.group(1))) <= _MAX_EXPONENT):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


_MV_LOCK = threading.Lock()


class _NoTimeoutNotice(logging.Filter):
    """Drops math-verify's notice that its signal timeouts are off: we turn them off on purpose (they only
    work on the main thread) and bound the input length instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutNotice())


def _math_verify_equal(a: str, b: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - math-verify is in the trl extra
        return False
    try:
        # No signal-based timeouts: they only work on the main thread, and validators run on workers.
        # Inputs are short extracted answers (length-capped by the caller).
        with _MV_LOCK:  # sympy's parsers keep global state; serialise (answers are short, this is a fallback)
            ga = parse(f"${a}$", parsing_timeout=None)
            gb = parse(f"${b}$", parsing_timeout=None)
            if not ga or not gb:
                return False
            return bool(verify(ga, gb, timeout_seconds=None))
    except Exception:  # math-verify raises a zoo of sympy errors on odd input
        return False


def answers_equivalent(a: str | None, b: str | None, *, max_len: int = 120) -> bool:
    """Exact match after normalisation (fast path), numbers by exact value, else math-verify (when it is
    installed; without it, answers that differ after normalisation are different)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    na, nb = normalize_answer(a), normalize_answer(b)
    if not na or not nb:
        return False
    if na == nb:
        return True
    fa, fb = _as_number(na), _as_number(nb)
    if fa is not None and fb is not None:
        return fa == fb
    if len(na) > max_len or len(nb) > max_len:
        return False
    return _math_verify_equal(na, nb)


def majority_answer(
    answers: Sequence[str | None], equivalent: Callable[[str, str], bool] = answers_equivalent
) -> tuple[str | None, int]:
    """Clusters equivalent answers; returns (the most common spelling of the biggest cluster, its size)."""
    clusters: list[list[str]] = []
    for a in answers:
        if a is None or not a.strip():
            continue
        for cl in clusters:
            if equivalent(cl[0], a):
                cl.append(a)
                break
        else:
            clusters.append([a])
    if not clusters:
        return None, 0
    best = max(clusters, key=len)  # first biggest: stable
    spelling = Counter(best).most_common(1)[0][0]
    return spelling, len(best)


# ---------------------------------------------------------------------- self-consistency


class SelfConsistencyValidator:
    """Accepts a candidate when k solutions agree: the majority answer becomes the ground truth.

    k: solutions per candidate; threshold: the majority cluster must hold at least this share of the k
        (unanswered samples count against it); min_votes: and at least this many votes.
    solver: ``solver(child_prompt, k) -> list[str]`` (solution texts), called on the validation thread;
        ``None`` = the policy itself solves the child prompt, generated on the main process at the next
        step boundary (``needs_policy``) with ``sampling``.
    extract: solution text -> final answer (default ``extract_answer``); equivalent: answer equality.
    """

    needs_policy: bool

    def __init__(
        self,
        k: int = 8,
        threshold: float = 0.5,
        *,
        solver: Callable[[Any, int], Sequence[str]] | None = None,
        min_votes: int = 2,
        max_new_tokens: int = 1024,
        temperature: float = 1.0,
        top_p: float = 1.0,
        extract: Callable[[str], str | None] | None = None,
        equivalent: Callable[[str, str], bool] | None = None,
        name: str = "self_consistency",
    ) -> None:
        if k < 1 or not 0 < threshold <= 1 or min_votes < 1:
            raise ValueError(f"SelfConsistencyValidator: bad k={k}, threshold={threshold}, min_votes={min_votes}")
        self.k = int(k)
        self.threshold = float(threshold)
        self.min_votes = min(int(min_votes), self.k)
        self.solver = solver
        self.needs_policy = solver is None
        self.sampling = Sampling(n=self.k, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        self.extract = extract or extract_answer
        self.equivalent = equivalent or answers_equivalent
        self.name = name

    def validate(self, candidate: Candidate) -> Verdict:
        if self.needs_policy:
            texts = candidate.policy_outputs.get(self.name)
            if texts is None:
                raise RuntimeError(f"{self.name}: no policy solutions attached to candidate {candidate.uid}")
        else:
            prompt = candidate.problem if candidate.child_prompt is None else candidate.child_prompt
            texts = list(self.solver(prompt, self.k))
        answers = [self.extract(t) if isinstance(t, str) else None for t in texts]
        answer, votes = majority_answer(answers, self.equivalent)
        n = max(self.k, len(texts))
        agreement = votes / n if n else 0.0
        info = {"agreement": agreement, "votes": votes, "answered": sum(a is not None for a in answers)}
        if answer is None:
            return Verdict.reject("no_answers", info=info)
        if votes < self.min_votes or agreement < self.threshold:
            return Verdict.reject("no_majority", info=info)
        return Verdict.accept(answer=answer, info=info)


# ---------------------------------------------------------------------- OpenAI-compatible endpoint

OPENAI_SYSTEM = "You are a careful math data cleaner and solver. You reply with one JSON object and nothing else."

OPENAI_USER = """\
ORIGINAL problem (for reference only; do not copy it):
{original}

GENERATION (a new problem written by another model):
{problem}

Tasks:
1. From GENERATION only, extract one self-contained math problem. Remove any preface, commentary, code, \
solution or answer. If there is none, use an empty string and mark it unsolvable.
2. Decide whether the problem is well-posed and solvable. If it is, compute its final answer: only the final \
answer, as a short string such as 12, 3/4 or \\sqrt{{2}}.
3. Rate its difficulty relative to ORIGINAL between 0.75 and 1.33 (1.0 = equally hard).

Reply with exactly one JSON object: \
{{"problem": string, "solvable": true or false, "answer": string or null, "difficulty": number}}"""


class _CallFailed(Exception):
    def __init__(self, kind: str, retryable: bool = True) -> None:
        super().__init__(kind)
        self.kind = kind
        self.retryable = retryable


class OpenAIValidator:
    """Validates with any OpenAI-compatible chat-completions endpoint (a vLLM server, a hosted model).

    base_url: e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended unless present).
    api_key: sent as a bearer token (default: the ``OPENAI_API_KEY`` environment variable, if set).
    max_concurrency: simultaneous requests across all validation threads.
    timeout: seconds per request, a deadline for the whole request (a server dripping bytes cannot stretch
        it); max_retries: extra attempts after a timeout, a transport error, HTTP
        408/425/429/5xx or malformed JSON, with exponential backoff (``backoff`` .. ``backoff_max`` s,
        jittered; ``Retry-After`` honoured up to ``backoff_max``). Other HTTP errors fail at once.
    use_clean_problem: the endpoint's cleaned problem replaces the candidate's.
    use_teacher_difficulty: its difficulty replaces the policy's (default: kept as info only).
    extra_body: merged into each request (e.g. ``{"reasoning_effort": "low"}``).
    """

    needs_policy = False

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        *,
        api_key: str | None = None,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        json_mode: bool = True,
        system_prompt: str = OPENAI_SYSTEM,
        user_template: str = OPENAI_USER,
        extra_body: dict[str, Any] | None = None,
        use_clean_problem: bool = True,
        use_teacher_difficulty: bool = False,
        name: str = "openai",
        seed: int | None = None,
    ) -> None:
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        if max_concurrency < 1 or timeout <= 0 or max_retries < 0:
            raise ValueError("OpenAIValidator: max_concurrency >= 1, timeout > 0 and max_retries >= 0 required")
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.system_prompt = system_prompt
        self.user_template = user_template
        self.extra_body = dict(extra_body or {})
        self.use_clean_problem = use_clean_problem
        self.use_teacher_difficulty = use_teacher_difficulty
        self.name = name
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._requests = RequestGroup()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def start(self) -> None:
        """Accepts work again after ``close`` (the pipeline calls it from ``start``)."""
        self._requests.reopen()
        self._stop.clear()

    def close(self) -> None:
        """Aborts backoff waits and requests in flight (that work is reported as retryable, not rejected)."""
        self._stop.set()
        self._requests.cancel()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def request_body(self, candidate: Candidate) -> dict[str, Any]:
        user = self.user_template.format(original=candidate.parent_problem, problem=candidate.problem)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        body.update(self.extra_body)
        return body

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.backoff_max, max(0.0, float(retry_after)))
            except ValueError:
                pass
        base = min(self.backoff_max, self.backoff * (2**attempt))
        return base * (0.5 + 0.5 * self._rng.random())

    def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        kind = "unknown"
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise _CallFailed("shutdown")
            retry_after = None
            self._count("requests")
            try:
                with self._sem:
                    if self._stop.is_set():  # closed while waiting for a slot
                        raise _CallFailed("shutdown")
                    status, headers, raw = post_json(self.url, body, self.headers, self.timeout, self._requests)
            except RequestCancelled as exc:
                raise _CallFailed("shutdown") from exc
            except (TimeoutError, OSError) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else "connection"
            except Exception as exc:  # http.client.HTTPException and friends
                kind = f"transport_{type(exc).__name__}"
            else:
                if status == 200:
                    try:
                        return _parse_chat_json(raw)
                    except ValueError:
                        kind = "malformed"
                elif status in (408, 425, 429) or status >= 500:
                    kind = f"http_{status}"
                    retry_after = headers.get("retry-after")
                else:
                    self._count(f"error/http_{status}")
                    raise _CallFailed(f"http_{status}", retryable=False)
            self._count(f"error/{kind}")
            if attempt < self.max_retries:
                self._count("retries")
                if self._stop.wait(self._delay(attempt, retry_after)):
                    raise _CallFailed("shutdown")
        raise _CallFailed(kind)

    def validate(self, candidate: Candidate) -> Verdict:
        try:
            obj = self._call(self.request_body(candidate))
        except _CallFailed as exc:
            return Verdict.reject(f"{self.name}_error", retryable=exc.retryable, info={"error": exc.kind})
        problem = obj.get("problem", obj.get("clean"))
        problem = problem.strip() if isinstance(problem, str) else ""
        solvable = obj.get("solvable")
        if isinstance(solvable, str):
            solvable = solvable.strip().lower() in ("true", "yes", "1")
        answer = _answer_text(obj.get("answer"))
        info: dict[str, Any] = {}
        d = obj.get("difficulty")
        teacher_d = None
        dv = _number_value(d)
        if dv is not None and dv > 0:
            teacher_d = clamp_difficulty(dv)
            info["teacher_difficulty"] = teacher_d
        if solvable is not True:
            return Verdict.reject("unsolvable", info=info)
        if self.use_clean_problem and not problem:
            return Verdict.reject("empty_problem", info=info)
        if answer is None:
            return Verdict.reject("no_answer", info=info)  # B2: solvable but no answer is not accepted
        return Verdict.accept(
            problem=problem if self.use_clean_problem else None,
            answer=answer,
            difficulty=teacher_d if self.use_teacher_difficulty else None,
            info=info,
        )


_PLAIN_EXPONENT = 30  # decimals with a smaller exponent are written out (1E+5 -> 100000)


def _answer_text(answer: Any) -> str | None:
    """A JSON answer as exact text: integers as integers, decimals digit for digit (the content is parsed
    with ``parse_float=Decimal``); booleans, null, NaN/infinity and other types are no answer."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return str(answer)
    if isinstance(answer, decimal.Decimal):
        if not answer.is_finite():
            return None
        exp = answer.as_tuple().exponent
        return format(answer, "f") if isinstance(exp, int) and abs(exp) <= _PLAIN_EXPONENT else str(answer)
    if isinstance(answer, str):
        return answer.strip() or None
    return None  # float (only NaN / Infinity reach here), list, object


def _number_value(x: Any) -> float | None:
    """A finite JSON number as a float (booleans are not numbers)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, decimal.Decimal)):
        return None
    try:
        v = float(x)
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


def _parse_chat_json(raw: bytes) -> dict[str, Any]:
    """The JSON object in the first choice's message content (code fences tolerated)."""
    try:
        env = json.loads(raw)
        content = env["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError("malformed chat-completions envelope") from exc
    if not isinstance(content, str):
        raise ValueError("message content is not text")
    s = content.strip()
    if s.startswith("```"):
        s = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", s)
    i, j = s.find("{"), s.rfind("}")
    if i < 0 or j < i:
        raise ValueError("no JSON object in the content")
    obj = json.loads(s[i : j + 1], parse_float=decimal.Decimal)  # exact decimals: the answer is ground truth
    if not isinstance(obj, dict):
        raise ValueError("content JSON is not an object")
    return obj
