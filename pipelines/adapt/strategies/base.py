"""The strategy protocol: what an adaptation strategy (recipe key `adapt.strategy`) decides and what it tells.

A strategy decides which parameters of the task's model train (`apply`) and holds its recipe keys: its
`adapt_config`, an `AdaptConfig` subclass with its own keys and their rules, which the recipe layer builds and
checks through the strategy registry without importing the strategy. The rest of hubtune asks a strategy for
facts (`saves_adapter`, `gates_layer_groups`, `frozen_backbone`, the model card's words), never its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from pipelines.config import AdaptConfig, RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups, layer_groups
from pipelines.registry import STRATEGIES


@dataclass(frozen=True)
class ProbeStage:
    """A first training stage before the recipe's own (LP-FT's linear probe): its strategy, length and LR."""

    strategy: Strategy
    epochs: float
    learning_rate: float


class Strategy(ABC):
    """One way of adapting a pretrained model; subclasses set `name` and implement `apply`."""

    name: ClassVar[str]
    # The recipe's `adapt` section for this strategy: the shared keys plus the strategy's own.
    adapt_config: ClassVar[type[AdaptConfig]] = AdaptConfig
    # Trains a PEFT adapter over the frozen checkpoint: the run folder holds the adapter and the head, not full
    # weights, and names its base by `model.checkpoint`.
    saves_adapter: ClassVar[bool] = False
    # Trains whole layer groups, so `adapt.unfreeze_schedule` can gate when each one starts.
    gates_layer_groups: ClassVar[bool] = False
    # Trains only what sits on top of a frozen backbone, so `adapt.feature_cache` can store the backbone's outputs.
    frozen_backbone: ClassVar[bool] = False

    def __init__(self, settings: AdaptConfig):
        if not isinstance(settings, self.adapt_config):
            raise TypeError(
                f"strategy '{self.name}' takes its adapt section as {self.adapt_config.__name__} "
                f"(pipelines.config.build_adapt_config builds it), got {type(settings).__name__}"
            )
        self.settings = settings

    @classmethod
    def check_recipe(cls, config: RecipeConfig) -> None:
        """Rules that tie the recipe's other sections to this strategy, run by the recipe layer (through the
        strategy registry) once `adapt` has checked its own keys. Overrides call this one first."""
        adapt = config.adapt
        if cls.saves_adapter and config.model.from_scratch:
            raise HubtuneError(
                f"'adapt.strategy: {cls.name}' needs pretrained weights; it cannot be combined with 'model.from_scratch'"
            )
        if cls.saves_adapter and config.model.architecture:
            # A run folder of an adapter names its base by `model.checkpoint`, which here holds only the backbone's
            # weights under timm's names: a reload would start from a random backbone and predict garbage.
            raise HubtuneError(
                f"recipe key 'adapt.strategy: {cls.name}' saves an adapter over 'model.checkpoint', which with "
                "'model.architecture' is only the backbone, so the run could not be reloaded; use one that saves "
                f"the whole model: {', '.join(STRATEGIES.where(lambda strategy: not strategy.saves_adapter))}"
            )
        if adapt.unfreeze_schedule is not None and not cls.gates_layer_groups:
            raise HubtuneError(f"'adapt.unfreeze_schedule' gates layer groups; it does not apply to '{cls.name}'")
        if adapt.feature_cache and not cls.frozen_backbone:
            frozen = " or ".join(STRATEGIES.where(lambda strategy: strategy.frozen_backbone))
            raise HubtuneError(f"'adapt.feature_cache' needs 'adapt.strategy: {frozen}', not '{cls.name}'")

    @abstractmethod
    def apply(self, model: nn.Module, groups: LayerGroups, peft_task_type: str | None) -> nn.Module:
        """Set which parameters of `model` train (`requires_grad`); returns the model to train, which may wrap
        `model` (a PEFT model). `peft_task_type` is the task's PEFT TaskType, for strategies that save adapters."""

    def adapt(self, model: nn.Module, peft_task_type: str | None) -> tuple[nn.Module, LayerGroups]:
        """`apply` on the model's layer groups; returns the model to train and the groups."""
        groups = layer_groups(model)
        return self.apply(model, groups, peft_task_type), groups

    def describe(self) -> str:
        """How the model card names this strategy with its settings, e.g. "`train_last_n` (top 2 blocks)"."""
        return f"`{self.name}`"

    def model_load_kwargs(self) -> dict[str, Any]:
        """`from_pretrained` arguments the task's model needs for this strategy (QLoRA's 4-bit base)."""
        return {}

    def cuda_requirements(self) -> dict[str, str]:
        """The recipe settings that need a CUDA GPU, each with the package it needs, checked when training starts."""
        return {}

    def probe_stage(self) -> ProbeStage | None:
        """A stage trained before this strategy's own (LP-FT's linear probe), or None."""
        return None


class GroupStrategy(Strategy):
    """A strategy that trains whole layer groups and freezes the others."""

    gates_layer_groups = True

    @abstractmethod
    def trainable_groups(self, groups: LayerGroups) -> set[str]:
        """The names of the layer groups that train."""

    def apply(self, model: nn.Module, groups: LayerGroups, peft_task_type: str | None) -> nn.Module:
        trainable = self.trainable_groups(groups)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(groups.by_parameter[name] in trainable)
        # wav2vec2-family: the convolutional feature encoder is pretrained on raw audio and fine-tuning it rarely
        # helps (the wav2vec2 paper and the transformers examples keep it frozen).
        freeze_encoder = getattr(model, "freeze_feature_encoder", None)
        if self.settings.freeze_feature_encoder and callable(freeze_encoder):
            freeze_encoder()
        return model
