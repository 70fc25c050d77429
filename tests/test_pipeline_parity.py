"""A run folder gives the same answers in transformers' `pipeline()` as in `hubtune predict`, task by task.

Each test trains a tiny run, loads its folder with `transformers.pipeline(<its pipeline tag>, model=RUN)` (the
pipeline's own options expressing hubtune's choices where it has them) and compares the answers on several inputs
with `Predictor(RUN).predict`: the same labels, entities, transcripts, boxes or masks, scores within 1e-4. A model
needs no skill for that: the tiny runs are short, and the inputs are chosen where preprocessing differences would
show (texts longer than `data.max_length`, an image size other than the checkpoint's).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import FILLER, NEGATIVE, POSITIVE, make_recipe_values, make_sentence
from helpers.detection import draw_set, write_coco
from helpers.ner import build_tiny_ner_bert, ner_recipe_values, write_conll
from helpers.speech import (
    TONES,
    faster_whisper_tokenizer,
    tiny_wav2vec2_folder,
    tiny_whisper,
    tone,
    write_ct2_whisper,
    write_manifest,
    write_spelled_split,
    write_tone_folder,
)
from helpers.vision import save_tiny_vit
from PIL import Image
from transformers import pipeline

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

SCORE_TOLERANCE = 1e-4
TRAINING = {
    "num_train_epochs": 2,
    "learning_rate": 5e-3,
    "per_device_train_batch_size": 16,
    "save_strategy": "no",
    "disable_tqdm": True,
    "report_to": "none",
}


def assert_close(pipeline_scores: dict[str, float], hubtune_scores: dict[str, float]) -> None:
    assert pipeline_scores.keys() == hubtune_scores.keys()
    for name, score in hubtune_scores.items():
        assert abs(pipeline_scores[name] - score) <= SCORE_TOLERANCE, (name, pipeline_scores[name], score)


def by_label(rows: list[dict]) -> dict[str, float]:
    """A classification pipeline's answer (`top_k=None`: every label, best first) as label -> score."""
    return {row["label"]: row["score"] for row in rows}


# --- text classification ---------------------------------------------------------------------------------------

# Longer than the recipe's `data.max_length` (32 tokens) and shorter than the model's 64 positions: its cue words
# come after the first 32 tokens, where hubtune cuts, so that a pipeline reading on gives another label.
LONG_TEXT = " ".join([*(FILLER * 3)[:30], *["good", "great", "excellent"] * 2])
TEXTS = ["the film was good", "awful plot and boring cast", LONG_TEXT, "a lovely story"]
SPLITS = (("train", 96), ("validation", 24), ("test", 24))


def write_rows(path: Path, header: list[str], rows: list[list]) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def text_run(tiny_bert: Path, files: dict[str, str], run_dir: Path, **data) -> Path:
    values = make_recipe_values(tiny_bert, files, run_dir)
    values["data"] = {"files": files, "max_length": 32, **data}
    values["training"] = dict(TRAINING)
    Recipe.from_dict(values).run()
    return run_dir


def test_text_classification_single_label(trained_run):
    run_dir = trained_run("full").run_dir
    predicted = Predictor(run_dir).predict(TEXTS)
    assert predicted[2]["truncated"], "the long text is not cut by hubtune: the test proves nothing"
    classify = pipeline("text-classification", model=str(run_dir))
    # `truncation=True` cuts at the saved tokenizer's `model_max_length`: the recipe's `data.max_length`.
    answers = classify(TEXTS, top_k=None, truncation=True)
    for hubtune, rows in zip(predicted, answers):
        assert rows[0]["label"] == hubtune["label"]
        assert_close(by_label(rows), hubtune["scores"])


