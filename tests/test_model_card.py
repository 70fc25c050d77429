"""The model card `hubtune push` writes, for a run of every task, read back with huggingface_hub's own readers:
its model-index holds the run's scores, its metadata the recipe's license and language, its body the per-epoch
results and what actually trained the model."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from collections.abc import Callable
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_recipe_values, write_sentiment_csv
from helpers.detection import draw_set, write_coco
from helpers.ner import build_tiny_ner_bert, write_conll
from helpers.speech import (
    TONES,
    faster_whisper_tokenizer,
    tiny_wav2vec2_folder,
    tiny_whisper,
    tone,
    write_manifest,
    write_spelled_split,
    write_tone_folder,
)
from helpers.vision import save_tiny_vit
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from pipelines import HubtuneError, Recipe, load_recipe_config
from pipelines.commands.cli import main
from pipelines.tasks import get_task

# Trains a tiny model of every task: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

# Two epochs, scored on validation after each, and nothing else saved: every run below trains for seconds.
TRAINING = {
    "num_train_epochs": 2,
    "learning_rate": 3e-3,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "eval_strategy": "epoch",
    "logging_steps": 1,
    "save_strategy": "no",
    "disable_tqdm": True,
    "warmup_steps": 0,
}
TEXT_TASKS = ("text-single", "text-multi", "text-regression", "token")


def recipe_values(name: str, task: str, checkpoint: Path, files: dict[str, str], **sections) -> dict:
    return {
        "name": name,
        "task": task,
        "model": {"checkpoint": str(checkpoint), **sections.pop("model", {})},
        "data": {"files": dict(files), **sections.pop("data", {})},
        "training": {**TRAINING, **sections.pop("training", {})},
        **sections,
    }


def write_topics(folder: Path) -> dict[str, str]:
    """jsonl files of texts with one or two topics each (a list column)."""
    files = {}
    for split, n, seed in (("train", 24, 0), ("validation", 8, 1), ("test", 8, 2)):
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            topics = sorted(rng.sample(["acting", "plot", "praise"], rng.randint(1, 2)))
            rows.append({"text": " ".join(rng.sample(["the", "film", "was", "a", "story", "cast"], 4) + topics)})
            rows[-1]["label"] = topics
        files[split] = str(folder / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return files


def write_scores(folder: Path) -> dict[str, str]:
    files = {}
    for split, n, seed in (("train", 24, 0), ("validation", 8, 1), ("test", 8, 2)):
        rng = random.Random(seed)
        files[split] = str(folder / f"{split}.csv")
        with open(files[split], "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "score"])
            for _ in range(n):
                good = rng.randint(0, 2)
                writer.writerow([" ".join(["the", "film", "was"] + ["good"] * good + ["bad"] * (2 - good)), good])
    return files


def write_colour_folders(root: Path) -> dict[str, str]:
    """train/validation/test image folders with one sub-folder per colour."""
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    for split, n in (("train", 6), ("validation", 2), ("test", 2)):
        for name, colour in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.integers(-20, 21, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return {split: str(root / split) for split in ("train", "validation", "test")}


def write_shape_folders(root: Path) -> dict[str, str]:
    """`<split>/images` and `<split>/masks` folders: a square (class 1) on grey background (class 0)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("validation", 4), ("test", 4)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            image, mask = np.full((32, 32, 3), 120, np.uint8), np.zeros((32, 32), np.uint8)
            y, x = rng.integers(0, 16, 2)
            image[y : y + 12, x : x + 12], mask[y : y + 12, x : x + 12] = (40, 40, 220), 1
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")
    return {split: str(root / split) for split in ("train", "validation", "test")}


def write_word_clips(folder: Path, n: int, seed: int) -> str:
    """Clips of one tone each, transcribed by the tone's name."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        word = list(TONES)[i % len(TONES)]
        import soundfile

        soundfile.write(folder / f"w{i}.wav", tone(TONES[word], 0.4, 16000, rng), 16000)
        rows.append({"file_name": f"w{i}.wav", "text": word})
    write_manifest(folder / "metadata.csv", rows)
    return str(folder)


def timm_backbone(folder: Path) -> Path:
    import timm

    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("test_efficientnet"), str(folder), safe_serialization=True)
    return folder


def tiny_vit(folder: Path) -> Path:
    return save_tiny_vit(folder)


@dataclasses.dataclass
class CardRun:
    """A trained run folder and what its dry-run push wrote: the card's text and its metadata as read back."""

    values: dict  # the recipe
    run_dir: Path
    upload_dir: Path
    card: str

    @property
    def results(self) -> dict:
        return json.loads((self.run_dir / "all_results.json").read_text())

    @property
    def metadata(self) -> dict:
        return metadata_load(self.upload_dir / "README.md")

    @property
    def pipeline_tag(self) -> str:
        return get_task(self.values["task"]).pipeline_tag


