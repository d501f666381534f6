"""TEST DOUBLE of ``slime.rollout.data_source`` (see tests/standins/README.md): only the abstract interface.

slime constructs the configured class as ``cls(args)`` inside its RolloutManager Ray actor
(``--data-source-path``); ``__len__`` is abstract since slime v0.2.3.
"""

from __future__ import annotations

import abc

from slime.utils.types import Sample


class DataSource(abc.ABC):
    @abc.abstractmethod
    def get_samples(self, num_samples: int) -> list[list[Sample]]:
        """``num_samples`` groups of ``args.n_samples_per_prompt`` samples each."""

    @abc.abstractmethod
    def add_samples(self, samples: list[list[Sample]]) -> None:
        """Groups handed back unused (e.g. aborted by a partial rollout)."""

    @abc.abstractmethod
    def save(self, rollout_id: int) -> None: ...

    @abc.abstractmethod
    def load(self, rollout_id: int | None = None) -> None: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...
