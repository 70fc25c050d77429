"""Text classification (sentiment, topic, NLI with a text pair) on any transformers encoder."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
)

from pipelines.config import RecipeConfig, option
from pipelines.data.splits import Locate, Splits, columns_of, first_missing_text, map_cached, require_columns, streamed
from pipelines.data.streams import StreamingDataConfig
from pipelines.errors import HubtuneError
from pipelines.models.loading import fit_embeddings, load_text_tokenizer
from pipelines.tasks.base import PreparedData, Task, TaskModel
from pipelines.tasks.classifier import ClassifierMixin, class_weights
from pipelines.tasks.classifier_serving import ClassifierServing
from pipelines.tasks.collate import PAD_TO_MULTIPLE
from pipelines.tasks.data_sections import LabelledDataConfig, check_streamed_labels
from pipelines.tasks.labels import encode_stream_labels
from pipelines.tasks.serving_base import Batch

logger = logging.getLogger(__name__)

# Beyond these the checkpoint's vocabulary fits the data badly (English text on an English model: ~0% and ~1.3).
UNKNOWN_TOKEN_LIMIT = 0.05
PIECES_PER_WORD_LIMIT = 3.0


@dataclass
class TextDataConfig(LabelledDataConfig, StreamingDataConfig):
    text_column: str = option("text", "the column of texts")
    text_pair_column: str | None = option(None, "a second text column, for pairs (NLI, paraphrase)")
    max_length: int = option(128, "tokens per example; longer texts are cut, with a warning")
    pad_to_max_length: bool = option(
        False, "pad every example to max_length (the transformers examples' default) instead of per batch"
    )

    def validate(self) -> None:
        super().validate()
        if self.max_length < 1:
            raise HubtuneError(f"recipe key 'data.max_length' must be at least 1, got {self.max_length}")

    def check_recipe(self, recipe: RecipeConfig) -> None:
        super().check_recipe(recipe)
        check_streamed_labels(self, recipe)


def require_text(dataset: Dataset, column: str, locate: Locate) -> None:
    row = first_missing_text(dataset, column)
    if row is not None:
        raise HubtuneError(f"{locate(row)}: column '{column}' holds {dataset[row][column]!r}, not text")


class TextClassificationServing(ClassifierServing["TextClassification"]):
    def preprocess(self, inputs: list[str]) -> Batch:
        tokenizer, limit = self.processor, self.task.data.max_length
        # Counted whole, without transformers' own too-long warning: the saved tokenizer's limit is `limit`, and
        # hubtune says below what becomes of a longer text.
        truncated = [len(ids) > limit for ids in tokenizer(inputs, truncation=False, verbose=False)["input_ids"]]
        if any(truncated):
            logger.warning(
                "%d of %d inputs are longer than data.max_length=%d tokens: each is classified on its "
                'first %d tokens (marked "truncated": true)',
                sum(truncated),
                len(inputs),
                limit,
                limit,
            )
        features = tokenizer(inputs, truncation=True, max_length=limit, padding=True, return_tensors="pt")
        return Batch(inputs, features, {"truncated": truncated})

    def postprocess(self, batch: Batch, outputs: torch.Tensor) -> list[dict[str, Any]]:
        records = self.records(batch.inputs, outputs)
        return [{**record, "truncated": cut} for record, cut in zip(records, batch.context["truncated"])]


class TextClassification(ClassifierMixin, Task[TextDataConfig]):
    name = "text-classification"
    pipeline_tag = "text-classification"
    peft_task_type = "SEQ_CLS"
    auto_model = AutoModelForSequenceClassification
    head_suffix = "ForSequenceClassification"
    data_config = TextDataConfig
    serving = TextClassificationServing
    variable_length = True
    length_step = PAD_TO_MULTIPLE

    @property
    def text_columns(self) -> list[str]:
        """The text column, and the pair's second one if the recipe names it."""
        return [column for column in (self.data.text_column, self.data.text_pair_column) if column is not None]

    def load_processor(self, source: str | None = None) -> Any:
        return load_text_tokenizer(self.config.model, source)

    def build_model(self, prepared: PreparedData) -> TaskModel:
        return fit_embeddings(super().build_model(prepared), prepared.processor)

    def saved_processor(self, processor: Any, model: TaskModel) -> Any:
        # transformers' pipeline() cuts texts at the tokenizer's `model_max_length` (given `truncation=True`):
        # the saved tokenizer cuts them where training and `predict` do.
        saved = copy.deepcopy(processor)
        saved.model_max_length = self.data.max_length
        return saved

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        data = self.data
        columns = {
            "text_column": data.text_column,
            "text_pair_column": data.text_pair_column,
            "label_column": data.label_column,
        }
        for role, dataset in splits.datasets.items():
            require_columns(dataset, columns, splits.sources[role])
            if not streamed(dataset):  # a stream's rows are checked as they are read
                for column in self.text_columns:
                    require_text(dataset, column, splits.locate(role))
        names, coding = self.resolve_names(splits, label_names)
        result = PreparedData({}, processor, names)
        padding = "max_length" if data.pad_to_max_length else False

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            pair = batch[data.text_pair_column] if data.text_pair_column else None
            return processor(
                batch[data.text_column], pair, truncation=True, max_length=data.max_length, padding=padding
            )

        for role, dataset in splits.datasets.items():
            if streamed(dataset):
                if role == "train":  # a list of weights; 'balanced' needs the labels counted, refused at load
                    result.class_weights = class_weights(self.config.training.get("class_weights"), names, [])
                result.datasets[role] = self._tokenise_stream(dataset, splits.locate(role), names, coding, tokenize)
                continue
            labels = self.split_labels(splits, role, dataset, names, coding)
            if role == "train":
                self.learn_from_train(result, labels, splits.sources[role])
            dataset = self.with_labels(dataset, labels)
            result.datasets[role] = map_cached(
                dataset,
                tokenize,
                data,
                f"tokenising {role}",
                remove_columns=[c for c in dataset.column_names if c != "labels"],
            )
        return result

    def _tokenise_stream(
        self,
        stream: IterableDataset,
        locate: Locate,
        names: list[str],
        coding: str,
        tokenize: Callable[[dict[str, list]], dict[str, list]],
    ) -> IterableDataset:
        """A streamed split, labelled, checked and tokenised batch by batch as training reads it."""
        data, texts = self.data, self.text_columns
        dropped = [column for column in columns_of(stream) if column != "labels"]

        def checked(batch: dict[str, list], positions: list[int]) -> dict[str, list]:
            for column in texts:
                for i, value in enumerate(batch[column]):
                    if not isinstance(value, str):
                        raise HubtuneError(f"{locate(positions[i])}: column '{column}' holds {value!r}, not text")
            return tokenize(batch)

        stream = encode_stream_labels(stream, data.label_column, names, locate, coding)
        return stream.map(checked, batched=True, with_indices=True, remove_columns=dropped)

    def data_collator(self, processor: Any) -> Any:
        return DataCollatorWithPadding(processor, pad_to_multiple_of=PAD_TO_MULTIPLE)

    def domain_warnings(self, splits: Splits, processor: Any) -> list[str]:
        """Unknown-token rate and word pieces per word on the training texts: a vocabulary that does not fit the
        data (another language or script, code, emoji-heavy text) shows in both."""
        texts = splits["train"][self.data.text_column][:2000]
        pieces = processor(texts, add_special_tokens=False)["input_ids"]
        tokens = sum(len(ids) for ids in pieces)
        words = sum(len(text.split()) for text in texts)
        unknown = sum(ids.count(processor.unk_token_id) for ids in pieces) if processor.unk_token_id is not None else 0
        warnings = []
        if tokens and unknown / tokens > UNKNOWN_TOKEN_LIMIT:
            warnings.append(
                f"input domain looks mismatched: {unknown / tokens:.1%} of the training tokens are "
                "unknown to the checkpoint's tokenizer"
            )
        if words and tokens / words > PIECES_PER_WORD_LIMIT:
            warnings.append(
                f"input domain looks mismatched: the tokenizer splits each word into {tokens / words:.1f} "
                "pieces on average"
            )
        return warnings
