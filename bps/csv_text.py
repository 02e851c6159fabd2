"""How an uploaded CSV is written: its separator and decimal mark, and whether its first row
is a header at all (bps/dataset_files.py reads it with these)."""
from __future__ import annotations

import csv
import re

from bps.problems import Unprocessable

SEPARATORS = (",", ";", "\t", "|")
SNIFF_CHARS = 65536
HEADER_SAMPLE_ROWS = 100
DECIMAL_COMMA_CELL = re.compile(r"-?\d+,\d+")
DECIMAL_COMMA = re.compile(r"(^|;)\s*-?\d+,\d+\s*(;|$)")


def csv_options(text: str) -> dict[str, str]:
    """pandas' `sep` and `decimal` for a CSV's text: a comma unless the header row has none and
    `;`, tab or `|` splits it (spreadsheets in many locales write `;` with decimal commas)."""
    head = text[:text.find("\n") + 1 + SNIFF_CHARS]  # the whole header row, however wide, and some rows
    lines = [line for line in head.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    # A separator absent from the header splits nothing: not parsed, as a header wider than the csv
    # module's field limit (128 KiB) would be one oversized field under it.
    header_fields = {sep: len(next(csv.reader([first], delimiter=sep), [])) if sep in first else 1
                     for sep in SEPARATORS}
    sep = max(SEPARATORS, key=lambda s: (header_fields[s] > 1, s == ",", header_fields[s]))
    sep = sep if header_fields[sep] > 1 else ","
    decimal = "," if sep == ";" and any(DECIMAL_COMMA.search(line) for line in lines[1:100]) else "."
    return {"sep": sep, "decimal": decimal}


def csv_head(raw: bytes) -> str:
    """Enough of a CSV file's text for `csv_options`: its first line and SNIFF_CHARS more."""
    return raw[:raw.find(b"\n") + 1 + SNIFF_CHARS].decode("utf-8-sig", errors="ignore")


def _is_number(cell: str) -> bool:
    try:
        float(cell.replace(",", ".") if DECIMAL_COMMA_CELL.fullmatch(cell.strip()) else cell)
    except ValueError:
        return False
    return True


def refuse_headerless(header: list[str], rows: list[list[str]]) -> None:
    """A first row whose cells are numbers exactly where the data are (and not the column
    positions 0..n-1 or 1..n that pandas writes) is data, not a header."""
    numeric_header = [_is_number(cell) for cell in header]
    if not any(numeric_header) or [c.strip() for c in header] in (
            [str(i) for i in range(len(header))], [str(i + 1) for i in range(len(header))]):
        return
    for column, header_is_number in enumerate(numeric_header):
        cells = [row[column] for row in rows if row[column].strip()]
        if not cells or all(_is_number(cell) for cell in cells) != header_is_number:
            return
    raise Unprocessable(
        f"the first row ({', '.join(header[:5])}{', ...' if len(header) > 5 else ''}) looks like data, not a "
        "header: the file needs a header row naming its columns (e.g. x1,x2,...,label)", loc=["file", "line 1"])
