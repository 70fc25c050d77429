"""What a run actually trained with, recorded in its all_results.json as `training_setup` for the model card.

The recipe says what was asked; this is what ran once the task's defaults, the device's speed settings and the
launcher (processes, mixed precision) had their say: the effective batch, precision, optimizer and schedule, the
data splits as read, and the versions of the libraries that trained it. It lives in all_results.json because that
file travels with the run everywhere (an export copies it), so a card written from a copy still says it.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from transformers import Trainer

# The libraries whose versions a model card lists, in that order.
FRAMEWORKS = ("transformers", "torch", "peft", "datasets", "accelerate", "hubtune")


def framework_versions() -> dict[str, str]:
    """The installed version of each of FRAMEWORKS (one that is not installed is left out)."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _name(value: Any) -> str:
    """An enum setting (OptimizerNames, SchedulerType) by its value, anything else as text."""
    return str(getattr(value, "value", value))


def training_setup(trainer: Trainer, splits: dict[str, str]) -> dict[str, Any]:
    """The effective setup of a finished `trainer`; `splits` maps each role (train, validation, test) to the data
    split it read."""
    args, state = trainer.args, trainer.state
    dtype = getattr(trainer.model, "dtype", None)
    return {
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_processes": args.world_size,
        # What one optimizer step sees, as the Trainer itself counts it (devices of a process included).
        "total_train_batch_size": args.train_batch_size * args.gradient_accumulation_steps * args.world_size,
        "mixed_precision": trainer.accelerator.mixed_precision,  # "no", "fp16", "bf16" or "fp8"
        "weights_dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "optimizer": _name(args.optim),
        "lr_scheduler_type": _name(args.lr_scheduler_type),
        "learning_rate": args.learning_rate,
        "warmup_steps": args.get_warmup_steps(state.max_steps),
        "weight_decay": args.weight_decay,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": state.max_steps,
        "steps_trained": state.global_step,
        "epochs_trained": state.epoch,
        "seed": args.seed,
        "splits": splits,
        "versions": framework_versions(),
    }
