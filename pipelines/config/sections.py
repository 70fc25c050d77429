"""The recipe's sections as dataclasses: `model`, `data` (the part every task shares), `hub`, and the recipe.

A task's own data keys live in its `data_config` subclass, with the task, and so do the decoding keys of a task that
generates (its `generation_section` subclass of `GenerationSection`); the `adapt` section lives in
`pipelines.config.adapt` and `training` (TrainingArguments fields, checked against them) in
`pipelines.config.training`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config.adapt import AdaptConfig
from pipelines.config.builder import factory, option
from pipelines.errors import HubtuneError


@dataclass
class ModelConfig:
    checkpoint: str = option(
        "", "a Hub id (org/name, or timm's hf-hub:org/name), a local folder, or a single timm weights file"
    )
    revision: str = option("main", "the Hub revision (branch, tag or commit) of the checkpoint")
    trust_remote_code: bool = option(
        False, "allow a checkpoint's own Python code (its config's auto_map); read that code first"
    )
    from_scratch: bool = option(
        False,
        "same architecture and config as the checkpoint, random weights: the baseline that shows what transfer gains",
    )
    timm_architecture: str | None = option(
        None, "the timm architecture of a single weights file given as 'checkpoint' (e.g. resnet18)"
    )
    architecture: str | None = option(
        None,
        "detection / segmentation: a transformers model type (conditional_detr, deformable_detr, upernet ...) built "
        "new around 'checkpoint' as its ImageNet backbone (a timm checkpoint); null: 'checkpoint' is a whole model",
    )
    attn_implementation: str | None = option(
        None,
        "the attention kernel the model is loaded with: sdpa, eager, flash_attention_2, ...; null: transformers' "
        "default (sdpa where the model has it)",
    )
    config_overrides: dict[str, Any] = factory(
        dict,
        "model-config fields set at load, e.g. {hidden_dropout_prob: 0.2, layerdrop: 0.1, mask_time_prob: 0.05}; "
        "each must be a field of the checkpoint's config",
    )


@dataclass
class DataConfig:
    """Where a run's data comes from and how much of it is used; every task's data section starts with these.

    Each task family adds its own keys in a subclass that lives with the task and checks itself (`validate`);
    a key of another task's section is an error at load.
    """

    dataset: str | None = option(None, "a Hub dataset id; or give 'files'")
    dataset_config: str | None = option(None, "the Hub dataset's configuration name")
    revision: str | None = option(None, "the Hub dataset's revision")
    files: dict[str, str] = factory(
        dict, "split name -> local file or folder (csv, tsv, json, jsonl, parquet, or a task's own formats)"
    )
    train_split: str = option("train", "the split to train on")
    validation_split: str | None = option("validation", "the split to validate on, or null")
    test_split: str | None = option("test", "the split to test on, or null")
    validation_fraction: float | None = option(
        None, "carve this share of train out for validation when there is no validation split"
    )
    max_train_samples: int | None = option(None, "use a random subset of this many training examples")
    max_eval_samples: int | None = option(None, "use a random subset of this many validation examples")
    max_test_samples: int | None = option(None, "use a random subset of this many test examples")
    preprocessing_num_workers: int | None = option(
        None, "processes that preprocess the data (tokenising, checking files); null: one"
    )
    in_memory: dict[str, str] = factory(
        dict,
        "written by Recipe.run(data=...), not read: split name -> what was given in memory (a Dataset's "
        "fingerprint, a DataFrame's or list's rows); a run folder's record that no file holds its data",
    )

    def validate(self) -> None:
        """Raise HubtuneError naming the key when a value cannot work; subclasses add their keys' rules."""
        if self.dataset and self.files:
            raise HubtuneError("recipe section 'data' has both 'dataset' and 'files'; keep one")
        if self.in_memory and (self.dataset or self.files):
            raise HubtuneError(
                "recipe key 'data.in_memory' records data that was given to Recipe.run(data=...) instead of "
                f"'data.{'files' if self.files else 'dataset'}'; remove one of them"
            )
        if self.validation_fraction is not None and not 0.0 < self.validation_fraction < 1.0:
            raise HubtuneError(
                f"recipe key 'data.validation_fraction' must lie in (0, 1), got {self.validation_fraction}"
            )
        for key in ("max_train_samples", "max_eval_samples", "max_test_samples", "preprocessing_num_workers"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise HubtuneError(f"recipe key 'data.{key}' must be at least 1 (or null), got {value}")

    def check_source(self) -> None:
        """The section names data to read: checked where it is read, not at load, since `Recipe.run(data=...)`
        takes the place of 'dataset' and 'files' (a recipe loaded for it has neither)."""
        if self.dataset or self.files:
            return
        if self.in_memory:
            given = "; ".join(f"{split}: {what}" for split, what in self.in_memory.items())
            raise HubtuneError(
                "recipe section 'data' has no 'dataset' or 'files' to read: its run was trained on data given to "
                f"Recipe.run(data=...) ({given}), which no file holds; give 'data.files' or 'data.dataset' instead "
                "of 'data.in_memory'"
            )
        raise HubtuneError(
            "recipe section 'data' needs 'dataset' (a Hub id) or 'files' (split -> local file), or data given to "
            "Recipe.run(data=...)"
        )

    def check_recipe(self, recipe: RecipeConfig) -> None:
        """Rules that tie this section's keys to the recipe's other sections (run after every section's own)."""

    def is_streamed(self) -> bool:
        """Whether the splits are read as streams (`data.streaming`, for the tasks that take it)."""
        return False

    def packs_sequences(self) -> bool:
        """Whether training batches pack several sequences without padding (`data.padding_free`)."""
        return False

    def stratify_column(self) -> str | None:
        """The column whose classes a carved-out validation split keeps in proportion (none by default)."""
        return None


@dataclass
class GenerationSection:
    """How a task that generates its predictions decodes: the recipe's `generation` section.

    The keys live in a subclass owned by the task (`Task.generation_section`), which checks itself; a task that
    does not generate has no such section, and a recipe that gives one is an error.
    """

    def validate(self) -> None:
        """Raise HubtuneError naming the key when a value cannot work; subclasses add their keys' rules."""

    def take_training_keys(self, training: dict[str, Any]) -> None:
        """Move the `training` keys that say the same as this section's (Seq2SeqTrainingArguments' `generation_*`)
        into it, so that one place decides how the model decodes; a contradiction is an error naming both."""


# A Hub license identifier (apache-2.0, mit, cc-by-nc-4.0, llama3.1, openrail++, other, ...) and a language code
# (ISO 639-1/2/3, with optional subtags: en, fra, pt-BR), or one of the Hub's special language values.
LICENSE_PATTERN = re.compile(r"[a-z0-9][a-z0-9.+-]*")
LANGUAGE_PATTERN = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")
SPECIAL_LANGUAGES = ("code", "multilingual")


@dataclass
class HubConfig:
    push: bool = option(False, "push the finished run folder with its model card to the Hub")
    repo_id: str | None = option(None, "the Hub repository to push to (org/name)")
    private: bool = option(True, "create the repository as private")
    license: str | None = option(
        None,
        "the model card's license, a Hub license identifier (apache-2.0, mit, other, ...); null: the base model's "
        "own (from its card), or none",
    )
    language: str | list[str] | None = option(
        None, "the model card's language: an ISO 639 code (en) or a list of them ([en, fr]); null: none"
    )

    def validate(self) -> None:
        if self.push and not self.repo_id:
            raise HubtuneError("'hub.push' is true but 'hub.repo_id' is not set")
        if self.license is not None and not LICENSE_PATTERN.fullmatch(self.license):
            raise HubtuneError(
                f"recipe key 'hub.license' must be a Hub license identifier such as apache-2.0, mit or other, got "
                f"{self.license!r}"
            )
        for code in self.languages:
            if code not in SPECIAL_LANGUAGES and not LANGUAGE_PATTERN.fullmatch(code):
                raise HubtuneError(
                    f"recipe key 'hub.language' takes ISO 639 language codes (en, fr, pt-BR) or a list of them, "
                    f"got {code!r}"
                )

    @property
    def languages(self) -> list[str]:
        """`language` as a list (empty when unset)."""
        return [self.language] if isinstance(self.language, str) else list(self.language or [])


@dataclass
class RecipeConfig:
    """A whole recipe, typed and validated: built by `load_recipe_config`, written to a run folder's recipe.yaml."""

    name: str = option("", "the run's name; the run folder is runs/<name> unless 'output_dir' says otherwise")
    task: str = option("text-classification", "the task; its data keys are listed by `hubtune recipe-keys TASK`")
    plugins: list[str] = factory(
        list,
        "modules to import when the recipe loads, before its task and strategy are looked up: a module that "
        "registers a task or strategy of its own (register_task, register_strategy) makes it a recipe value",
    )
    seed: int = option(42, "the seed of weights, data order and subsets")
    output_dir: str | None = option(None, "the run folder; default runs/<name>")
    overwrite: bool = option(
        False, "replace an existing run folder that hubtune wrote (swapped in once the new run has finished)"
    )
    model: ModelConfig = factory(ModelConfig, "the checkpoint")
    data: DataConfig = factory(DataConfig, "the data; its keys depend on the task")
    adapt: AdaptConfig = factory(AdaptConfig, "how the checkpoint is adapted")
    generation: GenerationSection | None = option(
        None, "how a generating task's model decodes (speech-recognition-seq2seq); other tasks have no such section"
    )
    training: dict[str, Any] = factory(
        dict,
        "TrainingArguments fields, plus 'resume' and 'speed_defaults' (true: bf16 or fp16, TF32 and dataloader "
        "workers on a CUDA GPU, bf16 on a CPU with AMX, each overridden by its own key)",
    )
    hub: HubConfig = factory(HubConfig, "pushing the finished run to the Hub")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if values["generation"] is None:  # a task that does not generate: its recipe has no such section
            del values["generation"]
        return values

    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name
