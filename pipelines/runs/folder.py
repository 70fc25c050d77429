"""The run folder: everything `evaluate`, `predict` and the Hub need, readable without the recipe file.

Layout: model weights (safetensors) or a PEFT adapter with its head, the processor, `config.json` with the
label names, `recipe.yaml` (the resolved recipe), `all_results.json`, `parameters.json` (the trainable
table), `trainer_state.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig

from pipelines.config import RecipeConfig, load_recipe_config
from pipelines.errors import HubtuneError, require_path
from pipelines.models.weight_files import check_weight_files, has_weights, missing_weights

RECIPE_FILE = "recipe.yaml"
RESULTS_FILE = "all_results.json"
PARAMETERS_FILE = "parameters.json"
ADAPTER_CONFIG = "adapter_config.json"


def read_run_recipe(run_dir: str | Path) -> RecipeConfig:
    run_dir = Path(run_dir)
    require_path(run_dir, "folder", "run folder")
    if not (run_dir / RECIPE_FILE).is_file():
        raise HubtuneError(f"'{run_dir}' is not a hubtune run folder: it has no {RECIPE_FILE}")
    return load_recipe_config(run_dir / RECIPE_FILE)


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def label_names_of(model: Any) -> list[str]:
    """The label names of a loaded run model, in id order, from its config's `id2label`."""
    config = model.config
    return [config.id2label[i] for i in range(config.num_labels)]


def load_run_model(auto_model: Any, run_dir: str | Path, trust_remote_code: bool = False) -> nn.Module:
    """The trained model: plain weights, or the base checkpoint plus the saved adapter and head.

    `trust_remote_code` is the run's own `model.trust_remote_code`, passed explicitly: left unset, transformers
    would ask on the terminal.
    """
    run_dir = Path(run_dir)
    try:
        if (run_dir / ADAPTER_CONFIG).is_file():
            return _load_adapter_model(auto_model, run_dir, trust_remote_code)
        return _load_full_model(auto_model, run_dir, trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise HubtuneError(
            f"run folder '{run_dir}' holds a model that runs Python code of its own (its config's auto_map); "
            f"read that code, then set 'model.trust_remote_code: true' in its {RECIPE_FILE}"
        ) from error


def _load_full_model(auto_model: Any, run_dir: Path, trust_remote_code: bool) -> nn.Module:
    if not (run_dir / "config.json").is_file():
        raise HubtuneError(f"run folder '{run_dir}' holds no config.json: the model was never saved there")
    if not has_weights(run_dir):
        raise missing_weights(run_dir, "run folder")
    check_weight_files(run_dir, "run folder")
    return auto_model.from_pretrained(run_dir, trust_remote_code=trust_remote_code)


def _load_adapter_model(auto_model: Any, run_dir: Path, trust_remote_code: bool) -> nn.Module:
    from peft import PeftConfig, PeftModel

    adapter = PeftConfig.from_pretrained(str(run_dir))
    check_weight_files(run_dir, "run folder")
    base_folder = Path(adapter.base_model_name_or_path).expanduser()
    if base_folder.is_dir():  # transformers too reads a name that is a folder as that folder
        check_weight_files(base_folder, f"run folder '{run_dir}' holds an adapter over the checkpoint folder")
    config = AutoConfig.from_pretrained(run_dir, trust_remote_code=trust_remote_code)
    try:
        base = auto_model.from_pretrained(
            adapter.base_model_name_or_path,
            config=config,
            revision=adapter.revision,
            ignore_mismatched_sizes=True,
            trust_remote_code=trust_remote_code,
        )
    except OSError as error:
        raise HubtuneError(
            f"run folder '{run_dir}' holds a PEFT adapter whose base checkpoint "
            f"'{adapter.base_model_name_or_path}' cannot be loaded: {error}"
        ) from error
    return PeftModel.from_pretrained(base, run_dir)
