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
    Trainer,
    Wav2Vec2Processor,
)
from transformers.pipelines.automatic_speech_recognition import chunk_iter, rescale_stride

from pipelines.compat import feature_frames
from pipelines.data.splits import Splits
from pipelines.data.transcripts import TranscriptDataConfig, build_ctc_tokenizer, split_transcripts
from pipelines.errors import HubtuneError
from pipelines.models.loading import attention_kwargs, from_config, from_pretrained
from pipelines.runs.folder import load_run_model
from pipelines.tasks.audio_task import TranscriptTask, check_splits_columns, extract_features, feature_extractor_of
from pipelines.tasks.base import PredictionStep, PreparedData, TaskModel
from pipelines.tasks.collate import IGNORE, pad_labels
from pipelines.tasks.serving_base import Batch
from pipelines.tasks.transcript_serving import TranscriptServing, chunking, seconds


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


# transformers' ASR pipeline chunking defaults (`chunk_length_s=30`, `stride_length_s` a sixth of it on each side).
CHUNK_S = 30.0
STRIDE_S = CHUNK_S / 6


class SpeechRecognitionCTCServing(TranscriptServing["SpeechRecognitionCTC"]):
    """Each clip in strided chunks, one at a time, as transformers' ASR pipeline with `chunk_length_s=30` cuts it
    (its `chunk_iter`, `rescale_stride`): the same chunks, features and kept frames, so the same transcript. A clip
    within one chunk is one chunk with no stride: the unchunked forward pass. One chunk per forward pass, as the
    pipeline runs them by default: memory is that of one chunk however long the file, and no chunk is padded
    (padding a raw waveform changes what the model hears)."""

    def frame_samples(self) -> int:
        """Samples per logit frame: the product of the convolutional encoder's strides."""
        ratio = getattr(self.model.config, "inputs_to_logits_ratio", None)
        if not ratio:
            raise HubtuneError(
                f"a {self.model.config.model_type} model does not say how many audio samples make one logit frame "
                "(its config has no inputs_to_logits_ratio): hubtune cannot chunk its audio or time its words"
            )
        return int(ratio)

    def chunk_and_stride(self) -> tuple[int, int]:
        """The chunk and the stride on each side in samples, aligned to whole logit frames as the pipeline aligns
        them."""
        align = self.frame_samples()

        def aligned(length_s: float) -> int:
            return int(round(length_s * self.rate / align) * align)

        return aligned(CHUNK_S), aligned(STRIDE_S)

    def window_samples(self) -> int:
        return self.chunk_and_stride()[0]

    def preprocess(self, inputs: list[str]) -> Batch:
        chunk, stride = self.chunk_and_stride()
        extractor, waves = feature_extractor_of(self.processor), self.waveforms(inputs)
        chunks = [list(chunk_iter(wave, extractor, chunk, stride, stride, self.model.dtype)) for wave in waves]
        return Batch(inputs, chunks, {"samples": [len(wave) for wave in waves]})

    def forward(self, batch: Batch) -> list[list[int]]:
        """Each clip's best token per kept frame: the frames of each chunk's strides dropped, the rest joined."""
        ratio, clips = 1 / self.frame_samples(), []
        for chunks in batch.features:
            kept = []
            for chunk in chunks:
                inputs = {key: value for key, value in chunk.items() if key not in ("stride", "is_last")}
                tokens = self.model(**inputs).logits[0].argmax(-1)
                frames, left, right = rescale_stride([chunk["stride"]], ratio)[0]
                kept.append(tokens[left : frames - right])
            clips.append(torch.cat(kept).tolist())
        return clips

    def postprocess(self, batch: Batch, outputs: list[list[int]]) -> list[dict[str, Any]]:
        # Greedy CTC decoding: repeats merged and blanks dropped by the tokenizer.
        chunk, stride = self.chunk_and_stride()
        records = []
        for path, ids, samples, chunks in zip(batch.inputs, outputs, batch.context["samples"], batch.features):
            decoded = self.processor.tokenizer.decode(ids, output_word_offsets=self.timestamps)
            record: dict[str, Any] = {
                "input": path,
                "transcript": decoded if isinstance(decoded, str) else decoded.text,
            }
            if len(chunks) > 1:
                record["chunking"] = {
                    **chunking("ctc-strided", samples, self.rate, chunk, stride),
                    "chunks": len(chunks),
                }
            else:
                record["chunking"] = chunking("none", samples, self.rate)
            if self.timestamps:
                seconds_per_frame = self.frame_samples() / self.rate
                record["words"] = [
                    {
                        "word": word["word"],
                        "start": seconds(word["start_offset"] * seconds_per_frame),
                        "end": seconds(min(word["end_offset"] * seconds_per_frame, samples / self.rate)),
                    }
                    for word in decoded.word_offsets
                ]
            records.append(record)
        return records


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

    def references(self, tokenizer: Any, label_ids: np.ndarray) -> list[str]:
        label_ids = np.where(label_ids == IGNORE, tokenizer.pad_token_id, label_ids)
        # References are spelled out: repeated letters ("ll") must not be merged as CTC repeats are.
        return tokenizer.batch_decode(label_ids, group_tokens=False, skip_special_tokens=True)

    def hypotheses(self, tokenizer: Any, predictions: np.ndarray) -> list[str]:
        # Padding frames hold -100 everywhere (`blank_padding_frames`, and the Trainer between batches): argmax is
        # the blank.
        return tokenizer.batch_decode(np.argmax(predictions, axis=-1))

    def scored_transcript(self, transcript: str) -> str:
        return transcript  # the tokenizer's decoding, as `hypotheses` scores the Trainer's

    def prediction_step(self) -> PredictionStep:
        return blank_padding_frames
