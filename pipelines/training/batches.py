"""Training batches a model can take: a BatchNorm layer in training mode needs more than one value per channel, so a
model where one sees a single value for a single example (UperNet's pooled branch, BatchNorm after global pooling)
cannot train on a batch of one. For such a model the last batch of an epoch, when it would hold one example, is
dropped; every other model keeps its batches as they are.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import TrainingArguments

from pipelines.config import RecipeConfig
from pipelines.data.splits import streamed
from pipelines.errors import HubtuneError
from pipelines.tasks.base import PreparedData, Task
from pipelines.training.eval_parts import eval_mode_parts

logger = logging.getLogger(__name__)


def _batches_of_one(examples: int, args: TrainingArguments) -> bool:
    """Whether some training batch of a process holds a single example. With several processes, accelerate
    completes every process's last batch with examples from the start of the epoch (`even_batches`, its default)."""
    size = args.train_batch_size
    if size == 1:
        return True
    even = getattr(args.accelerator_config, "even_batches", True)
    return examples % size == 1 and (args.world_size == 1 or not even)


def _training_batch_norms(model: nn.Module, hold_batchnorm_statistics: bool = False) -> dict[nn.Module, str]:
    """The BatchNorm layers that train in training mode: those outside the parts run in eval mode."""
    frozen = {id(module) for part in eval_mode_parts(model, hold_batchnorm_statistics) for module in part.modules()}
    return {
        module: name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and id(module) not in frozen
    }


def single_value_batch_norm(
    model: nn.Module, example: dict[str, Any], collator: Any, hold_batchnorm_statistics: bool = False
) -> str | None:
    """The first BatchNorm layer that training would stop at on a batch of `example` alone (one value per channel),
    found by a forward pass in eval mode, which updates no statistics; None when the model takes it."""
    layers = _training_batch_norms(model, hold_batchnorm_statistics)
    if not layers:
        return None
    found: list[str] = []

    def count_values(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if inputs[0].numel() <= inputs[0].shape[1]:
            found.append(layers[module])

    hooks = [layer.register_forward_pre_hook(count_values) for layer in layers]
    device = next(model.parameters()).device
    batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in collator([example]).items()}
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(**batch)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return found[0] if found else None


def _training_source(config: RecipeConfig) -> str:
    data = config.data
    split = data.train_split
    if split in data.files:
        source = f"data file '{data.files[split]}' ('data.files.{split}')"
    elif data.in_memory:
        source = f"split '{split}' given to Recipe.run(data=...)"
    else:
        source = f"split '{split}' of Hub dataset '{data.dataset}' ('data.train_split')"
    capped = " capped by 'data.max_train_samples'" if data.max_train_samples is not None else ""
    return f"the training data ({source}{capped})"


def fit_last_batch(task: Task, model: nn.Module, prepared: PreparedData, args: TrainingArguments) -> None:
    """Drop the last training batch of each epoch (`args.dataloader_drop_last`) where it would hold one example that
    `model` cannot train on; a recipe that would give such a model no batch of two is an error, before training."""
    train, config = prepared["train"], task.config
    if streamed(train) or args.dataloader_drop_last or not _batches_of_one(len(train), args):
        return
    collator = task.train_data_collator(prepared.processor, model) or task.data_collator(prepared.processor)
    layer = single_value_batch_norm(model, train[0], collator, config.adapt.hold_batchnorm_statistics)
    if layer is None:
        return
    who = f"{type(model).__name__}'s BatchNorm layer '{layer}'"
    cannot = f"{who} cannot train on a batch of one example (it needs more than one value per channel)"
    if args.train_batch_size == 1:
        raise HubtuneError(f"recipe key 'training.per_device_train_batch_size' is 1, but {cannot}: set it to 2 or more")
    if len(train) == 1:
        raise HubtuneError(f"{_training_source(config)} holds 1 example, but {cannot}: give it at least 2")
    last_batch = f"{len(train)} training examples in batches of {args.train_batch_size} leave a last batch of one"
    if config.training.get("dataloader_drop_last") is False:
        raise HubtuneError(
            f"recipe key 'training.dataloader_drop_last' is false, but {last_batch}, and {cannot}: remove the key"
        )
    args.dataloader_drop_last = True
    logger.warning(
        "%s, on which %s cannot train (it needs more than one value per channel): that batch is left out of each "
        "epoch (training.dataloader_drop_last)",
        last_batch,
        who,
    )
