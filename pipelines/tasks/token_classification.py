"""Token classification (named-entity recognition) on any transformers encoder with a fast tokenizer.

Data are sentences as a list of words with one tag per word: a Hub dataset (`tokens` + `ner_tags`, tag
names read from the ClassLabel feature), JSON lines, or CoNLL files. Tags are aligned to sub-tokens with
the fast tokenizer's `word_ids()`, and scored per entity with seqeval (`pipelines/metrics/ner`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, IterableDataset
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, EvalPrediction

from pipelines.config import RecipeConfig, closest, option
from pipelines.data.conll import read_conll
from pipelines.data.padding_free import TokenFlattening, check_packing
from pipelines.data.splits import Splits, columns_of, first_row, load_table_file, map_cached, require_columns, streamed
from pipelines.data.streams import StreamingDataConfig
from pipelines.errors import HubtuneError
from pipelines.models.loading import fit_embeddings, load_text_tokenizer
from pipelines.tasks.base import PreparedData, Task, TaskModel, logits_of
from pipelines.tasks.classifier import LabelHeadMixin, class_weights, weighted_cross_entropy
from pipelines.tasks.collate import IGNORE, PAD_TO_MULTIPLE
from pipelines.tasks.labels import missing_classes
from pipelines.tasks.token_classification_serving import TokenClassificationServing, window_length

logger = logging.getLogger(__name__)

CONLL_SUFFIXES = (".conll", ".txt", ".iob", ".bio")
# Words of each sentence cut off by max_length, counted while tokenising; summed for the warning, then dropped.
CUT_WORDS = "cut_words"


# seqeval's strict-mode schemes (seqeval.scheme), for `data.tag_scheme`.
TAG_SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")


@dataclass
class TokensDataConfig(StreamingDataConfig):
    tokens_column: str = option("tokens", "the column holding a list of words per sentence")
    tags_column: str = option("ner_tags", "the column holding a list of tags (names or ClassLabel ids) per sentence")
    labels: list[str] | None = option(None, "tag names in id order; read from the data when absent")
    conll_token_column: int = option(
        0, "CoNLL files: the word's column (whitespace-separated, 0-based; -1 is the last)"
    )
    conll_tag_column: int = option(-1, "CoNLL files: the tag's column")
    label_all_tokens: bool = option(
        False, "tag continuation word pieces too (B-X becomes I-X on them) instead of training on first pieces only"
    )
    tag_scheme: str | None = option(
        None,
        "null: conlleval's lenient chunking (IOB1, IOB2 and IOBES alike); a scheme name: seqeval's strict mode with it",
    )
    max_length: int = option(128, "word pieces per sentence; longer sentences are cut, with a warning")
    pad_to_max_length: bool = option(False, "pad every sentence to max_length instead of per batch")
    padding_free: bool = option(
        False,
        "train on each batch's sentences packed into one row (no padding), kept apart by position ids; needs an "
        "attention that honours them: flash_attention_2 for BERT-like encoders (model.attn_implementation)",
    )

    def validate(self) -> None:
        super().validate()
        if self.padding_free and self.pad_to_max_length:
            raise HubtuneError("'data.padding_free' and 'data.pad_to_max_length' contradict each other; keep one")
        if self.tag_scheme is not None and self.tag_scheme not in TAG_SCHEMES:
            raise HubtuneError(
                f"unknown tag scheme '{self.tag_scheme}' in 'data.tag_scheme'"
                f"{closest(self.tag_scheme, TAG_SCHEMES, noun='schemes')}"
            )
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise HubtuneError(f"recipe key 'data.labels' repeats a tag: {self.labels}")
        if self.max_length < 1:
            raise HubtuneError(f"recipe key 'data.max_length' must be at least 1, got {self.max_length}")

    def packs_sequences(self) -> bool:
        return self.padding_free

    def check_recipe(self, recipe: RecipeConfig) -> None:
        super().check_recipe(recipe)
        if self.padding_free and recipe.adapt.feature_cache:
            raise HubtuneError(
                "'data.padding_free' packs token sequences, but 'adapt.feature_cache' trains on cached features; "
                "keep one"
            )


def require_fast_tokenizer(tokenizer: Any, checkpoint: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise HubtuneError(
            f"checkpoint '{checkpoint}' has only a slow tokenizer ({type(tokenizer).__name__}); token classification "
            "aligns tags to sub-tokens with word_ids(), which needs a fast (tokenizers-backed) tokenizer"
        )


def continuation_ids(label_names: Sequence[str]) -> list[int]:
    """For each tag id, the tag its word's continuation sub-tokens get: B-X -> I-X when I-X exists, else itself."""
    index = {name: i for i, name in enumerate(label_names)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(label_names)]


def align_labels(
    word_ids: Sequence[int | None], word_labels: Sequence[int], continuation: Sequence[int] | None = None
) -> list[int]:
    """Sub-token labels from word labels: the first piece of a word gets the word's tag, special tokens -100,
    continuation pieces -100, or with `continuation` (label_all_tokens) the word's continuation tag."""
    labels = []
    previous = None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(continuation[word_labels[word]] if continuation is not None else IGNORE)
        previous = word
    return labels


