"""Loading checkpoints from the Hub or a local folder, with one clear line when one is not there."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import AutoConfig, PretrainedConfig

from pipelines.compat import set_initialized_flag
from pipelines.config import ModelConfig, closest
from pipelines.errors import HubtuneError, require_path
from pipelines.hub_access import offline_reason
from pipelines.models.groups import layer_groups
from pipelines.models.weight_files import (
    check_weight_files,
    damaged_weights,
    has_weights,
    missing_weights,
    weight_file_problem,
)

logger = logging.getLogger(__name__)

TIMM_HUB_PREFIX = "hf-hub:"


def looks_like_path(checkpoint: str) -> bool:
    """Whether a checkpoint is written as a local path: a Hub id is `name` or `org/name`, anything else a folder."""
    return checkpoint.startswith((".", "/", "~")) or checkpoint.count("/") > 1


def timm_file_as_folder(path: Path, architecture: str | None) -> Path:
    """A single timm weights file laid out once as a timm Hub-format folder (config.json + model.safetensors),
    which transformers' TimmWrapper loads like any timm checkpoint from the Hub."""
    if not architecture:
        raise HubtuneError(
            f"'{path}' ('model.checkpoint') is a file, not a checkpoint folder; a file is read as a single timm "
            "weights file, whose architecture 'model.timm_architecture' must name (e.g. resnet18)"
        )
    problem = weight_file_problem(path)
    if problem:
        raise damaged_weights(f"checkpoint file '{path}' ('model.checkpoint')", problem)
    stat = path.resolve().stat()
    identity = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{architecture}"
    folder = Path.home() / ".cache" / "hubtune" / "timm" / hashlib.sha256(identity.encode()).hexdigest()[:24]
    if not (folder / "config.json").is_file():
        import timm
        from timm.models import save_for_hf

        try:
            weights = timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        except (RuntimeError, ValueError, KeyError, OSError) as error:
            raise HubtuneError(
                f"checkpoint file '{path}' does not load into timm '{architecture}' "
                f"('model.timm_architecture'): {str(error).splitlines()[0]}"
            ) from error
        # Written aside and renamed, so an interrupted layout is never mistaken for a complete one.
        partial = folder.with_name(folder.name + ".partial")
        save_for_hf(weights, str(partial), safe_serialization=True)
        partial.rename(folder)
        logger.info("timm weights %s (%s) laid out as %s", path, architecture, folder)
    return folder


def _unloadable_folder(checkpoint: str, loader: Any, error: Exception) -> HubtuneError:
    return HubtuneError(
        f"checkpoint folder '{checkpoint}' ('model.checkpoint') cannot be loaded by {loader.__name__}: {error}"
    )


def attention_kwargs(model: ModelConfig) -> dict[str, Any]:
    """The recipe's `model.attn_implementation` as a model-loading argument (none: transformers' own choice)."""
    return {"attn_implementation": model.attn_implementation} if model.attn_implementation else {}


# What transformers raises for a config or model it will not build: a config field's type check (huggingface_hub's
# strict dataclasses), a constructor's own checks (ValueError, an unknown activation's KeyError, an assert), weights
# that no longer fit (RuntimeError).
REJECTED_BUILD = (ValueError, TypeError, KeyError, RuntimeError, AssertionError, StrictDataclassError)


def rejected_overrides(model: ModelConfig, error: Exception) -> HubtuneError:
    """The line for a config or model that transformers would not build with the recipe's
    `model.config_overrides`."""
    keys = ", ".join(f"{key}: {value!r}" for key, value in model.config_overrides.items())
    return HubtuneError(
        f"recipe key 'model.config_overrides' ({keys}) makes a model that transformers rejects: "
        f"{type(error).__name__}: {error}"
    )


def from_config(auto_model: Any, config: PretrainedConfig, model: ModelConfig, **kwargs: Any) -> Any:
    """`auto_model.from_config(config)`; a build that transformers rejects while the recipe's
    `model.config_overrides` shape the config is one line naming them."""
    try:
        return auto_model.from_config(config, **kwargs)
    except REJECTED_BUILD as error:
        if not model.config_overrides:
            raise
        raise rejected_overrides(model, error) from error


def _check_config_overrides(checkpoint: str, model: ModelConfig) -> None:
    """Each `model.config_overrides` key must be a field of the checkpoint's config: `from_pretrained` would
    otherwise store a misspelt one as a new attribute that nothing reads."""
    config = AutoConfig.from_pretrained(checkpoint, revision=model.revision, trust_remote_code=model.trust_remote_code)
    fields = config.to_dict()
    for key in model.config_overrides:
        if key not in fields:
            raise HubtuneError(
                f"'model.config_overrides.{key}' is not a field of the config of '{checkpoint}' "
                f"({type(config).__name__}){closest(key, fields, 'model.config_overrides.', 'fields')}"
            )


