"""CoNLL-style files: one token per line with its tag in a chosen column, a blank line between sentences."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from pipelines.errors import HubtuneError, require_path

DOCSTART = "-DOCSTART-"


def read_conll(path: Path, tokens_column: str, tags_column: str, token_index: int = 0, tag_index: int = -1) -> Dataset:
    """Sentences of `path` as a Dataset with a words column and a tags column (named by the recipe).

    Columns are whitespace-separated; `-DOCSTART-` lines are document markers, not sentences. A line
    without the token or tag column is an error naming the file and line.
    """
    require_path(path, "file", "data file")
    sentences: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    needed = max(token_index, tag_index, -token_index - 1, -tag_index - 1) + 1
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise HubtuneError(f"data file '{path}' is not UTF-8 text: {error}") from error
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] == DOCSTART:
            if words:
                sentences.append(words)
                tags.append(labels)
                words, labels = [], []
            continue
        if len(fields) < max(needed, 2):
            raise HubtuneError(
                f"data file '{path}', line {number}: expected a token and a tag (columns "
                f"{token_index} and {tag_index}, 'data.conll_token_column'/'data.conll_tag_column'), got {line!r}"
            )
        words.append(fields[token_index])
        labels.append(fields[tag_index])
    if words:
        sentences.append(words)
        tags.append(labels)
    if not sentences:
        raise HubtuneError(f"data file '{path}' is empty: it has no sentences")
    return Dataset.from_dict({tokens_column: sentences, tags_column: tags})
