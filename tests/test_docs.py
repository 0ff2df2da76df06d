"""The Python blocks of README.md and docs/*.md run, so the docs cannot rot.

Every fenced ```python block of a file runs, in order, in one namespace per file
(a later block may use what an earlier one defined). Markers, on the line(s)
just above a block:

* ``<!-- slow -->``: the block is heavy; it runs in the slow set
  (``pytest.mark.slow``) with everything after it in that file;
* ``<!-- not-run: reason -->``: the block cannot run in the suite (it needs a
  GPU, a download, a trained network, ...); the reason is shown in the skip.

One test per block, so the first broken block is the failing test. The blocks
of a file run once each: test ``i`` continues the namespace that test ``i - 1``
left (pytest runs a file's cases in order). A test run on its own, after a
skipped or failed block, or after a deselected one, first replays blocks
``0..i-1`` in a fresh namespace, so each test still stands alone. (Replaying
every earlier block in every test made the doc tests quadratic in the number of
blocks: README's first block ran seven times.)
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


def _runnable(marker: str | None) -> bool:
    return not (marker and marker.startswith("not-run:"))


def _cases():
    for path in FILES:
        blocks = _blocks(path)
        for i, (lineno, _, marker) in enumerate(blocks):
            marks = []
            if marker == "slow" or any(m == "slow" for _, _, m in blocks[:i]):
                marks.append(pytest.mark.slow)
            if not _runnable(marker):
                reason = marker[len("not-run:") :].strip()
                marks.append(pytest.mark.skip(reason=f"not runnable: {reason}"))
            rel = path.relative_to(ROOT)
            yield pytest.param(path, i, marks=marks, id=f"{rel}:{lineno}")


# path -> (namespace, index of the last block run into it, working directory)
_progress: dict[Path, tuple[dict, int, Path]] = {}


def _run_block(path: Path, lineno: int, code: str, namespace: dict) -> None:
    exec(compile(code, f"{path.name}:{lineno}", "exec"), namespace)  # noqa: S102


@pytest.mark.parametrize("path, index", list(_cases()))
def test_docs_block_runs(path, index, tmp_path_factory, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
    blocks = _blocks(path)
    # Blocks skipped as not runnable between the last one run and this one do
    # not break the chain: they would not have run in a replay either.
    namespace, done, workdir = _progress.pop(path, (None, -1, None))
    skipped_since = all(not _runnable(m) for _, _, m in blocks[done + 1 : index])
    if namespace is None or not skipped_since:
        namespace, done = {"__name__": "__docs__"}, -1
        # One working directory per file: a block may read what an earlier one wrote.
        workdir = tmp_path_factory.mktemp(path.stem)
    monkeypatch.chdir(workdir)
    for lineno, code, marker in blocks[done + 1 : index + 1]:
        if _runnable(marker):
            _run_block(path, lineno, code, namespace)
    # Only reached when every block up to ``index`` ran: a failure leaves no
    # progress behind, so the next test replays from a fresh namespace.
    _progress[path] = (namespace, index, workdir)
