"""Markdown tables of the docs, read by the tests that check a page's figures against the
analysis of its records (tests/analysis/test_h200_seed_campaign.py, test_predictors_doc.py,
test_celltable.py)."""

from __future__ import annotations

from pathlib import Path


def block(text: str, heading: str = "") -> list[str]:
    """The lines of the first pipe table after ``heading`` in ``text`` (header and rule
    included), as written."""
    after = text[text.index(heading):].splitlines()
    start = next(i for i, ln in enumerate(after) if ln.startswith("|"))
    lines = []
    for ln in after[start:]:
        if not ln.startswith("|"):
            break  # the table's end
        lines.append(ln)
    return lines


def rows(lines: list[str]) -> list[dict[str, str]]:
    """A table's rows (``block``'s lines): a dict per row, keyed by the header's cells, each
    value stripped."""
    head = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    return [dict(zip(head, [c.strip() for c in ln.strip().strip("|").split("|")], strict=True))
            for ln in lines[2:]]  # fmt: skip


def table(doc: Path, heading: str) -> list[dict[str, str]]:
    """The rows of the first pipe table after ``heading`` in the file ``doc``."""
    return rows(block(doc.read_text(), heading))


def num(cell: str) -> float | None:
    """A printed figure ('**201.6**', '1,166.7', '15%', '+1.5') or None ('–', 'n/a¹')."""
    s = cell.strip().strip("*").replace(",", "").replace("+", "").rstrip("%")
    try:
        return float(s)
    except ValueError:
        return None
