"""The command line answers at once, parses options anywhere, refuses repeated recipe keys, and decides about
the Hub with one short connection attempt instead of minutes of retries."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from pipelines.commands.cli import main
from pipelines.hub_access import UNREACHABLE_VARIABLE, go_offline_unless_reachable, offline_reason

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "peft", "accelerate")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["predict", "--help"]])
def test_help_and_version_import_no_heavy_library(argv):
    script = (
        f"import sys\nfrom pipelines.commands.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "LOADED []"


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"hubtune {version('hubtune')}"


def test_train_usage_shows_overrides_as_optional(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "usage: hubtune train [-h] recipe [key=value ...]" in capsys.readouterr().out


def test_package_names_still_import_lazily():
    from pipelines import HubtuneError, Recipe, RecipeConfig, load_recipe_config

    assert Recipe.__module__ == "pipelines.runner.recipe" and RecipeConfig.__module__ == "pipelines.config.sections"
    assert callable(load_recipe_config) and issubclass(HubtuneError, Exception)
    with pytest.raises(ImportError, match="cannot import name 'Recipes'"):
        from pipelines import Recipes  # noqa: F401


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "the film was good", "awful plot"],
        ["the film was good", "--batch-size", "1", "awful plot", "--json"],
    ],
)
def test_options_between_the_run_and_the_inputs(trained_run, capsys, argv):
    run_dir = str(trained_run("full").run_dir)
    capsys.readouterr()  # the training's own log lines, when the run was trained for this test
    assert main(["predict", run_dir, *argv]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(row["input"], row["label"]) for row in rows] == [
        ("the film was good", "positive"),
        ("awful plot", "negative"),
    ]


def test_repeated_recipe_key_names_the_key_and_both_lines(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: x\nmodel:\n  checkpoint: a/b\ntraining:\n  learning_rate: 1.0e-4\n"
        "  num_train_epochs: 2\n  learning_rate: 5.0e-5\n"
    )
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"hubtune: error: recipe file '{recipe}' sets 'training.learning_rate' twice (lines 5 and 7); keep one"
    ]


def test_repeated_section_is_refused_too(recipe_values, tmp_path):
    from pipelines import HubtuneError, load_recipe_config

    text = yaml.safe_dump(recipe_values) + "data:\n  max_length: 16\n"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(HubtuneError, match="sets 'data' twice"):
        load_recipe_config(recipe)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_hub_switches_to_offline_with_one_warning(caplog):
    environ = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}  # nothing listens there: refused at once
    assert go_offline_unless_reachable(environ) is True
    assert environ["HF_HUB_OFFLINE"] == "1" and environ["HF_DATASETS_OFFLINE"] == "1"
    warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1 and "HF_HUB_OFFLINE=1" in warnings[0].getMessage()


def test_offline_reason_says_who_went_offline():
    environ = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    assert go_offline_unless_reachable(environ) is True
    reason = offline_reason(environ)
    assert reason == (
        f"the Hugging Face Hub ({environ['HF_ENDPOINT']}) could not be reached, so hubtune works from the local "
        "cache alone"
    )
    assert environ[UNREACHABLE_VARIABLE] == environ["HF_ENDPOINT"]
    assert offline_reason({"HF_HUB_OFFLINE": "1"}) == (
        "HF_HUB_OFFLINE is set in your environment, so only the local cache is read"
    )
    assert offline_reason({"HF_HUB_OFFLINE": "true"}) is not None
    assert offline_reason({"HF_HUB_OFFLINE": "0"}) is None and offline_reason({}) is None


def test_reachable_hub_stays_online():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        environ = {"HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}"}
        assert go_offline_unless_reachable(environ) is False
    assert "HF_HUB_OFFLINE" not in environ


@pytest.mark.parametrize("setting", ["0", "1"])
def test_explicit_offline_setting_skips_the_probe(setting, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("probed although HF_HUB_OFFLINE was set")

    monkeypatch.setattr(socket, "create_connection", no_probe)
    environ = {"HF_HUB_OFFLINE": setting, "HF_ENDPOINT": "http://127.0.0.1:9"}
    assert go_offline_unless_reachable(environ) is False
    assert environ["HF_HUB_OFFLINE"] == setting


def test_proxy_is_probed_instead_of_the_hub(monkeypatch):
    probed = []

    def record(address, timeout):
        probed.append(address)
        raise OSError("refused")

    monkeypatch.setattr(socket, "create_connection", record)
    environ = {"HTTPS_PROXY": "http://proxy.internal:3128"}
    assert go_offline_unless_reachable(environ) is True
    assert probed == [("proxy.internal", 3128)]
