"""Audio classification (keyword spotting, speaker or emotion classes) on wav2vec2, HuBERT, AST or a Whisper encoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, BatchFeature

from pipelines.config import RecipeConfig
from pipelines.data.audio import AudioInputConfig
from pipelines.data.splits import Locate, Splits, streamed
from pipelines.models.loading import from_pretrained
from pipelines.tasks.audio_task import AudioServing, AudioTask, check_splits_columns, extract_features
from pipelines.tasks.base import PreparedData
from pipelines.tasks.classifier import ClassifierMixin, class_weights
from pipelines.tasks.classifier_serving import ClassifierServing
from pipelines.tasks.data_sections import LabelledDataConfig, check_streamed_labels
from pipelines.tasks.labels import label_ids
from pipelines.tasks.serving_base import Batch


@dataclass
class AudioDataConfig(AudioInputConfig, LabelledDataConfig):
    """Audio classification data: a clip and its class label."""

    def check_recipe(self, recipe: RecipeConfig) -> None:
        super().check_recipe(recipe)
        check_streamed_labels(self, recipe)


class AudioClassificationServing(AudioServing["AudioClassification"], ClassifierServing["AudioClassification"]):
    def preprocess(self, inputs: list[str]) -> Batch:
        # One clip at a time: padding a raw waveform changes what a model without attention mask hears.
        return Batch(inputs, [extract_features(self.processor, [wave]) for wave in self.waveforms(inputs)])

    def forward(self, batch: Batch) -> torch.Tensor:
        return torch.stack([self.model(**features).logits[0] for features in batch.features])


class AudioClassification(ClassifierMixin, AudioTask[AudioDataConfig]):
    name = "audio-classification"
    pipeline_tag = "audio-classification"
    peft_task_type = "SEQ_CLS"
    auto_model = AutoModelForAudioClassification
    head_suffix = "ForAudioClassification"
    data_config = AudioDataConfig
    serving = AudioClassificationServing

    def load_processor(self, source: str | None = None) -> Any:
        return from_pretrained(AutoFeatureExtractor, self.config.model, source)

    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        data = self.data
        check_splits_columns(splits, {"audio_column": data.audio_column, "label_column": data.label_column})
        names, coding = self.resolve_names(splits, label_names)
        result = PreparedData({}, processor, names)
        for role, dataset in splits.datasets.items():
            source = splits.sources[role]
            if streamed(dataset):
                if role == "train":  # a list of weights; 'balanced' needs the labels counted, refused at load
                    result.class_weights = class_weights(self.config.training.get("class_weights"), names, [])
                feature = (dataset.features or {}).get(data.label_column)

                def stream_labels(batch: dict[str, list], locate: Locate, feature: Any = feature) -> list[int]:
                    return label_ids(batch[data.label_column], feature, data.label_column, names, locate, coding)

                self.audio_stream(result, role, dataset, stream_labels, splits.locate(role), source)
                continue
            labels = self.split_labels(splits, role, dataset, names, coding)
            if role == "train":
                self.learn_from_train(result, labels, source)
            self.audio_dataset(result, role, dataset, labels, splits.locate(role), source)
        return result

    def data_collator(self, processor: Any) -> Any:
        def collate(rows: list[dict[str, Any]]) -> BatchFeature:
            batch = extract_features(processor, self.waveforms(processor, rows))
            batch["labels"] = torch.tensor([row["labels"] for row in rows])
            return batch

        return collate
