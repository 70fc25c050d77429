"""What `hubtune rank` scores a candidate on: one frozen forward pass over the training examples, giving the
representation the task head reads (the features), the recipe's labels, and the checkpoint's own head's predictions
where it has a trained one.

The representation is what the head of the task's model reads from the backbone:
- a sequence or image classifier whose head reads the first position or the pooled output (BERT's pooler, ViT's and
  RoBERTa-style [CLS]): read through `adapt.feature_cache` (pipelines/training/feature_cache.py), which stores
  exactly these two per example and checks that the head on them gives the full model's logits, so a rank and a
  later frozen-backbone training run with `adapt.feature_cache` on the same data share one cache entry;
- where the cache cannot stand in, one pass here: the pooled output of a CNN (ConvNeXt, ResNet, Swin), a timm
  model's pre-logits (the input of its classifier), the last non-padding token of a decoder-only text model (what
  its head reads), the mean over frames of an audio encoder (what wav2vec2, HuBERT and Whisper heads pool; their
  projection before the pooling is new and linear, so it is left out) and, for token classification, each first
  sub-token's vector (the positions the task labels).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from pipelines.errors import HubtuneError
from pipelines.tasks.audio_classification import AudioClassification
from pipelines.tasks.base import PreparedData, Task, TaskModel
from pipelines.tasks.collate import IGNORE
from pipelines.tasks.token_classification import TokenClassification
from pipelines.training.feature_cache import FeatureCache

logger = logging.getLogger(__name__)


@dataclass
class PassResult:
    """One candidate's forward pass: features [n, D], labels (class ids [n], multi-hot [n, K] or targets [n]),
    the source head's probabilities [n, Z] (None without a trained head), and whether the feature cache served."""

    features: np.ndarray
    labels: np.ndarray
    source: np.ndarray | None
    cached: bool


def _batches(dataset: Dataset, collate: Callable[[list], Any], size: int) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(dataset), size):
        yield dict(collate([dataset[i] for i in range(start, min(start + size, len(dataset)))]))


