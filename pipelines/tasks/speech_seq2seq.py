"""Whisper fine-tuning: `WhisperForConditionalGeneration` under `Seq2SeqTrainer`, generation at evaluation, WER."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from transformers import (
    AutoModelForSpeechSeq2Seq,
    AutoProcessor,
    BatchFeature,
    Seq2SeqTrainingArguments,
)

from pipelines.config import option, require_one_of
from pipelines.data.splits import streamed
from pipelines.data.transcripts import TranscriptDataConfig, normalise
from pipelines.errors import HubtuneError
from pipelines.models.loading import attention_kwargs, from_config, from_pretrained
from pipelines.runs.folder import load_run_model
from pipelines.tasks.audio_task import SOURCE_ROW, TranscriptTask, check_rows, extract_features, feature_extractor_of
from pipelines.tasks.base import PreparedData, TaskModel
from pipelines.tasks.collate import IGNORE, pad_labels
from pipelines.tasks.serving_base import Batch
from pipelines.tasks.transcript_serving import TranscriptServing, chunking, seconds
from pipelines.tasks.whisper_decoding import (
    LANGUAGES,
    WhisperGenerationConfig,
    language_code,
    set_generation,
    unknown_language,
)

WHISPER_TASKS = ("transcribe", "translate")


@dataclass
class WhisperDataConfig(TranscriptDataConfig):
    language: str | None = option(
        None,
        "the transcripts' language, a code or name (fr, french): the language token of a multilingual Whisper's "
        "prompt, required there; null for English-only checkpoints (*.en)",
    )
    whisper_task: str = option(
        "transcribe", "a multilingual Whisper's task token: transcribe, or translate (into English transcripts)"
    )

    def validate(self) -> None:
        super().validate()
        require_one_of("data.whisper_task", self.whisper_task, WHISPER_TASKS)
        # Whether the checkpoint has the language is checked when the model is built; a name Whisper does not know
        # at all is a typo found now.
        if self.language is not None and language_code(self.language) is None:
            raise unknown_language(self.language, list(LANGUAGES), "Whisper has no token for")


class SpeechRecognitionSeq2SeqServing(TranscriptServing["SpeechRecognitionSeq2Seq"]):
    """Clips within Whisper's window are batched and padded to it, as in training. A longer clip goes through
    transformers' sequential long-form generation (`generate` on its whole spectrogram with timestamp tokens), one
    clip per call as transformers' ASR pipeline without `chunk_length_s` runs it, so that no other clip of a batch
    changes its transcript. Decoding settings (beams, length penalty, max_new_tokens) are the generation config's."""

    def __init__(self, task: SpeechRecognitionSeq2Seq, model: TaskModel, processor: Any, timestamps: bool = False):
        # A recipe whose `generation.return_timestamps` is true decodes with timestamp tokens everywhere: its
        # predictions carry the segments those tokens give, as with --timestamps.
        super().__init__(task, model, processor, timestamps or bool(model.generation_config.return_timestamps))

    def window_samples(self) -> int:
        return int(feature_extractor_of(self.processor).n_samples)

    def preprocess(self, inputs: list[str]) -> Batch:
        waves = self.waveforms(inputs)
        short = [i for i, wave in enumerate(waves) if len(wave) <= self.window_samples()]
        extractor = feature_extractor_of(self.processor)
        features = {
            "short": extract_features(self.processor, [waves[i] for i in short]) if short else None,
            # Not cut to the window (the extractor's default): the whole clip's spectrogram, unpadded.
            "long": {
                i: extractor(
                    wave,
                    sampling_rate=self.rate,
                    truncation=False,
                    padding="longest",
                    return_attention_mask=True,
                    return_tensors="pt",
                )
                for i, wave in enumerate(waves)
                if i not in short
            },
        }
        return Batch(inputs, features, {"short": short, "samples": [len(wave) for wave in waves]})

    def probe_batch(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        # The logits an export is checked on are the decoder's first step, from the start token.
        features = super().probe_batch(inputs)
        start = self.model.config.decoder_start_token_id
        features["decoder_input_ids"] = torch.full((len(inputs), 1), start, dtype=torch.long)
        return features

    def generate(self, features: Any, long_form: bool) -> tuple[list[torch.Tensor], list[list[dict] | None]]:
        """The token ids of each clip of `features`, and its timestamped segments where they are asked for."""
        # The generation config holds the recipe's decoding (pipelines/tasks/whisper_decoding.py), as pipeline() reads it.
        options: dict[str, Any] = {}
        if self.timestamps or long_form:  # long-form generation seeks by the timestamp tokens: it needs them
            options.update(return_timestamps=True, return_segments=self.timestamps)
        output = self.model.generate(**features, **options)
        if isinstance(output, dict):
            return list(output["sequences"]), output["segments"]
        return list(output), [None] * len(output)

    def forward(self, batch: Batch) -> list[tuple[torch.Tensor, list[dict] | None]]:
        outputs: list[Any] = [None] * len(batch.inputs)
        if batch.features["short"] is not None:
            sequences, segments = self.generate(batch.features["short"], long_form=False)
            for position, output in zip(batch.context["short"], zip(sequences, segments)):
                outputs[position] = output
        for position, features in batch.features["long"].items():
            sequences, segments = self.generate(features, long_form=True)
            outputs[position] = (sequences[0], segments[0])
        return outputs

    def postprocess(self, batch: Batch, outputs: list[tuple[torch.Tensor, list[dict] | None]]) -> list[dict[str, Any]]:
        decode, window = self.processor.tokenizer.decode, self.window_samples()
        records = []
        for path, (sequence, segments), samples in zip(batch.inputs, outputs, batch.context["samples"]):
            method = "none" if samples <= window else "whisper-sequential"
            record = {
                "input": path,
                "transcript": decode(sequence, skip_special_tokens=True).strip(),
                "chunking": chunking(method, samples, self.rate, None if method == "none" else window),
            }
            if self.timestamps:
                record["segments"] = self.segments(segments or [], samples / self.rate)
            records.append(record)
        return records

    def segments(self, segments: list[dict], duration: float) -> list[dict[str, Any]]:
        """Whisper's segments as {start, end, text}, in seconds. A timestamp token can name a time past the clip's
        end (the window it was decoded in is padded to 30 s): times are clamped to the clip."""
        found = []
        for segment in segments:
            text = self.processor.tokenizer.decode(segment["tokens"], skip_special_tokens=True).strip()
            if text:  # a segment of timestamp tokens alone says nothing was heard
                start = min(float(segment["start"]), duration)
                found.append(
                    {
                        "start": seconds(start),
                        "end": seconds(min(max(float(segment["end"]), start), duration)),
                        "text": text,
                    }
                )
        return found


class SpeechRecognitionSeq2Seq(TranscriptTask[WhisperDataConfig]):
    name = "speech-recognition-seq2seq"
    data_config = WhisperDataConfig
    generation_section = WhisperGenerationConfig
    pipeline_tag = "automatic-speech-recognition"
    primary_metric = "wer"
    # Not PEFT's SEQ_2_SEQ_LM: its forward adds `input_ids`, which Whisper (audio in `input_features`) passes on
    # to its decoder twice. The plain PeftModel forwards the Trainer's batch as it is.
    peft_task_type = None
    trainer_base = "seq2seq"
    serving = SpeechRecognitionSeq2SeqServing
    training_arguments_class = Seq2SeqTrainingArguments
    # WER needs real transcripts: generate at evaluation, not the teacher-forced argmax, by the generation config.
    training_defaults = {**TranscriptTask.training_defaults, "predict_with_generate": True}

    def load_processor(self, source: str | None = None) -> Any:
        processor = from_pretrained(AutoProcessor, self.config.model, source)
        tokenizer, data = processor.tokenizer, self.data
        # The labels' prompt: a multilingual checkpoint's language and task tokens (it needs `data.language`, checked
        # with the model), none for an English-only one. Assigned, not passed: set_prefix_tokens keeps a language
        # or task the saved tokenizer holds where it is given None. The transcripts carry no timestamps.
        code = language_code(data.language) if data.language else None
        tokenizer.language, tokenizer.task = (code, data.whisper_task) if code else (None, None)
        tokenizer.set_prefix_tokens(predict_timestamps=False)
        return processor

    def _set_generation(self, model: TaskModel, training: bool) -> TaskModel:
        # The loader builds the task's own section.
        section = cast(WhisperGenerationConfig, self.config.generation)
        set_generation(model, self.data, section, self.config.model.checkpoint, training)
        return model

    def longest_kept_clip(self, processor: Any) -> tuple[int | None, str]:
        """Also Whisper's window: the Trainer's one pass would keep a longer clip's first 30 s and score it against
        the whole transcript. `hubtune evaluate` and `predict` transcribe such a clip in full (long-form)."""
        limit, why = super().longest_kept_clip(processor)
        extractor = feature_extractor_of(processor)
        if limit is not None and limit <= extractor.n_samples:
            return limit, why
        return extractor.n_samples, f"Whisper's {extractor.chunk_length} s window"

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
        return self._set_generation(model, training=True)

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
        return self._set_generation(model, training=False)

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

    def hypotheses(self, tokenizer: Any, predictions: np.ndarray) -> list[str]:
        return self.references(tokenizer, predictions)  # generated ids, padded as labels are

    def references(self, tokenizer: Any, label_ids: np.ndarray) -> list[str]:
        ids = np.where(label_ids == IGNORE, tokenizer.pad_token_id, label_ids)
        return [normalise(text, self.data) for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
