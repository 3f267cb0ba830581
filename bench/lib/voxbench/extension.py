"""Building and installing the voxperf extension before it is measured.

A benchmark must measure the code in the work tree, not whatever an earlier build left in the
PostgreSQL library directory. So the extension is installed first: through ``scripts/ext.sh
install release`` when the project has that script, else with ``cargo pgrx install --release``.
When that fails (or cargo-pgrx is missing), voxperf is reported as "not installed" with the
reason, and the other rows are still measured; nothing is ever measured from a stale build
unless the user asked for it with BENCH_SKIP_INSTALL=1.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .cluster import PgInstall
from .commands import tail

LIBRARY = "voxperf"
# How many lines of a failed build's errors to print: the first errors are the ones to read.
ERROR_LINES = 24


@dataclass
class LibraryStatus:
    """Whether a preloadable library can be measured, and what to say about it in a report."""

    available: bool
    note: str
    path: Optional[Path] = None

    @classmethod
    def of_file(cls, path: Path, how: str) -> "LibraryStatus":
        if not path.exists():
            return cls(False, f"not installed ({path} does not exist)")
        return cls(True, f"{how}; {describe_file(path)}", path)


def private_copy(status: LibraryStatus, directory: Path) -> LibraryStatus:
    """Copies the installed library into ``directory``, to be preloaded by path.

    Other sessions on the machine reinstall the extension (``make test`` installs a debug build):
    overwriting a library that a running server has mapped crashes it, and a run that measured
    two builds would mean nothing. A copy taken once, at the start, is the build measured.
    """
    if status.path is None:
        return status
    directory.mkdir(mode=0o755, exist_ok=True)
    copy = directory / status.path.name
    shutil.copy2(status.path, copy)
    copy.chmod(0o644)
    return LibraryStatus(True, f"{status.note}; measured from a private copy taken at the start "
                               "(preloaded by its path)", copy)


def describe_file(path: Path) -> str:
    """``path`` identified by its modification time and a short SHA-256."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(path.stat().st_mtime))
    return f"{path.name} built {stamp}, sha256 {digest}"


def install_voxperf(repo: Path, install: PgInstall, log: Path, skip: bool) -> LibraryStatus:
    """Installs voxperf from the work tree (unless ``skip``) and says whether it can be measured.

    The build's output goes to ``log``; on failure its error lines are printed.
    """
    target = install.library(LIBRARY)
    if skip:
        return LibraryStatus.of_file(target, "install skipped (BENCH_SKIP_INSTALL=1): measured the "
                                             "library already installed")
    try:
        cmd, cwd, env = install_command(repo, install)
    except CannotInstall as reason:
        print(f"cannot install voxperf: {reason}", flush=True)
        return LibraryStatus(False, f"not installed: {reason}")
    shown = " ".join(shorten(arg, repo) for arg in cmd)
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing voxperf: {shown} (log: {log})", flush=True)
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        status = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, check=False).returncode
    took = time.monotonic() - started
    if status != 0:
        print(f"voxperf install FAILED (exit {status}) after {took:.0f} s: `{shown}`; "
              f"its errors (full log: {log}):")
        print(error_lines(log.read_text(errors="replace")))
        return LibraryStatus(False, f"not installed: `{shown}` failed (exit {status}), so the "
                                    "voxperf row is not measured")
    print(f"voxperf installed in {took:.0f} s", flush=True)
    return LibraryStatus.of_file(target, f"installed by `{shown}`")


def shorten(arg: str, repo: Path) -> str:
    """``arg`` with the work tree's path made relative, for messages and reports."""
    prefix = str(repo) + os.sep
    return arg[len(prefix):] if arg.startswith(prefix) else arg


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_lines(log_text: str) -> str:
    """The lines of a build log that state errors (compiler, cargo-pgrx), else its tail.

    cargo-pgrx follows its error with a long backtrace: the first lines say what went wrong.
    """
    lines = [_ANSI.sub("", line) for line in log_text.splitlines()]
    picked: List[int] = []
    for i, line in enumerate(lines):
        if re.match(r"\s*error\b", line, re.IGNORECASE):
            picked += [j for j in range(i, min(i + 3, len(lines))) if j not in picked]
        if len(picked) >= ERROR_LINES:
            break
    return tail("\n".join(lines[j] for j in picked[:ERROR_LINES]) or "\n".join(lines))


class CannotInstall(Exception):
    """Nothing on this machine can build the extension; the message says what is missing."""


Command = Tuple[List[str], Path, Optional[Dict[str, str]]]


def install_command(repo: Path, install: PgInstall) -> Command:
    """(argv, cwd, env) of the command that builds and installs voxperf."""
    script = repo / "scripts" / "ext.sh"
    if script.exists():
        return ["bash", str(script), "install", "release"], repo, None
    if shutil.which("cargo") is None:
        raise CannotInstall("cargo is not on PATH (install Rust, then run `make test` or "
                            "`make run`)")
    probe = subprocess.run(["cargo", "pgrx", "--version"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if probe.returncode != 0:
        raise CannotInstall("cargo-pgrx is not installed (`make run`/`make test` install it, or "
                            "`cargo install cargo-pgrx --version 0.18.0 --locked`)")
    cmd: List[str] = ["cargo", "pgrx", "install", "--release", "--pg-config", install.pg_config]
    if not os.access(install.pkglibdir, os.W_OK):
        cmd.append("--sudo")
    # Lets cargo-pgrx find pg_config without a `cargo pgrx init` (notes/pgrx-technical.md §5.5).
    env = dict(os.environ, PGRX_PG_CONFIG_PATH=install.pg_config)
    return cmd, repo / "pg_ext", env
