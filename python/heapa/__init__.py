"""heapa: the HeaPA prompt-pool engine for RL with verifiable rewards.

Difficulty-aware heap sampling at the frontier, controlled reinsertion,
bounded eviction, lineage re-estimation and a lock-free inbox for validated
on-policy augmentations, in Rust, behind a batch-first numpy API.
"""

from ._heapa import SNAPSHOT_VERSION, __version__
from ._pool import PRESETS, STATES, Inbox, Pool, PoolConfig
from .exceptions import CapacityError, HeapaError, InvalidInputError, SnapshotError, UnknownPromptError

NO_PARENT: int = Pool.NO_PARENT

__all__ = [
    "NO_PARENT",
    "SNAPSHOT_VERSION",
    "STATES",
    "CapacityError",
    "HeapaError",
    "Inbox",
    "InvalidInputError",
    "Pool",
    "PRESETS",
    "PoolConfig",
    "SnapshotError",
    "UnknownPromptError",
    "__version__",
]
