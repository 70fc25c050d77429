"""Transcript normalisation and the CTC character vocabulary built from the training transcripts."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import Wav2Vec2CTCTokenizer

from pipelines.config import option, require_one_of
from pipelines.data.audio import LENGTH_BATCH, AudioInputConfig
from pipelines.data.splits import AnySplit
from pipelines.errors import HubtuneError

PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"
TRANSCRIPT_CASES = ("lower", "upper", "keep")


@dataclass
class TranscriptDataConfig(AudioInputConfig):
    """Speech recognition data: audio with its transcript."""

    text_column: str = option("text", "the column of transcripts")
    transcript_case: str = option("lower", "transcripts are normalised: lower, upper or keep")
    transcript_remove_chars: str = option(',.?!;:"', "characters deleted from transcripts before training and scoring")

    def validate(self) -> None:
        super().validate()
        require_one_of("data.transcript_case", self.transcript_case, TRANSCRIPT_CASES)


def normalise(text: str, config: TranscriptDataConfig) -> str:
    if config.transcript_case == "lower":
        text = text.lower()
    elif config.transcript_case == "upper":
        text = text.upper()
    text = text.translate({ord(c): None for c in config.transcript_remove_chars})
    return " ".join(text.split())


def transcripts(
    dataset: Dataset | dict[str, list], config: TranscriptDataConfig, locate: Callable[[int], str]
) -> list[str]:
    """The normalised transcripts of `text_column` (of a split, or of a batch of a stream's rows); a missing or empty
    one is an error naming the row."""
    texts = []
    for row, value in enumerate(dataset[config.text_column]):
        text = normalise(value, config) if isinstance(value, str) else ""
        if not text:
            raise HubtuneError(
                f"{locate(row)}: column '{config.text_column}' holds {value!r}, "
                "not a transcript (empty after normalisation)"
            )
        texts.append(text)
    return texts


def split_transcripts(split: AnySplit, config: TranscriptDataConfig, locate: Callable[[int], str]) -> Iterator[str]:
    """`transcripts` of a whole split; a stream (`data.streaming`) is read through once, its transcript column only:
    no audio is decoded and no audio file opened."""
    if isinstance(split, Dataset):
        yield from transcripts(split, config, locate)
        return
    read = 0
    for batch in split.select_columns([config.text_column]).iter(batch_size=LENGTH_BATCH):
        texts = transcripts(batch, config, lambda row: locate(read + row))  # noqa: B023  # called before `read` moves
        yield from texts
        read += len(texts)


def build_ctc_tokenizer(texts: Iterable[str]) -> Wav2Vec2CTCTokenizer:
    """A character tokenizer: `<pad>` (id 0, the CTC blank), `<unk>`, `|` for spaces, then every character seen."""
    characters = sorted({c for text in texts for c in text} - {" "})
    vocab = {token: i for i, token in enumerate([PAD, UNK, WORD_DELIMITER, *characters])}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False))
        # No <s>/</s>: the tokenizer would add them outside the vocabulary (docs/platform-notes.md).
        return Wav2Vec2CTCTokenizer(
            str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None
        )