@pytest.mark.parametrize("tune_thresholds", [False, True])
def test_text_classification_multi_label(tiny_bert, tmp_path, tune_thresholds):
    rng = random.Random(0)
    topics = {"praise": POSITIVE, "complaint": NEGATIVE}

    def topic_rows(n: int) -> list[list]:
        chosen = [sorted(rng.sample(list(topics), rng.randint(1, 2))) for _ in range(n)]
        texts = [" ".join(rng.sample(FILLER, 4) + [rng.choice(topics[t]) for t in c]) for c in chosen]
        return [[text, "|".join(c)] for text, c in zip(texts, chosen)]

    files = {split: write_rows(tmp_path / f"{split}.csv", ["text", "label"], topic_rows(n)) for split, n in SPLITS}
    run_dir = text_run(
        tiny_bert,
        files,
        tmp_path / "run",
        problem_type="multi_label",
        label_separator="|",
        threshold=0.45,
        tune_thresholds=tune_thresholds,
    )
    predicted = Predictor(run_dir).predict(TEXTS)
    # The pipeline applies a sigmoid per label and returns every label; it takes no decision. Every class's threshold
    # (tuned, or `data.threshold`) travels in config.json, where any consumer finds hubtune's decision.
    answers = pipeline("text-classification", model=str(run_dir))(
        TEXTS, top_k=None, function_to_apply="sigmoid", truncation=True
    )
    thresholds = json.loads((run_dir / "config.json").read_text())["hubtune_thresholds"]
    assert (set(thresholds.values()) == {0.45}) != tune_thresholds, thresholds
    for hubtune, rows in zip(predicted, answers):
        scores = by_label(rows)
        assert_close(scores, hubtune["scores"])
        assert set(hubtune["labels"]) == {name for name, score in scores.items() if score >= thresholds[name]}


def test_text_regression_returns_values_in_the_data_units(tiny_bert, tmp_path):
    rng = random.Random(0)

    def score_rows(n: int) -> list[list]:
        # Targets around 50, spread 10: far from the standardised values the model is trained on.
        labels = [rng.choice(["negative", "positive"]) for _ in range(n)]
        return [[make_sentence(rng, y), 50 + 10 * (y == "positive") + rng.uniform(-2, 2)] for y in labels]

    files = {split: write_rows(tmp_path / f"{split}.csv", ["text", "score"], score_rows(n)) for split, n in SPLITS}
    run_dir = text_run(
        tiny_bert, files, tmp_path / "run", problem_type="regression", label_column="score", scale_targets=True
    )
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["problem_type"] == "regression" and saved["hubtune_target_scaling"]["in_weights"] is True
    predicted = Predictor(run_dir).predict(TEXTS)
    assert all(40 < p["value"] < 70 for p in predicted), predicted
    answers = pipeline("text-classification", model=str(run_dir))(TEXTS, truncation=True)
    for hubtune, answer in zip(predicted, answers):
        assert answer["label"] == "score"
        assert abs(answer["score"] - hubtune["value"]) <= SCORE_TOLERANCE


# --- token classification --------------------------------------------------------------------------------------


