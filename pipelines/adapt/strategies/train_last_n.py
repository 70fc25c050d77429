"""`adapt.strategy: train_last_n`: the top `adapt.n` blocks train with the neck and the head."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.adapt.strategies.base import GroupStrategy
from pipelines.config import AdaptConfig, option
from pipelines.errors import HubtuneError
from pipelines.models.groups import LayerGroups


@dataclass
class TrainLastNAdaptConfig(AdaptConfig):
    n: int = option(2, "blocks left trainable, counted from the top")

    def validate(self) -> None:
        super().validate()
        if self.n < 1:
            raise HubtuneError(f"recipe key 'adapt.n' must be at least 1 for train_last_n, got {self.n}")


def last_n_groups(groups: LayerGroups, n: int) -> set[str]:
    """The top `n` blocks, the neck and the head; `n` comes from recipe key `adapt.n`."""
    if n > groups.num_blocks:
        raise HubtuneError(f"recipe key 'adapt.n' is {n} but the model has only {groups.num_blocks} blocks")
    return {f"block.{i}" for i in range(groups.num_blocks - n, groups.num_blocks)} | {"neck", "head"}


class TrainLastN(GroupStrategy):
    name = "train_last_n"
    adapt_config = TrainLastNAdaptConfig
    settings: TrainLastNAdaptConfig

    def trainable_groups(self, groups: LayerGroups) -> set[str]:
        return last_n_groups(groups, self.settings.n)

    def describe(self) -> str:
        return f"`{self.name}` (top {self.settings.n} blocks)"
