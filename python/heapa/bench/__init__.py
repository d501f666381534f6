"""``heapa bench``: million-prompt microbenchmarks against two pure-Python baselines.

Usage::

    heapa bench [--size N] [--quick] [--json PATH] [--impls heapa,best_python,reference_design]
                [--ops add,report_512,...] [--check] [--list]

Layout:

* :mod:`.registry` -- the one list of operations (:data:`~.registry.OPS`): scenario, items per call,
  budget, which implementations run it and up to which size; everything else reads it.
* :mod:`.scenarios` -- what each operation times, on shared deterministic inputs.
* :mod:`.runner` -- timing, one worker process per (implementation, size), the JSON report.
* :mod:`.report` -- the text table.
* :mod:`.baselines` -- the two pure-Python reference implementations the subject is compared
  against. They ship with the package, so ``heapa bench`` from a wheel compares against them too.

The pytest-benchmark suite in the source tree's ``bench/`` runs the same registry.
"""

from .cli import main
from .registry import BY_NAME, DEFAULT_SIZE, OPS, Budget, Op

__all__ = ["BY_NAME", "DEFAULT_SIZE", "OPS", "Budget", "Op", "main"]
