"""Every private name of transformers, accelerate and datasets that hubtune uses, and nothing else.

Each use sits in one function (or, for a Trainer hook, one class) that says which upstream version it was checked
against and what the public API lacks. `tests/test_compat.py` holds a test per function that fails when upstream
renames the name or changes what it means, so an upgrade is checked here, in one place.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import Sampler
from transformers import PreTrainedConfig, Trainer


def set_initialized_flag(target: torch.Tensor | nn.Module, initialized: bool) -> None:
    """Mark a tensor or module as initialized (or not) for the model's own `initialize_weights()` pass.

    Checked against transformers 5.23.0: the init functions of `transformers.initialization` skip a tensor whose
    `_is_hf_initialized` is true, and `PreTrainedModel._initialize_weights` skips a module whose flag is true.
    No public API draws only some parameters anew with a model's own init (which can live in a parent module's
    branch, as RT-DETR's focal-loss prior bias does); the flags are how `from_pretrained` does it itself.
    """
    target._is_hf_initialized = initialized  # type: ignore[union-attr]  # transformers sets it dynamically


def auto_class_builds(auto_class: Any, config: PreTrainedConfig) -> bool:
    """Whether `auto_class` (an `AutoModelFor...` class) builds a model for `config`'s class.

    Checked against transformers 5.23.0: the mapping behind an Auto class is its `_model_mapping`; the public
    `MODEL_FOR_..._MAPPING` constants hold the same mappings but cannot be reached from the Auto class a caller
    holds, and `from_config` would only fail after the whole model is built.
    """
    return type(config) in auto_class._model_mapping


def auto_class_model_types(auto_class: Any) -> list[str]:
    """The model types (`config.model_type`) that `auto_class` builds, sorted, for error messages.

    Checked against transformers 5.23.0: `_model_mapping._model_mapping` (the lazy mapping's model type -> model
    class name table); the lazy mapping's public `keys()` imports every config class to list them.
    """
    return sorted(auto_class._model_mapping._model_mapping)


def attention_implementation(config: Any) -> str | None:
    """The attention implementation a model was loaded or set with ("sdpa", "eager", "flash_attention_2"...).

    Checked against transformers 5.23.0: a config property `_attn_implementation`; the public side is only the
    setter (`model.set_attn_implementation`) and the `attn_implementation` argument of `from_pretrained`. None
    for a config without one (a model that is not a transformers model).
    """
    return getattr(config, "_attn_implementation", None)


def dataset_fingerprint(dataset: Dataset) -> str:
    """The dataset's content fingerprint: the same for the same data and transforms, in any process, and another
    for other data; what datasets keys its own cache files by.

    Checked against datasets 5.2.0: `Dataset._fingerprint`; datasets has no public accessor for it.
    """
    return dataset._fingerprint


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices on AMX tiles (Intel Sapphire Rapids and newer).

    Checked against torch 2.14.1: `torch.cpu._is_amx_tile_supported()`, the cpuinfo check oneDNN's bf16 kernels
    rest on; torch has no public one. Only AMX makes CPU bf16 faster than fp32 (docs/benchmarks.md): with the
    AVX-512 bf16 dot product alone it was slower.
    """
    return bool(torch.cpu._is_amx_tile_supported())


def feature_frames(model: Any, sample_counts: torch.Tensor) -> torch.Tensor:
    """The number of encoder frames (logit positions) an audio model makes of clips of `sample_counts` samples.

    Checked against transformers 5.23.0: `_get_feat_extract_output_lengths` of the wav2vec2 family (wav2vec2,
    HuBERT, WavLM, data2vec-audio...), the convolutional feature encoder's arithmetic, which no public method
    exposes.
    """
    return model._get_feat_extract_output_lengths(sample_counts)


def mark_lr_scheduler_created(trainer: Trainer) -> None:
    """Tell `trainer` that the LR scheduler a `create_scheduler` override made is its own, as upstream's does.

    Checked against transformers 5.23.0: `Trainer._created_lr_scheduler`. A later `train()` call on the same
    Trainer then drops the scheduler and builds one for its own step count (`_prepare_for_training`) instead of
    reusing the last one; the public API sets the flag only inside `Trainer.create_scheduler`.
    """
    trainer._created_lr_scheduler = True


def prepare_inputs(trainer: Trainer, inputs: dict[str, Any]) -> dict[str, Any]:
    """A batch moved to the Trainer's device (and dtype, under DeepSpeed), as `Trainer.prediction_step` does before
    the forward pass, for a task that replaces that step.

    Checked against transformers 5.23.0: `Trainer._prepare_inputs`; no public method prepares a batch.
    """
    return trainer._prepare_inputs(inputs)


class SamplerHookTrainer(Trainer):
    """A Trainer whose training sampler comes from the public `training_sampler`, for subclasses to override.

    Checked against transformers 5.23.0: `Trainer._get_train_sampler(train_dataset=None)`, which
    `get_train_dataloader` calls with the training set (its unused columns removed). Through it a sampler goes
    where the Trainer's own goes, so accelerate still shards its batches across ranks and `set_epoch` is still
    called; the Trainer takes no sampler as an argument.
    """

    def training_sampler(self, dataset: Any = None) -> Sampler | None:
        """The sampler that draws `dataset`'s training examples (None: the training set); the Trainer's own by
        default."""
        return super()._get_train_sampler(dataset)

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        return self.training_sampler(train_dataset)

    def evaluation_sampler(self, dataset: Any) -> Sampler | None:
        """The sampler that draws `dataset`'s examples for evaluation and prediction; the Trainer's own by default
        (`Trainer._get_eval_sampler(eval_dataset)`, checked against 5.23.0, which draws them in random
        length-grouped chunks when `train_sampling_strategy` is `group_by_length`)."""
        return super()._get_eval_sampler(dataset)

    def _get_eval_sampler(self, eval_dataset: Any) -> Sampler | None:
        return self.evaluation_sampler(eval_dataset)
