"""Running a test file again under another virtualenv (verl's, layered over the main one): the tests whose
package cannot share the main environment still run from the main suite."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def rerun_in_venv(venv: str, test_file: str, missing: str, timeout: int) -> None:
    """Runs ``test_file`` with ``ROOT/venv``'s Python; skips with ``missing`` if that venv is not built."""
    python = ROOT / venv / "bin" / "python"
    if not python.exists():
        pytest.skip(missing)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(test_file))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    last = out.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, out.stdout[-2000:]
