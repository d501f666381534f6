"""heapa for verl (``pip install "heapa[verl]"``): the pool chooses verl's training prompts.

verl 0.5 - 0.7.x (the curriculum sampler API): :class:`heapa.verl.sampler.HeaPASampler`, an
``AbstractCurriculumSampler`` that draws dataset rows from a heapa pool and reports each prompt's group mean
reward and pass count by a stable row id, plus :class:`heapa.verl.sampler.HeaPADataset`, verl's
``RLHFDataset`` with that id put in each row's ``extra_info`` (``extra_info["heapa_row"]``). The config to
paste is in docs/verl.md::

    data.sampler.class_path=pkg://heapa.verl.sampler data.sampler.class_name=HeaPASampler
    data.custom_cls.path=pkg://heapa.verl.sampler data.custom_cls.name=HeaPADataset
    data.dataloader_num_workers=0

verl >= 0.8 (the v1 trainer): :mod:`heapa.verl.v1`, a dataset that draws its rows from the pool
(``data.custom_cls``: :class:`heapa.verl.v1.HeaPAPoolDataset`) and a replay buffer that reports every
finished group, DAPO-filtered ones included (``trainer.v1.sampler.custom_sampler``:
:class:`heapa.verl.v1.HeaPAReplayBuffer`).

Nothing here is imported by ``import heapa`` or ``import heapa.verl``; ``heapa.verl.sampler`` and
``heapa.verl.v1`` import verl.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HeaPADataset", "HeaPAPoolDataset", "HeaPAReplayBuffer", "HeaPASampler"]

_V1 = ("HeaPAPoolDataset", "HeaPAReplayBuffer")


def __getattr__(name: str) -> Any:
    if name in _V1:
        from . import v1

        return getattr(v1, name)
    if name in __all__:
        from . import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'heapa.verl' has no attribute {name!r}")