@pytest.fixture(scope="module")
def card_run(tiny_bert, tmp_path_factory) -> Callable[[str], CardRun]:
    """`card_run(name)`: the run of that name, trained once for the module, pushed once with --dry-run."""
    root = tmp_path_factory.mktemp("card-runs")

    def text_single() -> dict:
        files = {
            split: str(write_sentiment_csv(root / f"sentiment-{split}.csv", n, seed))
            for split, n, seed in (("train", 32, 0), ("validation", 8, 1), ("test", 8, 2))
        }
        values = make_recipe_values(tiny_bert, files, root / "set-below")
        values.update(
            task="text-classification",
            training={**TRAINING, "learning_rate": 5e-3},
            hub={"license": "apache-2.0", "language": "en"},
        )
        return values

    def text_multi() -> dict:
        files = write_topics(root)
        return recipe_values(
            "topics",
            "text-classification",
            tiny_bert,
            files,
            data={"problem_type": "multi_label", "max_length": 16},
            adapt={"strategy": "peft"},
            hub={"language": ["en", "fr"]},
        )

    def text_regression() -> dict:
        data = {"problem_type": "regression", "label_column": "score", "max_length": 16}
        return recipe_values("scores", "text-classification", tiny_bert, write_scores(root), data=data)

    def token() -> dict:
        files = {
            split: str(write_conll(root / f"{split}.conll", n, seed))
            for split, n, seed in (("train", 24, 0), ("validation", 8, 1), ("test", 8, 2))
        }
        checkpoint = build_tiny_ner_bert(root / "ner-bert")
        data = {"tags_column": "ner_tags", "conll_tag_column": 3, "max_length": 48}
        return recipe_values("ner", "token-classification", checkpoint, files, data=data)

    def image() -> dict:
        files = write_colour_folders(root / "colours")
        return recipe_values("colours", "image-classification", tiny_vit(root / "vit"), files)

    def audio() -> dict:
        files = {
            split: str(write_tone_folder(root / "tones" / split, n, seed))
            for split, n, seed in (("train", 4, 0), ("validation", 2, 1), ("test", 2, 2))
        }
        checkpoint = tiny_wav2vec2_folder(root / "w2v")
        return recipe_values("tones", "audio-classification", checkpoint, files, data={"max_duration_s": 0.5})

    def ctc() -> dict:
        files = {
            split: str(write_spelled_split(root / "spelled" / split, n, seed))
            for split, n, seed in (("train", 8, 0), ("validation", 4, 1), ("test", 4, 2))
        }
        checkpoint = tiny_wav2vec2_folder(root / "w2v-ctc", "Wav2Vec2Model")
        return recipe_values("spelled", "speech-recognition-ctc", checkpoint, files, data={"max_duration_s": 5})

    def whisper() -> dict:
        source = tiny_whisper(seed=1)
        from helpers.speech import write_ct2_whisper

        ct2 = write_ct2_whisper(source, root / "whisper-ct2", faster_whisper_tokenizer())
        assert main(["import-ct2", str(ct2), str(root / "whisper")]) == 0
        files = {
            split: write_word_clips(root / "words" / split, n, seed)
            for split, n, seed in (("train", 6, 0), ("validation", 3, 1), ("test", 3, 2))
        }
        return recipe_values(
            "words",
            "speech-recognition-seq2seq",
            root / "whisper",
            files,
            data={"max_duration_s": 2},
            training={"generation_max_length": 8},
        )

    def detection() -> dict:
        files = {
            split: str(write_coco(draw_set(root / "squares" / split, n, seed, side=64), root / f"{split}.json"))
            for split, n, seed in (("train", 8, 0), ("validation", 4, 1), ("test", 4, 2))
        }
        detr = {
            "num_queries": 4,
            "d_model": 32,
            "encoder_layers": 1,
            "decoder_layers": 2,  # Deformable DETR ties the box heads of its decoder layers: one is too few
            "encoder_ffn_dim": 32,
            "decoder_ffn_dim": 32,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_n_points": 1,
            "decoder_n_points": 1,
        }
        model = {"architecture": "deformable_detr", "config_overrides": detr}
        data = {"image_size": 64, "image_augment": False}
        return recipe_values(
            "squares", "object-detection", timm_backbone(root / "det-backbone"), files, model=model, data=data
        )

    def segmentation() -> dict:
        model = {
            "architecture": "upernet",
            "config_overrides": {"hidden_size": 16, "use_auxiliary_head": False, "pool_scales": [1, 2]},
        }
        data = {"labels": ["background", "square"], "image_size": 32}
        files = write_shape_folders(root / "shapes")
        backbone = timm_backbone(root / "seg-backbone")
        return recipe_values("shapes", "semantic-segmentation", backbone, files, model=model, data=data)

    builders = {
        "text-single": text_single,
        "text-multi": text_multi,
        "text-regression": text_regression,
        "token": token,
        "image": image,
        "audio": audio,
        "ctc": ctc,
        "whisper": whisper,
        "detection": detection,
        "segmentation": segmentation,
    }
    runs: dict[str, CardRun] = {}

    def get(name: str) -> CardRun:
        if name not in runs:
            values = builders[name]()
            values["output_dir"] = str(root / "runs" / name)
            Recipe.from_dict(values).run()
            out = root / "uploads" / name
            assert main(["push", values["output_dir"], "--repo-id", "me/x", "--dry-run", str(out)]) == 0
            runs[name] = CardRun(values, Path(values["output_dir"]), out, (out / "README.md").read_text())
        return runs[name]

    return get


