"""The model card of a run folder: what the Hub shows and reads (metadata, model-index), written from the run's
own files (pipelines/runs/card_data.py reads them).

The metadata is what the Hub indexes: `model-index` holds the run's validation and test scores exactly as
`all_results.json` records them, `license` comes from the recipe (`hub.license`) or else the base model's own
card, `language` from the recipe (`hub.language`). The body says what ran: the effective batch, precision,
optimizer and schedule (`all_results.json`'s `training_setup`), the scores per epoch and per class, and the
versions of the libraries that trained the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pipelines.adapt.strategies import Strategy, strategy_for
from pipelines.config import RecipeConfig
from pipelines.runs.card_data import (
    Evaluation,
    base_card_metadata,
    class_names,
    epoch_table,
    evaluations,
    hub_checkpoint,
    metric_id,
    model_labels,
)
from pipelines.runs.folder import ADAPTER_CONFIG, RESULTS_FILE

__all__ = ["hub_checkpoint", "model_card"]

# Keys of a base model's card that go with its license: a license `other` is named and linked by these.
LICENSE_KEYS = ("license", "license_name", "license_link")


def _data_description(config: RecipeConfig, markdown: bool = True) -> str:
    data = config.data
    if data.dataset:
        if not markdown:
            return data.dataset
        name = f"[{data.dataset}](https://huggingface.co/datasets/{data.dataset})"
        return name + (f" (config `{data.dataset_config}`)" if data.dataset_config else "")
    if data.in_memory:
        if not markdown:
            return "in-memory data"
        given = "; ".join(f"`{split}`: {what}" for split, what in data.in_memory.items())
        return f"data held in memory, given to `Recipe.run(data=...)` ({given})"
    quote = "`" if markdown else ""
    return "local files: " + ", ".join(f"{quote}{Path(path).name}{quote}" for path in data.files.values())


def _reproduce(config: RecipeConfig) -> list[str]:
    if config.data.in_memory:
        return [
            "`recipe.yaml` in this repository is the resolved recipe of this run. Its training data was held in "
            "memory (given to `Recipe.run(data=...)`), and neither this repository nor the run folder holds it: to "
            "train it again, give the same data to `Recipe.run(data=...)`, or name files in `data.files` (in place "
            "of `data.in_memory`).",
            "",
        ]
    return [
        "`recipe.yaml` in this repository is the resolved recipe of this run; it names local data files by their "
        "file name, so put them beside it (or point `data.files` at them) to train it again:",
        "",
        "```bash",
        "pip install hubtune",
        "hubtune train recipe.yaml",
        "```",
        "",
    ]


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


def _what_this_is(run_dir: Path, strategy: Strategy) -> list[str]:
    """Which copy of an adapter run this is: the adapter with its head, or a merged export."""
    if (run_dir / ADAPTER_CONFIG).is_file():
        return [
            "This repository holds a PEFT adapter with its task head, not a standalone model: load it with PEFT on "
            "top of the base model, `PeftModel.from_pretrained(base_model, repo_id)` (the base model with this "
            "repository's `config.json`, so that the head has the run's labels); `hubtune export RUN --merge OUT` "
            "writes a standalone model instead.",
            "",
        ]
    if strategy.saves_adapter:
        return [
            "This repository holds a merged export (`hubtune export --merge`): the adapter folded into the base "
            "weights, a standalone model that `from_pretrained` loads without PEFT.",
            "",
        ]
    return []


def _license(config: RecipeConfig) -> dict[str, Any]:
    """`hub.license` when the recipe sets it, else the base model's own license (with its name and link)."""
    if config.hub.license:
        return {"license": config.hub.license}
    base = base_card_metadata(config)
    return {key: base[key] for key in LICENSE_KEYS if base.get("license") and base.get(key)}


def _model_index(config: RecipeConfig, pipeline_tag: str, found: list[Evaluation]) -> list[dict[str, Any]]:
    description = _data_description(config, markdown=False)
    dataset: dict[str, Any] = {"name": description, "type": description}
    if config.data.dataset:
        dataset.update(config=config.data.dataset_config, revision=config.data.revision)
    results = [
        {
            "task": {"type": pipeline_tag, "name": pipeline_tag.replace("-", " ").capitalize()},
            "dataset": {key: value for key, value in {**dataset, "split": evaluation.split}.items() if value},
            "metrics": [
                {"type": metric_id(name), "value": value, "name": f"{evaluation.title} {name}"}
                for name, value in evaluation.scores.items()
            ],
        }
        for evaluation in found
        if evaluation.scores
    ]
    return [{"name": config.name, "results": results}] if results else []


def _metadata(
    run_dir: Path, config: RecipeConfig, pipeline_tag: str | None, widget: str | None, found: list[Evaluation]
) -> dict[str, Any]:
    strategy = strategy_for(config.adapt)
    metadata: dict[str, Any] = {
        "language": config.hub.languages or None,
        **_license(config),
        "library_name": "peft" if (run_dir / ADAPTER_CONFIG).is_file() else "transformers",
        "base_model": hub_checkpoint(config.model.checkpoint) if not config.model.from_scratch else None,
        "pipeline_tag": pipeline_tag,
        "datasets": [config.data.dataset] if config.data.dataset else None,
        "metrics": sorted({metric_id(name) for evaluation in found for name in evaluation.scores}) or None,
        "tags": ["hubtune", config.task, strategy.name],
        "widget": [{"text": widget}] if widget else None,
        "model-index": _model_index(config, pipeline_tag, found) if pipeline_tag else None,
    }
    return {key: value for key, value in metadata.items() if value}


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[f"{value:.4f}" if isinstance(value, float) else str(value) for value in row] for row in rows]
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(row)} |" for row in cells)]


