"""Whisper fine-tuning: `WhisperForConditionalGeneration` under `Seq2SeqTrainer`, generation at evaluation, WER."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    BatchFeature,
    EvalPrediction,
    Seq2SeqTrainingArguments,
)

from pipelines.config import option, require_one_of
from pipelines.data.splits import streamed
from pipelines.data.transcripts import TranscriptDataConfig, normalise
from pipelines.errors import HubtuneError
from pipelines.models.loading import attention_kwargs, from_config, from_pretrained
from pipelines.runs.folder import load_run_model
from pipelines.tasks.audio_task import SOURCE_ROW, TranscriptServing, TranscriptTask, check_rows, extract_features
from pipelines.tasks.base import PreparedData, TaskModel, logits_of
from pipelines.tasks.collate import IGNORE, pad_labels
from pipelines.tasks.serving_base import Batch

WHISPER_TASKS = ("transcribe", "translate")


@dataclass
class WhisperDataConfig(TranscriptDataConfig):
    language: str | None = option(None, "Whisper's language token (e.g. english); null for English-only models")
    whisper_task: str = option("transcribe", "Whisper's task: transcribe or translate")

    def validate(self) -> None:
        super().validate()
        require_one_of("data.whisper_task", self.whisper_task, WHISPER_TASKS)


class SpeechRecognitionSeq2SeqServing(TranscriptServing["SpeechRecognitionSeq2Seq"]):
    def preprocess(self, inputs: list[str]) -> Batch:
        return Batch(inputs, extract_features(self.processor, self.waveforms(inputs)))

    def probe_batch(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        # The logits an export is checked on are the decoder's first step, from the start token.
        features = super().probe_batch(inputs)
        start = self.model.config.decoder_start_token_id
        features["decoder_input_ids"] = torch.full((len(inputs), 1), start, dtype=torch.long)
        return features

    def forward(self, batch: Batch) -> torch.Tensor:
        limit = self.task.config.training.get("generation_max_length") or 128
        return self.model.generate(**batch.features, max_new_tokens=limit)

    def postprocess(self, batch: Batch, outputs: torch.Tensor) -> list[dict[str, Any]]:
        texts = self.processor.tokenizer.batch_decode(outputs, skip_special_tokens=True)
        return [{"input": path, "transcript": text.strip()} for path, text in zip(batch.inputs, texts)]


class SpeechRecognitionSeq2Seq(TranscriptTask[WhisperDataConfig]):
    name = "speech-recognition-seq2seq"
    data_config = WhisperDataConfig
    pipeline_tag = "automatic-speech-recognition"
    primary_metric = "wer"
    # Not PEFT's SEQ_2_SEQ_LM: its forward adds `input_ids`, which Whisper (audio in `input_features`) passes on
    # to its decoder twice. The plain PeftModel forwards the Trainer's batch as it is.
    peft_task_type = None
    trainer_base = "seq2seq"
    serving = SpeechRecognitionSeq2SeqServing
    training_arguments_class = Seq2SeqTrainingArguments
    # WER needs real transcripts: generate at evaluation, not the teacher-forced argmax.
    training_defaults = {
        **TranscriptTask.training_defaults,
        "predict_with_generate": True,
        "generation_max_length": 128,
    }

    def load_processor(self, source: str | None = None) -> Any:
        processor = from_pretrained(AutoProcessor, self.config.model, source)
        data = self.data
        # Multilingual checkpoints are told the language and task; English-only ones know neither token.
        if data.language:
            processor.tokenizer.set_prefix_tokens(
                language=data.language, task=data.whisper_task, predict_timestamps=False
            )
        else:
            processor.tokenizer.set_prefix_tokens(language=None, task=None, predict_timestamps=False)
        return processor

    def _set_generation(self, model: TaskModel) -> TaskModel:
        generation = model.generation_config
        generation.forced_decoder_ids = None  # the language and task go through `language` / `task` instead
        if generation.num_beams is None:
            # generate() decodes greedily where the generation config names no beams, transformers' ASR pipeline
            # searches 5: named, so that pipeline() on a run folder decodes as predict and evaluation do.
            generation.num_beams = 1
        if self.data.language:
            generation.language, generation.task = self.data.language, self.data.whisper_task
        return model

    def build_model(self, prepared: PreparedData) -> TaskModel:
        model_config = self.config.model
        if model_config.from_scratch:
            from transformers import AutoConfig, GenerationConfig

            config = from_pretrained(AutoConfig, model_config)
            model = from_config(AutoModelForSpeechSeq2Seq, config, model_config, **attention_kwargs(model_config))
            model.generation_config = from_pretrained(GenerationConfig, model_config)
            model.name_or_path = model_config.checkpoint
        else:
            model = from_pretrained(AutoModelForSpeechSeq2Seq, model_config)
        return self._set_generation(model)

    def check_model(self, model: TaskModel, prepared: PreparedData) -> None:
        """Whisper's decoder has a learned position for each token of a transcript: a longer transcript stopped
        training at its batch (transformers refuses labels longer than max_target_positions)."""
        super().check_model(model, prepared)
        limit = model.config.max_target_positions
        decoder = f"the Whisper decoder of '{self.config.model.checkpoint}' takes at most {limit} tokens"
        tokenizer = prepared.processor.tokenizer
        start = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")

        def check(labels: list[int], transcript: str) -> None:
            # As the collator gives them to the model: without the start token, which the model prepends itself.
            tokens = len(labels) - (labels[0] == start)
            if tokens > limit:
                text = tokenizer.decode(labels, skip_special_tokens=True)
                raise HubtuneError(
                    f"{transcript} is {tokens} tokens long ({text[:60]!r}...), but {decoder} (its config's "
                    "max_target_positions); shorten it or leave its clip out"
                )

        for role, dataset in prepared.datasets.items():
            if streamed(dataset):  # each transcript is checked when the stream reaches it
                prepared.datasets[role] = check_rows(
                    dataset, lambda row: check(row["labels"], f"the transcript of {row[SOURCE_ROW]}")
                )
                continue
            longest = max(dataset["labels"], key=lambda labels: len(labels) - (labels[0] == start))
            check(longest, f"a transcript of the {role} split")

    def load_run_model(self, run_dir: str) -> TaskModel:
        model = load_run_model(AutoModelForSpeechSeq2Seq, run_dir, self.config.model.trust_remote_code)
        return self._set_generation(model)

    def data_collator(self, processor: Any) -> Any:
        start = processor.tokenizer.convert_tokens_to_ids("<|startoftranscript|>")

        def collate(rows: list[dict[str, Any]]) -> BatchFeature:
            batch = extract_features(processor, self.waveforms(processor, rows))
            # The model prepends the start token itself when it shifts the labels right.
            batch["labels"] = pad_labels(
                [row["labels"][1:] if row["labels"][0] == start else row["labels"] for row in rows]
            )
            return batch

        return collate

    def decode(self, tokenizer: Any, ids: np.ndarray) -> list[str]:
        ids = np.where(ids == IGNORE, tokenizer.pad_token_id, ids)
        return [normalise(text, self.data) for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        tokenizer = prepared.processor.tokenizer
        generated = logits_of(prediction.predictions)
        return self.metric("speech_recognition").compute(
            predictions=self.decode(tokenizer, generated),
            references=self.decode(tokenizer, np.asarray(prediction.label_ids)),
        )
