"""The serving half of token classification: a text's entities, as spans of the text with their type and score."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import torch
from transformers import TokenClassificationPipeline

from pipelines.data.splits import Locate
from pipelines.tasks.serving_base import Batch, OnnxAxes, TaskServing, dynamic_axes


def window_length(tokenizer: Any, config: Any) -> int:
    """Tokens per window of a text the pipeline tags: the tokenizer's limit, at most the model's positions."""
    positions = getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
    return min(tokenizer.model_max_length, positions)


class TokenClassificationServing(TaskServing[Any]):
    input_column_key = "tokens_column"

    @cached_property
    def tagger(self) -> TokenClassificationPipeline:
        """transformers' pipeline, which groups sub-tokens into words and words into entities with character
        offsets. A LoRA run's PEFT wrapper is unwrapped because the pipeline expects a transformers model (the
        adapters stay active)."""
        model = self.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        tokenizer = self.processor
        # A text longer than the model's positions is tagged whole: the pipeline cuts it into windows of that many
        # tokens overlapping by a quarter, and each word is tagged from one window.
        tokenizer.model_max_length = window_length(tokenizer, base.config)
        return TokenClassificationPipeline(
            model=base,
            tokenizer=tokenizer,
            aggregation_strategy="first",
            device=base.device,
            stride=tokenizer.model_max_length // 4,
        )

    def data_inputs(self, values: list[Any], locate: Locate, column: str) -> list[str]:
        """Sentences as their words joined by spaces (what `predict` tags), or as text already."""
        texts = [
            " ".join(value) if isinstance(value, list) and all(isinstance(w, str) for w in value) else value
            for value in values
        ]
        return super().data_inputs(texts, locate, column)

    def preprocess(self, inputs: list[str]) -> Batch:
        return Batch(inputs, inputs)  # the pipeline tokenises each text into its windows itself

    def probe_batch(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        # The pipeline's windows are its own business; the model itself takes the tokenised texts.
        encoded = self.processor(inputs, truncation=True, padding=True, return_tensors="pt")
        return {key: encoded[key] for key in self.processor.model_input_names if key in encoded}

    def forward(self, batch: Batch) -> list[list[dict[str, Any]]]:
        return [self.tagger(text) if text.strip() else [] for text in batch.features]

    def postprocess(self, batch: Batch, outputs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [
            {
                "input": text,
                "entities": [
                    {
                        "type": entity["entity_group"],
                        "text": text[int(entity["start"]) : int(entity["end"])],
                        "start": int(entity["start"]),
                        "end": int(entity["end"]),
                        "score": float(entity["score"]),
                    }
                    for entity in entities
                ],
            }
            for text, entities in zip(batch.inputs, outputs)
        ]

    def format(self, prediction: dict[str, Any]) -> str:
        entities = "; ".join(
            f'{e["type"]} "{e["text"]}" {e["start"]}-{e["end"]} {e["score"]:.3f}' for e in prediction["entities"]
        )
        return f"{prediction['input']}\t{entities or '(no entities)'}"

    def onnx_axes(self, features: Mapping[str, torch.Tensor]) -> OnnxAxes:
        return dynamic_axes(features)
