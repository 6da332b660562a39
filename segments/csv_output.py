"""CSV that Patron writes (a rejects file, an export): every cell safe to open in a spreadsheet.

A cell that begins with ``=``, ``+``, ``-`` or ``@``, a tab or a carriage
return is read as a formula by Excel, LibreOffice and Google Sheets, so a
value such as ``=HYPERLINK("https://evil.example", "click")`` taken from an
imported file would run on the reader's machine. OWASP's CSV-injection rule
(https://owasp.org/www-community/attacks/CSV_Injection) is followed: such a
cell is written with a ``'`` in front, which spreadsheets take as "text" and
do not show. A cell that is a plain number (``-5``, ``+3.25``) is a number to
every spreadsheet, runs nothing, and is written as it is, so that negative
amounts survive a round trip through the rejects file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def safe_cell(value: Any) -> Any:
    """``value`` with a ``'`` in front if a spreadsheet would take it for a formula; other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose every cell goes through :func:`safe_cell`."""

    def __init__(self, file: TextIO, **options):
        self._writer = csv.writer(file, **options)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([safe_cell(value) for value in row])
