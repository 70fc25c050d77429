"""Typed recipe config: YAML plus dotted `key=value` overrides, validated once at load.

A recipe has the sections `model`, `data`, `adapt`, `training` and `hub`. Each section is a dataclass;
`training` is passed through to `transformers.TrainingArguments`, whose field names it is checked against.
Every unknown or mistyped key is an error that names the key and the closest valid one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import HubtuneError

ADAPT_STRATEGIES = ("full", "freeze_backbone", "train_last_n", "lora", "peft", "lp_ft")
# Strategies that train a PEFT adapter (the run folder holds the adapter and the head, not full weights).
ADAPTER_STRATEGIES = ("lora", "peft")
# The `adapt.peft` keys each method takes besides `method` and `target_modules`, as the field of PEFT's own
# config class (LoraConfig, IA3Config, LoHaConfig, LoKrConfig) each one sets.
PEFT_METHOD_KEYS: dict[str, dict[str, str]] = {
    "lora": {
        "r": "r",
        "alpha": "lora_alpha",
        "dropout": "lora_dropout",
        "use_dora": "use_dora",
        "use_rslora": "use_rslora",
    },
    "ia3": {"feedforward_modules": "feedforward_modules"},
    "loha": {"r": "r", "alpha": "alpha"},
    "lokr": {"r": "r", "alpha": "alpha"},
}
# QLoRA: a base model quantized by bitsandbytes, a LoRA adapter over it.
PEFT_QUANTIZE = ("4bit",)
UNFREEZE_UNITS = ("epoch", "step")


class RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: `no`/`yes`/`on`/`off` stay strings and `1e-4` is a float.

    PyYAML follows YAML 1.1, where `eval_strategy: no` reads as False and `learning_rate: 1e-4` as a string.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=RecipeLoader)


def read_recipe_yaml(text: str) -> tuple[Any, tuple[str, int, int] | None]:
    """The recipe's values and its first repeated key (`duplicate_key`), from one parse of the text."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), duplicate_key(node)
    finally:
        loader.dispose()


def duplicate_key(node: yaml.Node | None, path: tuple[str, ...] = ()) -> tuple[str, int, int] | None:
    """The first key that a YAML mapping repeats, as (dotted path, first line, second line); PyYAML itself keeps
    the last value without a word."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in lines and key != "<<":
                return ".".join((*path, key)), lines[key], line
            lines[key] = line
            found = duplicate_key(value_node, (*path, key))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = duplicate_key(item, (*path[:-1], f"{path[-1] if path else ''}[{index}]"))
            if found:
                return found
    return None


def require_one_of(key: str, value: Any, choices: typing.Sequence[str]) -> None:
    """`value` of recipe key `key` must be one of `choices`."""
    if value not in choices:
        raise HubtuneError(f"recipe key '{key}' must be one of {', '.join(choices)}, got {value!r}")


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config field with its help text, which `hubtune recipe-keys TASK` prints."""
    return field(default=default, metadata={"help": help}, **kwargs)


