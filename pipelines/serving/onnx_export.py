"""`hubtune export RUN OUT --format onnx`: the run's model as one ONNX graph that onnxruntime runs alone.

A task exports when its serving half implements `onnx_axes` (which input axes of the graph are dynamic): tasks
whose predictions are the logits of one forward pass.

OUT holds `model.onnx` (its weights in `model.onnx.data` beside it), the processor files and `config.json` with
the label names, so a serving stack needs neither hubtune nor torch. The graph is checked against the run model
with onnxruntime on real examples of the recipe's data (made-up ones where that data is gone), at two batch shapes,
before the export counts as done.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.data.pixels import size_timm_config
from pipelines.errors import HubtuneError
from pipelines.runs.folder import PARAMETERS_FILE, RECIPE_FILE, RESULTS_FILE, read_run_recipe, write_json
from pipelines.serving.predictor import Predictor
from pipelines.serving.probe import EXPORT_CHECK_FILE, PROBE_SIZE, TOLERANCE, probe_batches
from pipelines.tasks import TASKS, get_task
from pipelines.tasks.serving_base import OnnxAxes

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OUTPUT_NAME = "logits"
# The serving-half method that describes a graph's inputs: a task exports to ONNX when it implements it.
ONNX_CAPABILITY = "onnx_axes"


class _Logits(torch.nn.Module):
    """The model with the batch's inputs as positional arguments and its logits as the one output: the graph's
    inputs and output then carry the processor's names and nothing else (no loss, no hidden states)."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


def _dynamic_shapes(axes: list[dict[int, str]]) -> tuple[tuple[dict[int, Any], ...]]:
    """torch.export's dynamic shapes of the graph inputs, in order, from the task's axis names (`onnx_axes`): axes of
    one name share one size."""
    dims: dict[str, Any] = {}
    shapes = tuple(
        {axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in named.items()} for named in axes
    )
    # One tuple per positional argument of `_Logits.forward`: its `*inputs` is a single (tuple) argument.
    return (shapes,)


def _export_graph(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], axes: OnnxAxes, path: Path, run_dir: Path
) -> None:
    # The exporter's graph optimiser logs each rewrite at INFO: hundreds of lines that say nothing to a user.
    optimiser_log = logging.getLogger("onnx_ir")
    level = optimiser_log.level
    optimiser_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Every input shares the one batch (and sequence) axis on purpose; the exporter warns that it does.
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            torch.onnx.export(
                _Logits(model, list(batch)).eval(),
                tuple(batch.values()),
                str(path),
                input_names=list(batch),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=_dynamic_shapes([axes[name] for name in batch]),
                dynamo=True,
                verbose=False,
            )
    except torch.onnx.errors.OnnxExporterError as error:
        # The exporter's own message is a generic "step 1/3 failed" banner; the cause names the operation.
        cause = error.__cause__ or error
        reason = next((line for line in str(cause).splitlines() if line.strip()), type(cause).__name__)
        raise HubtuneError(
            f"the {type(model).__name__} model of run '{run_dir}' does not export to ONNX: {reason}"
        ) from error
    finally:
        optimiser_log.setLevel(level)