ALL_RUNS = [
    "text-single",
    "text-multi",
    "text-regression",
    "token",
    "image",
    "audio",
    "ctc",
    "whisper",
    "detection",
    "segmentation",
]
# all_results.json's key prefix of each evaluation, by the split the card names.
PREFIXES = {"validation": "eval", "test": "test"}


def table_after(card: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table after `heading`, as dicts by column."""
    lines = card[card.index(heading) :].splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return [dict(zip(table[0], row)) for row in table[2:]]


def texts_of_test_split(run: CardRun) -> list[str]:
    """The texts of a text run's test split, read straight from its file."""
    path = Path(run.values["data"]["files"]["test"])
    if path.suffix == ".conll":
        sentences = path.read_text().split("\n\n")
        return [" ".join(line.split()[0] for line in block.splitlines()) for block in sentences if block.strip()]
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in path.read_text().splitlines()]
    with path.open(newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


@pytest.mark.parametrize("name", ALL_RUNS)
def test_model_index_holds_the_scores_of_all_results(card_run, name):
    run = card_run(name)
    card = ModelCard.load(run.upload_dir / "README.md")
    model_name, eval_results = model_index_to_eval_results(run.metadata["model-index"])
    assert model_name == run.values["name"] and eval_results == card.data.eval_results
    results = run.results
    assert {result.dataset_split for result in eval_results} == {"validation", "test"}
    for result in eval_results:
        assert result.task_type == run.pipeline_tag
        title, _, metric = result.metric_name.partition(" ")
        assert title == result.dataset_split.capitalize()
        assert result.metric_value == results[f"{PREFIXES[result.dataset_split]}_{metric}"], result
        assert "loss" not in (result.metric_type, metric) and not metric.endswith(("runtime", "per_second"))
        assert result.dataset_name == result.dataset_type and "test" in result.dataset_name  # the local files
    # The task's headline scores are all there, for both splits; the per-class ones are not.
    config = load_recipe_config(values=run.values)
    id2label = json.loads((run.run_dir / "config.json").read_text()).get("id2label", {})
    classes = {str(label).removeprefix("B-").removeprefix("I-") for label in id2label.values()}
    for split in PREFIXES:
        indexed = {r.metric_name.partition(" ")[2] for r in eval_results if r.dataset_split == split}
        assert set(get_task(config.task)(config).summary_metrics) <= indexed
        assert not any(metric.endswith(f"_{label}") for metric in indexed for label in classes)
    assert run.metadata["metrics"] and "loss" not in run.metadata["metrics"]
    assert not any(metric.endswith(("runtime", "per_second", "samples")) for metric in run.metadata["metrics"])
    assert run.metadata["pipeline_tag"] == run.pipeline_tag == card.data.pipeline_tag
    assert "base_model" not in run.metadata  # every test checkpoint is a local folder


@pytest.mark.parametrize(
    ("name", "license", "language"),
    [("text-single", "apache-2.0", ["en"]), ("text-multi", None, ["en", "fr"]), ("image", None, None)],
)
def test_license_and_language_follow_the_recipe(card_run, name, license, language):
    card = ModelCard.load(card_run(name).upload_dir / "README.md")
    assert card.data.license == license
    assert card.data.language == language


@pytest.mark.parametrize("name", ALL_RUNS)
def test_a_text_model_shows_a_text_of_its_test_split_in_the_widget(card_run, name):
    run = card_run(name)
    if name not in TEXT_TASKS:
        assert "widget" not in run.metadata  # images and audio: the widget needs a file, not a text
        return
    (example,) = run.metadata["widget"]
    assert example["text"] in texts_of_test_split(run)


@pytest.mark.parametrize("name", ALL_RUNS)
def test_per_epoch_table_has_one_row_per_evaluation(card_run, name):
    run = card_run(name)
    history = json.loads((run.run_dir / "trainer_state.json").read_text())["log_history"]
    evaluated = [entry for entry in history if "eval_loss" in entry]
    rows = table_after(run.card, "### Results per epoch")
    assert len(rows) == len(evaluated) == TRAINING["num_train_epochs"]
    for row, entry in zip(rows, evaluated):
        assert (float(row["epoch"]), int(row["step"])) == (entry["epoch"], entry["step"])
        assert row["validation loss"] == f"{entry['eval_loss']:.4f}"
        assert row["training loss"] != "no log"  # logging_steps 1: a loss logged before every evaluation


def test_hyperparameters_are_what_ran(card_run):
    run = card_run("text-single")
    state = json.loads((run.run_dir / "trainer_state.json").read_text())
    table = {row["hyperparameter"]: row["value"] for row in table_after(run.card, "### Hyperparameters")}
    assert table["total train batch size"] == "8" and table["processes"] == "1"
    # bf16 on a CPU with AMX (hubtune's speed default there), fp32 on others.
    assert table["precision"] == ("bf16 mixed precision" if run.results["speed_settings"]["bf16"] else "fp32")
    assert table["optimizer"].startswith(run.results["speed_settings"]["optim"])
    assert table["learning rate"] == "0.005" and table["seed"] == "42"
    assert table["trained for"] == f"2 epochs ({state['global_step']} steps)"
    assert table["learning-rate schedule"] == "linear, 0 warmup steps"
    for framework in ("transformers", "torch", "peft", "datasets", "accelerate", "hubtune"):
        assert f"- {framework} {installed_version(framework)}\n" in run.card
    assert "- Adaptation: `full`; 21,506 of 21,506 parameters trained (100.00%)." in run.card


def test_an_adapter_card_says_how_to_load_it_and_a_merged_export_says_it_is_standalone(card_run, tmp_path):
    run = card_run("text-multi")
    assert run.metadata["library_name"] == "peft"
    assert "PeftModel.from_pretrained(base_model, repo_id)" in run.card and "merged export" not in run.card
    merged = tmp_path / "merged"
    assert main(["export", str(run.run_dir), str(merged), "--merge"]) == 0
    assert main(["push", str(merged), "--repo-id", "me/x", "--dry-run", str(tmp_path / "upload")]) == 0
    card = ModelCard.load(tmp_path / "upload" / "README.md")
    assert card.data.library_name == "transformers"
    assert "holds a merged export" in card.text and "PeftModel" not in card.text
    assert card.data.eval_results == ModelCard.load(run.upload_dir / "README.md").data.eval_results


def test_the_upload_keeps_the_tokenizer_as_trained(card_run):
    # Whisper's byte-level vocabulary holds tokens such as "/" and merges such as "~ ~": they look like paths.
    run = card_run("whisper")
    assert (run.upload_dir / "tokenizer.json").read_bytes() == (run.run_dir / "tokenizer.json").read_bytes()


def write_base_card(folder: Path, metadata: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\n{yaml.safe_dump(metadata)}---\n# base\n")


def test_the_license_comes_from_the_base_models_card_unless_the_recipe_sets_one(card_run, tmp_path, monkeypatch):
    import huggingface_hub

    from pipelines.runs.card import model_card

    run = card_run("text-regression")
    config = load_recipe_config(values=run.values)
    local = tmp_path / "local-base"
    write_base_card(local, {"license": "mit"})
    config.model.checkpoint = str(local)
    assert metadata_of(model_card(run.run_dir, config, "text-classification"))["license"] == "mit"
    # A Hub base model's card, read offline from the Hub cache: a license `other` comes with its name and link.
    cache = tmp_path / "hub-cache"
    snapshot = cache / "models--org--base" / "snapshots" / ("0" * 40)
    write_base_card(snapshot, {"license": "other", "license_name": "base-licence", "license_link": "LICENSE"})
    (cache / "models--org--base" / "refs").mkdir()
    (cache / "models--org--base" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    config.model.checkpoint = "org/base"
    metadata = metadata_of(model_card(run.run_dir, config, "text-classification"))
    assert metadata["base_model"] == "org/base"
    assert (metadata["license"], metadata["license_name"], metadata["license_link"]) == (
        "other",
        "base-licence",
        "LICENSE",
    )
    config.hub.license = "apache-2.0"
    metadata = metadata_of(model_card(run.run_dir, config, "text-classification"))
    assert metadata["license"] == "apache-2.0" and "license_name" not in metadata
    # A base model whose card is in no cache: offline it cannot be read, and the card goes without a license.
    config.hub.license, config.model.checkpoint = None, "org/elsewhere"
    assert "license" not in metadata_of(model_card(run.run_dir, config, "text-classification"))


def metadata_of(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


def test_no_widget_where_the_test_split_cannot_be_read(card_run, tmp_path):
    from pipelines.serving.card_example import widget_text

    config = load_recipe_config(values=card_run("token").values)
    assert widget_text(config) in texts_of_test_split(card_run("token"))
    config.data.files["test"] = str(tmp_path / "moved.conll")
    assert widget_text(config) is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hub.license", "Apache 2.0", "recipe key 'hub.license' must be a Hub license identifier"),
        ("hub.license", 3, "recipe key 'hub.license' must be str"),
        ("hub.language", "English", "recipe key 'hub.language' takes ISO 639 language codes"),
        ("hub.language", ["en", 3], "recipe key 'hub.language\\[1\\]' must be str"),
        ("hub.language", {"en": 1}, "recipe key 'hub.language' must be str or list"),
    ],
)
def test_license_and_language_are_checked_at_load(recipe_values, key, value, message):
    section, _, name = key.partition(".")
    with pytest.raises(HubtuneError, match=message):
        Recipe.from_dict({**recipe_values, section: {name: value}})


def test_a_run_folder_of_an_earlier_hubtune_still_gets_its_card(card_run, tmp_path):
    import shutil

    from pipelines.runs.card import model_card

    run = card_run("text-single")
    earlier = tmp_path / "earlier"
    shutil.copytree(run.run_dir, earlier)
    results = json.loads((earlier / "all_results.json").read_text())
    del results["training_setup"]  # what ran was not recorded before
    (earlier / "all_results.json").write_text(json.dumps(results))
    card = model_card(earlier, load_recipe_config(values=run.values), "text-classification")
    assert "As the recipe set them" in card and "| learning_rate | 0.005 |" in card and "| seed | 42 |" in card
    assert "## Framework versions" not in card
    assert len(table_after(card, "### Results per epoch")) == 2
    assert metadata_of(card)["model-index"] == run.metadata["model-index"]


def test_a_hub_dataset_is_named_by_its_id_with_its_config_and_revision(card_run):
    from pipelines.runs.card import model_card

    run = card_run("text-single")
    config = load_recipe_config(values=run.values)
    config.data.files, config.data.dataset, config.data.dataset_config = {}, "org/reviews", "short"
    config.data.revision = "v1"
    metadata = metadata_of(model_card(run.run_dir, config, "text-classification"))
    assert metadata["datasets"] == ["org/reviews"]
    for result in model_index_to_eval_results(metadata["model-index"])[1]:
        assert (result.dataset_name, result.dataset_type) == ("org/reviews", "org/reviews")
        assert (result.dataset_config, result.dataset_revision) == ("short", "v1")


def test_a_validation_split_carved_out_of_train_is_named_so(tiny_bert, tmp_path):
    files = {
        split: str(write_sentiment_csv(tmp_path / f"{split}.csv", n, seed))
        for split, n, seed in (("train", 32, 0), ("test", 8, 2))
    }
    values = make_recipe_values(tiny_bert, files, tmp_path / "run")
    values["data"].update(validation_split=None, validation_fraction=0.25)
    values["training"].update(num_train_epochs=1)
    Recipe.from_dict(values).run()
    assert main(["push", str(tmp_path / "run"), "--repo-id", "me/x", "--dry-run", str(tmp_path / "upload")]) == 0
    splits = {result.dataset_split for result in ModelCard.load(tmp_path / "upload" / "README.md").data.eval_results}
    assert splits == {"train (25% held out for validation)", "test"}