def _precision(setup: dict[str, Any]) -> str:
    mixed, weights = setup.get("mixed_precision") or "no", setup.get("weights_dtype") or "float32"
    if mixed == "no":
        return "fp32" if weights == "float32" else f"{weights} weights"
    return f"{mixed} mixed precision" + ("" if weights == "float32" else f", {weights} weights")


def _settings_table(rows: list[list[Any]]) -> list[str]:
    """Settings as they were given: 0.005, not a score's 0.0050."""
    return _table(["hyperparameter", "value"], [[name, f"{v:g}" if isinstance(v, float) else v] for name, v in rows])


def _hyperparameters(config: RecipeConfig, results: dict[str, Any]) -> list[str]:
    setup = results.get("training_setup")
    if not setup:  # a run folder of an earlier hubtune: what the recipe asked for is all it kept
        training = {key: value for key, value in config.training.items() if key != "resume"}
        return [
            "As the recipe set them (this run folder does not record what ran):",
            "",
            *_settings_table([[key, training[key]] for key in sorted(training)] + [["seed", config.seed]]),
        ]
    steps, epochs = setup["steps_trained"], setup["epochs_trained"]
    warmup = setup["warmup_steps"]
    rows = [
        ["learning rate", setup["learning_rate"]],
        ["train batch size per device", setup["per_device_train_batch_size"]],
        ["gradient accumulation steps", setup["gradient_accumulation_steps"]],
        ["processes", setup["num_processes"]],
        ["total train batch size", setup["total_train_batch_size"]],
        ["precision", _precision(setup)],
        ["optimizer", f"{setup['optimizer']} (weight decay {setup['weight_decay']:g})"],
        ["learning-rate schedule", f"{setup['lr_scheduler_type']}, {warmup} warmup step{'s' * (warmup != 1)}"],
        ["trained for", f"{round(epochs, 2):g} epochs ({steps} steps)"],
        ["seed", setup["seed"]],
    ]
    return _settings_table(rows)


def _results(found: list[Evaluation]) -> list[str]:
    lines: list[str] = []
    for evaluation in found:
        examples = f", {evaluation.examples} examples" if evaluation.examples is not None else ""
        lines += [f"### {evaluation.title} (split `{evaluation.split}`{examples})", ""]
        lines += _table(["metric", "value"], [[name, value] for name, value in evaluation.metrics.items()]) + [""]
        if evaluation.per_class:
            columns = sorted({name for scores in evaluation.per_class.values() for name in scores})
            per_class = [
                [label, *(scores.get(name, "") for name in columns)] for label, scores in evaluation.per_class.items()
            ]
            lines += ["Per class:", "", *_table(["class", *columns], per_class), ""]
    return lines or ["The run evaluated the finished model on no split.", ""]


def _epochs(run_dir: Path, classes: list[str]) -> list[str]:
    rows = epoch_table(run_dir, classes)
    if not rows:
        return ["No evaluation during training (`training.eval_strategy`), or no `trainer_state.json` here.", ""]
    columns = list(dict.fromkeys(name for row in rows for name in row))
    return [*_table(columns, [[row.get(name, "") for name in columns] for row in rows]), ""]


def _versions(results: dict[str, Any]) -> list[str]:
    versions = (results.get("training_setup") or {}).get("versions")
    if not versions:
        return []
    return ["## Framework versions", "", *(f"- {name} {version}" for name, version in versions.items()), ""]


def model_card(run_dir: Path, config: RecipeConfig, pipeline_tag: str | None, widget: str | None = None) -> str:
    """The card (README.md) of the run folder `run_dir`; `widget`: a text of the test split for the Hub's widget."""
    results = json.loads((run_dir / RESULTS_FILE).read_text())
    strategy = strategy_for(config.adapt)
    labels = model_labels(run_dir, config)
    classes = class_names(labels)
    found = evaluations(results, config, classes)
    share = results.get("trainable_share")
    lines = [
        "---",
        yaml.safe_dump(
            _metadata(run_dir, config, pipeline_tag, widget, found), sort_keys=False, allow_unicode=True
        ).strip(),
        "---",
        "",
        f"# {config.name}",
        "",
        _origin(config),
        "",
        *_what_this_is(run_dir, strategy),
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
        *([f"- Labels: {', '.join(labels)}."] if labels else []),
        # A metric function, loss or collator given from Python (Recipe.run), which recipe.yaml cannot repeat.
        *(f"- {name}: {what}." for name, what in (results.get("custom") or {}).items()),
        "",
        "### Hyperparameters",
        "",
        *_hyperparameters(config, results),
        "",
        "### Results per epoch",
        "",
        *_epochs(run_dir, classes),
        "## Evaluation",
        "",
        *_results(found),
        *_versions(results),
        "## Intended use and limits",
        "",
        f"Made for `{config.task}` on data like the training data above. It inherits the biases and the domain "
        "of its base model and of that data; measure it on your own data before relying on it.",
        "",
        "## Reproduce",
        "",
        *_reproduce(config),
        *(
            [
                f"The recipe imports {', '.join(f'`{module}`' for module in config.plugins)} (recipe key `plugins`), "
                "which define its task or strategy: install them, or put them on `PYTHONPATH`, first.",
                "",
            ]
            if config.plugins
            else []
        ),
    ]
    return "\n".join(lines)
