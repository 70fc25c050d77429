"""`RunResult`: what `Recipe.run` returns, the run's metrics plus the live objects research code goes on with."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import Trainer

from pipelines.tasks import PreparedData


@dataclass(eq=False)
class RunResult(Mapping[str, Any]):
    """A finished run: its metrics (what all_results.json holds), its folder and the objects it trained with.

    It reads as the metrics dict that `Recipe.run` returned before it: `result["test_accuracy"]`, `.get`, `in`,
    `keys()`/`items()`, iteration, `len`, `dict(result)` (for `json.dumps`) and `==` with a dict all see the metrics
    only. It is read-only; copy it with `dict(result)` to add keys.

    - `metrics`: every score and record of the run (`train_*`, `eval_*`, `test_*`, `trainable_parameters`, ...).
    - `run_dir`: the run folder, which `Predictor(run_dir)` serves and `hubtune evaluate` scores.
    - `model`: the trained model in memory, unwrapped from any distributed wrapper (a `PeftModel` for LoRA runs),
      as saved in `run_dir`.
    - `trainer`: the `transformers.Trainer` that trained it (its `state.log_history`, `predict` on other data).
    - `data`: the prepared data (`PreparedData`: the tokenised/processed splits by role and the processor).
    - `label_names`: the class names in id order; None for tasks whose labels are not classes (transcripts).
    """

    metrics: dict[str, Any]
    run_dir: Path
    model: nn.Module = field(repr=False)
    trainer: Trainer = field(repr=False)
    data: PreparedData = field(repr=False)
    label_names: list[str] | None = None

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)
