"""One table, rendered as aligned text for the terminal or as Markdown for a report."""

from __future__ import annotations

from typing import List, Mapping, Sequence


class Table:
    """Rows of strings under headers. The first ``text_columns`` columns are left-aligned
    (labels), the others right-aligned (figures)."""

    def __init__(self, headers: Sequence[str], text_columns: int = 1) -> None:
        self.headers = list(headers)
        self.text_columns = text_columns
        self.rows: List[List[str]] = []

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"row has {len(cells)} cells, table has {len(self.headers)} columns")
        self.rows.append([str(cell) for cell in cells])

    def text(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                cell.ljust(width) if i < self.text_columns else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(cells, widths))
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(self.headers), rule] + [line(row) for row in self.rows])

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        align = ["---" if i < self.text_columns else "---:" for i in range(len(self.headers))]
        return "\n".join([line(self.headers), line(align)] + [line(row) for row in self.rows])


def minutes(seconds: float) -> str:
    """A duration as "M min SS s"."""
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def durations_table(durations: Mapping[str, float]) -> Table:
    """How long each step of a part took."""
    table = Table(["step", "duration"])
    for step, seconds in durations.items():
        table.add(step, minutes(seconds))
    return table
