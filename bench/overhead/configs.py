"""The rows of the overhead comparison: what is preloaded, and whether it can be measured.

Every row runs on the same data and the same postgresql.conf; a row is nothing but its two
command-line settings, ``shared_preload_libraries`` and ``compute_query_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    # The value of shared_preload_libraries: a library name, or the path of a private copy.
    preload: str
    # The preloaded library's file name without ".so", if any.
    library: Optional[str] = None
    compute_query_id: str = "auto"

    def preloading(self, path: str) -> "Config":
        """This row with its library preloaded from ``path`` instead of by name."""
        return replace(self, preload=path)

    def settings(self) -> Dict[str, str]:
        return {"shared_preload_libraries": self.preload, "compute_query_id": self.compute_query_id}

    def describe(self) -> str:
        return (f"shared_preload_libraries = '{self.preload}', "
                f"compute_query_id = {self.compute_query_id}")


# The baseline: nothing loaded, and with compute_query_id = auto the core computes no query id.
NONE = Config("none", "no library", "")
# The core's query jumbling alone: every library that needs a query id pays at least this.
JUMBLING = Config("jumbling", "compute_query_id = on", "", compute_query_id="on")
# The anchor to beat: contrib's pg_stat_statements with its defaults (it turns query ids on).
PGSS = Config("pgss", "pg_stat_statements", "pg_stat_statements", "pg_stat_statements")
# voxperf with its defaults (timing, histograms, slow-query check, predicate sampling).
# (run.py preloads it from a private copy of the installed voxperf.so, see extension.py).
VOXPERF = Config("voxperf", "voxperf", "voxperf", "voxperf")


@dataclass
class Availability:
    """Whether a row can be measured in this run; ``note`` says why not, or which build."""

    available: bool
    note: str