def factory(make: Any, help: str) -> Any:
    return field(default_factory=make, metadata={"help": help})


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

    def validate(self) -> None:
        """Raise HubtuneError naming the key when a value cannot work; subclasses add their keys' rules."""
        if not self.dataset and not self.files:
            raise HubtuneError("recipe section 'data' needs 'dataset' (a Hub id) or 'files' (split -> local file)")
        if self.dataset and self.files:
            raise HubtuneError("recipe section 'data' has both 'dataset' and 'files'; keep one")
        if self.validation_fraction is not None and not 0.0 < self.validation_fraction < 1.0:
            raise HubtuneError(
                f"recipe key 'data.validation_fraction' must lie in (0, 1), got {self.validation_fraction}"
            )
        for key in ("max_train_samples", "max_eval_samples", "max_test_samples", "preprocessing_num_workers"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise HubtuneError(f"recipe key 'data.{key}' must be at least 1 (or null), got {value}")


PROBLEM_TYPES = ("single_label", "multi_label", "regression")
SAMPLERS = ("balanced",)


@dataclass
class LabelledDataConfig(DataConfig):
    """Data with a label per example (text, image and audio classification): one class, a set of classes, or a
    number (`problem_type`)."""

    label_column: str = option(
        "label",
        "the column of labels: class names, or integer ids with 'labels'; multi_label: a list of them (or a "
        "string split at 'label_separator'); regression: a number",
    )
    labels: list[str] | None = option(None, "label names in id order; read from the data when absent")
    problem_type: str = option(
        "single_label",
        "single_label (one class per example, cross-entropy), multi_label (any number of classes, binary "
        "cross-entropy per class) or regression (one number, mean squared error)",
    )
    label_separator: str | None = option(
        None, "multi_label: labels written as one string, split at this separator (e.g. '|'); null: a list column"
    )
    threshold: float = option(0.5, "multi_label: a class is predicted when its probability reaches this")
    tune_thresholds: bool = option(
        False,
        "multi_label: after training, give each class the threshold with the best F1 on the validation split; the "
        "test scores and predict use them (kept in the run folder's config.json)",
    )
    scale_targets: bool = option(
        False,
        "regression: train on targets standardised with the training mean and std (kept in the run folder's "
        "config.json); predictions are given back in the data's units",
    )
    sampler: str | None = option(
        None,
        "balanced: draw training examples with probability inversely proportional to their class's frequency "
        "(single_label); null: uniform",
    )

    def validate(self) -> None:
        super().validate()
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise HubtuneError(f"recipe key 'data.labels' repeats a label: {self.labels}")
        require_one_of("data.problem_type", self.problem_type, PROBLEM_TYPES)
        if self.sampler is not None:
            require_one_of("data.sampler", self.sampler, SAMPLERS)
            if self.problem_type != "single_label":
                raise HubtuneError(
                    f"recipe key 'data.sampler: {self.sampler}' balances classes of single-label data; "
                    f"'data.problem_type' is {self.problem_type}"
                )
        if self.label_separator is not None and self.problem_type != "multi_label":
            raise HubtuneError("recipe key 'data.label_separator' needs 'data.problem_type: multi_label'")
        if self.label_separator == "":
            raise HubtuneError("recipe key 'data.label_separator' must not be empty")
        if not 0.0 < self.threshold < 1.0:
            raise HubtuneError(f"recipe key 'data.threshold' must lie in (0, 1), got {self.threshold}")
        if self.tune_thresholds and self.problem_type != "multi_label":
            raise HubtuneError("recipe key 'data.tune_thresholds' needs 'data.problem_type: multi_label'")
        if self.tune_thresholds and self.validation_split is None and self.validation_fraction is None:
            raise HubtuneError(
                "recipe key 'data.tune_thresholds' tunes on the validation split: set 'data.validation_split' "
                "or 'data.validation_fraction'"
            )
        if self.scale_targets and self.problem_type != "regression":
            raise HubtuneError("recipe key 'data.scale_targets' needs 'data.problem_type: regression'")
        if self.labels is not None and self.problem_type == "regression":
            raise HubtuneError("recipe key 'data.labels' names classes; regression ('data.problem_type') has none")


@dataclass
class StreamingDataConfig(DataConfig):
    """Data a task can read as a stream (text and token classification): tokenised per batch as training reads it."""

    streaming: bool = option(
        False,
        "read the splits as streams (datasets' IterableDataset) instead of preparing them up front: for data "
        "larger than memory or disk; needs training.max_steps and the label names in data.labels",
    )

    def validate(self) -> None:
        super().validate()
        if self.streaming and self.validation_fraction is not None:
            raise HubtuneError(
                "'data.validation_fraction' draws rows at random from all of train, which a stream cannot do; "
                "with 'data.streaming' give a validation split"
            )


@dataclass
class LoraConfig:
    r: int = option(8, "the rank of the LoRA matrices")
    alpha: int = option(16, "LoRA's scaling numerator (the update is scaled by alpha / r)")
    dropout: float = option(0.1, "dropout on the LoRA branch")
    target_modules: list[str] | None = option(None, "module names to adapt; null: PEFT's default for the architecture")


@dataclass
class PeftConfig:
    """One PEFT method and its settings (strategy peft); a key the method does not take is an error at load.

    Unset (null) keys take PEFT's own default for the method.
    """

    method: str = option("lora", "lora (with use_dora: DoRA, use_rslora: rsLoRA), ia3, loha or lokr")
    r: int | None = option(None, "the adapter's rank (lora, loha, lokr)")
    alpha: int | None = option(None, "the scaling numerator: the update is scaled by alpha / r (lora, loha, lokr)")
    dropout: float | None = option(None, "dropout on the adapter's input (lora)")
    target_modules: list[str] | None = option(None, "module names to adapt; null: PEFT's default for the architecture")
    use_dora: bool | None = option(None, "DoRA: a trained magnitude per output next to the LoRA direction (lora)")
    use_rslora: bool | None = option(None, "rsLoRA: scale the update by alpha / sqrt(r) instead of alpha / r (lora)")
    feedforward_modules: list[str] | None = option(
        None, "the target modules IA3 scales at their input rather than their output; a subset of target_modules (ia3)"
    )
    quantize: str | None = option(
        None, "4bit: QLoRA, the frozen base loaded in 4 bits by bitsandbytes (lora; needs a CUDA GPU)"
    )


@dataclass
class UnfreezeScheduleConfig:
    """When each layer group starts training (its learning rate is zero before)."""

    unit: str = option("epoch", "the unit of 'every' and 'at': epoch or step")
    every: float | None = option(
        None, "ULMFiT top-down: the head first, then one more group from the top every this many units"
    )
    at: dict[str, float] = factory(dict, "explicit starts: group name or glob (block.*) -> start")


@dataclass
class LpFtConfig:
    """LP-FT: a linear probe (head only), then fine-tuning from the probed head."""

    probe_epochs: float = option(1.0, "epochs of the linear probe")
    probe_learning_rate: float = option(1e-3, "the linear probe's learning rate")
    then: str = option("full", "the fine-tuning stage's strategy: full, or train_last_n (with adapt.n)")


@dataclass
class AdaptConfig:
    strategy: str = option("full", "full, freeze_backbone, train_last_n, lora, peft or lp_ft")
    n: int = option(2, "blocks left trainable by train_last_n, counted from the top")
    lora: LoraConfig = factory(LoraConfig, "LoRA settings (strategy lora)")
    peft: PeftConfig | None = option(
        None, "the PEFT method and its settings (strategy peft): lora, DoRA, rsLoRA, QLoRA, ia3, loha, lokr"
    )
    layer_decay: float | None = option(
        None, "a group's LR = base LR x decay^(levels below the head), as BEiT, ELECTRA and timm"
    )
    head_lr_scale: float = option(1.0, "the head's LR multiplier")
    unfreeze_schedule: UnfreezeScheduleConfig | None = option(
        None, "gradual unfreezing: when each layer group starts training"
    )
    lp_ft: LpFtConfig = factory(LpFtConfig, "LP-FT settings (strategy lp_ft)")
    feature_cache: bool = option(
        False, "freeze_backbone only: compute the frozen backbone's features once and train the head on them"
    )
    feature_cache_dir: str | None = option(None, "where cached features go; default ~/.cache/hubtune/features")
    freeze_feature_encoder: bool = option(
        True,
        "speech: keep the convolutional feature encoder of wav2vec2-family models frozen (ignored by other models)",
    )

    def adapter(self) -> PeftConfig:
        """The PEFT method an adapter strategy trains: `adapt.peft`, or `adapt.lora` for strategy lora."""
        if self.strategy == "lora":
            lora = self.lora
            return PeftConfig("lora", lora.r, lora.alpha, lora.dropout, lora.target_modules)
        return self.peft or PeftConfig()


@dataclass
class HubConfig:
    push: bool = option(False, "push the finished run folder with its model card to the Hub")
    repo_id: str | None = option(None, "the Hub repository to push to (org/name)")
    private: bool = option(True, "create the repository as private")


# `training.optim` values whose optimizers take the whole model (GaLore, APOLLO) or update inside backward
# (LOMO) instead of taking param groups: they cannot carry hubtune's per-layer-group learning rates.
WHOLE_MODEL_OPTIMIZERS = ("galore_", "apollo_", "lomo", "adalomo")

# Keys of `training` that hubtune handles itself rather than passing to TrainingArguments.
# hubtune's own keys in the `training` section (not TrainingArguments fields), with the type each takes.
HUBTUNE_TRAINING_TYPES: dict[str, Any] = {
    "resume": bool,
    "gpu_defaults": bool,
    "early_stopping_patience": int,  # evaluations without improvement before training stops
    "early_stopping_threshold": float,  # how much the metric must improve to count
    "class_weights": str | list,  # `balanced`, or one weight per class in id order (weighted cross-entropy)
}
HUBTUNE_TRAINING_KEYS = set(HUBTUNE_TRAINING_TYPES)

# Defaults that differ from TrainingArguments' own, chosen for fine-tuning a pretrained encoder.
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "num_train_epochs": 3,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 10,
    # A sequence or token classifier under DDP logs doubled losses and gets doubled gradients with the
    # default True (docs/platform-notes.md); per-device averaging is the correct choice for these tasks.
    "average_tokens_across_devices": False,
    # Every trainable parameter of these models takes part in each forward; the search costs a graph walk.
    "ddp_find_unused_parameters": False,
}