def resolve_tag_names(config: TokensDataConfig, splits: Splits) -> list[str]:
    """Tag names in id order: the recipe's list, else the dataset's ClassLabel names, else read from train."""
    if config.labels:
        return list(config.labels)
    inner = getattr((splits["train"].features or {}).get(config.tags_column), "feature", None)
    if isinstance(inner, ClassLabel):
        return list(inner.names)
    if streamed(splits["train"]):
        raise HubtuneError(
            f"{splits.sources['train']}: with 'data.streaming' the tag names must be listed in 'data.labels' "
            "(in id order): a stream is not read ahead to find them"
        )
    seen = {tag for row in splits["train"][config.tags_column] if isinstance(row, list) for tag in row}
    if seen and all(isinstance(tag, str) for tag in seen):
        # "O" first, then entity tags grouped by type: the order only fixes ids, it makes config.json readable.
        return sorted(seen, key=lambda tag: (tag != "O", tag[2:], tag))
    raise HubtuneError(
        f"{splits.sources['train']}: column '{config.tags_column}' holds tag ids without names; "
        "list the tag names in 'data.labels' (in id order)"
    )


def tag_coding(dataset: Dataset | IterableDataset, config: TokensDataConfig) -> str:
    """'names' or 'ids': how the train split writes its tags (a ClassLabel feature counts as names). A stream
    shows its first sentence; `encode_sentences` holds every later one to it."""
    class_label = isinstance(getattr((dataset.features or {}).get(config.tags_column), "feature", None), ClassLabel)
    rows = [first_row(dataset)[config.tags_column]] if streamed(dataset) else dataset[config.tags_column]
    for tags in rows:
        for tag in tags if isinstance(tags, list) else []:
            return "ids" if isinstance(tag, int) and not isinstance(tag, bool) and not class_label else "names"
    return "names"


def encode_sentences(
    words_rows: Sequence[Any],
    tags_rows: Sequence[Any],
    config: TokensDataConfig,
    names: list[str],
    class_names: list[str] | None,
    where: Callable[[int], str],
    coding: str = "names",
) -> list[list[int]]:
    """Tag ids of each sentence, checked: lists of text, as many tags as words, every tag in the tag set.
    `class_names` are the tags column's ClassLabel names, if it has them; `where(i)` names row i in its file."""
    index = {name: i for i, name in enumerate(names)}
    all_ids = []
    for row, (words, tags) in enumerate(zip(words_rows, tags_rows)):
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise HubtuneError(
                f"{where(row)}: column '{config.tokens_column}' must hold a list of words, got {words!r}"
            )
        if not words:
            raise HubtuneError(f"{where(row)}: empty sentence (column '{config.tokens_column}' has no words)")
        if any(not w.strip() for w in words):
            raise HubtuneError(f"{where(row)}: column '{config.tokens_column}' holds an empty word: {words!r}")
        if not isinstance(tags, list) or len(tags) != len(words):
            count = len(tags) if isinstance(tags, list) else repr(tags)
            raise HubtuneError(
                f"{where(row)}: {len(words)} words in '{config.tokens_column}' but {count} tags in "
                f"'{config.tags_column}'"
            )
        ids = []
        for tag in tags:
            if class_names is None and isinstance(tag, int) != (coding == "ids") and isinstance(tag, (int, str)):
                raise HubtuneError(
                    f"{where(row)}: tag {tag!r} in column '{config.tags_column}' is written as "
                    f"{'an integer id' if isinstance(tag, int) else 'a name'}, but this run's tags "
                    f"are {coding} (as in its train split); write every split's tags the same way"
                )
            name = class_names[tag] if class_names is not None and isinstance(tag, int) else tag
            if isinstance(name, str) and name in index:
                ids.append(index[name])
            elif (
                class_names is None and isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(names)
            ):
                ids.append(name)
            else:
                raise HubtuneError(
                    f"{where(row)}: tag {name!r} in column '{config.tags_column}' is not in the tag set {names}"
                )
        all_ids.append(ids)
    return all_ids


