"""hub.push: the finished run folder goes to the Hub; offline it fails with one line and keeps the run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx2  # huggingface_hub 2 raises its HTTP errors with responses of this library
import pytest
import yaml
from huggingface_hub.errors import HfHubHTTPError

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.serving import hub as hub_module


def test_push_without_repo_id_is_a_config_error(recipe_values):
    with pytest.raises(HubtuneError, match="'hub.repo_id' is not set"):
        load_recipe_config(values=recipe_values, overrides=["hub.push=true"])


class RecordingApi:
    """HfApi as push uses it, recording each call; `fail` makes the commit fail as a refused upload does."""

    fail = False
    calls: dict = {}

    def create_repo(self, repo_id, private, exist_ok):
        self.calls["create"] = (repo_id, private, exist_ok)
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, branch, exist_ok):
        self.calls["branch"] = (repo_id, branch)

    def create_commit(self, repo_id, operations, commit_message, revision, create_pr):
        if self.fail:
            response = httpx2.Response(403, request=httpx2.Request("POST", "https://huggingface.co/api"))
            raise HfHubHTTPError("403 Forbidden: no write access", response=response)
        uploads = {}
        for operation in operations:
            source = operation.path_or_fileobj
            uploads[operation.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.calls["commit"] = (repo_id, uploads, commit_message, revision, create_pr)
        return SimpleNamespace(pr_url="https://huggingface.co/me/tiny/discussions/1" if create_pr else None)


@pytest.fixture
def hub_api(monkeypatch):
    RecordingApi.fail, RecordingApi.calls = False, {}
    monkeypatch.setattr(hub_module, "HfApi", RecordingApi)
    return RecordingApi


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_push_uploads_the_run_folder_without_checkpoints_or_local_paths(recipe_values, hub_api, tmp_path):
    recipe = Recipe.from_dict(
        recipe_values,
        [
            "hub.push=true",
            "hub.repo_id=me/tiny",
            "hub.private=false",
            "training.save_strategy=epoch",
            "adapt.strategy=lora",
        ],
    )
    results = recipe.run()
    assert results["hub_url"] == "https://huggingface.co/me/tiny"
    assert hub_api.calls["create"] == ("me/tiny", False, True)
    repo_id, uploads, message, revision, create_pr = hub_api.calls["commit"]
    assert (repo_id, message, revision, create_pr) == ("me/tiny", "hubtune run run", None, False)
    assert {"README.md", "recipe.yaml", "adapter_config.json", "all_results.json", "config.json"} <= set(uploads)
    assert not [name for name in uploads if name.startswith(("checkpoint-", ".hubtune")) or name == "training_args.bin"]
    # No path of this machine in any uploaded file: the run folder, the data, the local base checkpoint.
    local = [str(tmp_path), str(Path(recipe_values["model"]["checkpoint"]).parent), str(Path.home())]
    for name, content in uploads.items():
        assert not any(path.encode() in content for path in local), name
    uploaded = yaml.safe_load(uploads["recipe.yaml"])
    assert uploaded["data"]["files"] == {
        split: Path(path).name for split, path in recipe_values["data"]["files"].items()
    }
    base = Path(recipe_values["model"]["checkpoint"]).name
    assert uploaded["output_dir"] is None and uploaded["model"]["checkpoint"] == base
    assert json.loads(uploads["adapter_config.json"])["base_model_name_or_path"] == base
    assert not [name for name in uploads if name.startswith("runs/")]  # TensorBoard's files record local paths
    assert (recipe.output_dir / "README.md").read_bytes() == uploads["README.md"]  # kept once the upload succeeded


def test_push_commits_to_a_branch_with_a_message_or_opens_a_pull_request(trained_run, hub_api, capsys):
    from pipelines.commands.cli import main

    run_dir = str(trained_run("full").run_dir)
    argv = ["push", run_dir, "--repo-id", "me/tiny", "--revision", "v2", "--commit-message", "better head"]
    assert main(argv) == 0
    assert hub_api.calls["branch"] == ("me/tiny", "v2")
    assert hub_api.calls["commit"][2:] == ("better head", "v2", False)
    assert main(["push", run_dir, "--repo-id", "me/tiny", "--create-pr"]) == 0
    assert hub_api.calls["commit"][4] is True
    assert capsys.readouterr().out.strip().endswith("https://huggingface.co/me/tiny/discussions/1")


def test_a_failed_upload_leaves_the_run_folder_unchanged(trained_run, hub_api, capsys):
    from pipelines.commands.cli import main

    run_dir = trained_run("full").run_dir
    before = folder_state(run_dir)
    hub_api.fail = True
    assert main(["push", str(run_dir), "--repo-id", "me/tiny"]) == 2
    error = capsys.readouterr().err.strip()
    assert "403 Forbidden" in error and "the run folder is unchanged" in error and "\n" not in error
    assert folder_state(run_dir) == before


def test_push_offline_fails_with_one_line_and_keeps_the_run(recipe_values):
    recipe = Recipe.from_dict(recipe_values, ["hub.push=true", "hub.repo_id=me/tiny", "training.num_train_epochs=1"])
    with pytest.raises(HubtuneError, match="pushing .* failed") as caught:
        recipe.run()
    assert "\n" not in str(caught.value)
    assert "failed: it needs the Hub, and HF_HUB_OFFLINE is set in your environment" in str(caught.value)
    assert (recipe.output_dir / "all_results.json").is_file() and (recipe.output_dir / "model.safetensors").is_file()


def test_push_dry_run_writes_the_card_and_the_files_to_upload(trained_run, tmp_path, capsys, monkeypatch):
    import json

    import yaml

    from pipelines.commands.cli import main

    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_for_the_test")
    run = trained_run("freeze_backbone")
    out = tmp_path / "upload"
    assert main(["push", str(run.run_dir), "--repo-id", "me/tiny-sentiment", "--public", "--dry-run", str(out)]) == 0
    listed = capsys.readouterr().out
    manifest = json.loads((out / "upload_manifest.json").read_text())
    listed = listed[listed.index("dry run:") :]  # after the training fixture's own log lines
    assert listed.startswith(f"dry run: {len(manifest['files'])} files for me/tiny-sentiment")
    assert all(f"  {name}\n" in listed for name in manifest["files"])
    assert not any(name.startswith(".hubtune") for name in manifest["files"])
    assert str(run.run_dir) not in (out / "recipe.yaml").read_text()
    assert manifest["repo_id"] == "me/tiny-sentiment" and manifest["private"] is False
    files = set(manifest["files"])
    assert {"README.md", "model.safetensors", "config.json", "recipe.yaml", "all_results.json"} <= files
    assert not any(name.startswith("checkpoint-") or name == "training_args.bin" for name in files)
    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["pipeline_tag"] == "text-classification"
    assert "base_model" not in metadata  # the base is a local folder, no Hub id a reader could open
    assert f"from a local checkpoint `{Path(run.recipe.config.model.checkpoint).name}`" in card
    assert "accuracy" in metadata["metrics"] and "freeze_backbone" in metadata["tags"]
    accuracy = json.loads((run.run_dir / "all_results.json").read_text())["test_accuracy"]
    assert f"| accuracy | {accuracy:.4f} |" in card[card.index("### Test") :]
    assert "hubtune train recipe.yaml" in card and "| learning rate | 0.005 |" in card
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


@pytest.mark.parametrize(
    ("checkpoint", "hub_id"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("hf-hub:timm/resnet18.a1_in1k", "timm/resnet18.a1_in1k"),
        ("/models/bert", None),
        ("./bert", None),
        ("~/bert", None),
    ],
)
def test_a_card_names_a_hub_base_model_and_never_a_local_folder(checkpoint, hub_id):
    from pipelines.runs.card import hub_checkpoint

    assert hub_checkpoint(checkpoint) == hub_id


def test_a_dry_run_never_writes_into_the_run_or_over_a_users_files(trained_run, tmp_path, capsys):
    from pipelines.commands.cli import main

    run_dir = trained_run("full").run_dir
    before = folder_state(run_dir)
    assert main(["push", str(run_dir), "--repo-id", "me/x", "--dry-run", str(run_dir)]) == 2
    assert "is inside the run folder" in capsys.readouterr().err
    assert main(["push", str(run_dir), "--repo-id", "me/x", "--dry-run", str(run_dir / "upload")]) == 2
    assert folder_state(run_dir) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    assert main(["push", str(run_dir), "--repo-id", "me/x", "--dry-run", str(mine)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (mine / "README.md").read_text() == "my notes"
