"""`adapt.strategy: freeze_backbone`: the pretrained backbone stays frozen; the head (with the neck of a model
built around a backbone, which is new) trains. Its frozen features can be cached (`adapt.feature_cache`)."""

from __future__ import annotations

from pipelines.adapt.strategies.base import GroupStrategy
from pipelines.models.groups import LayerGroups


class FreezeBackbone(GroupStrategy):
    name = "freeze_backbone"
    frozen_backbone = True

    def trainable_groups(self, groups: LayerGroups) -> set[str]:
        return {"neck", "head"} if groups.dense else {"head"}