def from_pretrained(loader: Any, model: ModelConfig, source: str | None = None, **kwargs: Any) -> Any:
    """`loader.from_pretrained(checkpoint)`, turning a missing or unreachable checkpoint into one line.

    timm's `hf-hub:org/name` spelling of a Hub id is accepted too. Models (loaders with `from_config`) are
    loaded with the recipe's attention implementation; models and configs get `model.config_overrides`
    (a run folder's own config already holds them).
    """
    # A model given its `config` gets the overrides through that config (loaded here, with them).
    overrides = source is None and (loader is AutoConfig or (hasattr(loader, "from_config") and "config" not in kwargs))
    if hasattr(loader, "from_config"):
        kwargs = {**attention_kwargs(model), **kwargs}
    if overrides:
        kwargs = {**model.config_overrides, **kwargs}
    checkpoint = (source or model.checkpoint).removeprefix(TIMM_HUB_PREFIX)
    if Path(checkpoint).expanduser().is_file():
        checkpoint = str(timm_file_as_folder(Path(checkpoint).expanduser(), model.timm_architecture))
    if looks_like_path(checkpoint):
        require_path(checkpoint, "folder", "checkpoint folder", "model.checkpoint")
    folder = Path(checkpoint).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise HubtuneError(
            f"checkpoint folder '{checkpoint}' holds no config.json, so it is not a model folder "
            "('model.checkpoint'): name the folder that save_pretrained wrote"
        )
    if folder.is_dir() and hasattr(loader, "from_config"):
        check_weight_files(folder, "checkpoint folder ('model.checkpoint')" if source is None else "model folder")
    # The recipe's checkpoint built as a config or model with the overrides, given here or through `config`.
    overridden = source is None and bool(model.config_overrides) and (overrides or "config" in kwargs)
    checked = False
    try:
        if overrides and model.config_overrides:
            _check_config_overrides(checkpoint, model)
        checked = True
        return loader.from_pretrained(
            checkpoint, revision=model.revision, trust_remote_code=model.trust_remote_code, **kwargs
        )
    except REJECTED_BUILD as error:
        if "trust_remote_code" in str(error):
            raise HubtuneError(
                f"checkpoint '{checkpoint}' runs Python code of its own (its config's auto_map); "
                "read that code, then set 'model.trust_remote_code=true' to allow it"
            ) from error
        # The checkpoint's config loads without the overrides (just checked): with them, the build failed.
        if overridden and checked:
            raise rejected_overrides(model, error) from error
        if folder.is_dir() and isinstance(error, ValueError):
            raise _unloadable_folder(checkpoint, loader, error) from error
        raise
    except OSError as error:
        # Only model classes have `from_config`; a tokenizer or config load fails for other reasons.
        if folder.is_dir() and hasattr(loader, "from_config") and not has_weights(folder):
            raise missing_weights(folder, "checkpoint folder ('model.checkpoint')") from error
        if folder.is_dir():
            raise _unloadable_folder(checkpoint, loader, error) from error
        why = offline_reason() or f"the Hub did not give it ({type(error).__name__})"
        raise HubtuneError(
            f"checkpoint '{checkpoint}' (revision '{model.revision}') cannot be loaded: it is not in the local Hugging "
            f"Face cache and {why}; "
            f"run `hf download {checkpoint}` where there is network, or set 'model.checkpoint' to a local folder"
        ) from error


def _has_trained_head(config: PretrainedConfig, head_suffix: str) -> bool:
    return any(name.endswith(head_suffix) for name in (config.architectures or []))


def _drop_timm_num_classes(config: PretrainedConfig) -> None:
    model_args = getattr(config, "model_args", None)
    if isinstance(model_args, dict):
        # timm >= 1.0.2x writes `num_classes` into a checkpoint's `model_args`, and transformers' TimmWrapper
        # passes `num_classes=num_labels` next to them: create_model would get it twice (TypeError).
        model_args.pop("num_classes", None)


def own_head_classes(model: ModelConfig, head_suffix: str) -> int:
    """How many classes the checkpoint's own trained head predicts: a transformers head of the task's kind (its
    architecture ends in `head_suffix`) or a timm classifier (ImageNet's 1000); 0 without one."""
    config = from_pretrained(AutoConfig, model)
    timm_head = getattr(config, "model_type", None) == "timm_wrapper"
    return config.num_labels if timm_head or _has_trained_head(config, head_suffix) else 0


def load_with_own_head(auto_model: Any, model: ModelConfig) -> nn.Module:
    """The checkpoint whole, its own trained head as it is (for scoring that head's predictions, as `hubtune rank`'s
    LEEP does)."""
    config = from_pretrained(AutoConfig, model)
    _drop_timm_num_classes(config)
    return from_pretrained(auto_model, model, config=config)