class TokenClassification(LabelHeadMixin, Task[TokensDataConfig]):
    name = "token-classification"
    auto_model = AutoModelForTokenClassification
    head_suffix = "ForTokenClassification"
    pipeline_tag = "token-classification"
    primary_metric = "f1"  # entity-level
    summary_metrics = ("f1", "precision", "recall", "accuracy")
    peft_task_type = "TOKEN_CLS"
    data_config = TokensDataConfig
    serving = TokenClassificationServing
    variable_length = True
    length_step = PAD_TO_MULTIPLE
    class_weighted_loss = True

    def build_model(self, prepared: PreparedData) -> TaskModel:
        model = fit_embeddings(super().build_model(prepared), prepared.processor)
        if self.data.padding_free:
            check_packing(model)  # refused here, before the run folder is touched
        return model

    def load_processor(self, source: str | None = None) -> Any:
        tokenizer = load_text_tokenizer(self.config.model, source, words_presplit=True)
        require_fast_tokenizer(tokenizer, source or self.config.model.checkpoint)
        return tokenizer

    def saved_processor(self, processor: Any, model: TaskModel) -> Any:
        # transformers' pipeline() reads its window length from the tokenizer (as `predict` does, at most the
        # model's positions): a checkpoint's tokenizer without a limit would feed the model more than it has.
        saved = copy.deepcopy(processor)
        saved.model_max_length = window_length(processor, model.config)
        return saved

    def load_data_file(self, path: Path) -> Dataset:
        data = self.data
        if path.suffix.lower() in CONLL_SUFFIXES:
            return read_conll(
                path, data.tokens_column, data.tags_column, data.conll_token_column, data.conll_tag_column
            )
        return load_table_file(path)

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        data = self.data
        require_fast_tokenizer(processor, self.config.model.checkpoint)
        columns = {"tokens_column": data.tokens_column, "tags_column": data.tags_column}
        for role, dataset in splits.datasets.items():
            require_columns(dataset, columns, splits.sources[role])
        names = label_names or resolve_tag_names(data, splits)
        coding = tag_coding(splits[splits.reference_role], data)
        continuation = continuation_ids(names)
        result = PreparedData({}, processor, names)
        for role, dataset in splits.datasets.items():
            feature = getattr((dataset.features or {}).get(data.tags_column), "feature", None)
            class_names = feature.names if isinstance(feature, ClassLabel) else None
            locate = splits.locate(role)
            # Only training tags continuation pieces: evaluation stays one tag per word, the unit entities are made of.
            spread = continuation if data.label_all_tokens and role == "train" else None

            def encode(
                batch: dict[str, list], positions: list[int], class_names=class_names, locate=locate, spread=spread
            ):
                tags = encode_sentences(
                    batch[data.tokens_column],
                    batch[data.tags_column],
                    data,
                    names,
                    class_names,
                    lambda row: locate(positions[row]),
                    coding,
                )
                tokens = processor(
                    batch[data.tokens_column],
                    is_split_into_words=True,
                    truncation=True,
                    max_length=data.max_length,
                    padding="max_length" if data.pad_to_max_length else False,
                )
                labels, cut = [], []
                for i, word_labels in enumerate(tags):
                    word_ids = tokens.word_ids(i)
                    cut.append(len(word_labels) - (max((w for w in word_ids if w is not None), default=-1) + 1))
                    labels.append(align_labels(word_ids, word_labels, spread))
                return {**tokens, "labels": labels, CUT_WORDS: cut}

            if role == "train" and streamed(dataset):  # a list of weights; 'balanced' is refused at load
                result.class_weights = class_weights(self.config.training.get("class_weights"), names, [])
            if streamed(dataset):
                # Tokenised as training reads it; over-long sentences are cut without a count (nothing is read ahead).
                stream = dataset.map(encode, batched=True, with_indices=True, remove_columns=columns_of(dataset))
                result.datasets[role] = stream.remove_columns(CUT_WORDS)
                continue
            encoded = map_cached(
                dataset,
                encode,
                data,
                f"tokenising {role}",
                with_indices=True,
                remove_columns=dataset.column_names,
            )
            cut_words = encoded.with_format("arrow")[CUT_WORDS]
            cut_sentences = pc.sum(pc.greater(cut_words, 0)).as_py() or 0
            if cut_sentences:
                logger.warning(
                    "%s: %d of %d sentences are longer than data.max_length=%d tokens; %d words were cut "
                    "off (not trained on, not scored)",
                    splits.sources[role],
                    cut_sentences,
                    len(encoded),
                    data.max_length,
                    pc.sum(cut_words).as_py(),
                )
            encoded = encoded.remove_columns(CUT_WORDS)
            if role == "train":
                # Counted by Arrow on the aligned labels: no Python list of every tag of a large corpus.
                tags = pc.list_flatten(encoded.with_format("arrow")["labels"])
                result.warnings += missing_classes(names, pc.unique(tags).to_pylist(), splits.sources[role])
                setting = self.config.training.get("class_weights")
                # Ignored positions (-100: continuation pieces, special tokens) are left out of the counts.
                result.class_weights = class_weights(setting, names, tags.to_numpy() if setting == "balanced" else [])
            result.datasets[role] = encoded
        return result

    def loss_function(self, prepared: PreparedData) -> Callable[[Any, Any], Any] | None:
        return weighted_cross_entropy(prepared.class_weights)

    def data_collator(self, processor: Any) -> Any:
        return DataCollatorForTokenClassification(processor, pad_to_multiple_of=PAD_TO_MULTIPLE)

    def train_data_collator(self, processor: Any, model: TaskModel) -> Any:
        return TokenFlattening(position_ids_start=check_packing(model)) if self.data.padding_free else None

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        names = prepared.label_names
        logits = logits_of(prediction.predictions)
        predicted_ids = np.argmax(logits, axis=-1)
        predictions, references = [], []
        for predicted_row, label_row in zip(predicted_ids, prediction.label_ids):
            scored = label_row != IGNORE
            predictions.append([names[i] for i in predicted_row[scored]])
            references.append([names[i] for i in label_row[scored]])
        return self.metric("ner").compute(predictions=predictions, references=references, scheme=self.data.tag_scheme)
