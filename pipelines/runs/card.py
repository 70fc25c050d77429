"""The model card of a run folder: what the Hub shows and reads (metadata), written from the run's own files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipelines.adapt.strategies import strategy_for
from pipelines.config import RecipeConfig
from pipelines.runs.folder import RESULTS_FILE

SKIPPED_METRICS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


def _data_description(config: RecipeConfig) -> str:
    data = config.data
    if data.dataset:
        name = f"[{data.dataset}](https://huggingface.co/datasets/{data.dataset})"
        return name + (f" (config `{data.dataset_config}`)" if data.dataset_config else "")
    return "local files: " + ", ".join(f"{split} `{Path(path).name}`" for split, path in data.files.items())


def _metric_rows(results: dict[str, Any]) -> list[tuple[str, str, float]]:
    rows = []
    for key, value in sorted(results.items()):
        split, _, metric = key.partition("_")
        if (
            split in ("eval", "test")
            and isinstance(value, (int, float))
            and not metric.endswith(SKIPPED_METRICS)
            and metric != "samples"
        ):
            rows.append((split, metric, float(value)))
    return rows


def hub_checkpoint(checkpoint: str) -> str | None:
    """The Hub id of a checkpoint, or None for a local folder or file (which no Hub reader can open)."""
    is_local = checkpoint.startswith((".", "/", "~")) or Path(checkpoint).expanduser().exists()
    return None if is_local else checkpoint.removeprefix("hf-hub:")


def _origin(config: RecipeConfig) -> str:
    model = config.model
    hub_id = hub_checkpoint(model.checkpoint)
    name = hub_id or Path(model.checkpoint).name
    link = f"[{hub_id}](https://huggingface.co/{hub_id})" if hub_id else f"a local checkpoint `{name}`"
    if model.architecture:
        # Only the backbone comes from the checkpoint: the card must not pass the whole model off as pretrained.
        backbone = (
            f"a random `{name}` backbone"
            if model.from_scratch
            else (f"the {link} backbone" if hub_id else f"the local backbone `{name}`")
        )
        return (
            f"A `{config.task}` model trained with hubtune: a new `{model.architecture}` built around {backbone}; "
            "everything outside the backbone starts from random weights."
        )
    if model.from_scratch:
        return f"A `{config.task}` model trained with hubtune from `{name}` (architecture only, random initialisation)."
    return f"A `{config.task}` model fine-tuned with hubtune from {link}."


def model_card(run_dir: Path, config: RecipeConfig, pipeline_tag: str | None) -> str:
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    rows = _metric_rows(results)
    strategy = strategy_for(config.adapt)
    metadata: dict[str, Any] = {
        "library_name": "peft" if strategy.saves_adapter else "transformers",
        "base_model": hub_checkpoint(config.model.checkpoint) if not config.model.from_scratch else None,
        "pipeline_tag": pipeline_tag,
        "datasets": [config.data.dataset] if config.data.dataset else None,
        "metrics": sorted({metric for _, metric, _ in rows if "_" not in metric}) or None,
        "tags": ["hubtune", config.task, strategy.name],
    }
    metadata = {key: value for key, value in metadata.items() if value is not None}
    training = {k: v for k, v in config.training.items() if k != "resume"}
    share = results.get("trainable_share")
    labels = getattr(config.data, "labels", None)  # speech recognition has transcripts, not labels
    lines = [
        "---",
        yaml.safe_dump(metadata, sort_keys=False).strip(),
        "---",
        "",
        f"# {config.name}",
        "",
        _origin(config),
        "",
        "## Training",
        "",
        f"- Data: {_data_description(config)}; {results.get('train_samples', '?')} training examples"
        + (f", {results['test_samples']} test examples" if "test_samples" in results else "")
        + ".",
        f"- Adaptation: {strategy.describe()}"
        + (
            f"; {results['trainable_parameters']:,} of {results['total_parameters']:,} parameters trained "
            f"({share:.2%})."
            if share is not None
            else "."
        ),
        f"- Labels: {', '.join(labels) if labels else 'see config.json (id2label)'}.",
        "",
        "| hyperparameter | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in sorted(training.items())],
        f"| seed | {config.seed} |",
        "",
        "## Results",
        "",
        "| split | metric | value |",
        "|---|---|---|",
        *[f"| {split} | {metric} | {value:.4f} |" for split, metric, value in rows],
        "",
        "## Intended use and limits",
        "",
        f"Made for `{config.task}` on data like the training data above. It inherits the biases and the domain "
        "of its base model and of that data; measure it on your own data before relying on it.",
        "",
        "## Reproduce",
        "",
        "`recipe.yaml` in this repository is the resolved recipe of this run; it names local data files by their "
        "file name, so put them beside it (or point `data.files` at them) to train it again:",
        "",
        "```bash",
        "pip install hubtune",
        "hubtune train recipe.yaml",
        "```",
        "",
    ]
    if strategy.saves_adapter:
        lines[-1:-1] = [
            "Load the adapter with its head: `PeftModel.from_pretrained(base_model, repo_id)`, "
            "or `hubtune export RUN --merge OUT` for a standalone model.",
            "",
        ]
    return "\n".join(lines)
