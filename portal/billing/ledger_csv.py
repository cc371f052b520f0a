"""The ledger as CSV — one header and one row function for the web export
(``/teams/<team>/ledger.csv``) and ``slipway team ledger --csv`` (local and remote).

Spreadsheets run a cell that starts with ``=``, ``+``, ``-``, ``@`` (and TAB or CR, which some
strip before looking) as a formula: a ledger note ``=HYPERLINK("http://evil/","refund")`` would
become a live link in the accountant's sheet. Every text cell starting so is prefixed with ``'``
(OWASP's advice; the spreadsheet shows the text as typed). Numeric columns stay numbers — a
charge's amount ``-0.025000`` is a number, not a formula — but only while they are plain numbers:
anything else in them is neutralised like text.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

LEDGER_CSV_HEADER = ("id", "created_at", "kind", "amount", "job", "attempt", "from_minute", "to_minute",
                     "gpu_type", "gpu_count", "rate", "resource", "bytes", "created_by", "note", "key")
NUMERIC_COLUMNS = frozenset({"id", "amount", "job", "attempt", "from_minute", "to_minute", "gpu_count",
                             "rate", "bytes"})
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?\Z")


def safe_text(value) -> str:
    """A text cell a spreadsheet shows as text: ``'`` before a formula-starting character."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def safe_number(value) -> str:
    """A numeric cell: a plain number as it is (negative amounts included), else as text."""
    if value is None:
        return ""
    text = str(value)
    return text if _PLAIN_NUMBER.match(text) else safe_text(text)


def ledger_csv_row(entry: Mapping) -> list[str]:
    """One CSV row from an entry dict (``serialize.entry_dict``'s keys), in header order."""
    return [safe_number(entry.get(col)) if col in NUMERIC_COLUMNS else safe_text(entry.get(col))
            for col in LEDGER_CSV_HEADER]
