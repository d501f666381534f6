"""Argument normalisation for the batch API: lists or arrays in, contiguous
numpy arrays of the dtype the engine expects out, with errors that name the
argument, the expected dtype/shape and what was given."""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .exceptions import InvalidInputError


def _as_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        if a.ndim == 0 and a.size == 1 and not isinstance(x, np.ndarray):
            raise InvalidInputError(f"{name}: expected a 1-D array or sequence, got a scalar {x!r}")
        raise InvalidInputError(f"{name}: expected a 1-D array, got shape {a.shape}")
    return a


def ids(x: Any, name: str = "ids") -> np.ndarray:
    """Prompt ids as a contiguous uint64 array."""
    a = _as_1d(x, name)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if a.dtype.kind == "f" and not isinstance(x, np.ndarray) and all(isinstance(v, (int, np.integer)) for v in x):
        # numpy promotes a list mixing Python ints and uint64 to float64; keep them exact.
        if any(v < 0 for v in x):
            i = next(i for i, v in enumerate(x) if v < 0)
            raise InvalidInputError(f"{name}[{i}] = {x[i]}: ids are non-negative")
        return np.array([int(v) for v in x], dtype=np.uint64)
    if a.dtype.kind not in "iu":
        raise InvalidInputError(f"{name}: expected an integer array (uint64 ids), got dtype {a.dtype}")
    if a.dtype.kind == "i" and (a < 0).any():
        i = int(np.flatnonzero(a < 0)[0])
        raise InvalidInputError(f"{name}[{i}] = {a[i]}: ids are non-negative")
    return np.ascontiguousarray(a, dtype=np.uint64)


def floats(x: Any, name: str) -> np.ndarray:
    """A float64 column; lengths, NaN/inf and ranges are checked by the engine."""
    a = _as_1d(x, name)
    if a.size and a.dtype.kind not in "fiub":
        raise InvalidInputError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float64)


def counts(x: Any, name: str) -> np.ndarray:
    """A non-negative count column as uint32 (lengths are checked by the engine)."""
    a = _as_1d(x, name)
    if a.size and a.dtype.kind not in "iub":
        raise InvalidInputError(f"{name}: expected an integer array, got dtype {a.dtype}")
    if a.size and ((a < 0).any() or (a > np.iinfo(np.uint32).max).any()):
        i = int(np.flatnonzero((a < 0) | (a > np.iinfo(np.uint32).max))[0])
        raise InvalidInputError(f"{name}[{i}] = {a[i]}: expected a count in [0, 2**32)")
    return np.ascontiguousarray(a, dtype=np.uint32)


#: Counts above this mean "no limit" (they are clamped so they fit the engine's i64).
UNBOUNDED = 2**62


def count(k: Any, name: str, *, clamp: bool = False) -> int:
    """A non-negative integer; with ``clamp``, huge values mean "as many as there are"."""
    try:
        v = operator.index(k)
    except TypeError:
        raise InvalidInputError(f"{name}: expected an integer, got {type(k).__name__}") from None
    if v < 0:
        raise InvalidInputError(f"{name}: expected a non-negative integer, got {v}")
    if v >= UNBOUNDED:
        if clamp:
            return UNBOUNDED
        raise InvalidInputError(f"{name}: expected an integer below 2**62, got {v}")
    return v


def length(x: Any, name: str) -> int:
    """Length of a text column (a sequence of str; elements are checked by the engine)."""
    if isinstance(x, (str, bytes)) or not isinstance(x, (Sequence, np.ndarray)):
        raise InvalidInputError(f"{name}: expected a sequence of str, got {type(x).__name__}")
    return len(x)


def one_each(xs: Any, n: int, name: str, per: str = "prompt") -> Any:
    """``xs`` if it holds ``n`` values (one per prompt, or per ``per``), else an error naming ``name``."""
    if len(xs) != n:
        raise InvalidInputError(f"{name}: expected length {n} (one per {per}), got {len(xs)}")
    return xs


def metadata(x: Any, n: int) -> list[bytes | None] | None:
    """Encodes per-prompt metadata as JSON bytes."""
    if x is None:
        return None
    length(x, "metadata")
    xs = one_each(list(x), n, "metadata")
    out: list[bytes | None] = []
    for i, m in enumerate(xs):
        if m is None:
            out.append(None)
            continue
        try:
            out.append(json.dumps(m, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"metadata[{i}]: expected a JSON-serialisable value ({e})") from None
    return out


def group_keys(x: Any, n: int) -> list[str | None]:
    """Group keys (int or str per prompt, None for no group) as the engine's tagged strings:
    ``1`` and ``"1"`` stay two groups."""
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
        raise InvalidInputError(f"group: expected one int or str per prompt, got {type(x).__name__}")
    if isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind in "iu" and x.shape[0] == n:
        return np.char.add("i:", x.astype(str)).tolist()  # a million integer keys without a Python loop
    keys = one_each(list(x.tolist() if isinstance(x, np.ndarray) else x), n, "group")
    out: list[str | None] = []
    for i, k in enumerate(keys):
        if k is None:
            out.append(None)
        elif isinstance(k, str):
            out.append("s:" + k)
        elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
            out.append(f"i:{int(k)}")
        else:
            raise InvalidInputError(f"group[{i}]: expected an int or str, got {type(k).__name__} {k!r}")
    return out


def group_key(tagged: str) -> int | str:
    """The user's key back from the engine's tagged string."""
    return int(tagged[2:]) if tagged.startswith("i:") else tagged[2:]
