"""Each task owns its `data` section: its keys, their checks and their help; a key of another task is an error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipelines import HubtuneError, load_recipe_config
from pipelines.commands.cli import main
from pipelines.commands.recipe_keys import recipe_keys
from pipelines.config import DataConfig
from pipelines.tasks import TASKS

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_shipped_recipe_loads_with_its_tasks_data_section(recipe):
    config = load_recipe_config(recipe)
    assert type(config.data) is TASKS[config.task].data_config


@pytest.mark.parametrize(
    "key, value, owner",
    [
        ("image_size", 64, "image-classification, object-detection, semantic-segmentation"),
        ("tag_scheme", "IOB2", "token-classification"),
        ("whisper_task", "translate", "speech-recognition-seq2seq"),
        ("audio_column", "clip", "audio-classification, speech-recognition-ctc, speech-recognition-seq2seq"),
    ],
)
def test_a_key_of_another_task_names_that_task(recipe_values, key, value, owner):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=recipe_values, overrides=[f"data.{key}={value}"])
    assert str(caught.value) == (
        f"recipe key 'data.{key}' belongs to task {owner}, not to 'text-classification' (recipe key 'task')"
    )


def test_each_task_checks_its_own_keys(recipe_values):
    data = {k: v for k, v in recipe_values["data"].items() if k != "max_length"}
    image = dict(recipe_values, task="image-classification", data=data)
    with pytest.raises(HubtuneError, match="'data.image_size' must be a positive number of pixels"):
        load_recipe_config(values=image, overrides=["data.image_size=0"])
    speech = dict(
        recipe_values, task="speech-recognition-seq2seq", data={k: v for k, v in data.items() if k != "labels"}
    )
    with pytest.raises(HubtuneError, match="'data.whisper_task' must be one of transcribe, translate"):
        load_recipe_config(values=speech, overrides=["data.whisper_task=dictate"])
    with pytest.raises(HubtuneError, match="'data.max_duration_s' must be positive"):
        load_recipe_config(values=speech, overrides=["data.max_duration_s=0"])


def test_unknown_task_is_named_at_load(recipe_values):
    with pytest.raises(HubtuneError, match="unknown task 'text-clasification' in recipe key 'task'"):
        load_recipe_config(values=dict(recipe_values, task="text-clasification"))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_key_has_help_and_only_the_tasks_data_keys_are_listed(task):
    keys = {key.key: key for key in recipe_keys(task)}
    assert all(key.help for key in keys.values()), [k for k, key in keys.items() if not key.help]
    data_keys = {k.removeprefix("data.") for k in keys if k.startswith("data.")}
    assert data_keys == {f.name for f in dataclasses.fields(TASKS[task].data_config)}
    assert {
        "name",
        "model.checkpoint",
        "adapt.peft.r",
        "adapt.n",
        "adapt.lp_ft.then",
        "adapt.unfreeze_schedule.every",
        "training.*",
        "hub.repo_id",
    } <= set(keys)


def test_recipe_keys_command(capsys):
    assert main(["recipe-keys", "token-classification"]) == 0
    out = capsys.readouterr().out
    assert "data.tag_scheme" in out and "seqeval" in out and "data.image_size" not in out


def test_the_shared_data_keys_are_in_every_task():
    shared = {f.name for f in dataclasses.fields(DataConfig)}
    for task in TASKS.values():
        assert issubclass(task.data_config, DataConfig)
        assert shared <= {f.name for f in dataclasses.fields(task.data_config)}


def whisper_values(recipe_values):
    data = {k: v for k, v in recipe_values["data"].items() if k not in ("labels", "max_length")}
    return dict(recipe_values, task="speech-recognition-seq2seq", data=data)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["generation.num_beams=0"], "recipe key 'generation.num_beams' must be at least 1, got 0"),
        (["generation.num_beams=2.5"], "recipe key 'generation.num_beams' must be int, got 2.5"),
        (["generation.max_new_tokens=0"], "recipe key 'generation.max_new_tokens' must be at least 1 (or null), got 0"),
        (["generation.length_penalty=fast"], "recipe key 'generation.length_penalty' must be float, got 'fast'"),
        (["generation.return_timestamps=sometimes"], "recipe key 'generation.return_timestamps' must be true or false"),
        (["generation.beams=2"], "unknown recipe key 'generation.beams'; did you mean 'generation.num_beams'?"),
        (
            ["generation.length_penalty=0.8"],
            "recipe key 'generation.length_penalty' is 0.8, but it weighs the hypotheses of a beam search and "
            "'generation.num_beams' is 1 (greedy decoding): set num_beams above 1, or remove length_penalty",
        ),
        (
            ["generation.max_new_tokens=64", "training.generation_max_length=225"],
            "recipe keys 'training.generation_max_length' (225) and 'generation.max_new_tokens' (64) both set how "
            "many tokens a transcript may have; keep max_new_tokens",
        ),
        (["training.generation_max_length=many"], "recipe key 'training.generation_max_length' must be int"),
        (["training.generation_num_beams=4"], "recipe key 'training.generation_num_beams' is Seq2SeqTrainer's"),
        (["data.language=klingon"], "recipe key 'data.language' is 'klingon', which Whisper has no token for"),
    ],
)
def test_decoding_keys_are_checked_at_load(recipe_values, overrides, message):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=whisper_values(recipe_values), overrides=overrides)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_generation_max_length_is_read_as_max_new_tokens(recipe_values):
    """Recipes written before the `generation` section: the key moves there, and the trainer no longer gets it."""
    config = load_recipe_config(values=whisper_values(recipe_values), overrides=["training.generation_max_length=225"])
    assert config.generation.max_new_tokens == 225 and "generation_max_length" not in config.training
    again = load_recipe_config(values=config.to_dict())
    assert again.generation == config.generation
    same = ["training.generation_max_length=64", "generation.max_new_tokens=64", "data.language=French"]
    assert load_recipe_config(values=whisper_values(recipe_values), overrides=same).generation.max_new_tokens == 64


def test_a_task_that_does_not_generate_takes_no_generation_section(recipe_values):
    with pytest.raises(HubtuneError) as caught:
        load_recipe_config(values=recipe_values, overrides=["generation.num_beams=4"])
    assert str(caught.value) == (
        "recipe section 'generation' sets how a model decodes, for task speech-recognition-seq2seq; task "
        "'text-classification' does not generate (recipe key 'task'): remove the section"
    )
    assert "generation" not in load_recipe_config(values=recipe_values).to_dict()
