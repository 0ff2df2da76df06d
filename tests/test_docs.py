"""The Python blocks of README.md and docs/*.md run, so the docs cannot rot.

Every fenced ```python block of a file runs, in order, in one namespace per file
(a later block may use what an earlier one defined). Markers, on the line(s)
just above a block:

* ``<!-- slow -->``: the block is heavy; it runs in the slow set
  (``pytest.mark.slow``) with everything before it in that file;
* ``<!-- not-run: reason -->``: the block cannot run in the suite (it needs a
  GPU, a download, a trained network, ...); the reason is shown in the skip.

A file's blocks are one test per block: block ``i`` re-runs blocks ``0..i-1`` of
its file (those that are runnable) in a fresh namespace first, so each test
stands alone and the first broken block is the failing test.
"""

import os
import re
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"<!--\s*(slow|not-run:[^>]*?)\s*-->\s*$")


def _blocks(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, marker)`` of each python block of ``path``."""
    text = path.read_text()
    out = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        marker = None
        for line in reversed(before[-3:]):
            found = _MARK.search(line.strip())
            if found:
                marker = found.group(1)
                break
            if line.strip():
                break
        lineno = text[: match.start()].count("\n") + 1
        out.append((lineno, match.group(1), marker))
    return out


def _cases():
    for path in FILES:
        blocks = _blocks(path)
        for i, (lineno, _, marker) in enumerate(blocks):
            marks = []
            if marker == "slow" or any(m == "slow" for _, _, m in blocks[:i]):
                marks.append(pytest.mark.slow)
            if marker and marker.startswith("not-run:"):
                reason = marker[len("not-run:") :].strip()
                marks.append(pytest.mark.skip(reason=f"not runnable: {reason}"))
            rel = path.relative_to(ROOT)
            yield pytest.param(path, i, marks=marks, id=f"{rel}:{lineno}")


@pytest.mark.parametrize("path, index", list(_cases()))
def test_docs_block_runs(path, index, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    blocks = _blocks(path)
    namespace = {"__name__": "__docs__"}
    for lineno, code, marker in blocks[: index + 1]:
        if marker and marker.startswith("not-run:"):
            continue
        exec(compile(code, f"{path.name}:{lineno}", "exec"), namespace)  # noqa: S102
