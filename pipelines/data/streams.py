"""The `data.streaming` key: splits read as streams (datasets' IterableDataset) by the tasks that take it (text and
token classification, the three speech tasks), with the rules that tie it to the rest of the recipe."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.config import DataConfig, RecipeConfig, option
from pipelines.errors import HubtuneError


@dataclass
class StreamingDataConfig(DataConfig):
    """Data a task can read as a stream: labelled, checked and preprocessed batch by batch as training reads it."""

    streaming: bool = option(
        False,
        "read the splits as streams (datasets' IterableDataset) instead of preparing them up front: for data "
        "larger than memory or disk; needs training.max_steps, and a classifier's label names in data.labels",
    )

    def validate(self) -> None:
        super().validate()
        if self.streaming and self.validation_fraction is not None:
            raise HubtuneError(
                "'data.validation_fraction' draws rows at random from all of train, which a stream cannot do; "
                "with 'data.streaming' give a validation split"
            )

    def is_streamed(self) -> bool:
        return self.streaming

    def check_recipe(self, recipe: RecipeConfig) -> None:
        super().check_recipe(recipe)
        if not self.streaming:
            return
        if recipe.training.get("max_steps", -1) in (-1, None):
            raise HubtuneError(
                "'data.streaming' needs 'training.max_steps': a stream has no length, so epochs cannot be counted"
            )
        if recipe.adapt.feature_cache:
            raise HubtuneError("'adapt.feature_cache' stores features of every example, which a stream does not have")
