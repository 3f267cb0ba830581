"""Running external programs, and failing with a message that says what to do.

A benchmark that dies on a Python traceback or on "No such file or directory" wastes the reader's
time: every failure a user can act on is raised as ``BenchError`` with the command, the tail of
its output and, where known, a hint. ``bench/<part>/run.py`` prints it and exits non-zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import IO, Mapping, Optional, Sequence, Union

# How much of a failed command's output to quote: enough for a compiler error or a FATAL line.
FAILURE_TAIL_LINES = 30

Stream = Union[int, IO[bytes], IO[str], None]


class BenchError(Exception):
    """A failure explained for the person running the benchmark."""


def require_file(path: Path, what: str, hint: str) -> Path:
    """``path`` if it exists, else a ``BenchError`` naming ``what`` and how to get it."""
    if not path.exists():
        raise BenchError(f"{what} not found at {path}. {hint}")
    return path


def require_program(name: str, what: str, hint: str) -> str:
    """The absolute path of program ``name`` on PATH, else a ``BenchError`` with ``hint``."""
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{what} ({name}) is not installed or not on PATH. {hint}")
    return found


def tail(text: str, lines: int = FAILURE_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``, indented for quoting in a message."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept)


def run(
    cmd: Sequence[str],
    *,
    cwd: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream = subprocess.PIPE,
    what: Optional[str] = None,
    timeout: Optional[float] = None,
) -> str:
    """Runs ``cmd`` and returns its standard output (when captured).

    Standard error is captured and quoted in the ``BenchError`` raised when the command exits
    non-zero, cannot be started, or exceeds ``timeout`` seconds.
    """
    label = what or " ".join(cmd)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        done = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        raise BenchError(f"{label}: cannot run {cmd[0]}: {err.strerror}") from err
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{label}: did not finish within {timeout:.0f} s") from err
    out = done.stdout.decode(errors="replace") if isinstance(done.stdout, bytes) else ""
    err_text = done.stderr.decode(errors="replace") if done.stderr else ""
    if done.returncode != 0:
        quoted = tail(err_text + out)
        raise BenchError(
            f"{label}: exit status {done.returncode}\n  command: {' '.join(cmd)}\n{quoted}"
        )
    return out
