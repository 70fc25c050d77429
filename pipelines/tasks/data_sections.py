"""Data sections shared by task families: labelled examples (the classifiers), and what they cannot do as streams
(`data.streaming`, pipelines/data/streams.py).

Each class checks its own keys (`validate`) and the rules that tie them to the recipe's other sections
(`check_recipe`); the recipe layer calls both through the task registry without knowing which task uses which.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.config import DataConfig, RecipeConfig, option, require_one_of
from pipelines.errors import HubtuneError

PROBLEM_TYPES = ("single_label", "multi_label", "regression")
SAMPLERS = ("balanced",)


@dataclass
class LabelledDataConfig(DataConfig):
    """Data with a label per example (text, image and audio classification): one class, a set of classes, or a
    number (`problem_type`)."""

    label_column: str = option(
        "label",
        "the column of labels: class names, or integer ids with 'labels'; multi_label: a list of them (or a "
        "string split at 'label_separator'); regression: a number",
    )
    labels: list[str] | None = option(None, "label names in id order; read from the data when absent")
    problem_type: str = option(
        "single_label",
        "single_label (one class per example, cross-entropy), multi_label (any number of classes, binary "
        "cross-entropy per class) or regression (one number, mean squared error)",
    )
    label_separator: str | None = option(
        None, "multi_label: labels written as one string, split at this separator (e.g. '|'); null: a list column"
    )
    threshold: float = option(0.5, "multi_label: a class is predicted when its probability reaches this")
    tune_thresholds: bool = option(
        False,
        "multi_label: after training, give each class the threshold with the best F1 on the validation split; the "
        "test scores and predict use them (kept in the run folder's config.json)",
    )
    scale_targets: bool = option(
        False,
        "regression: train on targets standardised with the training mean and std (kept in the run folder's "
        "config.json); predictions are given back in the data's units",
    )
    sampler: str | None = option(
        None,
        "balanced: draw training examples with probability inversely proportional to their class's frequency "
        "(single_label); null: uniform",
    )

    def validate(self) -> None:
        super().validate()
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise HubtuneError(f"recipe key 'data.labels' repeats a label: {self.labels}")
        require_one_of("data.problem_type", self.problem_type, PROBLEM_TYPES)
        if self.sampler is not None:
            require_one_of("data.sampler", self.sampler, SAMPLERS)
            if self.problem_type != "single_label":
                raise HubtuneError(
                    f"recipe key 'data.sampler: {self.sampler}' balances classes of single-label data; "
                    f"'data.problem_type' is {self.problem_type}"
                )
        if self.label_separator is not None and self.problem_type != "multi_label":
            raise HubtuneError("recipe key 'data.label_separator' needs 'data.problem_type: multi_label'")
        if self.label_separator == "":
            raise HubtuneError("recipe key 'data.label_separator' must not be empty")
        if not 0.0 < self.threshold < 1.0:
            raise HubtuneError(f"recipe key 'data.threshold' must lie in (0, 1), got {self.threshold}")
        if self.tune_thresholds and self.problem_type != "multi_label":
            raise HubtuneError("recipe key 'data.tune_thresholds' needs 'data.problem_type: multi_label'")
        if self.tune_thresholds and self.validation_split is None and self.validation_fraction is None:
            raise HubtuneError(
                "recipe key 'data.tune_thresholds' tunes on the validation split: set 'data.validation_split' "
                "or 'data.validation_fraction'"
            )
        if self.scale_targets and self.problem_type != "regression":
            raise HubtuneError("recipe key 'data.scale_targets' needs 'data.problem_type: regression'")
        if self.labels is not None and self.problem_type == "regression":
            raise HubtuneError("recipe key 'data.labels' names classes; regression ('data.problem_type') has none")

    def check_recipe(self, recipe: RecipeConfig) -> None:
        super().check_recipe(recipe)
        if recipe.training.get("class_weights") is not None and self.problem_type != "single_label":
            raise HubtuneError(
                "recipe key 'training.class_weights' weights a cross-entropy over classes; 'data.problem_type' "
                f"{self.problem_type} trains another loss"
            )

    def stratify_column(self) -> str | None:
        return self.label_column if self.problem_type == "single_label" else None


def check_streamed_labels(data: LabelledDataConfig, recipe: RecipeConfig) -> None:
    """What a streamed classifier (text, audio) cannot do: anything that needs every label before training."""
    if not data.is_streamed():
        return
    if data.problem_type != "single_label":
        raise HubtuneError(f"'data.streaming' reads single_label data; 'data.problem_type' is {data.problem_type}")
    if data.sampler is not None:
        raise HubtuneError("'data.sampler' draws examples by index, which a stream ('data.streaming') has not")
    if recipe.training.get("class_weights") == "balanced":
        raise HubtuneError(
            "'training.class_weights: balanced' counts the training labels, which a stream ('data.streaming') is "
            "not read ahead for; give a list of weights"
        )