def _shapes(batch: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{name} {list(value.shape)}" for name, value in batch.items())


def _compare(session: Any, model: torch.nn.Module, batch: dict[str, torch.Tensor], out_dir: Path) -> float:
    """The largest logit difference between the graph and the model on `batch`."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    try:
        graph = session.run([OUTPUT_NAME], {name: value.numpy() for name, value in batch.items()})[0]
    except (Fail, InvalidArgument, RuntimeException) as error:
        # A graph that froze an axis at the export batch's size refuses the other probe batch here.
        raise HubtuneError(f"ONNX graph in '{out_dir}' does not run on inputs {_shapes(batch)}: {error}") from error
    with torch.no_grad():
        reference = model(**batch).logits.numpy()
    if graph.shape != reference.shape:
        raise HubtuneError(
            f"ONNX graph in '{out_dir}' gives logits of shape {list(graph.shape)} on inputs {_shapes(batch)}, "
            f"the run model {list(reference.shape)}"
        )
    return float(np.abs(graph - reference).max())


def _save_preprocessing(run: Predictor, config: Any, out_dir: Path) -> None:
    """config.json (label names; a timm model's preprocessing too) and the processor files, describing the inputs
    the graph was made for: with `data.image_size`, the run's square side instead of the checkpoint's."""
    # A run folder saved since it keeps these itself (`Task.saved_processor`); earlier ones get them here.
    config = copy.deepcopy(config)
    size_timm_config(config, getattr(run.config.data, "image_size", None))
    config.save_pretrained(out_dir)
    run.task.saved_processor(run.processor, run.model).save_pretrained(out_dir)


def export_onnx(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the run's model as an ONNX graph with dynamic batch (and sequence) axes to `out_dir`, with the
    processor files and label names, and check it against the run model on real examples of its data (or made-up ones: `pipelines.serving.probe`).

    A LoRA adapter is merged into the base weights: an ONNX graph has no adapter form to keep, and the check
    compares the merged graph with the adapter model itself.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    task = read_run_recipe(run_dir).task
    if not get_task(task).serving.implements(ONNX_CAPABILITY):
        exported = TASKS.where(lambda known: known.serving.implements(ONNX_CAPABILITY))
        raise HubtuneError(
            f"run folder '{run_dir}' is a {task} run; --format onnx exports {', '.join(exported)} runs, whose "
            "predictions are the logits of one forward pass (transcription decodes outside the model)"
        )
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter needs it; a missing one is named here, not mid-export)
    except ModuleNotFoundError as error:
        raise HubtuneError(
            f"--format onnx needs {error.name}, which is not installed: pip install 'hubtune[onnx]'"
        ) from error
    from peft import PeftModel

    run = Predictor(run_dir)
    reference = run.model.cpu().eval()  # onnxruntime checks on the CPU; so does the reference
    is_adapter = isinstance(reference, PeftModel)
    standalone = copy.deepcopy(reference).merge_and_unload() if is_adapter else reference
    # A second batch of half the examples has another batch size (and, for text, often another padded length):
    # a graph that kept the export batch's shapes fails the check at export, not in serving.
    probe = probe_batches(run, [PROBE_SIZE, PROBE_SIZE // 2])
    batches = [{name: value for name, value in batch.items() if name != "labels"} for batch in probe.batches]
    # The graph is built in a scratch folder beside OUT (a rename away): a model that does not export leaves
    # no half-written OUT behind.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as scratch:
        axes = run.serving.onnx_axes(batches[0])
        _export_graph(standalone, batches[0], axes, Path(scratch) / ONNX_FILE, run_dir)
        out_dir.mkdir(exist_ok=True)
        for written in Path(scratch).iterdir():
            written.rename(out_dir / written.name)
    _save_preprocessing(run, standalone.config, out_dir)
    for name in (RECIPE_FILE, RESULTS_FILE, PARAMETERS_FILE):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
    session = onnxruntime.InferenceSession(str(out_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    differences = [_compare(session, reference, batch, out_dir) for batch in batches]
    difference = max(differences)
    check = {
        "format": "onnx",
        "max_abs_logit_difference": difference,
        "probe_examples": int(len(next(iter(batches[0].values())))),
        "probe": probe.source,
        "checked_shapes": [{name: list(value.shape) for name, value in batch.items()} for batch in batches],
        "merged_adapter": is_adapter,
        "onnxruntime": onnxruntime.__version__,
    }
    write_json(out_dir / EXPORT_CHECK_FILE, check)
    if difference > TOLERANCE:
        worst = batches[differences.index(difference)]
        raise HubtuneError(
            f"ONNX graph in '{out_dir}' differs from the run model by {difference:.2e} on inputs {_shapes(worst)} "
            f"(tolerance {TOLERANCE:g}); see {EXPORT_CHECK_FILE}"
        )
    logger.info("exported %s to %s as ONNX (max logit difference %.2e)", run_dir, out_dir, difference)
    return check