@dataclass
class RecipeConfig:
    name: str = option("", "the run's name; the run folder is runs/<name> unless 'output_dir' says otherwise")
    task: str = option("text-classification", "the task; its data keys are listed by `hubtune recipe-keys TASK`")
    seed: int = option(42, "the seed of weights, data order and subsets")
    output_dir: str | None = option(None, "the run folder; default runs/<name>")
    overwrite: bool = option(
        False, "replace an existing run folder that hubtune wrote (swapped in once the new run has finished)"
    )
    model: ModelConfig = factory(ModelConfig, "the checkpoint")
    data: DataConfig = factory(DataConfig, "the data; its keys depend on the task")
    adapt: AdaptConfig = factory(AdaptConfig, "how the checkpoint is adapted")
    training: dict[str, Any] = factory(
        dict,
        "TrainingArguments fields, plus 'resume' and 'gpu_defaults' (true: bf16 or fp16, TF32, length-grouped "
        "batches and dataloader workers on a CUDA GPU, each overridden by its own key)",
    )
    hub: HubConfig = factory(HubConfig, "pushing the finished run to the Hub")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


def closest(key: str, valid: typing.Iterable[str], prefix: str = "", noun: str = "keys") -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if match:
        return f"; did you mean '{prefix}{match[0]}'?"
    return f"; valid {noun}: {', '.join(sorted(valid))}"


