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

ADAPT_STRATEGIES = ("full", "freeze_backbone", "train_last_n", "lora", "lp_ft")
UNFREEZE_UNITS = ("epoch", "step")
# seqeval's strict-mode schemes (seqeval.scheme), for `data.tag_scheme`.
TAG_SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")
TRANSCRIPT_CASES = ("lower", "upper", "keep")
WHISPER_TASKS = ("transcribe", "translate")


class RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: `no`/`yes`/`on`/`off` stay strings and `1e-4` is a float.

    PyYAML follows YAML 1.1, where `eval_strategy: no` reads as False and `learning_rate: 1e-4` as a string.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=RecipeLoader)


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


@dataclass
class ModelConfig:
    checkpoint: str = ""
    revision: str = "main"
    trust_remote_code: bool = False
    # Same architecture and config as `checkpoint`, random weights: the baseline that shows transfer gain.
    from_scratch: bool = False
    # A single timm weights file (.safetensors/.pth) as `checkpoint` names no architecture: give it here.
    timm_architecture: str | None = None


@dataclass
class DataConfig:
    dataset: str | None = None  # a Hub dataset id; or give `files`
    dataset_config: str | None = None
    revision: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # split name -> local csv/json/jsonl/parquet
    train_split: str = "train"
    validation_split: str | None = "validation"
    test_split: str | None = "test"
    validation_fraction: float | None = None  # carve validation out of train when it has none
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: list[str] | None = None  # label names in id order; read from the data when absent
    max_length: int = 128
    # Pad every example to max_length (the transformers examples' default) instead of per batch.
    pad_to_max_length: bool = False
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_test_samples: int | None = None
    # image-classification data
    image_column: str = "image"  # Image feature, or a path relative to the csv/jsonl file
    image_augment: bool = True  # random crop/flip (timm: its train transform) on train images
    image_size: int | None = None  # square input side instead of the checkpoint's (e.g. for small source images)
    # token-classification data
    tokens_column: str = "tokens"  # a list of words per sentence
    tags_column: str = "ner_tags"  # a list of tags (names or ClassLabel ids) per sentence
    conll_token_column: int = 0  # CoNLL files: whitespace-separated columns, 0-based; -1 is the last
    conll_tag_column: int = -1
    # Tag continuation sub-tokens too (B-X becomes I-X on them) instead of scoring first sub-tokens only.
    label_all_tokens: bool = False
    # None: conlleval's lenient chunking (IOB1, IOB2 and IOBES alike); a name: seqeval strict mode with it.
    tag_scheme: str | None = None
    # speech data
    audio_column: str = "audio"  # a path (relative to its csv/jsonl), or a Hub `Audio` column
    max_duration_s: float | None = 30.0  # longer clips: random crop in training (classification) or dropped (ASR)
    transcript_case: str = "lower"  # transcripts (in `text_column`) are normalised: lower, upper or keep
    transcript_remove_chars: str = ',.?!;:"'  # characters deleted from transcripts before training and scoring
    language: str | None = None  # Whisper: the language token (e.g. english); null for English-only models
    whisper_task: str = "transcribe"  # Whisper: transcribe or translate


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | None = None  # None: PEFT's default for the architecture


@dataclass
class UnfreezeScheduleConfig:
    """When each layer group starts training (its learning rate is zero before)."""

    unit: str = "epoch"  # epoch | step
    every: float | None = None  # ULMFiT top-down: head at 0, then one more group from the top every `every` units
    at: dict[str, float] = field(default_factory=dict)  # explicit: group name or glob (block.*) -> start


@dataclass
class LpFtConfig:
    """LP-FT: a linear probe (head only), then fine-tuning from the probed head."""

    probe_epochs: float = 1.0
    probe_learning_rate: float = 1e-3
    then: str = "full"  # the fine-tuning stage's strategy: full | train_last_n (with adapt.n)


@dataclass
class AdaptConfig:
    strategy: str = "full"
    n: int = 2  # blocks left trainable by `train_last_n`, counted from the top
    lora: LoraConfig = field(default_factory=LoraConfig)
    layer_decay: float | None = None  # LR of a group = decay^(depth below the head), as BEiT/ELECTRA and timm
    head_lr_scale: float = 1.0  # the head's LR multiplier
    unfreeze_schedule: UnfreezeScheduleConfig | None = None
    lp_ft: LpFtConfig = field(default_factory=LpFtConfig)
    # freeze_backbone only: compute the frozen backbone's features once and train the head on them.
    feature_cache: bool = False
    feature_cache_dir: str | None = None  # default ~/.cache/hubtune/features
    # speech: keep the convolutional feature encoder of wav2vec2-family models frozen (ignored by other models)
    freeze_feature_encoder: bool = True


