"""The end every part shares: its work directory removed (or kept), its report written."""

from __future__ import annotations

import shutil
from pathlib import Path


def dispose(workdir: Path, keep: bool) -> None:
    """Delete a part's work directory, or say where it is kept (``BENCH_KEEP=1``). As root
    everything in it is ours to delete; as a user, the clusters in it ran as that user."""
    if keep:
        print(f"kept the work directory {workdir} (BENCH_KEEP=1)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def publish(text: str, markdown: str, results: Path, repo: Path) -> None:
    """Print a part's summary and write its report to ``results``."""
    print(text)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(markdown, encoding="utf-8")
    print(f"\nreport written to {results.relative_to(repo)}")
