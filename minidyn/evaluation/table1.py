"""The one writer of Table 1's text (Wang et al. 2019's layout: a row per method, a column per
attack): the Markdown table and the CSV that `minidyn compare` (minidyn.evaluation.compare) and a
study's report (minidyn.studies.report) print and save. Cells come formatted; this module only lays
them out.

    markdown(["Group", "Clean"], [["standard", "99.10"]])  # '| Group | Clean |\n|---|---|\n| standard | 99.10 |'
"""
from __future__ import annotations

import csv
import io
from typing import Iterable, Sequence


def markdown_lines(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: `head`, the separator, then one line per row of cells."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(row) + " |" for row in rows]


def markdown(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """markdown_lines joined by newlines (no newline at the end)."""
    return "\n".join(markdown_lines(head, rows))


def csv_text(rows: Sequence[dict], lineterminator: str = "\r\n") -> str:
    """rows (dicts with the keys of the first, in its order) as CSV text with a header line; None
    is written as an empty field; "" for no rows. lineterminator: the csv module's default
    "\\r\\n" (a study's results.csv) or "\\n" (`minidyn compare --csv`)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator=lineterminator)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()
