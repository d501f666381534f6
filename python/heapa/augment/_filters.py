"""Cheap filters (validators that need neither a model nor the network).

They run on the main process right after parsing, before a candidate takes a place in the validation
queue; each also satisfies the ``Validator`` protocol and can be put in a validator chain.

* ``DedupFilter``: rejects a duplicate of anything the pool holds or held (or that is already being
  validated), by a hash of the normalised problem text. Keeps a set of 64-bit hashes, not texts.
* ``LengthFilter``: character (and optionally token) bounds.
* ``CharsetFilter``: rejects CJK / full-width characters (as the reference did), control characters,
  and optionally anything outside an allowed set.
* ``DecontaminationFilter``: n-gram overlap with a user-supplied evaluation set.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from ._validators import Candidate, Verdict

__all__ = [
    "CharsetFilter",
    "DecontaminationFilter",
    "DedupFilter",
    "LengthFilter",
    "normalize_text",
    "text_key",
]

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace removed, trailing punctuation dropped: the dedup identity of a problem."""
    s = unicodedata.normalize("NFKC", text).casefold()
    return _WS.sub("", s).rstrip(".?!。")


def text_key(text: str) -> int:
    """64-bit hash of the normalised text (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(normalize_text(text).encode(), digest_size=8).digest(), "little")


class DedupFilter:
    """Global duplicate filter over the pool and the candidates in flight.

    ``validate`` reserves the key of an accepted candidate; the pipeline later calls ``settle`` with the
    outcome: accepted keys join the known set, rejected ones a bounded memory of recent rejections (so
    the same failing variant is not validated over and over).
    """

    name = "duplicate"
    needs_policy = False

    def __init__(self, texts: Iterable[str] = (), *, remember_rejected: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._known: set[int] = {text_key(t) for t in texts}
        self._reserved: dict[int, int] = {}  # key -> reservations
        self._rejected: OrderedDict[int, None] = OrderedDict()
        self.remember_rejected = remember_rejected

    def __len__(self) -> int:
        return len(self._known)

    def add(self, texts: Iterable[str]) -> None:
        keys = [text_key(t) for t in texts]
        with self._lock:
            self._known.update(keys)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()
            self._reserved.clear()
            self._rejected.clear()

    def seen(self, text: str) -> bool:
        k = text_key(text)
        with self._lock:
            return k in self._known or k in self._reserved or k in self._rejected

    def reserve(self, text: str) -> int | None:
        """Reserves ``text``'s key; ``None`` if it is a duplicate."""
        k = text_key(text)
        with self._lock:
            if k in self._known or k in self._reserved or k in self._rejected:
                return None
            self._reserved[k] = 1
            return k

    def settle(self, key: int | None, accepted: bool) -> None:
        if key is None:
            return
        with self._lock:
            if self._reserved.pop(key, None) is None:
                return
            if accepted:
                self._known.add(key)
            elif self.remember_rejected > 0:
                self._rejected[key] = None
                while len(self._rejected) > self.remember_rejected:
                    self._rejected.popitem(last=False)

    def rejected_keys(self) -> list[int]:
        """The remembered rejections, oldest first (checkpoints carry them: the pool cannot rebuild them)."""
        with self._lock:
            return list(self._rejected)

    def remember_rejected_keys(self, keys: Iterable[int]) -> None:
        with self._lock:
            for k in keys:
                self._rejected[int(k)] = None
            while len(self._rejected) > self.remember_rejected:
                self._rejected.popitem(last=False)

    def validate(self, candidate: Candidate) -> Verdict:
        key = self.reserve(candidate.problem)
        if key is None:
            return Verdict.reject("duplicate")
        return Verdict.accept(info={"dedup_key": key})


class LengthFilter:
    """Rejects problems shorter than ``min_chars`` or longer than ``max_chars`` (or ``max_tokens``)."""

    name = "length"
    needs_policy = False

    def __init__(
        self, min_chars: int = 8, max_chars: int = 4000, *, tokenizer: Any = None, max_tokens: int | None = None
    ) -> None:
        if max_tokens is not None and tokenizer is None:
            raise ValueError("LengthFilter: max_tokens needs a tokenizer")
        self.min_chars, self.max_chars = int(min_chars), int(max_chars)
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def validate(self, candidate: Candidate) -> Verdict:
        n = len(candidate.problem.strip())
        if n < self.min_chars:
            return Verdict.reject("too_short")
        if n > self.max_chars:
            return Verdict.reject("too_long")
        if self.max_tokens is not None:
            ids = self.tokenizer(candidate.problem, add_special_tokens=False)["input_ids"]
            if len(ids) > self.max_tokens:
                return Verdict.reject("too_long")
        return Verdict.accept()


_CJK = re.compile(
    "[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u3190-\u31ff\u3200-\u32ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]"
)


class CharsetFilter:
    """Rejects CJK and full-width characters (``forbid_cjk``), control characters other than newline and
    tab, and, with ``allowed`` (a regex character class such as ``r"[\\x20-\\x7e\\n]"``), anything else."""

    name = "charset"
    needs_policy = False

    def __init__(self, *, forbid_cjk: bool = True, allowed: str | None = None) -> None:
        self.forbid_cjk = forbid_cjk
        self._allowed = re.compile(allowed) if allowed else None

    def validate(self, candidate: Candidate) -> Verdict:
        text = candidate.problem
        if self.forbid_cjk and _CJK.search(text):
            return Verdict.reject("charset")
        if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
            return Verdict.reject("charset")
        if self._allowed is not None and any(not self._allowed.fullmatch(ch) for ch in text):
            return Verdict.reject("charset")
        return Verdict.accept()


class DecontaminationFilter:
    """Rejects a problem sharing any word ``n``-gram with the evaluation texts (or, for a problem of
    fewer than ``n`` words, equal to one of them after normalisation)."""

    name = "contaminated"
    needs_policy = False

    def __init__(self, eval_texts: Iterable[str], *, n: int = 8) -> None:
        if n < 1:
            raise ValueError("DecontaminationFilter: n must be >= 1")
        self.n = n
        self._grams: set[int] = set()
        self._whole: set[int] = set()
        for text in eval_texts:
            words = self._words(text)
            self._whole.add(_hash_words(words))
            for i in range(len(words) - n + 1):
                self._grams.add(_hash_words(words[i : i + n]))

    @staticmethod
    def _words(text: str) -> list[str]:
        return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())

    def contaminated(self, text: str) -> bool:
        words = self._words(text)
        if _hash_words(words) in self._whole:
            return True
        return any(_hash_words(words[i : i + self.n]) in self._grams for i in range(len(words) - self.n + 1))

    def validate(self, candidate: Candidate) -> Verdict:
        return Verdict.reject("contaminated") if self.contaminated(candidate.problem) else Verdict.accept()


def _hash_words(words: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).digest(), "little")
