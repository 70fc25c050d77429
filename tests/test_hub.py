"""hub.push: the finished run folder goes to the Hub; offline it fails with one line and keeps the run."""

from __future__ import annotations

import pytest

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.serving import hub as hub_module


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
    recipe = Recipe.from_dict(
        recipe_values, ["hub.push=true", "hub.repo_id=me/tiny", "hub.private=false", "training.num_train_epochs=1"]
    )
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


def test_push_dry_run_writes_the_card_and_the_files_to_upload(trained_run, tmp_path, capsys, monkeypatch):
    import json

    import yaml

    from pipelines.commands.cli import main

    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_the_test")
    run = trained_run("freeze_backbone")
    out = tmp_path / "upload"
    assert main(["push", str(run.run_dir), "--repo-id", "me/tiny-sentiment", "--public", "--dry-run", str(out)]) == 0
    manifest = json.loads((out / "upload_manifest.json").read_text())
    assert manifest["repo_id"] == "me/tiny-sentiment" and manifest["private"] is False
    files = set(manifest["files"])
    assert {"README.md", "model.safetensors", "config.json", "recipe.yaml", "all_results.json"} <= files
    assert not any(name.startswith("checkpoint-") or name == "training_args.bin" for name in files)
    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["pipeline_tag"] == "text-classification"
    assert metadata["base_model"] == run.recipe.config.model.checkpoint
    assert "accuracy" in metadata["metrics"] and "freeze_backbone" in metadata["tags"]
    accuracy = json.loads((run.run_dir / "all_results.json").read_text())["test_accuracy"]
    assert f"| test | accuracy | {accuracy:.4f} |" in card
    assert "hubtune train recipe.yaml" in card and "| learning_rate |" in card
    written = [p.read_bytes() for p in [*out.rglob("*"), *run.run_dir.rglob("*")] if p.is_file()]
    assert not any(b"hf_secret_token_for_the_test" in content for content in written)
    assert "hf_secret_token_for_the_test" not in "".join(capsys.readouterr())


def test_push_without_any_repo_id_is_exit_2(trained_run, tmp_path, capsys):
    from pipelines.commands.cli import main

    assert main(["push", str(trained_run("full").run_dir), "--dry-run", str(tmp_path / "x")]) == 2
    assert "hub.repo_id" in capsys.readouterr().err


def test_push_dry_run_leaves_the_run_folder_untouched(trained_run, tmp_path):
    from pipelines.commands.cli import main

    run_dir = trained_run("full").run_dir

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    before = snapshot()
    assert main(["push", str(run_dir), "--repo-id", "me/tiny", "--dry-run", str(tmp_path / "upload")]) == 0
    assert snapshot() == before
    assert (tmp_path / "upload" / "README.md").is_file()
