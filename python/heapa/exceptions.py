"""The heapa exception hierarchy.

Every error the engine raises is a :class:`HeapaError`. Subclasses also derive
from the matching built-in, so ``except KeyError`` / ``except ValueError``
keep working. The Rust binding maps core errors onto these classes in one
place (``rust/heapa-py/src/errors.rs``).
"""


class HeapaError(Exception):
    """Base class of all heapa errors."""


class UnknownPromptError(HeapaError, KeyError):
    """An id the pool does not hold (never added, evicted or dropped)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidInputError(HeapaError, ValueError):
    """Bad arguments: shape, dtype, length, NaN/inf, range, state or config value."""


class CapacityError(HeapaError):
    """The pool cannot admit prompts: every slot is in flight."""


class SnapshotError(HeapaError, OSError):
    """A snapshot cannot be written or loaded (truncated, corrupt, foreign, future version)."""


__all__ = ["CapacityError", "HeapaError", "InvalidInputError", "SnapshotError", "UnknownPromptError"]
