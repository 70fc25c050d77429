"""scripts/bench_lpft.py: the shifted test folders hold exactly the held-out images, shifted; and one tiny run
of LP, FT and LP-FT on a small timm CNN writes the report (per shift, per strategy, per seed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_lpft.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lpft", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lpft"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["bench_lpft"]


def read_folder(folder: Path) -> dict[str, np.ndarray]:
    return {f"{path.parent.name}/{path.name}": np.asarray(Image.open(path)) for path in folder.glob("*/*.png")}


def test_shifted_folders_are_the_held_out_images_shifted(bench, tmp_path):
    folders = bench.make_data("digits", tmp_path, train_per_class=3, test_per_class=2)
    assert set(folders) == {"train", "id", *bench.SHIFTS}
    train, held_out = read_folder(folders["train"]), read_folder(folders["id"])
    assert len(train) == 30 and len(held_out) == 20
    assert {name.split("/")[0] for name in held_out} == set(bench.DIGIT_CLASSES)
    # Training and held-out images come from disjoint halves of the digits.
    assert not any(np.array_equal(a, b) for a in train.values() for b in held_out.values())
    rotated, inverted = read_folder(folders["rotated_90"]), read_folder(folders["inverted"])
    assert rotated.keys() == held_out.keys() == inverted.keys()
    for name, image in held_out.items():
        assert np.array_equal(rotated[name], np.rot90(image))
        assert np.array_equal(inverted[name], 255 - image)
        assert not np.array_equal(rotated[name], image)


@pytest.mark.slow
def test_tiny_run_reports_every_strategy_and_shift(bench, tmp_path):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny-cnn"
    save_for_hf(timm.create_model("test_efficientnet", num_classes=10), checkpoint, safe_serialization=True)
    out = tmp_path / "report" / "bench_lpft.json"
    argv = ["--datasets", "digits", "--seeds", "1", "2", "--train-per-class", "3", "--test-per-class", "2"]
    argv += ["--epochs", "2", "--probe-epochs", "1", "--image-size", "16", "--checkpoint", str(checkpoint)]
    threads = torch.get_num_threads()
    try:
        report = bench.main([*argv, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)  # the script sets one thread for the whole process
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["setup"]["torch_threads"] == 1
    assert set(report["shifts"]) == {f"digits_{shift}" for shift in bench.SHIFTS}
    for entry in report["shifts"].values():
        for strategy in bench.STRATEGIES:
            for key in ("id_accuracy", "ood_accuracy"):
                scores = entry[strategy][key]
                assert len(scores["seeds"]) == 2 and all(0 <= s <= 1 for s in scores["seeds"])
                assert scores["mean"] == pytest.approx(sum(scores["seeds"]) / 2)
        # Only LP-FT has a probe stage, and it reports it.
        assert all("probe_train_loss" in run for run in entry["lp_ft"]["runs"])
        assert not any("probe_train_loss" in run for run in entry["ft"]["runs"])
    assert "| digits | inverted | lp_ft |" in out.with_suffix(".md").read_text()


def test_bn_eval_strategies_hold_batchnorm_statistics_through_the_recipe_key(bench, tmp_path):
    args = bench.argparse.Namespace(
        checkpoint="c", image_size=32, batch_size=8, lp_lr=1e-2, ft_lr=1e-3, epochs=4, probe_epochs=1
    )
    data = {"train": tmp_path / "train", "id": tmp_path / "id"}
    for strategy, held in (("ft", "false"), ("ft" + bench.BN_EVAL, "true"), ("lp_ft" + bench.BN_EVAL, "true")):
        values = bench.overrides(strategy, 42, data, tmp_path / "run", args)
        assert f"adapt.hold_batchnorm_statistics={held}" in values
    assert "adapt.strategy=lp_ft" in bench.overrides("lp_ft" + bench.BN_EVAL, 42, data, tmp_path / "run", args)
