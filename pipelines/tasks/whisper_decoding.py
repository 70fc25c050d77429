"""How a Whisper run decodes: the recipe's `generation` section, and the language and task of the decoder prompt.

One place decides it: the model's generation config, set here from the recipe when the model is built and when a
run folder is loaded, and saved with the run (`generation_config.json`). Seq2SeqTrainer's generation at evaluation,
`hubtune evaluate`, `predict` and transformers' `pipeline()` on the run folder all decode by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

from pipelines.config import GenerationSection, option
from pipelines.errors import HubtuneError

# hubtune predict's limit before the section existed, and the default of `training.generation_max_length` then.
DEFAULT_MAX_NEW_TOKENS = 128
# Seq2SeqTrainingArguments' own decoding keys: the section takes them over, so that evaluation decodes as predict.
TRAINING_KEYS = {"generation_num_beams": "num_beams", "generation_config": "its keys"}


@dataclass
class WhisperGenerationConfig(GenerationSection):
    num_beams: int = option(1, "beams of the beam search; 1: greedy decoding")
    max_new_tokens: int | None = option(
        None,
        "the most tokens generated per clip after Whisper's prompt (up to 4 tokens: start, language, task, "
        "no-timestamps); prompt and tokens must fit the decoder's max_target_positions (448 for OpenAI's "
        "checkpoints); null: training.generation_max_length where set (read as this key), else 128, or fewer where "
        "the decoder has room for fewer",
    )
    length_penalty: float = option(
        1.0,
        "beam search: a hypothesis's score is divided by its length to this power (above 1 favours longer "
        "transcripts, below 1 shorter ones); other than 1.0 it needs num_beams above 1",
    )
    return_timestamps: bool = option(
        False,
        "decode with Whisper's timestamp tokens (the prompt without <|notimestamps|>): evaluation, predict and "
        "pipeline() on the run folder alike, and predictions carry their timed segments as with --timestamps; the "
        "transcripts' text is scored either way",
    )

    def validate(self) -> None:
        if self.num_beams < 1:
            raise HubtuneError(f"recipe key 'generation.num_beams' must be at least 1, got {self.num_beams}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise HubtuneError(
                f"recipe key 'generation.max_new_tokens' must be at least 1 (or null), got {self.max_new_tokens}"
            )
        if self.length_penalty != 1.0 and self.num_beams == 1:
            # transformers also refuses to save such a generation config, which would stop the run at its end.
            raise HubtuneError(
                f"recipe key 'generation.length_penalty' is {self.length_penalty}, but it weighs the hypotheses of a "
                "beam search and 'generation.num_beams' is 1 (greedy decoding): set num_beams above 1, or remove "
                "length_penalty"
            )

    def take_training_keys(self, training: dict[str, Any]) -> None:
        """`training.generation_max_length` (in recipes written before this section) is read as `max_new_tokens`,
        hubtune predict's meaning of it; Seq2SeqTrainer read it as a total length with the prompt. It leaves
        `training`, so that the trainer does not pass it to generate() beside the generation config."""
        for key, own in TRAINING_KEYS.items():
            if training.get(key) is not None:
                raise HubtuneError(
                    f"recipe key 'training.{key}' is Seq2SeqTrainer's; a speech-recognition-seq2seq run decodes by "
                    f"the recipe's 'generation' section (evaluation, predict and pipeline() alike): set {own} there"
                )
        limit = training.pop("generation_max_length", None)
        if limit is None:
            return
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise HubtuneError(f"recipe key 'training.generation_max_length' must be int, got {limit!r}")
        if self.max_new_tokens is not None and self.max_new_tokens != limit:
            raise HubtuneError(
                f"recipe keys 'training.generation_max_length' ({limit}) and 'generation.max_new_tokens' "
                f"({self.max_new_tokens}) both set how many tokens a transcript may have; keep max_new_tokens"
            )
        self.max_new_tokens = limit


def language_code(language: str) -> str | None:
    """A Whisper language given as a code ("fr") or a name ("french", "French"), as its code; None if Whisper has
    no such language. transformers' tokenizer and generate() accept both spellings the same way."""
    language = language.lower()
    if language in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[language]
    return language if language in LANGUAGES else None