def test_token_classification(tmp_path):
    files = {
        s: str(write_conll(tmp_path / f"{s}.conll", n, seed)) for s, n, seed in (("train", 120, 0), ("test", 20, 2))
    }
    values = ner_recipe_values(build_tiny_ner_bert(tmp_path / "bert"), files, tmp_path / "run")
    values["data"]["validation_split"] = None
    values["training"].update(num_train_epochs=4, report_to="none")
    Recipe.from_dict(values).run()
    # Longer than the model's 64 positions: tagged in overlapping windows by both.
    long_text = " ".join(["angela merkel visited berlin and met john smith in paris today ."] * 6)
    texts = ["angela merkel visited berlin", "john met a friend in new york", long_text, "the friend said"]
    predicted = Predictor(tmp_path / "run").predict(texts)
    tagger = pipeline("token-classification", model=str(tmp_path / "run"))
    # hubtune groups word pieces into words by their first piece, and tags a long text in windows of the
    # tokenizer's `model_max_length` (saved as at most the model's positions) overlapping by a quarter.
    answers = tagger(texts, aggregation_strategy="first", stride=tagger.tokenizer.model_max_length // 4)
    assert sum(len(p["entities"]) for p in predicted) >= 3, predicted
    for hubtune, entities in zip(predicted, answers):
        assert [(e["entity_group"], e["start"], e["end"]) for e in entities] == [
            (e["type"], e["start"], e["end"]) for e in hubtune["entities"]
        ]
        for entity, expected in zip(entities, hubtune["entities"]):
            assert abs(float(entity["score"]) - expected["score"]) <= SCORE_TOLERANCE


# --- image classification --------------------------------------------------------------------------------------

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def write_colours(root: Path) -> dict[str, str]:
    """Class folders of noisy colour squares at odd sizes (so that resizing and cropping matter)."""
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 8), ("validation", 2), ("test", 4)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                height, width = rng.integers(20, 60, 2)
                noise = rng.integers(-60, 61, size=(height, width, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
        files[split] = str(root / split)
    return files


def image_run(checkpoint: Path, files: dict[str, str], run_dir: Path, image_size: int, **adapt) -> Path:
    values = {
        "name": "colours",
        "task": "image-classification",
        "output_dir": str(run_dir),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": files, "image_size": image_size},
        "adapt": adapt or {"strategy": "full"},
        "training": {**TRAINING, "learning_rate": 3e-3, "per_device_train_batch_size": 8},
    }
    Recipe.from_dict(values).run()
    return run_dir


def tiny_vit_checkpoint(folder: Path) -> Path:
    """A ViT for 32x32 inputs whose processor keeps transformers' default 224x224: `data.image_size: 32` is what
    makes it train at all, and what its run folder must tell the pipeline."""
    return save_tiny_vit(folder, processor_side=None)


def tiny_timm_checkpoint(folder: Path, architecture: str = "test_efficientnet") -> Path:
    """A timm checkpoint as the Hub stores it, for 40x40 inputs cropped at 87.5% (timm's usual eval crop)."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    save_for_hf(timm.create_model(architecture, num_classes=10), folder, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"].update(input_size=[3, 40, 40], crop_pct=0.875)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def assert_images_match(run_dir: Path, images: list[str], served: Path | None = None) -> None:
    """`pipeline()` on `served` (the run folder, or an export of it) answers as `hubtune predict` on the run."""
    predicted = Predictor(run_dir).predict(images)
    answers = pipeline("image-classification", model=str(served or run_dir))(images, top_k=None)
    for hubtune, rows in zip(predicted, answers):
        assert rows[0]["label"] == hubtune["label"]
        # hubtune lists the five most probable classes (here all three).
        assert_close(by_label(rows), hubtune["top"])


def test_image_classification_vit_at_the_recipe_image_size(tmp_path):
    files = write_colours(tmp_path / "colours")
    run_dir = image_run(tiny_vit_checkpoint(tmp_path / "vit"), files, tmp_path / "run", image_size=32)
    assert json.loads((run_dir / "preprocessor_config.json").read_text())["size"] == {"height": 32, "width": 32}
    assert_images_match(run_dir, sorted(str(p) for p in Path(files["test"]).rglob("*.png")))


def test_image_classification_timm_at_the_recipe_image_size(tmp_path):
    files = write_colours(tmp_path / "colours")
    run_dir = image_run(tiny_timm_checkpoint(tmp_path / "timm"), files, tmp_path / "run", image_size=56)
    pretrained_cfg = json.loads((run_dir / "config.json").read_text())["pretrained_cfg"]
    assert pretrained_cfg["input_size"] == [3, 56, 56] and pretrained_cfg["crop_pct"] == 0.875
    assert_images_match(run_dir, sorted(str(p) for p in Path(files["test"]).rglob("*.png")))


# --- audio -----------------------------------------------------------------------------------------------------


def mono_16k_clips(folder: str) -> list[tuple[str, np.ndarray]]:
    """The folder's mono 16 kHz clips with their samples. The pipeline is given arrays at the model's rate: it
    reads files with ffmpeg and resamples with torchaudio, hubtune with its own decoder."""
    clips = []
    for path in sorted(Path(folder).rglob("*.wav")):
        wave, rate = soundfile.read(path, dtype="float32")
        if rate == 16000 and wave.ndim == 1:
            clips.append((str(path), wave))
    return clips


def test_audio_classification(tmp_path):
    files = {
        split: str(write_tone_folder(tmp_path / split, n, seed))
        for split, n, seed in (("train", 12, 0), ("test", 9, 2))
    }
    values = {
        "name": "tones",
        "task": "audio-classification",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(tiny_wav2vec2_folder(tmp_path / "w2v"))},
        "data": {"files": files, "validation_split": None},
        "training": {**TRAINING, "learning_rate": 3e-3, "per_device_train_batch_size": 8},
    }
    Recipe.from_dict(values).run()
    clips = mono_16k_clips(files["test"])
    assert len(clips) >= 3
    predicted = Predictor(tmp_path / "run").predict([path for path, _ in clips])
    classify = pipeline("audio-classification", model=str(tmp_path / "run"))
    answers = classify([{"raw": wave, "sampling_rate": 16000} for _, wave in clips], top_k=None)
    for hubtune, rows in zip(predicted, answers):
        assert rows[0]["label"] == hubtune["label"]
        assert_close(by_label(rows), hubtune["scores"])


def assert_transcripts_match(
    run_dir: Path, clips: list[tuple[str, np.ndarray]], served: Path | None = None, **options
) -> list[str]:
    """`pipeline()` on `served` (the run folder, or an export of it) transcribes as `hubtune predict` on the run."""
    predicted = [p["transcript"] for p in Predictor(run_dir).predict([path for path, _ in clips])]
    recognise = pipeline("automatic-speech-recognition", model=str(served or run_dir))
    answers = recognise([{"raw": wave, "sampling_rate": 16000} for _, wave in clips], **options)
    assert [answer["text"].strip() for answer in answers] == predicted
    return predicted


def test_ctc_transcripts(tmp_path):
    files = {
        split: str(write_spelled_split(tmp_path / split, n, seed))
        for split, n, seed in (("train", 48, 0), ("test", 6, 2))
    }
    values = {
        "name": "spelled",
        "task": "speech-recognition-ctc",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(tiny_wav2vec2_folder(tmp_path / "w2v", "Wav2Vec2Model"))},
        "data": {"files": files, "validation_split": None},
        "adapt": {"freeze_feature_encoder": False},
        "training": {
            **TRAINING,
            "num_train_epochs": 40,
            "learning_rate": 2e-2,
            "per_device_train_batch_size": 8,
            "warmup_steps": 0,
        },
    }
    Recipe.from_dict(values).run()
    # A 70 s clip too: hubtune cuts it into the pipeline's chunks (30 s, 5 s strides), so the same transcript.
    clips = [*mono_16k_clips(files["test"]), long_clip(tmp_path / "long.wav", files["test"], 70)]
    transcripts = assert_transcripts_match(tmp_path / "run", clips, chunk_length_s=30)
    assert any(transcripts), "every transcript is empty: the test proves nothing"
    assert len(transcripts[-1]) > 10 * max(map(len, transcripts[:-1])), transcripts


def long_clip(path: Path, folder: str, seconds: float) -> tuple[str, np.ndarray]:
    """The folder's mono 16 kHz clips end to end, repeated to `seconds`, as a file and its samples."""
    clips = [wave for _, wave in mono_16k_clips(folder)]
    wave = np.concatenate(clips * int(seconds * 16000 // sum(map(len, clips)) + 1))[: int(seconds * 16000)]
    soundfile.write(path, wave, 16000, subtype="FLOAT")
    return str(path), wave


@pytest.fixture(scope="module")
def whisper_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("whisper")
    source = write_ct2_whisper(tiny_whisper(seed=1), root / "ct2", faster_whisper_tokenizer())
    assert main(["import-ct2", str(source), str(root / "hf")]) == 0
    return root / "hf"


def write_words(folder: Path, n: int, seed: int) -> str:
    """Clips of one tone each at 16 kHz, transcribed by the tone's name."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        word = list(TONES)[i % len(TONES)]
        soundfile.write(folder / f"w{i}.wav", tone(TONES[word], rng.uniform(0.4, 0.8), 16000, rng), 16000)
        rows.append({"file_name": f"w{i}.wav", "text": word.capitalize() + "."})
    write_manifest(folder / "metadata.csv", rows)
    return str(folder)


def whisper_values(checkpoint: Path, root: Path, **adapt) -> dict:
    files = {"train": write_words(root / "train", 24, 0), "test": write_words(root / "test", 4, 1)}
    return {
        "name": "words",
        "task": "speech-recognition-seq2seq",
        "output_dir": str(root / "run"),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": files, "validation_split": None},
        "adapt": adapt or {"strategy": "full"},
        "training": {
            **TRAINING,
            "num_train_epochs": 20,
            "per_device_train_batch_size": 6,
            "warmup_steps": 0,
            "generation_max_length": 8,
        },
    }


def test_whisper_transcripts(whisper_checkpoint, tmp_path):
    values = whisper_values(whisper_checkpoint, tmp_path)
    Recipe.from_dict(values).run()
    # A clip over the tiny Whisper's 2 s window too: without `chunk_length_s` the pipeline hands it to `generate`
    # whole, which runs the sequential long-form algorithm, as hubtune does. (With `chunk_length_s` the pipeline
    # runs another algorithm, chunks merged on their overlap, whose transcripts differ: docs/tasks/speech.md.)
    test = values["data"]["files"]["test"]
    clips = [*mono_16k_clips(test), long_clip(tmp_path / "long.wav", test, 7)]
    # hubtune predict generates at most `training.generation_max_length` new tokens (per window).
    transcripts = assert_transcripts_match(tmp_path / "run", clips, generate_kwargs={"max_new_tokens": 8})
    assert any(transcripts), "every transcript is empty: the test proves nothing"


# --- dense prediction ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_backbone(tmp_path_factory) -> Path:
    import timm

    folder = tmp_path_factory.mktemp("backbone") / "test_efficientnet"
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("test_efficientnet"), str(folder), safe_serialization=True)
    return folder


def test_object_detection(timm_backbone, tmp_path):
    squares = {split: draw_set(tmp_path / split, n, seed) for split, n, seed in (("train", 32, 0), ("test", 4, 2))}
    files = {split: str(write_coco(images, tmp_path / f"{split}.json")) for split, images in squares.items()}
    detr = {"num_queries": 8, "d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "encoder_ffn_dim": 64}
    detr.update(decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2)
    values = {
        "name": "squares",
        "task": "object-detection",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(timm_backbone), "architecture": "deformable_detr", "config_overrides": detr},
        # A short run's scores are low: a low threshold, which the pipeline is given too.
        "data": {
            "files": files,
            "validation_split": None,
            "image_size": 48,
            "image_augment": False,
            "score_threshold": 0.05,
        },
        "training": {**TRAINING, "num_train_epochs": 3, "learning_rate": 1e-3},
    }
    Recipe.from_dict(values).run()
    images = [str(image["file"]) for image in squares["test"]]
    predicted = Predictor(tmp_path / "run").predict(images)
    answers = pipeline("object-detection", model=str(tmp_path / "run"))(images, threshold=0.05)
    assert sum(len(p["boxes"]) for p in predicted) >= 3, predicted
    for hubtune, boxes in zip(predicted, answers):
        boxes = sorted(boxes, key=lambda box: -box["score"])
        assert [box["label"] for box in boxes] == [box["label"] for box in hubtune["boxes"]]
        for box, expected in zip(boxes, hubtune["boxes"]):
            # hubtune rounds scores to 4 decimals and corners to 2; the pipeline cuts corners to whole pixels.
            assert abs(box["score"] - expected["score"]) <= SCORE_TOLERANCE
            corners = [box["box"][key] for key in ("xmin", "ymin", "xmax", "ymax")]
            for value, corner in zip(expected["box"], corners):
                assert corner in {int(value - 0.005), int(value + 0.005)}, (expected["box"], corners)


def test_semantic_segmentation(timm_backbone, tmp_path):
    rng = np.random.default_rng(0)
    labels = ["background", "disc"]
    files = {}
    for split, n in (("train", 16), ("test", 4)):
        for sub in ("images", "masks"):
            (tmp_path / split / sub).mkdir(parents=True)
        for i in range(n):
            yy, xx = np.mgrid[:50, :70]
            cy, cx, radius = rng.integers(15, 35), rng.integers(15, 55), rng.integers(6, 14)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            image = rng.integers(90, 140, (50, 70, 3))
            image[inside] = (220, 60, 60)
            Image.fromarray(image.astype(np.uint8)).save(tmp_path / split / "images" / f"{i}.png")
            Image.fromarray(inside.astype(np.uint8)).save(tmp_path / split / "masks" / f"{i}.png")
        files[split] = str(tmp_path / split)
    values = {
        "name": "discs",
        "task": "semantic-segmentation",
        "output_dir": str(tmp_path / "run"),
        "model": {
            "checkpoint": str(timm_backbone),
            "architecture": "upernet",
            "config_overrides": {"hidden_size": 32, "use_auxiliary_head": False, "pool_scales": [1, 2]},
        },
        "data": {"files": files, "validation_split": None, "labels": labels, "image_size": 48},
        "training": {**TRAINING, "learning_rate": 3e-3, "per_device_train_batch_size": 8},
    }
    Recipe.from_dict(values).run()
    images = sorted(str(p) for p in Path(files["test"], "images").glob("*.png"))
    run = Predictor(tmp_path / "run")
    predicted = run.predict(images)
    class_maps = run.serving.class_maps([Image.open(path).convert("RGB") for path in images])
    answers = pipeline("image-segmentation", model=str(tmp_path / "run"))(images)
    for hubtune, class_map, masks in zip(predicted, class_maps, answers):
        # One mask per class present: white (255) where the pixel is of that class.
        found = np.full(class_map.shape, -1)
        for mask in masks:
            found[np.asarray(mask["mask"]) == 255] = labels.index(mask["label"])
        assert (found == class_map).all()
        fractions = {mask["label"]: float((np.asarray(mask["mask"]) == 255).mean()) for mask in masks}
        assert_close(fractions, {name: value for name, value in hubtune["fractions"].items() if value > 0})


# --- adapter runs ----------------------------------------------------------------------------------------------


def merged(run_dir: Path, out: Path) -> Path:
    """`hubtune export RUN OUT --merge`: the adapter folded into the base weights, a folder pipeline() loads."""
    assert main(["export", str(run_dir), str(out), "--merge"]) == 0
    assert json.loads((out / "export_check.json").read_text())["merged_adapter"] is True
    return out


def test_merged_text_adapter_answers_as_the_run(trained_run, tmp_path):
    run_dir = trained_run("peft").run_dir
    predicted = Predictor(run_dir).predict(TEXTS)
    answers = pipeline("text-classification", model=str(merged(run_dir, tmp_path / "merged")))(
        TEXTS, top_k=None, truncation=True
    )
    for hubtune, rows in zip(predicted, answers):
        assert rows[0]["label"] == hubtune["label"]
        assert_close(by_label(rows), hubtune["scores"])


def test_adapter_run_folder_loads_with_peft_auto_class(trained_run):
    from peft import AutoPeftModelForSequenceClassification

    run_dir = trained_run("peft").run_dir
    run = Predictor(run_dir)
    # The base checkpoint's config comes with the base weights: the run's label names are given as they are saved.
    names = json.loads((run_dir / "config.json").read_text())["id2label"]
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(run_dir), id2label={int(i): name for i, name in names.items()}
    ).eval()
    batch = run.processor(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, run.model(**batch).logits, atol=1e-5)
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_merged_image_adapter_answers_as_the_run(tmp_path):
    files = write_colours(tmp_path / "colours")
    lora = {"strategy": "peft", "peft": {"method": "lora", "r": 4, "target_modules": ["conv2"]}}
    checkpoint = tiny_timm_checkpoint(tmp_path / "timm", "test_resnet")
    run_dir = image_run(checkpoint, files, tmp_path / "run", image_size=56, **lora)
    images = sorted(str(p) for p in Path(files["test"]).rglob("*.png"))
    assert_images_match(run_dir, images, served=merged(run_dir, tmp_path / "merged"))


def test_merged_whisper_adapter_answers_as_the_run(whisper_checkpoint, tmp_path):
    lora = {"strategy": "peft", "peft": {"method": "lora", "target_modules": ["q_proj", "v_proj"]}}
    values = whisper_values(whisper_checkpoint, tmp_path, **lora)
    Recipe.from_dict(values).run()
    transcripts = assert_transcripts_match(
        tmp_path / "run",
        mono_16k_clips(values["data"]["files"]["test"]),
        served=merged(tmp_path / "run", tmp_path / "merged"),
        generate_kwargs={"max_new_tokens": 8},
    )
    assert any(transcripts), "every transcript is empty: the test proves nothing"
