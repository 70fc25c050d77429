"""Where a JSON Lines (or JSON) data file stops parsing, as an editor shows it: 1-based line and column.

datasets reads these files with pyarrow, whose errors count rows from 0 inside a block of the file ("in row 1" for
the third line) or name no place at all ("The document is empty" for a stray comma after an object). A file that
failed is read again here, line by line, to name the line.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false"}


def is_blank(path: Path) -> bool:
    """Whether the file holds nothing but white space (and a byte-order mark)."""
    return not path.read_bytes().removeprefix(codecs.BOM_UTF8).strip()


def _document_fault(text: str) -> str | None:
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return f"line {error.lineno}, column {error.colno}: {error.msg}"
    return None


def _first_line_parses(lines: list[str]) -> bool:
    first = next((line for line in lines if line.strip()), "")
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def json_fault(path: Path) -> str | None:
    """The first place where `path` is not a JSON Lines file (one JSON object per line; blank lines are skipped)
    as "line N, column C: reason"; for a `.json` file that is one document (an array of rows, or an object spread
    over lines), the place where that document breaks. None where no such place is found."""
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        number = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        return f"line {number}, column {column}: not UTF-8 text (byte 0x{raw[error.start]:02x})"
    lines = text.split("\n")
    one_document = text.lstrip().startswith("[") or not _first_line_parses(lines)
    if path.suffix.lower() == ".json" and one_document:
        return _document_fault(text)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return (
                f"line {number}, column {error.colno}: {error.msg} (each line of a JSON Lines file holds one JSON "
                "object)"
            )
        if value is not None and not isinstance(value, dict):
            return (
                f"line {number}: holds {JSON_KINDS.get(type(value), 'a value')}, not an object; each line of a "
                'JSON Lines file is one row, {"column": value, ...}'
            )
    return None
