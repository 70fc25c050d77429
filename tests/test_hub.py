"""hub.push: the finished run folder goes to the Hub; offline it fails with one line and keeps the run."""

from __future__ import annotations

import pytest

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines import hub as hub_module


def test_push_without_repo_id_is_a_config_error(recipe_values):
    with pytest.raises(HubtuneError, match="'hub.repo_id' is not set"):
        load_recipe_config(values=recipe_values, overrides=["hub.push=true"])


def test_push_uploads_the_run_folder_without_checkpoints(recipe_values, monkeypatch):
    calls = {}

    class RecordingApi:
        def create_repo(self, repo_id, private, exist_ok):
            calls["create"] = (repo_id, private, exist_ok)
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, ignore_patterns, commit_message):
            calls["upload"] = (repo_id, folder_path, ignore_patterns)

    monkeypatch.setattr(hub_module, "HfApi", RecordingApi)
    recipe = Recipe.from_dict(recipe_values, ["hub.push=true", "hub.repo_id=me/tiny", "hub.private=false",
                                              "training.num_train_epochs=1"])
    results = recipe.run()
    assert results["hub_url"] == "https://huggingface.co/me/tiny"
    assert calls["create"] == ("me/tiny", False, True)
    repo_id, folder, ignore = calls["upload"]
    assert repo_id == "me/tiny" and folder == str(recipe.output_dir) and "checkpoint-*" in ignore


def test_push_offline_fails_with_one_line_and_keeps_the_run(recipe_values):
    recipe = Recipe.from_dict(recipe_values, ["hub.push=true", "hub.repo_id=me/tiny", "training.num_train_epochs=1"])
    with pytest.raises(HubtuneError, match="pushing .* failed") as caught:
        recipe.run()
    assert "\n" not in str(caught.value)
    assert (recipe.output_dir / "all_results.json").is_file() and (recipe.output_dir / "model.safetensors").is_file()