def _timm_init(timm_model: nn.Module, config: PretrainedConfig) -> None:
    """Give a TimmWrapper's random model timm's own initialisation.

    transformers' init redraws every convolution with std `initializer_range` (0.02), several times smaller
    than the He-style init timm designed these CNNs with; a from-scratch baseline must not be handicapped.
    """
    import timm

    fresh = timm.create_model(
        config.architecture, pretrained=False, num_classes=config.num_labels, **(config.model_args or {})
    )
    timm_model.load_state_dict(fresh.state_dict())


def load_classifier(
    auto_model: Any,
    model: ModelConfig,
    label_names: list[str],
    head_suffix: str,
    problem_type: str | None = None,
    **load_kwargs: Any,
) -> nn.Module:
    """A classifier for `label_names` from a checkpoint, with or without its own head; `problem_type` is
    transformers' (`multi_label_classification`, `regression`...), kept in the saved config; `load_kwargs`
    (such as a quantization config) go to `from_pretrained`.

    The output layer is new whenever the label set differs from the checkpoint's: a different size is
    handled by `ignore_mismatched_sizes`, the same size with other names is re-initialised here.
    """
    original = from_pretrained(AutoConfig, model)
    labels: dict[str, Any] = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
    }
    if problem_type is None:
        config = from_pretrained(AutoConfig, model, **labels)
    else:
        # Set before the labels: the config checks num_labels against the checkpoint's own problem_type (one
        # output is refused for single-label classification, which a regression head has).
        config = from_pretrained(AutoConfig, model)
        config.problem_type = problem_type
        config.id2label, config.label2id = labels["id2label"], labels["label2id"]  # num_labels follows id2label
    _drop_timm_num_classes(config)
    if model.from_scratch:
        logger.info("model.from_scratch: %s architecture with random weights", config.model_type)
        classifier = from_config(
            auto_model, config, model, trust_remote_code=model.trust_remote_code, **attention_kwargs(model)
        )
        classifier.name_or_path = model.checkpoint
        if hasattr(classifier, "timm_model"):
            _timm_init(classifier.timm_model, config)
        return classifier
    classifier = from_pretrained(auto_model, model, config=config, ignore_mismatched_sizes=True, **load_kwargs)
    same_labels = [original.id2label[i] for i in sorted(original.id2label)] == label_names
    if _has_trained_head(original, head_suffix) and original.num_labels == len(label_names) and not same_labels:
        logger.info(
            "checkpoint head was trained on labels %s; re-initialising it for %s",
            list(original.id2label.values()),
            label_names,
        )
        heads = tuple(f"{name}." for name in layer_groups(classifier).head_modules)
        redraw(classifier, {name for name, _ in classifier.named_parameters() if name.startswith(heads)})
    return classifier


def redraw(model: Any, parameter_names: set[str]) -> None:
    """Draw the named parameters of a loaded `model` anew with the model's own init (a head whose classes were
    renamed), as transformers draws the ones `ignore_mismatched_sizes` drops.

    transformers 5's init functions skip tensors flagged as initialized (`set_initialized_flag`): every other tensor
    is flagged and the whole model's init pass runs, so a class head whose init lives in a parent module's branch
    (the focal-loss prior bias of RT-DETR's encoder score head) gets it too, and nothing else changes.
    """
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        set_initialized_flag(tensor, name not in parameter_names)
    for module in model.modules():
        set_initialized_flag(module, False)
    model.initialize_weights()


def load_text_tokenizer(model: ModelConfig, source: str | None = None, words_presplit: bool = False) -> Any:
    """The checkpoint's tokenizer, made fit for batches of classified text.

    Decoder checkpoints (GPT-2, Llama, Qwen) ship without a pad token, and padding the first batch would fail
    mid-run: they pad with their end-of-text token (or a new `[PAD]`, for which `fit_embeddings` grows the
    model). Byte-level BPE tokenizers (GPT-2, RoBERTa, DeBERTa-v3's cousins, BLOOM) mark a word's leading space
    inside its first piece: with `words_presplit` (NER's lists of words) they are loaded with
    `add_prefix_space=True`, so each word gets the pieces it has in running text, which is what pretraining
    and `predict` see.
    """
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, model, source)
    if (
        words_presplit
        and source is None
        and _byte_level(tokenizer)
        and not getattr(tokenizer, "add_prefix_space", False)
    ):
        tokenizer = from_pretrained(AutoTokenizer, model, source, add_prefix_space=True)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        logger.info("the tokenizer has no pad token: batches are padded with %r", tokenizer.pad_token)
    return tokenizer


def _byte_level(tokenizer: Any) -> bool:
    """Whether a fast tokenizer splits words GPT-2's way (byte-level, the leading space inside the first piece)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in str(backend.pre_tokenizer)


def fit_embeddings(model: Any, tokenizer: Any) -> Any:
    """The model sized for a tokenizer that gained a pad token, and told which id pads (sequence classifiers
    read the last non-pad position)."""
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model
