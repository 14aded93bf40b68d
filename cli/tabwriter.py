"""Column alignment exactly as Go's `text/tabwriter`, which kubectl uses.

kubectl writes rows as tab-separated cells and lets tabwriter align them:
`get` uses minwidth 6 and padding 3, `describe` minwidth 0 and padding 2.
Emulating the algorithm (rather than "pad every column to its widest
cell") reproduces kubectl's layout, including describe's behaviour where a
line without tabs ends a column block, so the alignment of `Name:` lines
above `Containers:` differs from the one below it.

Design notes: a cell terminated by a tab belongs to a column; the last cell
of a line does not, and is printed as is. Consecutive lines that have a cell
in column k form a block; the block's width is the widest cell + padding
(at least minwidth). Blocks are formatted recursively, column by column, as
in Go's `Writer.format`. `remember` keeps widths across calls (Go's
RememberWidths flag), which `get -w` uses so rows printed later line up
with the header printed first.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TabWriter:
    minwidth: int = 6
    padding: int = 3
    remembered: list[int] = field(default_factory=list)

    def format(self, lines: list[str], *, remember: bool = False) -> str:
        """Align `lines` (cells separated by tabs, no trailing newline) and
        return the text, one line per input line, each ending with a newline."""
        rows = [line.split("\t") for line in lines]
        out: list[str] = []
        widths: list[int] = []
        self._format(rows, 0, len(rows), widths, out, remember)
        return "".join(out)

    def _format(self, rows: list[list[str]], line0: int, line1: int, widths: list[int], out: list[str],
                remember: bool) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(rows[this]) - 1:
                this += 1
                continue
            self._write_lines(rows, line0, this, widths, out)
            line0 = this
            width = self.minwidth
            while this < line1 and column < len(rows[this]) - 1:
                width = max(width, len(rows[this][column]) + self.padding)
                this += 1
            if remember:
                if column < len(self.remembered):
                    width = max(width, self.remembered[column])
                    self.remembered[column] = width
                else:
                    self.remembered.append(width)
            widths.append(width)
            self._format(rows, line0, this, widths, out, remember)
            widths.pop()
            line0 = this
        self._write_lines(rows, line0, line1, widths, out)

    @staticmethod
    def _write_lines(rows: list[list[str]], line0: int, line1: int, widths: list[int], out: list[str]) -> None:
        for row in rows[line0:line1]:
            parts = []
            for j, cell in enumerate(row):
                if j < len(widths) and j < len(row) - 1:
                    parts.append(cell.ljust(widths[j]))
                else:
                    parts.append(cell)
            out.append("".join(parts) + "\n")


def get_table(lines: list[str]) -> str:
    """kubectl get's writer: minwidth 6, padding 3."""
    return TabWriter(6, 3).format(lines)


def describe_text(lines: list[str]) -> str:
    """kubectl describe's writer: minwidth 0, padding 2."""
    return TabWriter(0, 2).format(lines)
