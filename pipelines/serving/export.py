"""`hubtune export RUN OUT --merge`: a standalone model folder that plain `from_pretrained` loads; `--format onnx`
an ONNX graph that onnxruntime runs alone (pipelines.serving.onnx_export)."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from pipelines.errors import HubtuneError
from pipelines.runs.folder import PARAMETERS_FILE, RECIPE_FILE, RESULTS_FILE, write_json
from pipelines.runs.guard import check_output_folder
from pipelines.serving.predictor import Predictor
from pipelines.serving.probe import EXPORT_CHECK_FILE, PROBE_SIZE, TOLERANCE, probe_batches

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("transformers", "onnx")


def _check_export_folder(out_dir: Path, run_dir: Path) -> None:
    """An export gets a folder of its own: outside the run, and new or empty, so that it writes over nothing."""
    check_output_folder(out_dir, "export", run_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise HubtuneError(f"export folder '{out_dir}' already exists and is not empty; give a new or empty folder")


@torch.no_grad()
def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    return model(**batch).logits


def export_run(
    run_dir: str | Path, out_dir: str | Path, merge: bool, export_format: str = "transformers"
) -> dict[str, Any]:
    """Write the run's model as a standalone folder (LoRA merged into the base weights, head kept), or with
    `export_format="onnx"` as an ONNX graph, and check that the exported model's outputs equal the run model's
    on real examples (made-up ones where the run's data is gone: `pipelines.serving.probe`)."""
    if export_format not in EXPORT_FORMATS:
        raise HubtuneError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got '{export_format}'")
    out_dir = Path(out_dir)
    _check_export_folder(out_dir, Path(run_dir))
    if export_format == "onnx":
        from pipelines.serving.onnx_export import export_onnx  # onnxruntime and the exporter only when asked for

        return export_onnx(run_dir, out_dir)
    run = Predictor(run_dir)
    from peft import PeftModel

    is_adapter = isinstance(run.model, PeftModel)
    if is_adapter and not merge:
        raise HubtuneError(
            f"run folder '{run_dir}' holds a PEFT adapter; pass --merge to fold it into the base weights"
        )
    standalone = copy.deepcopy(run.model).merge_and_unload() if is_adapter else run.model
    probe = probe_batches(run, [PROBE_SIZE])
    (batch,) = probe.batches
    out_dir.mkdir(parents=True, exist_ok=True)
    standalone.save_pretrained(out_dir)
    run.processor.save_pretrained(out_dir)
    for name in (RECIPE_FILE, RESULTS_FILE, PARAMETERS_FILE):
        if (run.run_dir / name).is_file():
            shutil.copy2(run.run_dir / name, out_dir / name)
    reloaded = run.task.load_run_model(str(out_dir))
    difference = float((_logits(reloaded, batch) - _logits(run.model, batch)).abs().max())
    check = {
        "max_abs_logit_difference": difference,
        "probe_examples": int(len(next(iter(batch.values())))),
        "probe": probe.source,
        "merged_adapter": is_adapter,
    }
    write_json(out_dir / EXPORT_CHECK_FILE, check)
    if difference > TOLERANCE:
        raise HubtuneError(
            f"exported model in '{out_dir}' differs from the run model by {difference:.2e} "
            f"(tolerance {TOLERANCE:g}); see {EXPORT_CHECK_FILE}"
        )
    logger.info("exported %s to %s (max logit difference %.2e)", run_dir, out_dir, difference)
    return check
