"""Shared test fixtures."""

import json
import os
import subprocess
import sys

import pytest


def _run_python_for_result(code: str, env_updates: dict, timeout: int = 300) -> dict:
    """Run ``code`` in a fresh CPU-only interpreter; parse its ``RESULT{json}`` line.

    Settings that JAX reads once at start-up (x64, the number of host devices)
    can only be tested in a process of their own.
    """
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(env_updates)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.fixture
def run_python_for_result():
    """``run(code, env_updates) -> dict``: see :func:`_run_python_for_result`."""
    return _run_python_for_result


# A script (python tests/mutation_check.py), not a test module: it copies the
# repository and runs pytest itself.
collect_ignore = ["mutation_check.py"]
