"""The serving half of a task: what a trained model makes of raw inputs (`hubtune predict`, `Predictor`).

A task is two classes. The training half (`Task`, pipelines/tasks/base.py) prepares data, builds the model and
scores it; the serving half (`TaskServing`) turns raw inputs (texts, or the paths of image and audio files) into
one prediction record each, in the three steps of transformers' pipelines: `preprocess` (inputs -> model inputs),
`forward` (the model) and `postprocess` (outputs -> records); `format` is a record's line of `hubtune predict`
output. The Predictor (pipelines/serving/predictor.py) drives the steps in batches, with the model inputs on the
model's device and gradients off, and writes every output file itself.

What a task can do beyond predicting is what its serving half implements, not a flag: `draw` (pictures of a
prediction, for `predict --draw`) and `onnx_axes` (the graph inputs `export --format onnx` needs).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from PIL import Image as PILImage
from transformers import BatchEncoding, BatchFeature

from pipelines.data.splits import Locate
from pipelines.errors import HubtuneError, path_kind

# A transformers model, or a PEFT model wrapping one. Their attributes (config, device, generate, ...) are
# dynamic, which torch's `nn.Module` typing cannot express, so the type checker takes them as they come.
TaskModel = Any
# The training half a serving half belongs to (its recipe, and helpers the two halves share).
TaskT = TypeVar("TaskT")
# Graph input name -> {axis: the name of its dynamic size}; inputs sharing a size name share the size.
OnnxAxes = dict[str, dict[int, str]]
# Words of the texts an export is checked on when the run's own data is gone: any words do (a tokenizer that lacks
# one gives its unknown token), and prefixes of different lengths give the batch padding.
PROBE_WORDS = "the quick brown fox jumps over the lazy dog while a cold wind blows across the quiet river".split()


@dataclass
class Batch:
    """What `preprocess` makes of a batch of raw inputs."""

    inputs: list[str]  # as given: each record's "input"
    # The model's inputs: a mapping of tensors (a tokenizer's or processor's batch), one such per input for models
    # that run one input at a time, or the inputs themselves for a model wrapped in a transformers pipeline.
    features: Any
    # What `postprocess` needs besides the model's outputs (the images' sizes, which texts were cut).
    context: dict[str, Any] = field(default_factory=dict)


def on_device(features: Any, device: Any) -> Any:
    """`features` with every tensor on `device`: a tensor or a transformers batch moved, a dict, list or tuple of
    them element by element, anything else (texts) as it is."""
    if isinstance(features, (torch.Tensor, BatchEncoding, BatchFeature)):
        return features.to(device)
    if isinstance(features, dict):
        return {key: on_device(value, device) for key, value in features.items()}
    if isinstance(features, (list, tuple)):
        return type(features)(on_device(value, device) for value in features)
    return features


def file_paths(values: list[Any], locate: Locate, column: str, kind: str) -> list[str]:
    """`predict --data` inputs of image and audio tasks: the files a column names (a path, or a datasets
    `{path, bytes}` value). Files held only as bytes inside a dataset are an error: `predict` reads files."""
    paths = []
    for i, value in enumerate(values):
        path = value.get("path") if isinstance(value, dict) else value
        found = path_kind(Path(path)) if isinstance(path, str) else None
        if not isinstance(path, str) or found != "file":
            there = (
                "" if not isinstance(path, str) else " (nothing is there)" if found is None else f" (it is a {found})"
            )
            raise HubtuneError(
                f"{locate(i)}: column '{column}' holds {str(value)[:80]!r}, not the path of an {kind} file{there}"
            )
        paths.append(path)
    return paths


def dynamic_axes(features: Mapping[str, torch.Tensor]) -> OnnxAxes:
    """Axis 0 of every input is the batch; axis 1 of a 2-D input (token ids and their masks, raw waveforms) is the
    padded sequence. Images and spectrograms keep the fixed size their processor makes, as the model was trained."""
    return {name: {0: "batch", 1: "sequence"} if value.dim() == 2 else {0: "batch"} for name, value in features.items()}


class TaskServing(ABC, Generic[TaskT]):
    """A trained model of one task serving raw inputs. Subclasses implement `preprocess` and `postprocess`; the
    rest have defaults, and `draw` and `onnx_axes` are capabilities a task has only where it implements them."""

    input_kind: ClassVar[str] = "text"  # what `hubtune predict` takes: "text" itself, or a "path" to a file
    input_column_key: ClassVar[str] = "text_column"  # the recipe key of the column `predict --data` reads

    def __init__(self, task: TaskT, model: TaskModel, processor: Any):
        self.task = task
        self.model = model  # in eval mode, on the device the Predictor chose
        self.processor = processor

    @classmethod
    def implements(cls, capability: str) -> bool:
        """Whether this serving half implements the optional method `capability` (`draw`, `onnx_axes`)."""
        return getattr(cls, capability) is not getattr(TaskServing, capability)

    def data_inputs(self, values: list[Any], locate: Locate, column: str) -> list[str]:
        """Inputs from the values of a data file's input column (`predict --data`): texts by default; `locate(i)`
        names the i-th value's file and row."""
        for i, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise HubtuneError(f"{locate(i)}: column '{column}' holds {value!r}, not a text to predict")
        return values

    @abstractmethod
    def preprocess(self, inputs: list[str]) -> Batch:
        """A batch of raw inputs as model inputs (on the CPU: the Predictor moves them), reading and checking them;
        a bad input is an error naming it."""

    def forward(self, batch: Batch) -> Any:
        """The model's outputs for the batch's features (on the model's device)."""
        return self.model(**batch.features)

    @abstractmethod
    def postprocess(self, batch: Batch, outputs: Any) -> list[dict[str, Any]]:
        """One JSON-ready prediction record per input of `batch`, in order, each with its `input`."""

    def format(self, prediction: dict[str, Any]) -> str:
        """One line of `hubtune predict` output for one prediction record (the record as JSON by default)."""
        return json.dumps(prediction)

    def draw(self, prediction: dict[str, Any]) -> dict[str, PILImage.Image]:
        """The pictures of one prediction record (boxes on the image, a mask) by file name, named after its input:
        implemented by tasks whose predictions can be pictured (`hubtune predict --draw DIR`)."""
        raise NotImplementedError(f"{type(self).__name__} draws nothing")

    def probe_inputs(self, folder: Path, count: int) -> list[str]:
        """`count` made-up raw inputs of several sizes, to check an export on where the run's own data cannot be
        read (exporting needs no data): texts here; tasks that read files write theirs into `folder`."""
        return [" ".join(PROBE_WORDS[: 3 + (2 * i) % (len(PROBE_WORDS) - 2)]) for i in range(count)]

    def probe_batch(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """The model's inputs for raw `inputs` as one batch of tensors, as an export is checked on them: the features
        of `preprocess`, where it makes one mapping per input, joined along the batch (the inputs `probe_inputs`
        makes have one size, where size matters)."""
        features = self.preprocess(inputs).features
        if isinstance(features, list):
            return {key: torch.cat([each[key] for each in features]) for key in features[0]}
        return dict(features)

    def onnx_axes(self, features: Mapping[str, torch.Tensor]) -> OnnxAxes:
        """The dynamic axes of each model input (`features`, a batch as the data collator makes it) of an ONNX graph
        of the model: implemented by tasks whose predictions are the logits of one forward pass, which is what
        `hubtune export --format onnx` exports. Transcription decodes outside the model, in no single graph."""
        raise NotImplementedError(f"{type(self).__name__} exports no ONNX graph")
