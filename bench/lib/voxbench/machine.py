"""The facts a benchmark report carries, so that figures can be compared across runs."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

# Load average per CPU above which timing figures are expected to be disturbed: half the CPUs
# already busy leaves pgbench's two clients and two backends fighting for the rest.
BUSY_LOAD_PER_CPU = 0.5


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def busy_warning() -> str:
    """A warning when other work already keeps the CPUs busy (timings will be noisy), or ""."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    cpus = usable_cpus()
    if cpus and load > BUSY_LOAD_PER_CPU * cpus:
        return (f"the machine is busy before the benchmark starts (1-minute load average "
                f"{load:.2f} on {cpus} CPUs): TPS figures will be noisy; instruction counts "
                "are not affected")
    return ""


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 0


def git(repo: Path, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def voxperf_commit(repo: Path) -> str:
    """The commit the extension was built from, flagged when pg_ext/ has uncommitted changes."""
    commit = git(repo, "rev-parse", "--short=12", "HEAD")
    if commit is None:
        return "no commit yet (work tree measured)"
    dirty = git(repo, "status", "--porcelain", "--", "pg_ext")
    return f"{commit} + uncommitted changes in pg_ext/" if dirty else commit


def program_version(argv) -> str:
    try:
        done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)
    except FileNotFoundError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def facts(repo: Path, postgres: str) -> Dict[str, str]:
    """Machine and software facts, in report order."""
    return {
        "date": utc_now(),
        "CPUs (nproc)": str(usable_cpus()),
        "CPU model": cpu_model(),
        "memory": memory_total(),
        "kernel": platform.release(),
        "load average at start (1/5/15 min)": load_average(),
        "PostgreSQL": program_version([postgres, "--version"]),
        "voxperf commit": voxperf_commit(repo),
    }
