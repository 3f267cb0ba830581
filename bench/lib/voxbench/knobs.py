"""Environment variables that tune a benchmark part, validated with messages naming them."""

from __future__ import annotations

import os
from typing import Dict, Optional

from .commands import BenchError


class Knobs:
    """Reads BENCH_* variables and remembers which values were used, for the report."""

    def __init__(self) -> None:
        self.used: Dict[str, str] = {}

    def integer(self, name: str, default: int, minimum: int, meaning: str) -> int:
        raw = os.environ.get(name)
        if raw is None or raw.strip() == "":
            value = default
        else:
            try:
                value = int(raw)
            except ValueError as err:
                raise BenchError(f"{name}={raw!r}: expected an integer ({meaning})") from err
            if value < minimum:
                raise BenchError(f"{name}={value}: must be at least {minimum} ({meaning})")
        self.used[name] = str(value)
        return value

    def text(self, name: str, default: Optional[str]) -> Optional[str]:
        raw = os.environ.get(name)
        value = raw if raw not in (None, "") else default
        if value is not None:
            self.used[name] = value
        return value

    def flag(self, name: str) -> bool:
        raw = os.environ.get(name, "")
        value = raw.strip().lower() in ("1", "true", "yes", "on")
        self.used[name] = "1" if value else "0"
        return value
