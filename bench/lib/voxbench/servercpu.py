"""CPU time a running PostgreSQL server has used, read from /proc (Linux).

Why: on a shared machine, throughput (TPS) moves by tens of percent when a neighbour compiles,
while the CPU time the server spends per transaction moves much less: it counts only the
server's own work. Summed over the postmaster and its children (backends, background
processes), plus what the postmaster has collected from children that already exited
(cutime/cstime, which the kernel adds when the postmaster reaps them), so backends that come
and go with pgbench's connections are all counted.

Accuracy: clock ticks (10 ms at USER_HZ = 100), i.e. well under 1 % of a 10-second,
2-client run. Two races are closed: a backend keeps using CPU after its client left (tearing
down its mapping of shared memory takes a while), so ``wait_for_no_clients`` waits until every
client backend is gone, not merely idle; and a child reaped between reading the postmaster and
reading its children would be counted nowhere, so ``cpu_seconds`` rereads until the
postmaster's collected time did not move during the snapshot.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional

from .commands import BenchError

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# Field numbers (1-based) in /proc/<pid>/stat, from proc(5).
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 4, 14, 15, 16, 17
# Rereads of a snapshot during which a child was reaped; one is almost always enough.
SNAPSHOT_ATTEMPTS = 50
# How long client backends may take to exit after their client did.
CLIENT_EXIT_TIMEOUT_SECONDS = 10.0


def _stat(pid: int) -> Optional[List[str]]:
    """The fields of /proc/<pid>/stat, numbered as in proc(5) (index 0 unused), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    close = text.rindex(")")
    return ["", text[:close].split(" (", 1)[0], ""] + text[close + 2:].split()


def _children(pid: int) -> List[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[_PPID]) == pid:
                found.append(int(entry))
    return found


def _ticks(fields: List[str]) -> int:
    return sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))


def cpu_seconds(postmaster: int) -> float:
    """CPU seconds (user + system) used so far by the server whose postmaster is ``postmaster``."""
    for _ in range(SNAPSHOT_ATTEMPTS):
        before = _stat(postmaster)
        if before is None:
            raise BenchError(f"no process {postmaster}: the server is not running")
        children = 0
        for child in _children(postmaster):
            fields = _stat(child)
            if fields is not None:
                children += _ticks(fields)
        after = _stat(postmaster)
        if after is not None and after[_CUTIME:_CSTIME + 1] == before[_CUTIME:_CSTIME + 1]:
            return (_ticks(after) + children) / CLOCK_TICKS_PER_SECOND
    raise BenchError(f"could not take a stable CPU snapshot of server {postmaster}")


def client_backends(postmaster: int, marker: str) -> int:
    """How many children serve a client or are exiting.

    A client backend's process title names its client's address (``marker``); an exiting
    process has already released its memory, so its command line reads empty.
    """
    count = 0
    for child in _children(postmaster):
        try:
            title = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # reaped meanwhile
        if marker in title or not title.strip("\0"):
            count += 1
    return count


def wait_for_no_clients(postmaster: int, marker: str) -> None:
    """Waits until every client backend has exited and been reaped."""
    deadline = time.monotonic() + CLIENT_EXIT_TIMEOUT_SECONDS
    while client_backends(postmaster, marker) > 0:
        if time.monotonic() > deadline:
            raise BenchError("client backends still running "
                             f"{CLIENT_EXIT_TIMEOUT_SECONDS:.0f} s after pgbench ended")
        time.sleep(0.02)
