"""What `hubtune predict` is given to predict: inputs from arguments, files and stdin, read and checked in order."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from pipelines.data.splits import MAX_CELL_BYTES
from pipelines.errors import HubtuneError, require_path

logger = logging.getLogger(__name__)


def collect_inputs(input_kind: str, values: Sequence[str], files: Sequence[str], stdin: Iterable[str]) -> Iterator[str]:
    """The inputs of `hubtune predict`, in order.

    Text tasks: each value is a text, `-` reads one text per line from stdin, `--file F` one per line of F.
    Path tasks (images, audio): each value is a file or a folder (its files, sorted), `-` reads paths from stdin.
    """

    def lines(source: Iterable[str], name: str) -> Iterator[tuple[int, str]]:
        """(line number, line) of every line; a blank line between inputs is an error, since output line N must
        stay the prediction of input line N (blank lines at the end are harmless and left out)."""
        blank = None
        for number, line in enumerate(source, start=1):
            if not line.strip():
                blank = blank or number
                continue
            if blank is not None:
                raise HubtuneError(
                    f"{name}, line {blank}: blank, between inputs; predictions come one per input line, so a blank "
                    "line would shift every later one: remove it or put an input there"
                )
            yield number, line.rstrip("\n")

    def expand(value: str) -> Iterator[str]:
        if input_kind != "path":
            yield value
            return
        path = Path(value)
        require_path(path, None, "input")
        if path.is_dir():
            yield from (str(p) for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith("."))
        else:
            yield str(path)

    def text_lines(source: Iterable[str], name: str) -> Iterator[str]:
        number = 0
        try:
            for number, line in lines(source, name):
                if "\x00" in line:
                    raise HubtuneError(
                        f"{name}, line {number}: holds NUL bytes, so it is binary, not text; "
                        "--file and - read one input per line of text"
                    )
                try:
                    size = len(line.encode("utf-8"))
                except UnicodeEncodeError as error:
                    # Python reads stdin with errors="surrogateescape": bytes that are not UTF-8 arrive as
                    # lone surrogates instead of raising, and would be predicted as garbage text.
                    raise HubtuneError(
                        f"{name}, line {number}: not UTF-8 text; --file and - read one input per line of text"
                    ) from error
                if size > MAX_CELL_BYTES:  # as a data file's cell: tokenizing it whole would cost ~150x its size
                    raise HubtuneError(
                        f"{name}, line {number}: holds {size:,} bytes of text, more than the {MAX_CELL_BYTES:,} "
                        "(1 MiB) one input may hold"
                    )
                yield line
        except UnicodeDecodeError as error:
            raise HubtuneError(
                f"{name}, after line {number}: not UTF-8 text ({error.reason}); --file and - read "
                "one input per line of text"
            ) from error

    for file in files:
        require_path(file, "file", "input file", "--file")
    for value in values:
        for item in text_lines(stdin, "standard input") if value == "-" else [value]:
            yield from expand(item)
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for line in text_lines(handle, f"input file '{file}'"):
                yield from expand(line)


def _is_file(text: str) -> bool:
    try:
        return "\n" not in text and Path(text).is_file()
    except OSError:  # a long text is no valid path at all ("File name too long")
        return False


def check_texts(inputs: Sequence[str]) -> None:
    """Texts for a text run: a blank one is an error (a label for nothing would look confident); the path of a
    file is classified as the text it is, with a warning, since `--file` was likely meant."""
    for number, text in enumerate(inputs, start=1):
        if not text.strip():
            raise HubtuneError(f"input {number} is empty or blank: there is nothing to predict")
        if _is_file(text):
            logger.warning(
                "input %d ('%s') is the path of a file, and is predicted as that text; to read one text "
                "per line from a file, pass --file %s",
                number,
                text,
                text,
            )
