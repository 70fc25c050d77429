"""`adapt.strategy: full`: every layer group trains."""

from __future__ import annotations

from pipelines.adapt.strategies.base import GroupStrategy
from pipelines.models.groups import LayerGroups


def all_groups(groups: LayerGroups) -> set[str]:
    return set(groups.names)


class Full(GroupStrategy):
    name = "full"

    def trainable_groups(self, groups: LayerGroups) -> set[str]:
        return all_groups(groups)
