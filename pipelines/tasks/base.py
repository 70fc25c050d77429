"""The task protocol, training half: what a task adds to the shared spine (data checks, preprocessing, model,
metrics).

Everything else (config, data loading, adaptation, the Trainer, the run folder, the CLI) is shared. A new task is
a `Task` subclass (this ABC names what it must implement) with its `data_config` (a `DataConfig` subclass holding
the task's own recipe keys) and its `serving` half (a `TaskServing` subclass, pipelines/tasks/serving_base.py:
what the trained model makes of raw inputs), registered with `pipelines.tasks.register_task` or an entry point of
the `hubtune.tasks` group; plus a recipe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

import numpy as np
from datasets import Dataset
from sklearn.metrics import confusion_matrix
from transformers import EvalPrediction, Trainer, TrainingArguments
from transformers.trainer_utils import PredictionOutput

from pipelines.config import DataConfig, GenerationSection, RecipeConfig
from pipelines.data.splits import Splits, load_splits, load_table_file
from pipelines.errors import HubtuneError
from pipelines.metrics import load_metric
from pipelines.models.positions import position_limit
from pipelines.tasks.serving_base import TaskModel, TaskServing

DataT = TypeVar("DataT", bound=DataConfig)
# A task's evaluation of one batch in place of the Trainer's `prediction_step`, called with the trainer, the model,
# the batch, `prediction_loss_only` and the Trainer's own step (`standard(model, inputs, prediction_loss_only)`, for
# a task that only adjusts what it returns); returns (loss, predictions, labels) as that step does.
PredictionStep = Callable[[Trainer, TaskModel, dict[str, Any], bool, Callable[..., tuple]], tuple]


@dataclass
class PreparedData:
    """What `Task.prepare` makes of a run's data, handed to every later step (model, Trainer, metrics).

    Everything a task learns from the data travels here, not on the task: a task object holds only its recipe,
    so its methods work in any order and on any data (a run folder's, a new file's).
    """

    datasets: dict[str, Dataset]  # role (train / validation / test) -> preprocessed examples
    processor: Any  # the tokenizer / image processor / feature extractor that preprocessed them
    label_names: list[str] = field(default_factory=list)  # in id order; empty where labels are transcripts
    # Things about the data a user should know that do not stop the run (logged, and kept in the report).
    warnings: list[str] = field(default_factory=list)
    # The training split's label ids (single-label classes), for balanced sampling; empty when not training.
    train_labels: list[int] = field(default_factory=list)
    # Weights of a weighted cross-entropy, one per class in id order (`training.class_weights`), or None.
    class_weights: list[float] | None = None
    # Regression targets are standardised with these (mean, std) of the training targets (`data.scale_targets`).
    target_scaling: tuple[float, float] | None = None
    # The model's outputs are in the targets' own units already: its run folder folded `target_scaling` into the
    # output layer (`Task.saved_model`), so that consumers without hubtune get values in the data's units.
    scaling_in_weights: bool = False
    # A multi-label classifier's decision threshold per class in id order, tuned on validation
    # (`data.tune_thresholds`); None: `data.threshold` for every class.
    thresholds: list[float] | None = None
    # The shortest audio clip of each split: role -> (its length in samples at the feature extractor's rate, the
    # clip named with its file and row), held against the model's own shortest input by `Task.check_model`.
    shortest_clips: dict[str, tuple[int, str]] = field(default_factory=dict)

    def __getitem__(self, role: str) -> Dataset:
        return self.datasets[role]

    def __contains__(self, role: object) -> bool:
        return role in self.datasets


class Task(ABC, Generic[DataT]):
    """What one task adds to the shared spine. Subclasses implement the abstract methods; the rest have defaults."""

    name: ClassVar[str]
    pipeline_tag: ClassVar[str | None] = None  # the Hub's task tag, for the model card
    # Instance attributes, not ClassVars: a classifier's depend on its recipe's `data.problem_type`.
    primary_metric: str = "accuracy"  # what `hubtune compare` reports
    # The metrics the report plots and `hubtune train` prints (without the eval_/test_ prefix).
    summary_metrics: tuple[str, ...] = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
    # Metrics (name endings) where lower is better: `hubtune compare` judges negative transfer by them.
    lower_is_better: tuple[str, ...] = ("loss",)
    # Takes `training.class_weights` (a weighted cross-entropy over its classes).
    class_weighted_loss: ClassVar[bool] = False
    # Examples differ in length (tokenised text's `input_ids`, or a length column named by the task's
    # `length_column_name` default, as audio's header lengths): evaluation and prediction read examples sorted by
    # length, and training batches group similar lengths where a recipe opts in (`group_by_length`).
    variable_length: ClassVar[bool] = False
    # Lengths within one step pad to the same batch width (the collator's `pad_to_multiple_of`): length-grouped
    # batches draw them in random order.
    length_step: ClassVar[int] = 1
    # Takes `model.architecture`: a model built new around an ImageNet backbone (pipelines/dense_backbone.py).
    builds_on_backbone: ClassVar[bool] = False
    # `adapt.feature_cache` fits its models: a head that reads one stored backbone output per example (classifiers),
    # not multi-scale feature maps through a trained decoder (dense prediction).
    caches_features: ClassVar[bool] = True
    peft_task_type: ClassVar[str | None] = None  # PEFT's TaskType, so adapters save and reload with the head
    # The Trainer the task's models train under: "seq2seq" for transformers' `Seq2SeqTrainer` (evaluation by
    # generating), else "trainer"; hubtune's own additions come over either (`pipelines.training.trainer`).
    trainer_base: ClassVar[Literal["trainer", "seq2seq"]] = "trainer"
    training_arguments_class: ClassVar[type[TrainingArguments]] = TrainingArguments
    # TrainingArguments this task needs unless the recipe's `training` section says otherwise.
    training_defaults: ClassVar[dict[str, Any]] = {}
    # The recipe's `data` section for this task: the shared keys plus the task's own, each checking itself.
    data_config: ClassVar[type[DataConfig]] = DataConfig
    # The recipe's `generation` section for a task whose model generates (decoding keys); None: the task takes none.
    generation_section: ClassVar[type[GenerationSection] | None] = None
    # The serving half: what `Predictor` (hubtune predict, export) does with a trained model of this task.
    serving: ClassVar[type[TaskServing[Any]]]

    @classmethod
    def check_recipe(cls, config: RecipeConfig) -> None:
        """Rules that tie the recipe's other sections to this task, run by the recipe layer (through the task
        registry) when a recipe is loaded. Overrides call this one first."""
        if config.model.architecture and not cls.builds_on_backbone:
            raise HubtuneError(
                f"recipe key 'model.architecture' builds a detection or segmentation model around a backbone; task "
                f"'{config.task}' loads 'model.checkpoint' whole: remove the key"
            )
        if config.adapt.feature_cache and not cls.caches_features:
            raise HubtuneError(
                f"'adapt.feature_cache' stores one backbone output per example for a classifier head; a {config.task} "
                "model's decoder reads feature maps of every stage, so it cannot train on them: remove the key"
            )
        if config.training.get("class_weights") is not None and not cls.class_weighted_loss:
            raise HubtuneError(
                f"recipe key 'training.class_weights' weights the classes of a classifier; task '{config.task}' has none"
            )

    def __init__(self, config: RecipeConfig):
        self.config = config
        self._metrics: dict[str, Any] = {}

    @property
    def data(self) -> DataT:
        """The recipe's `data` section, as this task's own `data_config` class (the loader built it so)."""
        return cast(DataT, self.config.data)

    def metric(self, name: str) -> Any:
        """The project's offline `evaluate` module `name`, loaded once per task (a first load takes seconds)."""
        if name not in self._metrics:
            self._metrics[name] = load_metric(name)
        return self._metrics[name]

    @abstractmethod
    def load_processor(self, source: str | None = None) -> Any:
        """Tokenizer / image processor / feature extractor from the checkpoint, or from a run folder."""

    def load_data_file(self, path: Path) -> Dataset:
        """One local split file (or folder) as a Dataset; tasks with formats of their own override this."""
        return load_table_file(path)

    def data_path_kind(self) -> str | None:
        """What `load_data_file` reads: a "file", a "folder", or None for either. A split given in 'data.files' (or
        to `--data`) is checked against it first, so a folder where a file is read is named as one, with its key."""
        return "file"

    def read_splits(self, roles: Collection[str] = ("train", "validation", "test")) -> Splits:
        """The recipe's splits in `roles`, local ones read by `load_data_file` (`pipelines.data.splits.load_splits`)."""
        return load_splits(self.config.data, self.config.seed, self.load_data_file, roles, self.data_path_kind())

    def fit_processor(self, splits: Splits, processor: Any) -> Any:
        """The processor completed from the training data (a CTC character vocabulary); most tasks return it as is.

        Called before `prepare` when training, never on a run folder (its processor is already complete).
        """
        return processor

    @abstractmethod
    def prepare(self, splits: Splits, processor: Any, label_names: list[str] | None = None) -> PreparedData:
        """Check the columns and labels of every split, then preprocess.

        `label_names` fixes the label set (a trained model's); without it the labels are read from the data.
        """

    @abstractmethod
    def build_model(self, prepared: PreparedData) -> TaskModel:
        """The pretrained (or from-scratch) model with a head for `prepared.label_names`."""

    def check_model(self, model: TaskModel, prepared: PreparedData) -> None:
        """Rules that tie the recipe and data to the model `build_model` made: run before anything is written,
        and again when a trained model scores new data (`evaluate`, export's check). Here: a `data.max_length` (tokens per example, in any task's data section that has one) beyond the model's
        learned position embeddings, which would stop training mid-way with an index error. Overrides call this
        one first."""
        max_length = getattr(self.data, "max_length", None)
        limit = position_limit(model)
        if isinstance(max_length, int) and limit is not None and max_length > limit.tokens:
            raise HubtuneError(
                f"recipe key 'data.max_length' is {max_length}, but model '{self.config.model.checkpoint}' takes at "
                f"most {limit.tokens} tokens: {limit.describe()}; set 'data.max_length' to {limit.tokens} or less"
            )

    @abstractmethod
    def load_run_model(self, run_dir: str) -> TaskModel:
        """The trained model from a run folder (with its adapter, if any)."""

    def checkpoint_label_names(self) -> list[str]:
        """The label set of the checkpoint's own trained head where it is one of this task's kind, for `hubtune
        compare` to warn when the recipe's differs: the label-head hook, implemented by tasks with a label head.
        Empty by default."""
        return []

    def trained_label_names(self, model: TaskModel) -> list[str]:
        """The label set a trained model predicts, for preparing new data the way it was trained (none by default:
        transcription has no fixed label set)."""
        return []

    def from_trained(self, prepared: PreparedData, model: TaskModel) -> PreparedData:
        """`prepared` (new data for a trained model) completed with what the model learnt from its training data
        (a regression's target scaling); most tasks have nothing to add."""
        return prepared

    def loss_function(self, prepared: PreparedData) -> Callable[[Any, Any], Any] | None:
        """(logits, labels) -> the training loss, where the task computes its own; None: the model's loss."""
        return None

    def train_sampler(self, prepared: PreparedData, seed: int) -> Any:
        """The sampler that draws training examples (a `torch.utils.data.Sampler`); None: the Trainer's."""
        return None

    def validation_results(self, output: PredictionOutput, prepared: PreparedData, model: TaskModel) -> dict[str, Any]:
        """Results found on the validation predictions only (tuned thresholds), kept as `eval_<name>`; none by
        default. What the task adopts from them goes into `prepared` (for the test scores that follow) and into
        `model`'s config (saved with the run)."""
        return {}

    @abstractmethod
    def data_collator(self, processor: Any) -> Any:
        """Prepared examples -> a model batch (padding, label alignment)."""

    def train_data_collator(self, processor: Any, model: TaskModel) -> Any:
        """Training batches of `model` where they differ from `data_collator`'s (padding-free packing); None: the
        same."""
        return None

    @abstractmethod
    def compute_metrics(self, prediction: EvalPrediction, prepared: PreparedData) -> dict[str, float]:
        """The task's scores of an evaluation's predictions (of `prepared` data), through its offline `evaluate`
        modules."""

    def preprocess_logits_for_metrics(self) -> Callable[[Any, Any], Any] | None:
        """(logits, labels) -> what evaluation keeps of a batch's logits for `compute_metrics` (the Trainer's hook of
        that name): e.g. a segmentation's class maps instead of its per-class score maps, so that what is gathered
        over an evaluation set stays small. None: the logits as they are."""
        return None

    def prediction_step(self) -> PredictionStep | None:
        """What evaluation keeps of a batch, where the Trainer's `prediction_step` would keep the wrong thing (a
        `PredictionStep`); None: the Trainer's."""
        return None

    def domain_warnings(self, splits: Splits, processor: Any) -> list[str]:
        """Signs that the data lies outside the checkpoint's input domain, as plain sentences (none by default)."""
        return []

    def saved_processor(self, processor: Any, model: TaskModel) -> Any:
        """The processor as the run folder saves it, for consumers without hubtune (transformers' `pipeline()`, the
        Hub widget): a copy set as training and `predict` used it where the recipe changes the checkpoint's settings
        (an image size, a truncation length). A run folder's own processor comes back as it is. Default: unchanged."""
        return processor

    def saved_model(self, model: TaskModel) -> None:
        """The trained model made ready for its run folder, in place, after its last evaluation: what a consumer
        without hubtune must find in config.json (timm's preprocessing, which lives there) or in the weights (a
        regression's target scaling). A run folder's own model comes back as it is. Default: nothing to add."""

    def prediction_artifacts(self, output: PredictionOutput, prepared: PreparedData) -> dict[str, Any]:
        """Data (name -> JSON payload) kept from a split's predictions, e.g. a confusion matrix; the run folder
        stores each as `<split>_<name>.json`. Most tasks have none."""
        return {}


def logits_of(predictions: Any) -> np.ndarray:
    """The first output of Trainer predictions (a model may return a tuple with hidden states after it)."""
    return predictions[0] if isinstance(predictions, tuple) else predictions


def confusion_artifact(output: PredictionOutput, label_names: list[str]) -> dict[str, Any]:
    """The confusion matrix of single-label classifier predictions, with its label names."""
    predicted = np.argmax(logits_of(output.predictions), axis=-1)
    matrix = confusion_matrix(output.label_ids, predicted, labels=range(len(label_names)))
    return {"confusion_matrix": {"labels": label_names, "confusion_matrix": matrix.tolist()}}