def _inputs(batch: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    return {key: value.to(device) for key, value in batch.items() if key != "labels"}


def _backbone(model: TaskModel) -> nn.Module:
    """The base model whose output the head reads (Whisper's audio classifier keeps its encoder as `encoder`)."""
    backbone = getattr(model, model.base_model_prefix, None)
    return backbone if isinstance(backbone, nn.Module) else model.encoder


def _decoder_only(model: TaskModel) -> bool:
    """GPT-2, Llama, Qwen...: a causal language model family with no masked-LM sibling; its sequence classifier reads
    the last token that is not padding."""
    kind = model.config.model_type
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@torch.no_grad()
def _cacheable(model: TaskModel, batch: dict[str, torch.Tensor]) -> bool:
    """Whether the feature cache fits the model: a transformers base model (not timm's) whose output is a sequence,
    which the cache stores the first position of (a CNN's feature map has none)."""
    if hasattr(model, "timm_model") or not hasattr(model, model.base_model_prefix) or _decoder_only(model):
        return False
    outputs = _backbone(model)(**_inputs(batch, model))
    pooled = getattr(outputs, "pooler_output", None)
    hidden = getattr(outputs, "last_hidden_state", None)
    return hidden is not None and hidden.dim() == 3 and (pooled is None or pooled.dim() == 2)


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    return logits.float().softmax(-1).cpu().numpy()


@torch.no_grad()
def _from_cache(
    task: Task, model: TaskModel, data: PreparedData, batch_size: int, with_source: bool
) -> PassResult | None:
    """Features (and the source head's predictions on them) through the feature cache; None where its check finds
    that the head reads more than the first position and the pooled output."""
    cache = FeatureCache(model, task.config, task.data_collator(data.processor))
    try:
        stored = cache.cached({"train": data["train"]}, batch_size)["train"]
    except HubtuneError as refused:
        logger.info("feature cache does not fit %s (%s): one pass without it", type(model).__name__, refused)
        return None
    columns = stored[:]  # every stored row as tensors
    features = columns[cache.input_name]
    source = None
    if with_source:
        device = next(model.parameters()).device
        with cache.standing_in():
            source = np.concatenate(
                [
                    _probabilities(model(**{cache.input_name: features[start : start + batch_size].to(device)}).logits)
                    for start in range(0, len(features), batch_size)
                ]
            )
    pooled = features[:, 1 if cache.has_pooler else 0]
    return PassResult(pooled.double().numpy(), columns["labels"].numpy(), source, True)


def _pooled(model: TaskModel, task: Task, captured: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A batch's representation from what the hook captured (the backbone's output, or a timm classifier's input)."""
    if isinstance(captured, torch.Tensor):
        return captured.flatten(1)
    pooled = getattr(captured, "pooler_output", None)
    hidden = captured.last_hidden_state
    if isinstance(task, AudioClassification):
        return hidden.mean(dim=1)  # one clip per batch: no padded frames to leave out
    if pooled is not None:
        return pooled.flatten(1)
    if hidden.dim() == 4:  # a CNN's feature map without a pooled output
        return hidden.mean(dim=(2, 3))
    if _decoder_only(model) and "attention_mask" in batch:
        # The last position that is not padding, on either side (as transformers' decoder classifiers find it).
        mask = batch["attention_mask"].to(hidden.device)
        last = (torch.arange(mask.shape[1], device=hidden.device) * mask).argmax(dim=1)
        return hidden[torch.arange(len(hidden), device=hidden.device), last]
    return hidden[:, 0]


@torch.no_grad()
def _direct(task: Task, model: TaskModel, data: PreparedData, batch_size: int, with_source: bool) -> PassResult:
    """Features, labels and source predictions from one pass of the model, its backbone's output caught by a hook."""
    captured: dict[str, Any] = {}
    if hasattr(model, "timm_model"):
        hook = model.timm_model.get_classifier().register_forward_pre_hook(
            lambda module, args: captured.__setitem__("out", args[0])
        )
    else:
        hook = _backbone(model).register_forward_hook(lambda module, args, output: captured.__setitem__("out", output))
    tokens = isinstance(task, TokenClassification)
    # An audio clip is run alone: padding a raw waveform changes what a model without an attention mask hears.
    size = 1 if isinstance(task, AudioClassification) else batch_size
    features, labels, source = [], [], []
    try:
        for batch in _batches(data["train"], task.data_collator(data.processor), size):
            logits = model(**_inputs(batch, model)).logits
            if tokens:
                keep = batch["labels"] != IGNORE  # first sub-tokens, as the task aligns the tags
                features.append(captured["out"].last_hidden_state[keep.to(logits.device)].cpu())
                labels.append(batch["labels"][keep])
                logits = logits[keep.to(logits.device)]
            else:
                features.append(_pooled(model, task, captured["out"], batch).cpu())
                labels.append(batch["labels"])
            if with_source:
                source.append(_probabilities(logits))
    finally:
        hook.remove()
    return PassResult(
        torch.cat(features).double().numpy(),
        torch.cat(labels).numpy(),
        np.concatenate(source) if with_source else None,
        False,
    )


def forward_pass(task: Task, model: TaskModel, data: PreparedData, batch_size: int, with_source: bool) -> PassResult:
    """The candidate's features over `data['train']` with `model` frozen in eval mode: through the feature cache
    where it fits, else one pass here. `with_source`: `model` carries the checkpoint's own trained head, whose
    predictions come back too."""
    model.eval()
    model.requires_grad_(False)
    if not isinstance(task, (TokenClassification, AudioClassification)):
        probe = next(_batches(data["train"].select(range(1)), task.data_collator(data.processor), 1))
        if _cacheable(model, probe):
            result = _from_cache(task, model, data, batch_size, with_source)
            if result is not None:
                return result
    return _direct(task, model, data, batch_size, with_source)