@dataclass
class HubConfig:
    push: bool = False
    repo_id: str | None = None
    private: bool = True


# `training.optim` values whose optimizers take the whole model (GaLore, APOLLO) or update inside backward
# (LOMO) instead of taking param groups: they cannot carry hubtune's per-layer-group learning rates.
WHOLE_MODEL_OPTIMIZERS = ("galore_", "apollo_", "lomo", "adalomo")

# Keys of `training` that hubtune handles itself rather than passing to TrainingArguments.
HUBTUNE_TRAINING_KEYS = {"resume"}

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
    name: str = ""
    task: str = "text-classification"
    seed: int = 42
    output_dir: str | None = None  # default runs/<name>
    overwrite: bool = False  # replace an existing run folder instead of refusing
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    training: dict[str, Any] = field(default_factory=dict)
    hub: HubConfig = field(default_factory=HubConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


def _closest(key: str, valid: typing.Iterable[str], prefix: str = "", noun: str = "keys") -> str:
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
    if dataclasses.is_dataclass(annotation):
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
            raise HubtuneError(f"unknown recipe key '{prefix}{key}'{_closest(key, names, prefix)}")
    return cls(**{key: _coerce(value, hints[key], prefix + key) for key, value in values.items()})


def _validate(config: RecipeConfig) -> None:
    if not config.name:
        raise HubtuneError("recipe key 'name' is required")
    if config.name in (".", "..") or any(separator in config.name for separator in "/\\"):
        raise HubtuneError(f"recipe key 'name' must be a plain folder name (the run goes to runs/<name>), got "
                           f"{config.name!r}; set 'output_dir' to put the run elsewhere")
    if not config.model.checkpoint:
        raise HubtuneError("recipe key 'model.checkpoint' is required (a Hub id or a local folder)")
    if config.adapt.strategy not in ADAPT_STRATEGIES:
        raise HubtuneError(
            f"unknown adapt strategy '{config.adapt.strategy}' in 'adapt.strategy'"
            f"{_closest(config.adapt.strategy, ADAPT_STRATEGIES, noun='strategies')}"
        )
    if config.adapt.strategy == "lora" and config.model.from_scratch:
        raise HubtuneError("'adapt.strategy: lora' needs pretrained weights; it cannot be combined with 'model.from_scratch'")
    adapt = config.adapt
    if adapt.layer_decay is not None and not 0.0 < adapt.layer_decay <= 1.0:
        raise HubtuneError(f"recipe key 'adapt.layer_decay' must lie in (0, 1], got {adapt.layer_decay}")
    if adapt.head_lr_scale <= 0:
        raise HubtuneError(f"recipe key 'adapt.head_lr_scale' must be positive, got {adapt.head_lr_scale}")
    schedule = adapt.unfreeze_schedule
    if schedule is not None:
        if schedule.unit not in UNFREEZE_UNITS:
            raise HubtuneError(f"recipe key 'adapt.unfreeze_schedule.unit' must be epoch or step, got '{schedule.unit}'")
        if (schedule.every is None) == (not schedule.at):
            raise HubtuneError("recipe section 'adapt.unfreeze_schedule' needs exactly one of 'every' and 'at'")
        if schedule.every is not None and schedule.every <= 0:
            raise HubtuneError(f"recipe key 'adapt.unfreeze_schedule.every' must be positive, got {schedule.every}")
        if adapt.strategy in ("lora", "lp_ft"):
            raise HubtuneError(f"'adapt.unfreeze_schedule' gates layer groups; it does not apply to '{adapt.strategy}'")
    if adapt.feature_cache and adapt.strategy != "freeze_backbone":
        raise HubtuneError(f"'adapt.feature_cache' needs 'adapt.strategy: freeze_backbone', not '{adapt.strategy}'")
    if adapt.strategy == "lp_ft" and adapt.lp_ft.then not in ("full", "train_last_n"):
        raise HubtuneError(f"recipe key 'adapt.lp_ft.then' must be full or train_last_n, got '{adapt.lp_ft.then}'")
    if config.adapt.strategy == "train_last_n" and config.adapt.n < 1:
        raise HubtuneError(f"recipe key 'adapt.n' must be at least 1 for train_last_n, got {config.adapt.n}")
    data = config.data
    if not data.dataset and not data.files:
        raise HubtuneError("recipe section 'data' needs 'dataset' (a Hub id) or 'files' (split -> local file)")
    if data.dataset and data.files:
        raise HubtuneError("recipe section 'data' has both 'dataset' and 'files'; keep one")
    if data.validation_fraction is not None and not 0.0 < data.validation_fraction < 1.0:
        raise HubtuneError(f"recipe key 'data.validation_fraction' must lie in (0, 1), got {data.validation_fraction}")
    if data.image_size is not None and data.image_size < 1:
        raise HubtuneError(f"recipe key 'data.image_size' must be a positive number of pixels, got {data.image_size}")
    if data.tag_scheme is not None and data.tag_scheme not in TAG_SCHEMES:
        raise HubtuneError(f"unknown tag scheme '{data.tag_scheme}' in 'data.tag_scheme'"
                           f"{_closest(data.tag_scheme, TAG_SCHEMES, noun='schemes')}")
    if data.labels is not None and len(set(data.labels)) != len(data.labels):
        raise HubtuneError(f"recipe key 'data.labels' repeats a label: {data.labels}")
    if config.hub.push and not config.hub.repo_id:
        raise HubtuneError("'hub.push' is true but 'hub.repo_id' is not set")
    if config.training.get("push_to_hub"):
        raise HubtuneError("use 'hub.push' (pushes the finished run folder), not 'training.push_to_hub'")
    if data.max_duration_s is not None and data.max_duration_s <= 0:
        raise HubtuneError(f"recipe key 'data.max_duration_s' must be positive, got {data.max_duration_s}")
    for key, value, choices in (("transcript_case", data.transcript_case, TRANSCRIPT_CASES),
                                ("whisper_task", data.whisper_task, WHISPER_TASKS)):
        if value not in choices:
            raise HubtuneError(f"recipe key 'data.{key}' must be one of {', '.join(choices)}, got {value!r}")
    types = _training_argument_types()
    valid = set(types) | HUBTUNE_TRAINING_KEYS
    for key, value in config.training.items():
        if key not in valid:
            raise HubtuneError(f"unknown recipe key 'training.{key}'{_closest(key, valid, 'training.')}")
        if key == "output_dir":
            raise HubtuneError("set the run folder with the top-level recipe key 'output_dir', not 'training.output_dir'")
        if key in types and not _fits_training_type(value, types[key]):
            expected = getattr(types[key], "__name__", str(types[key]).replace("typing.", ""))
            raise HubtuneError(f"recipe key 'training.{key}' must be {expected}, got {value!r}")
    _check_training_values(config.training)
    for key in ("max_train_samples", "max_eval_samples", "max_test_samples"):
        value = getattr(data, key)
        if value is not None and value < 1:
            raise HubtuneError(f"recipe key 'data.{key}' must be at least 1 (or null for all), got {value}")
    if not isinstance(config.training.get("resume", False), bool):
        raise HubtuneError(f"recipe key 'training.resume' must be true or false, got {config.training['resume']!r}")


def _check_training_values(training: dict[str, Any]) -> None:
    """Values TrainingArguments accepts but that fail later (a zero batch size in the first step, an evaluation
    batch size at the end of the first epoch) or train nothing (zero epochs): refused at load instead."""
    def number(key: str, default: float | None = None) -> float | None:
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


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
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


def load_recipe_config(path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                       values: dict[str, Any] | None = None) -> RecipeConfig:
    """Read a recipe from YAML (or a dict), apply overrides, validate. Raises HubtuneError naming the key."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise HubtuneError(f"recipe '{path}' is a directory, not a YAML file")
        if not path.is_file():
            raise HubtuneError(f"recipe file '{path}' does not exist")
        text = path.read_text()
        try:
            repeated = duplicate_key(yaml.compose(text, Loader=RecipeLoader))
            tree = read_yaml(text) or {}
        except yaml.YAMLError as error:
            raise HubtuneError(f"recipe file '{path}' does not parse as YAML: {error}") from error
        if repeated:
            key, first, second = repeated
            raise HubtuneError(f"recipe file '{path}' sets '{key}' twice (lines {first} and {second}); keep one")
        if not isinstance(tree, dict):
            raise HubtuneError(f"recipe file '{path}' must hold a mapping of sections, not {type(tree).__name__}")
    if values:
        tree = {**tree, **values}
    tree = copy.deepcopy(tree)  # overrides must not write into the caller's nested dicts
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(tree, key, value)
    training = {**TRAINING_DEFAULTS, **(tree.pop("training", None) or {})}
    config = _build(RecipeConfig, tree)
    config.training = training
    _validate(config)
    _check_optimizer(config.training)
    return config


def _check_optimizer(training: dict[str, Any]) -> None:
    optim = str(training.get("optim", ""))
    if optim.startswith(WHOLE_MODEL_OPTIMIZERS):
        raise HubtuneError(f"recipe key 'training.optim': '{optim}' builds its own parameter groups from the whole "
                           "model, so it cannot take hubtune's layer-group learning rates; choose e.g. adamw_torch, "
                           "adafactor or an 8-bit/paged AdamW")


def dump_recipe_config(config: RecipeConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
