"""Object detection end to end: a tiny Deformable DETR built around a tiny timm EfficientNet learns to find red and
blue squares (64x64 images written here); its run folder reloads, predicts, draws, evaluates and exports; the four
annotation formats read the same boxes; bad annotations stop a run before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.detection import (
    CLASSES,
    COLOURS,
    TINY_RT_DETR_SIZES,
    draw_set,
    write_coco,
    write_objects,
    write_voc,
    write_yolo,
)
from helpers.runs import assert_export_checked_on_made_up_inputs
from PIL import Image

from pipelines import Recipe
from pipelines.commands.cli import main
from pipelines.serving.export import export_run
from pipelines.serving.predictor import Predictor

# Trains models for seconds each: `make test-fast` leaves this module out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Small enough to train in well under a minute on one CPU thread; Deformable DETR reads the backbone's four
# feature maps, and learns these squares several times faster than Conditional DETR on the coarsest map alone.
TINY_DETR = {
    "num_queries": 8,
    "d_model": 64,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_n_points": 2,
    "decoder_n_points": 2,
    "dropout": 0.0,
}


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A timm checkpoint folder (config.json + model.safetensors) of timm's tiny test EfficientNet."""
    import timm

    folder = tmp_path_factory.mktemp("timm-test-efficientnet")
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model("test_efficientnet"), str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def squares(tmp_path_factory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("squares")
    return {
        split: draw_set(root / split, n, seed)
        for split, n, seed in (("train", 96, 0), ("validation", 16, 1), ("test", 32, 2))
    }


@pytest.fixture(scope="session")
def coco_files(squares, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("coco")
    return {split: str(write_coco(images, root / f"{split}.json")) for split, images in squares.items()}


def detection_values(backbone: Path, files: dict[str, str], output_dir: Path, steps: int = 150) -> dict:
    return {
        "name": "tiny-squares",
        "task": "object-detection",
        "output_dir": str(output_dir),
        "model": {"checkpoint": str(backbone), "architecture": "deformable_detr", "config_overrides": dict(TINY_DETR)},
        # After 150 steps the focal-loss scores of right boxes lie around 0.3-0.6.
        "data": {"files": dict(files), "image_size": 64, "image_augment": False, "score_threshold": 0.3},
        "training": {
            "max_steps": steps,
            "learning_rate": 1e-3,
            "lr_scheduler_type": "constant",
            "weight_decay": 1e-4,
            "per_device_train_batch_size": 16,
            "per_device_eval_batch_size": 16,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_steps": 50,
            "disable_tqdm": True,
        },
    }


@pytest.fixture(scope="session")
def detection_run(tiny_backbone, coco_files, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("detection") / "run"
    results = Recipe.from_dict(detection_values(tiny_backbone, coco_files, run_dir)).run()
    return run_dir, results


def test_detector_learns_the_squares(detection_run):
    run_dir, results = detection_run
    # 150 steps reach about 0.7; an untrained detector scores 0.
    assert results["test_map_50"] >= 0.5
    assert results["test_map"] > 0.2
    assert {"test_map_red", "test_map_blue", "test_mar_100", "test_map_75"} <= results.keys()
    assert json.loads((run_dir / "config.json").read_text())["id2label"] == {"0": "red", "1": "blue"}
    # The processor is saved with the run, normalised like the backbone and sized by data.image_size.
    processor = json.loads((run_dir / "preprocessor_config.json").read_text())
    assert processor["size"] == {"max_height": 64, "max_width": 64}


def test_reload_predicts_the_same_boxes_as_the_trained_model(detection_run, squares):
    run_dir, _ = detection_run
    images = [str(image["file"]) for image in squares["test"][:6]]
    first = Predictor(run_dir).predict(images)
    again = Predictor(run_dir).predict(images, batch_size=4)  # other batches: padding must not move a box
    assert first == again
    found = [box for record in first for box in record["boxes"]]
    assert found and all(box["label"] in CLASSES and box["score"] >= 0.3 for box in found)
    # The best box of each image lies on one of its squares (IoU > 0.5), in the original image's pixels.
    hits = 0
    for record, image in zip(first, squares["test"][:6]):
        if record["boxes"]:
            best = record["boxes"][0]["box"]
            hits += any(_iou(best, truth["box"]) > 0.5 for truth in image["boxes"])
    assert hits >= 5


def _iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_cli_predict_prints_boxes_and_draws_without_overwriting(detection_run, squares, tmp_path, capsys):
    run_dir, _ = detection_run
    image = str(squares["test"][0]["file"])
    assert main(["predict", str(run_dir), image, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["input"] == image and {"label", "score", "box"} <= record["boxes"][0].keys()

    drawings = tmp_path / "drawn"
    assert main(["predict", str(run_dir), image, "--draw", str(drawings)]) == 0
    picture = drawings / f"{Path(image).stem}.png"
    assert Image.open(picture).size == (64, 64)
    assert Image.open(picture).tobytes() != Image.open(image).tobytes()  # boxes were drawn on it
    before = picture.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["predict", str(run_dir), image, "--draw", str(drawings)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert picture.stat().st_mtime_ns == before
    assert main(["predict", str(run_dir), image, "--draw", str(drawings), "--overwrite"]) == 0


def test_draw_never_replaces_a_users_file_an_input_or_the_run(detection_run, squares, tmp_path, capsys):
    run_dir, _ = detection_run
    run_before = sorted(p.name for p in run_dir.iterdir())
    image = tmp_path / "photos" / "holiday.png"
    image.parent.mkdir()
    shutil.copy(squares["test"][0]["file"], image)
    original = image.read_bytes()

    def draw(folder: Path, *options: str) -> str:
        assert main(["predict", str(run_dir), str(image), "--draw", str(folder), *options]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1].removeprefix("hubtune: error: ")

    # The drawing of photos/holiday.png is holiday.png: drawn into its own folder, it would replace the photo.
    assert draw(image.parent, "--overwrite") == (
        f"--draw: the drawing of '{image}' would be '{image}', which is an input ('{image}'); draw into another folder"
    )
    assert image.read_bytes() == original
    # A user's file of a drawing's name: --overwrite replaces only what hubtune drew there.
    theirs = tmp_path / "album" / "holiday.png"
    theirs.parent.mkdir()
    theirs.write_bytes(b"their picture")
    for options in ((), ("--overwrite",)):
        assert draw(theirs.parent, *options).startswith(
            f"--draw: '{theirs}' already exists, and hubtune has no record of drawing it"
        )
    assert theirs.read_bytes() == b"their picture"
    assert draw(theirs) == f"'{theirs}' is a file, not a --draw folder"
    assert draw(run_dir / "drawings") == (
        f"--draw folder '{run_dir / 'drawings'}' is inside the run folder '{run_dir}'; give a folder outside it"
    )
    assert theirs.read_bytes() == b"their picture" and image.read_bytes() == original
    assert sorted(p.name for p in run_dir.iterdir()) == run_before
    # Two inputs of one name would give one drawing: the second would replace the first.
    twin = tmp_path / "other" / "holiday.png"
    twin.parent.mkdir()
    shutil.copy(image, twin)
    twins = tmp_path / "twins"
    assert main(["predict", str(run_dir), str(image), str(twin), "--draw", str(twins)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"hubtune: error: --draw: '{image}' and '{twin}' would both be drawn as '{twins / 'holiday.png'}'; predict "
        "them apart, or rename one"
    )
    assert not (twins / "holiday.png").exists()
    # Its own drawing, recorded in the folder's marker, is replaced with --overwrite; the user's file stays.
    assert main(["predict", str(run_dir), str(image), "--draw", str(tmp_path / "album2")]) == 0
    (tmp_path / "album2" / "notes.txt").write_text("mine")
    assert main(["predict", str(run_dir), str(image), "--draw", str(tmp_path / "album2"), "--overwrite"]) == 0
    assert (tmp_path / "album2" / "notes.txt").read_text() == "mine"


def test_evaluate_and_export_reproduce_the_run(detection_run, coco_files, tmp_path, capsys):
    run_dir, results = detection_run
    run = Predictor(run_dir)
    assert run.evaluate("test")["test_map_50"] == pytest.approx(results["test_map_50"], abs=1e-6)
    assert run.evaluate(data_file=coco_files["test"])["data_map_50"] == pytest.approx(results["test_map_50"], abs=1e-6)
    # predict --data: every image a COCO file lists, in its order, with the boxes predict gives for it.
    assert run.predict_data(coco_files["test"], tmp_path / "boxes.jsonl") == 32
    rows = [json.loads(line) for line in (tmp_path / "boxes.jsonl").read_text().splitlines()]
    assert [row["row"] for row in rows] == list(range(1, 33))
    assert {key: rows[3][key] for key in ("input", "boxes")} == run.predict([rows[3]["input"]])[0]
    check = export_run(run_dir, tmp_path / "out", merge=False)
    assert check["max_abs_logit_difference"] <= 1e-4
    assert (tmp_path / "out" / "preprocessor_config.json").is_file()
    capsys.readouterr()
    assert main(["export", str(run_dir), str(tmp_path / "onnx"), "--format", "onnx"]) == 2
    assert "is a object-detection run; --format onnx exports" in capsys.readouterr().err


def test_rt_detr_around_the_backbone_trains_saves_and_reloads(tiny_backbone, coco_files, tmp_path):
    values = detection_values(tiny_backbone, coco_files, tmp_path / "run", steps=4)
    values["model"].update(
        architecture="rt_detr",
        config_overrides=dict(TINY_RT_DETR_SIZES),
    )
    results = Recipe.from_dict(values).run()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_type"] == "rt_detr"
    assert Predictor(tmp_path / "run").evaluate("test")["test_map"] == pytest.approx(results["test_map"], abs=1e-6)


def test_push_dry_run_card_says_only_the_backbone_is_pretrained(detection_run, tmp_path):
    import yaml

    run_dir, results = detection_run
    out = tmp_path / "upload"
    assert main(["push", str(run_dir), "--repo-id", "me/tiny-squares", "--dry-run", str(out)]) == 0
    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["pipeline_tag"] == "object-detection" and "map" in metadata["metrics"]
    assert "a new `deformable_detr` built around the a local checkpoint `" not in card  # the test backbone is local
    assert "a new `deformable_detr` built around the local backbone `" in card
    assert "everything outside the backbone starts from random weights" in card
    assert f"| map_50 | {results['test_map_50']:.4f} |" in card[card.index("### Test") :]


def prepared_targets(annotation_format: str, path: Path, labels: list[str] | None = CLASSES) -> list[list[dict]]:
    """The COCO targets `prepare` makes of one split in `annotation_format` (no model or processor needed)."""
    from pipelines.config import load_recipe_config
    from pipelines.data.splits import load_splits
    from pipelines.tasks.object_detection import ObjectDetection

    data = {"files": {"train": str(path)}, "annotation_format": annotation_format, "labels": labels}
    config = load_recipe_config(
        values={"name": "x", "task": "object-detection", "model": {"checkpoint": "-"}, "data": data}
    )
    task = ObjectDetection(config)
    splits = load_splits(config.data, config.seed, task.load_data_file, roles=("train",))
    return task.prepare(splits, processor=None)["train"].with_format(None)["targets"]


def _hub_table(images: list[dict]):
    """The images as a Hub detection dataset holds them (cppe-5): embedded PNG bytes, objects with bbox (x, y, w, h)
    and category ids of a ClassLabel."""
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "image": ImageFeature(),
            "objects": {
                "bbox": Sequence(Sequence(Value("float32"), length=4)),
                "category": Sequence(ClassLabel(names=CLASSES)),
            },
        }
    )
    rows = [
        {
            "image": {"bytes": Path(image["file"]).read_bytes(), "path": None},
            "objects": {
                "bbox": [[x1, y1, x2 - x1, y2 - y1] for b in image["boxes"] for x1, y1, x2, y2 in [b["box"]]],
                "category": [CLASSES.index(b["category"]) for b in image["boxes"]],
            },
        }
        for image in images
    ]
    return Dataset.from_list(rows, features=features)


def test_readers_give_the_same_boxes(squares, coco_files, tmp_path):
    images = squares["validation"]
    sources = {
        "coco": Path(coco_files["validation"]),
        "voc": write_voc(images, tmp_path / "voc"),
        "yolo": write_yolo(images, tmp_path / "yolo"),
        "objects": write_objects(images, tmp_path / "objects.jsonl"),
    }
    # Pascal VOC's own layout, and a Hub-style table: embedded image bytes, categories as a ClassLabel.
    standard = write_voc(images, tmp_path / "VOC2012")
    for folder, pattern in (("Annotations", "*.xml"), ("JPEGImages", "*.png")):
        (standard / folder).mkdir()
        for file in standard.glob(pattern):
            file.rename(standard / folder / file.name)
    hub = tmp_path / "hub.parquet"
    _hub_table(images).to_parquet(str(hub))
    expected = [
        sorted(
            (
                CLASSES.index(b["category"]),
                b["box"][0],
                b["box"][1],
                b["box"][2] - b["box"][0],
                b["box"][3] - b["box"][1],
            )
            for b in image["boxes"]
        )
        for image in images
    ]
    cases = [*sources.items(), ("voc", standard), ("objects", hub)]
    for name, path in cases:
        found = [
            sorted((t["category_id"], *(round(v, 3) for v in t["bbox"])) for t in boxes)
            for boxes in prepared_targets(name, path, None if path == hub else CLASSES)
        ]
        assert found == expected, path
    # Without data.labels the names come from the data: COCO's in category-id order, VOC's sorted.
    assert prepared_targets("coco", sources["coco"], None) == prepared_targets("coco", sources["coco"])


@pytest.mark.distributed
def test_two_process_run_trains_and_evaluates(tiny_backbone, coco_files, tmp_path):
    run_dir = tmp_path / "ddp"
    values = detection_values(tiny_backbone, coco_files, run_dir, steps=20)
    values["training"]["per_device_train_batch_size"] = 8
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    accelerate = Path(sys.executable).with_name("accelerate")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--config_file",
            str(ROOT / "accelerate_configs" / "cpu_2proc.yaml"),
            "-m",
            "pipelines",
            "train",
            str(recipe),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((run_dir / "all_results.json").read_text())
    # Every test image scored once: the gathered targets of both ranks are all there, none twice.
    assert results["test_samples"] == 32
    assert 0.0 <= results["test_map_50"] <= 1.0 and results["train_loss"] > 0
    assert Predictor(run_dir).evaluate("test")["test_map_50"] == pytest.approx(results["test_map_50"], abs=1e-6)


def _coco(images: list[dict], tmp: Path, edit=None) -> tuple[str, str]:
    path = write_coco(images, tmp / "train.json")
    if edit is not None:
        coco = json.loads(path.read_text())
        edit(coco)
        path.write_text(json.dumps(coco))
    return "coco", str(path)


def box_outside(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    images[1] = dict(images[1], boxes=[{"box": [10, 10, 80, 30], "category": "red"}])
    found = _coco(images, tmp)
    return (*found, ["train.json', image '", "0001.png' (id 2), object 1 ('red')", "[10, 10, 80, 30]", "outside"])


def box_without_area(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    folder = write_voc(images, tmp / "voc")
    xml = folder / "0002.xml"
    xml.write_text(xml.read_text().replace("<xmax>", "<xmax>-", 1))
    return "voc", str(folder), [str(xml), "object 1", "has no area"]


def unknown_category(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    def rename(coco: dict) -> None:
        coco["categories"][1]["name"] = "green"

    return (*_coco(images, tmp, rename), ["train.json'", "class 'green' is not one of the labels ['red', 'blue']"])


def image_without_xml(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    folder = write_voc(images, tmp / "voc")
    (folder / "0003.xml").unlink()
    return "voc", str(folder), [str(folder / "0003.png"), "has no annotation file", "0003.xml"]


def image_without_label_file(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    folder = write_yolo(images, tmp / "yolo")
    (folder / "labels" / "0000.txt").unlink()
    return "yolo", str(folder), [str(folder / "images" / "0000.png"), "has no label file"]


def missing_image(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    def misname(coco: dict) -> None:
        coco["images"][2]["file_name"] = "nowhere/0002.png"

    return (*_coco(images, tmp, misname), ["train.json', image id 3", "nowhere/0002.png' does not exist"])


def annotation_of_unknown_image(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    def orphan(coco: dict) -> None:
        coco["annotations"][0]["image_id"] = 99

    return (*_coco(images, tmp, orphan), ["train.json', annotation 1", "image_id 99"])


def broken_json(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    path = tmp / "train.json"
    path.write_text('{"images": [')
    return "coco", str(path), [str(path), "is not a COCO detection json"]


def broken_xml(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    folder = write_voc(images, tmp / "voc")
    (folder / "0001.xml").write_text("<annotation><object>")
    return "voc", str(folder), [str(folder / "0001.xml"), "is not a Pascal VOC xml"]


def yolo_line(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    folder = write_yolo(images, tmp / "yolo")
    (folder / "labels" / "0001.txt").write_text("0 0.5 0.5 0.2\n")
    return "yolo", str(folder), [str(folder / "labels" / "0001.txt"), "line 1", "is not 'class cx cy w h'"]


def coco_bbox_not_four_numbers(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    def truncate(coco: dict) -> None:
        coco["annotations"][1]["bbox"] = coco["annotations"][1]["bbox"][:3]

    return (*_coco(images, tmp, truncate), ["train.json', annotation 2", "is not four numbers [x, y, width, height]"])


def image_over_the_pixel_limit(images: list[dict], tmp: Path) -> tuple[str, str, list[str]]:
    folder = write_voc(images, tmp / "voc")
    Image.new("1", (20000, 9000)).save(folder / "0002.png")  # 180 million pixels, over PIL's 2 x MAX_IMAGE_PIXELS
    return "voc", str(folder), [str(folder / "0002.xml"), "0002.png' has 180,000,000 pixels", "decompression bombs"]


@pytest.mark.parametrize(
    "case",
    [
        box_outside,
        coco_bbox_not_four_numbers,
        box_without_area,
        unknown_category,
        image_without_xml,
        image_without_label_file,
        missing_image,
        annotation_of_unknown_image,
        broken_json,
        broken_xml,
        yolo_line,
        image_over_the_pixel_limit,
    ],
)
def test_bad_annotation_exits_2_with_one_line_and_writes_nothing(case, tiny_backbone, squares, tmp_path, capsys):
    annotation_format, train, expected = case([dict(image) for image in squares["validation"][:4]], tmp_path)
    run_dir = tmp_path / "run"
    values = detection_values(tiny_backbone, {"train": train}, run_dir)
    values["data"].update(annotation_format=annotation_format, labels=CLASSES, validation_split=None, test_split=None)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(values))
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("hubtune: error: ") and all(part in error for part in expected), error
    assert not run_dir.exists()


def test_augmentation_moves_boxes_with_the_image(squares):
    from pipelines.data.boxes import augmentation, augmented

    torch.manual_seed(0)
    transform = augmentation()
    changed = 0
    for image in squares["train"][:10]:
        picture = Image.open(image["file"]).convert("RGB")
        targets = [
            {"bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": CLASSES.index(b["category"])}
            for b in image["boxes"]
            for x1, y1, x2, y2 in [b["box"]]
        ]
        for _ in range(3):
            moved_picture, moved = augmented(transform, picture, targets)
            changed += moved_picture.size != picture.size or moved != targets
            for target in moved:
                x, y, w, h = target["bbox"]
                assert w >= 1 and h >= 1 and x >= 0 and y >= 0
                assert x + w <= moved_picture.width + 1e-3 and y + h <= moved_picture.height + 1e-3
                # The box still frames its square: the pixel at its centre has the square's colour.
                centre = moved_picture.getpixel((int(x + w / 2), int(y + h / 2)))
                assert centre == COLOURS[CLASSES[target["category_id"]]]
    assert changed >= 10  # flips and crops happen


def test_a_trained_detector_as_checkpoint_gets_a_new_class_head_for_other_classes(detection_run, squares, tmp_path):
    # A complete detection checkpoint (here the trained run) fine-tuned on classes of other names: the class head
    # is new, the box regressor and the rest keep the checkpoint's weights.
    from safetensors.torch import load_file

    run_dir, _ = detection_run
    renamed = [
        dict(
            image,
            boxes=[dict(box, category={"red": "tomato", "blue": "navy"}[box["category"]]) for box in image["boxes"]],
        )
        for image in squares["validation"][:8]
    ]
    path = write_coco(renamed, tmp_path / "train.json", classes=["tomato", "navy"])
    values = detection_values(run_dir, {"train": str(path)}, tmp_path / "run", steps=1)
    del values["model"]["architecture"], values["model"]["config_overrides"]
    # The augmented training transform (flip and IoU crop, then the processor) runs here too.
    values["data"].update(validation_split=None, test_split=None, image_augment=True)
    values["training"]["learning_rate"] = 1e-12  # one step that changes nothing measurable
    Recipe.from_dict(values).run()
    before, after = load_file(run_dir / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["id2label"] == {"0": "tomato", "1": "navy"}
    heads = [key for key in before if any(part.startswith("class_") for part in key.split("."))]
    assert heads and all(not torch.allclose(before[key], after[key]) for key in heads if key.endswith("weight"))
    kept = [key for key in before if key not in heads]
    assert all(torch.allclose(before[key], after[key], atol=1e-6) for key in kept)


def test_export_of_a_run_whose_data_is_gone_is_checked_on_made_up_inputs(detection_run, tmp_path):
    assert_export_checked_on_made_up_inputs(detection_run[0], tmp_path)
