"""CTC speech recognition on a wav2vec2-family encoder, with a character vocabulary from the training transcripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    AutoProcessor,
    BatchFeature,
    EvalPrediction,
    Trainer,
    Wav2Vec2Processor,
)

from pipelines.compat import feature_frames
from pipelines.data.splits import Splits
from pipelines.data.transcripts import TranscriptDataConfig, build_ctc_tokenizer, split_transcripts
from pipelines.models.loading import attention_kwargs, from_config, from_pretrained
from pipelines.runs.folder import load_run_model
from pipelines.tasks.audio_task import TranscriptServing, TranscriptTask, check_splits_columns, extract_features
from pipelines.tasks.base import PredictionStep, PreparedData, TaskModel, logits_of
from pipelines.tasks.collate import IGNORE, pad_labels
from pipelines.tasks.serving_base import Batch


def blank_padding_frames(
    trainer: Trainer, model: TaskModel, inputs: dict[str, Any], prediction_loss_only: bool, standard: Callable
) -> tuple:
    """The Trainer's evaluation step, with the logits of padding frames blanked (a `PredictionStep`).

    Frames past a clip's end are masked in attention but still get logits (the head's bias), which greedy
    decoding would read as letters. Filled with -100 like the Trainer's own padding between batches, their
    argmax is id 0, the CTC blank.
    """
    loss, logits, labels = standard(model, inputs, prediction_loss_only)
    if logits is not None and inputs.get("attention_mask") is not None:
        encoder = trainer.accelerator.unwrap_model(model)
        lengths = feature_frames(encoder, inputs["attention_mask"].sum(-1))
        frames = torch.arange(logits.shape[1], device=logits.device)
        logits = logits.masked_fill((frames[None, :] >= lengths[:, None])[..., None], IGNORE)
    return loss, logits, labels


class SpeechRecognitionCTCServing(TranscriptServing["SpeechRecognitionCTC"]):
    def preprocess(self, inputs: list[str]) -> Batch:
        # One clip at a time, as audio classification: padding a raw waveform changes what the model hears.
        return Batch(inputs, [extract_features(self.processor, [wave]) for wave in self.waveforms(inputs)])

    def forward(self, batch: Batch) -> list[torch.Tensor]:
        return [self.model(**features).logits[0] for features in batch.features]

    def postprocess(self, batch: Batch, outputs: list[torch.Tensor]) -> list[dict[str, Any]]:
        # Greedy CTC decoding: the best token per frame, repeats merged and blanks dropped by the tokenizer.
        decode = self.processor.tokenizer.decode
        return [
            {"input": path, "transcript": decode(logits.argmax(-1).tolist())}
            for path, logits in zip(batch.inputs, outputs)
        ]


class SpeechRecognitionCTC(TranscriptTask[TranscriptDataConfig]):
    name = "speech-recognition-ctc"
    pipeline_tag = "automatic-speech-recognition"
    primary_metric = "wer"
    serving = SpeechRecognitionCTCServing

    def load_processor(self, source: str | None = None) -> Any:
        if source is not None:  # a run folder holds the feature extractor and the vocabulary it was trained with
            return AutoProcessor.from_pretrained(source, trust_remote_code=self.config.model.trust_remote_code)
        return from_pretrained(AutoFeatureExtractor, self.config.model)

    def fit_processor(self, splits: Splits, processor: Any) -> Any:
        check_splits_columns(splits, {"audio_column": self.data.audio_column, "text_column": self.data.text_column})
        # A stream's vocabulary comes from one pass over its transcripts (`split_transcripts`) before training.
        tokenizer = build_ctc_tokenizer(split_transcripts(splits["train"], self.data, splits.locate("train")))
        return Wav2Vec2Processor(feature_extractor=processor, tokenizer=tokenizer)

    def build_model(self, prepared: PreparedData) -> TaskModel:
        tokenizer = prepared.processor.tokenizer
        vocabulary = {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "ctc_loss_reduction": "mean",
            "ctc_zero_infinity": True,
        }
        model_config = self.config.model
        if model_config.from_scratch:
            config = from_pretrained(AutoConfig, model_config, **vocabulary)
            model = from_config(AutoModelForCTC, config, model_config, **attention_kwargs(model_config))
            model.name_or_path = model_config.checkpoint
            return model
        # The output layer is new (sized for this vocabulary); the encoder keeps its pretrained weights.
        return from_pretrained(AutoModelForCTC, model_config, ignore_mismatched_sizes=True, **vocabulary)

    def load_run_model(self, run_dir: str) -> TaskModel:
        return load_run_model(AutoModelForCTC, run_dir, self.config.model.trust_remote_code)

    def data_collator(self, processor: Any) -> Any:
        def collate(rows: list[dict[str, Any]]) -> BatchFeature:
            batch = extract_features(processor, self.waveforms(processor, rows))
            batch["labels"] = pad_labels([row["labels"] for row in rows])
            return batch

        return collate

    @staticmethod
    def decode_labels(tokenizer: Any, label_ids: np.ndarray) -> list[str]:
        label_ids = np.where(label_ids == IGNORE, tokenizer.pad_token_id, label_ids)
        # References are spelled out: repeated letters ("ll") must not be merged as CTC repeats are.
        return tokenizer.batch_decode(label_ids, group_tokens=False, skip_special_tokens=True)

    def prediction_step(self) -> PredictionStep:
        return blank_padding_frames

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        tokenizer = prepared.processor.tokenizer
        logits = logits_of(prediction.predictions)
        # Padding frames hold -100 everywhere (`blank_padding_frames`, and the Trainer between batches): argmax is
        # the blank.
        hypotheses = tokenizer.batch_decode(np.argmax(logits, axis=-1))
        return self.metric("speech_recognition").compute(
            predictions=hypotheses, references=self.decode_labels(tokenizer, np.asarray(prediction.label_ids))
        )