def unknown_language(language: str, codes: list[str], where: str) -> HubtuneError:
    examples = ", ".join(f"{code} ({LANGUAGES[code]})" if code in LANGUAGES else code for code in codes[:4])
    return HubtuneError(
        f"recipe key 'data.language' is {language!r}, which {where}; give the code or name of one of its "
        f"{len(codes)} languages, such as {examples}"
    )


def is_multilingual(generation: Any) -> bool:
    """A multilingual Whisper's generation config maps language tokens to ids; an English-only one (*.en) has
    none, or says `is_multilingual: false`."""
    return bool(getattr(generation, "lang_to_id", None)) and getattr(generation, "is_multilingual", None) is not False


def prompt_language(generation: Any, language: str | None, task: str, checkpoint: str, training: bool) -> str | None:
    """The language code of the decoder prompt (None for an English-only checkpoint), after the rules that the
    transformers example run_speech_recognition_seq2seq.py applies too: an English-only checkpoint has no language
    or task token, a multilingual one takes a language of its own `lang_to_id`. Training one needs the language;
    a run folder trained without one (by an earlier hubtune) still loads, and generation detects the language."""
    if not is_multilingual(generation):
        for key, value, default in (("data.language", language, None), ("data.whisper_task", task, "transcribe")):
            if value != default:
                raise HubtuneError(
                    f"recipe key '{key}' is {value!r}, but checkpoint '{checkpoint}' is English-only (its generation "
                    "config has no lang_to_id or says is_multilingual: false, as a *.en Whisper's): it has no "
                    f"language or task token; remove the key, or fine-tune a multilingual checkpoint"
                )
        return None
    # In token order, which is Whisper's own order of languages (the file's keys are sorted alphabetically).
    codes = [token.strip("<|>") for token, _ in sorted(generation.lang_to_id.items(), key=lambda item: item[1])]
    if language is None and not training:
        return None
    if language is None:
        # Without it the labels would carry no language token while generation detects one per clip.
        raise HubtuneError(
            f"checkpoint '{checkpoint}' is a multilingual Whisper: set recipe key 'data.language' to the language of "
            f"the transcripts ({', '.join(codes[:4])}, ... or their names), which its decoder prompt carries in "
            "training and generation alike"
        )
    code = language_code(language)
    if code not in codes:
        raise unknown_language(language, codes, f"checkpoint '{checkpoint}' has no token for in its lang_to_id")
    return code


def set_generation(
    model: Any, data: Any, section: WhisperGenerationConfig, checkpoint: str, training: bool = False
) -> None:
    """Write the recipe's decoding into `model.generation_config`: of the model to train (`training`), and of a run
    folder's model, where the recipe decides too, also over a PEFT run's base checkpoint, whose generation config
    is the one loaded."""
    generation = model.generation_config
    code = prompt_language(generation, data.language, data.whisper_task, checkpoint, training)
    if section.return_timestamps and getattr(generation, "no_timestamps_token_id", None) is None:
        raise HubtuneError(
            f"recipe key 'generation.return_timestamps' is true, but the generation config of '{checkpoint}' has no "
            "no_timestamps_token_id, without which Whisper's generate() cannot predict timestamps"
        )
    # The prompt generate() builds: start, language and task (multilingual), <|notimestamps|> without timestamps.
    prompt = 1 + (2 if is_multilingual(generation) else 0) + (0 if section.return_timestamps else 1)
    limit = model.config.max_target_positions
    if section.max_new_tokens is not None and section.max_new_tokens + prompt > limit:
        raise HubtuneError(
            f"recipe key 'generation.max_new_tokens' (or 'training.generation_max_length', read as it) is "
            f"{section.max_new_tokens}, but the Whisper decoder of '{checkpoint}' takes at most {limit} tokens (its "
            f"config's max_target_positions), {prompt} of them its prompt: set {limit - prompt} or less"
        )
    generation.forced_decoder_ids = None  # the language and task go through `language` / `task` instead
    if code:
        generation.language, generation.task = code, data.whisper_task
    generation.num_beams = section.num_beams
    generation.length_penalty = section.length_penalty
    # Unset rather than False: generate() refuses a clip over the 30 s window where the config says False, so
    # pipeline() on the run folder could not transcribe a long recording (it needs timestamp tokens to seek).
    generation.return_timestamps = True if section.return_timestamps else None
    generation.max_new_tokens = section.max_new_tokens or min(DEFAULT_MAX_NEW_TOKENS, limit - prompt)