def _training_argument_types() -> dict[str, Any]:
    # Seq2SeqTrainingArguments is TrainingArguments plus the generation fields sequence-to-sequence tasks use.
    from transformers import Seq2SeqTrainingArguments

    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init}


def _fits_training_type(value: Any, annotation: Any) -> bool:
    """Does `value` fit the type of a TrainingArguments field?"""
    if annotation is Any or value is None:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_fits_training_type(value, member) for member in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin is not None:
        return isinstance(value, origin)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {member.value for member in annotation} or isinstance(value, annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check and convert one YAML value against a dataclass field type, naming `where` on failure."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise HubtuneError(f"recipe key '{where}' must be a mapping, got {value!r}")
        return _build(annotation, value, where + ".")
    if origin is list:
        if not isinstance(value, list):
            raise HubtuneError(f"recipe key '{where}' must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise HubtuneError(f"recipe key '{where}' must be a mapping, got {value!r}")
        return {str(k): v if args[1] is Any else _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise HubtuneError(f"recipe key '{where}' must be true or false, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str) and (not isinstance(value, annotation) or isinstance(value, bool)):
        raise HubtuneError(f"recipe key '{where}' must be {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise HubtuneError(f"unknown recipe key '{prefix}{key}'{closest(key, names, prefix)}")
    return cls(**{key: _coerce(value, hints[key], prefix + key) for key, value in values.items()})


def _validate_adapt(adapt: AdaptConfig, from_scratch: bool) -> None:
    if adapt.strategy not in ADAPT_STRATEGIES:
        raise HubtuneError(
            f"unknown adapt strategy '{adapt.strategy}' in 'adapt.strategy'"
            f"{closest(adapt.strategy, ADAPT_STRATEGIES, noun='strategies')}"
        )
    if adapt.strategy in ADAPTER_STRATEGIES and from_scratch:
        raise HubtuneError(
            f"'adapt.strategy: {adapt.strategy}' needs pretrained weights; it cannot be combined with "
            "'model.from_scratch'"
        )
    if adapt.peft is not None and adapt.strategy != "peft":
        raise HubtuneError(f"recipe section 'adapt.peft' needs 'adapt.strategy: peft', not '{adapt.strategy}'")
    if adapt.strategy == "peft":
        if adapt.lora != LoraConfig():
            raise HubtuneError(
                "recipe section 'adapt.lora' belongs to 'adapt.strategy: lora'; with peft set 'adapt.peft' "
                "(method: lora, r, alpha, dropout, target_modules)"
            )
        _validate_peft(adapt.adapter())
    if adapt.layer_decay is not None and not 0.0 < adapt.layer_decay <= 1.0:
        raise HubtuneError(f"recipe key 'adapt.layer_decay' must lie in (0, 1], got {adapt.layer_decay}")
    if adapt.head_lr_scale <= 0:
        raise HubtuneError(f"recipe key 'adapt.head_lr_scale' must be positive, got {adapt.head_lr_scale}")
    schedule = adapt.unfreeze_schedule
    if schedule is not None:
        if schedule.unit not in UNFREEZE_UNITS:
            raise HubtuneError(
                f"recipe key 'adapt.unfreeze_schedule.unit' must be epoch or step, got '{schedule.unit}'"
            )
        if (schedule.every is None) == (not schedule.at):
            raise HubtuneError("recipe section 'adapt.unfreeze_schedule' needs exactly one of 'every' and 'at'")
        if schedule.every is not None and schedule.every <= 0:
            raise HubtuneError(f"recipe key 'adapt.unfreeze_schedule.every' must be positive, got {schedule.every}")
        if adapt.strategy in (*ADAPTER_STRATEGIES, "lp_ft"):
            raise HubtuneError(f"'adapt.unfreeze_schedule' gates layer groups; it does not apply to '{adapt.strategy}'")
    if adapt.feature_cache and adapt.strategy != "freeze_backbone":
        raise HubtuneError(f"'adapt.feature_cache' needs 'adapt.strategy: freeze_backbone', not '{adapt.strategy}'")
    if adapt.strategy == "lp_ft" and adapt.lp_ft.then not in ("full", "train_last_n"):
        raise HubtuneError(f"recipe key 'adapt.lp_ft.then' must be full or train_last_n, got '{adapt.lp_ft.then}'")
    if adapt.strategy == "train_last_n" and adapt.n < 1:
        raise HubtuneError(f"recipe key 'adapt.n' must be at least 1 for train_last_n, got {adapt.n}")


def _validate_peft(settings: PeftConfig) -> None:
    require_one_of("adapt.peft.method", settings.method, tuple(PEFT_METHOD_KEYS))
    taken = {"method", "target_modules", *PEFT_METHOD_KEYS[settings.method]}
    if settings.method == "lora":
        taken.add("quantize")
    for key in (f.name for f in dataclasses.fields(settings)):
        if key not in taken and getattr(settings, key) is not None:
            raise HubtuneError(
                f"recipe key 'adapt.peft.{key}' does not apply to method '{settings.method}' "
                f"('adapt.peft.method'); it takes {', '.join(sorted(taken - {'method'}))}"
            )
    if settings.r is not None and settings.r < 1:
        raise HubtuneError(f"recipe key 'adapt.peft.r' must be at least 1, got {settings.r}")
    if settings.alpha is not None and settings.alpha <= 0:
        raise HubtuneError(f"recipe key 'adapt.peft.alpha' must be positive, got {settings.alpha}")
    if settings.dropout is not None and not 0.0 <= settings.dropout < 1.0:
        raise HubtuneError(f"recipe key 'adapt.peft.dropout' must lie in [0, 1), got {settings.dropout}")
    if settings.feedforward_modules is not None:
        outside = sorted(set(settings.feedforward_modules) - set(settings.target_modules or ()))
        if outside:
            raise HubtuneError(
                f"recipe key 'adapt.peft.feedforward_modules' names {', '.join(outside)}, which "
                "'adapt.peft.target_modules' does not: IA3 scales only the modules it targets"
            )
    if settings.quantize is not None:
        require_one_of("adapt.peft.quantize", settings.quantize, PEFT_QUANTIZE)
        _check_quantization_backend()


def _check_quantization_backend() -> None:
    """bitsandbytes' 4-bit layers run on CUDA only: refuse at load, not at the first forward."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        missing = "a CUDA GPU" if not torch.cuda.is_available() else "the bitsandbytes package"
        raise HubtuneError(
            "recipe key 'adapt.peft.quantize: 4bit' (QLoRA) needs a CUDA GPU and bitsandbytes; "
            f"this machine lacks {missing}"
        )


def _validate_training(training: dict[str, Any]) -> None:
    if training.get("push_to_hub"):
        raise HubtuneError("use 'hub.push' (pushes the finished run folder), not 'training.push_to_hub'")
    types = _training_argument_types()
    valid = set(types) | HUBTUNE_TRAINING_KEYS
    for key, value in training.items():
        if key not in valid:
            raise HubtuneError(f"unknown recipe key 'training.{key}'{closest(key, valid, 'training.')}")
        if key == "output_dir":
            raise HubtuneError(
                "set the run folder with the top-level recipe key 'output_dir', not 'training.output_dir'"
            )
        if key in types and not _fits_training_type(value, types[key]):
            expected = getattr(types[key], "__name__", str(types[key]).replace("typing.", ""))
            raise HubtuneError(f"recipe key 'training.{key}' must be {expected}, got {value!r}")
    for key, kind in HUBTUNE_TRAINING_TYPES.items():
        if key in training and not _fits_training_type(training[key], kind):
            expected = "true or false" if kind is bool else kind.__name__
            raise HubtuneError(f"recipe key 'training.{key}' must be {expected}, got {training[key]!r}")
    _check_training_values(training)
    _check_class_weights(training)
    _check_early_stopping(training)
    _check_optimizer(training)


def _validate(config: RecipeConfig) -> None:
    if not config.name:
        raise HubtuneError("recipe key 'name' is required")
    if config.name in (".", "..") or any(separator in config.name for separator in "/\\"):
        raise HubtuneError(
            f"recipe key 'name' must be a plain folder name (the run goes to runs/<name>), got "
            f"{config.name!r}; set 'output_dir' to put the run elsewhere"
        )
    if not config.model.checkpoint:
        raise HubtuneError("recipe key 'model.checkpoint' is required (a Hub id or a local folder)")
    _validate_adapt(config.adapt, config.model.from_scratch)
    _check_architecture(config)
    _check_feature_cache(config)
    config.data.validate()
    if config.hub.push and not config.hub.repo_id:
        raise HubtuneError("'hub.push' is true but 'hub.repo_id' is not set")
    _validate_training(config.training)
    _check_problem_type(config)
    if getattr(config.data, "streaming", False):
        if config.training.get("max_steps", -1) in (-1, None):
            raise HubtuneError(
                "'data.streaming' needs 'training.max_steps': a stream has no length, so epochs cannot be counted"
            )
        if config.adapt.feature_cache:
            raise HubtuneError("'adapt.feature_cache' stores features of every example, which a stream does not have")
    if getattr(config.data, "padding_free", False) and config.adapt.feature_cache:
        raise HubtuneError(
            "'data.padding_free' packs token sequences, but 'adapt.feature_cache' trains on cached features; keep one"
        )


def _check_feature_cache(config: RecipeConfig) -> None:
    from pipelines.tasks import get_task  # the task classes import transformers: only when loading

    if config.adapt.feature_cache and not get_task(config.task).caches_features:
        raise HubtuneError(
            f"'adapt.feature_cache' stores one backbone output per example for a classifier head; a {config.task} "
            "model's decoder reads feature maps of every stage, so it cannot train on them: remove the key"
        )


def _check_architecture(config: RecipeConfig) -> None:
    from pipelines.tasks import get_task  # the task classes import transformers: only when loading

    if config.model.architecture and not get_task(config.task).builds_on_backbone:
        raise HubtuneError(
            f"recipe key 'model.architecture' builds a detection or segmentation model around a backbone; task "
            f"'{config.task}' loads 'model.checkpoint' whole: remove the key"
        )
    if config.model.architecture and config.adapt.strategy in ADAPTER_STRATEGIES:
        # A run folder of an adapter names its base by `model.checkpoint`, which here holds only the backbone's
        # weights under timm's names: a reload would start from a random backbone and predict garbage.
        raise HubtuneError(
            f"recipe key 'adapt.strategy: {config.adapt.strategy}' saves an adapter over 'model.checkpoint', which "
            "with 'model.architecture' is only the backbone, so the run could not be reloaded; use full, "
            "freeze_backbone or train_last_n"
        )


def _check_problem_type(config: RecipeConfig) -> None:
    """Keys whose meaning depends on the task and on `data.problem_type`, checked together."""
    from pipelines.tasks import get_task  # the task classes import transformers: only when loading

    problem_type = getattr(config.data, "problem_type", "single_label")
    if config.training.get("class_weights") is not None:
        if not get_task(config.task).class_weighted_loss:
            raise HubtuneError(
                f"recipe key 'training.class_weights' weights the classes of a classifier; task '{config.task}' has none"
            )
        if problem_type != "single_label":
            raise HubtuneError(
                "recipe key 'training.class_weights' weights a cross-entropy over classes; 'data.problem_type' "
                f"{problem_type} trains another loss"
            )
    if getattr(config.data, "streaming", False):
        if problem_type != "single_label":
            raise HubtuneError(f"'data.streaming' reads single_label data; 'data.problem_type' is {problem_type}")
        if getattr(config.data, "sampler", None) is not None:
            raise HubtuneError("'data.sampler' draws examples by index, which a stream ('data.streaming') has not")
        if config.training.get("class_weights") == "balanced":
            raise HubtuneError(
                "'training.class_weights: balanced' counts the training labels, which a stream ('data.streaming') is "
                "not read ahead for; give a list of weights"
            )


def _check_training_values(training: dict[str, Any]) -> None:
    """Values TrainingArguments accepts but that fail later (a zero batch size in the first step, an evaluation
    batch size at the end of the first epoch) or train nothing (zero epochs): refused at load instead."""

    def number(key: str, default: float) -> float:
        value = training.get(key, default)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    def refuse(key: str, rule: str) -> None:
        raise HubtuneError(f"recipe key 'training.{key}' must be {rule}, got {training[key]!r}")

    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if number(key, 1) < 1:
            refuse(key, "at least 1")
    max_steps = number("max_steps", -1)
    if max_steps == 0 or max_steps < -1:
        refuse("max_steps", "positive (or -1 to train for 'num_train_epochs')")
    if max_steps == -1 and number("num_train_epochs", 1) <= 0:
        refuse("num_train_epochs", "positive (the run would train nothing)")
    if number("learning_rate", 1) <= 0:
        refuse("learning_rate", "positive")
    for key in ("warmup_steps", "weight_decay"):
        if number(key, 0) < 0:
            refuse(key, "at least 0")
    if number("save_total_limit", 1) < 1:
        refuse("save_total_limit", "at least 1 (or null to keep every checkpoint)")
    for key in ("logging_steps", "eval_steps", "save_steps"):
        if number(key, 1) <= 0:
            refuse(key, "positive")


def _check_class_weights(training: dict[str, Any]) -> None:
    """`balanced` or a list of positive numbers; the list's length is checked against the label set at prepare."""
    weights = training.get("class_weights")
    if weights is None or weights == "balanced":
        return
    if not isinstance(weights, list) or not weights:
        raise HubtuneError(
            f"recipe key 'training.class_weights' must be balanced or a list of weights (one per class), got {weights!r}"
        )
    for i, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise HubtuneError(f"recipe key 'training.class_weights[{i}]' must be a number >= 0, got {weight!r}")


def _check_early_stopping(training: dict[str, Any]) -> None:
    """Early stopping judges evaluations by one metric and keeps the best checkpoint: both must be there."""
    patience = training.get("early_stopping_patience")
    if patience is None:
        if training.get("early_stopping_threshold") is not None:
            raise HubtuneError("'training.early_stopping_threshold' needs 'training.early_stopping_patience'")
        return
    if patience < 1:
        raise HubtuneError(f"recipe key 'training.early_stopping_patience' must be at least 1, got {patience}")
    if (training.get("early_stopping_threshold") or 0.0) < 0:
        raise HubtuneError("recipe key 'training.early_stopping_threshold' must be at least 0")
    evaluation = training.get("eval_strategy", TRAINING_DEFAULTS["eval_strategy"])
    if evaluation == "no":
        raise HubtuneError("'training.early_stopping_patience' needs evaluations: set 'training.eval_strategy'")
    if not training.get("metric_for_best_model"):
        raise HubtuneError(
            "'training.early_stopping_patience' needs the metric it watches: set 'training.metric_for_best_model' "
            "(e.g. accuracy, f1_macro, loss; 'greater_is_better' follows from it)"
        )
    if training.get("load_best_model_at_end") is False:
        raise HubtuneError(
            "'training.early_stopping_patience' keeps the best checkpoint as the run's model; "
            "'training.load_best_model_at_end: false' contradicts it"
        )
    saving = training.get("save_strategy", TRAINING_DEFAULTS["save_strategy"])
    if saving != evaluation:
        raise HubtuneError(
            f"'training.early_stopping_patience' keeps the best evaluated checkpoint, so 'training.save_strategy' "
            f"({saving}) must equal 'training.eval_strategy' ({evaluation})"
        )


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise HubtuneError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value), the value read as YAML so `3`, `true`, `[q, v]` get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise HubtuneError(f"override '{text}' is not of the form key=value")
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise HubtuneError(f"override '{text}': value does not parse as YAML ({error})") from error
    return key.strip(), value


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """A recipe file's values as written, unvalidated (the mapping `load_recipe_config` starts from)."""
    path = Path(path)
    if path.is_dir():
        raise HubtuneError(f"recipe '{path}' is a directory, not a YAML file")
    if not path.is_file():
        raise HubtuneError(f"recipe file '{path}' does not exist")
    text = path.read_text()
    try:
        tree, repeated = read_recipe_yaml(text)
        tree = tree or {}
    except yaml.YAMLError as error:
        raise HubtuneError(f"recipe file '{path}' does not parse as YAML: {error}") from error
    if repeated:
        key, first, second = repeated
        raise HubtuneError(f"recipe file '{path}' sets '{key}' twice (lines {first} and {second}); keep one")
    if not isinstance(tree, dict):
        raise HubtuneError(f"recipe file '{path}' must hold a mapping of sections, not {type(tree).__name__}")
    return tree


def apply_overrides(tree: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """A copy of `tree` with dotted `key=value` overrides set; the caller's nested dicts are not written into."""
    tree = copy.deepcopy(tree)
    for override in overrides:
        key, value = parse_override(override)
        set_dotted(tree, key, value)
    return tree


def load_recipe_config(
    path: str | Path | None = None, overrides: typing.Sequence[str] = (), values: dict[str, Any] | None = None
) -> RecipeConfig:
    """Read a recipe from YAML (or a dict), apply overrides, validate. Raises HubtuneError naming the key."""
    tree: dict[str, Any] = read_recipe_file(path) if path is not None else {}
    if values:
        tree = {**tree, **values}
    tree = apply_overrides(tree, overrides)
    if "search" in tree:
        # A search section holds ranges, not values: training it with its base values alone would look like a
        # search that ran. Only `hubtune search` reads it (pipelines.runner.search); it writes a trainable best recipe.
        raise HubtuneError(
            "recipe section 'search' holds ranges for `hubtune search RECIPE`; to train one set of values, "
            "train the best_recipe.yaml that a search writes, or remove the section"
        )
    training = {**TRAINING_DEFAULTS, **(tree.pop("training", None) or {})}
    data = tree.pop("data", None) or {}
    config = _build(RecipeConfig, tree)
    config.training = training
    config.data = build_data_config(config.task, data)
    _validate(config)
    return config


def build_data_config(task: str, values: Any) -> DataConfig:
    """The `data` section as the task's own data config class: the task is read first, and a key that belongs
    to another task's section is an error that says so."""
    from pipelines.tasks import TASKS, get_task  # the task classes import transformers: only when loading

    data_class = get_task(task).data_config
    if not isinstance(values, dict):
        raise HubtuneError(f"recipe section 'data' must be a mapping, got {values!r}")
    names = [f.name for f in dataclasses.fields(data_class)]
    for key in values:
        if key in names:
            continue
        owners = sorted(
            name for name, other in TASKS.items() if key in {f.name for f in dataclasses.fields(other.data_config)}
        )
        if owners:
            similar = difflib.get_close_matches(key, names, n=1, cutoff=0.8)  # a typo, not a lookalike
            raise HubtuneError(
                f"recipe key 'data.{key}' belongs to task {', '.join(owners)}, not to '{task}' "
                f"(recipe key 'task')" + (f"; did you mean 'data.{similar[0]}'?" if similar else "")
            )
        raise HubtuneError(f"unknown recipe key 'data.{key}'{closest(key, names, 'data.')} (task '{task}')")
    return _build(data_class, values, "data.")


def _check_optimizer(training: dict[str, Any]) -> None:
    optim = str(training.get("optim", ""))
    if optim.startswith(WHOLE_MODEL_OPTIMIZERS):
        raise HubtuneError(
            f"recipe key 'training.optim': '{optim}' builds its own parameter groups from the whole "
            "model, so it cannot take hubtune's layer-group learning rates; choose e.g. adamw_torch, "
            "adafactor or an 8-bit/paged AdamW"
        )


def dump_recipe_config(config: RecipeConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
