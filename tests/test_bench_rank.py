"""scripts/bench_rank.py end to end on a tiny case: two tiny timm checkpoints, a few digits, one seed, one epoch."""

from __future__ import annotations

import json
import math
from statistics import fmean

import pytest
import torch
from helpers.scripts import load_script
from test_image_classification import save_timm_checkpoint


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_rank")


@pytest.mark.slow  # eight tiny training runs, about 20 s
def test_bench_rank_ranks_fine_tunes_and_checks_the_suggestion(tmp_path, bench):
    import timm

    torch.manual_seed(0)
    efficientnet = save_timm_checkpoint(timm.create_model("test_efficientnet", num_classes=10), tmp_path / "eff", 32)
    resnet = save_timm_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / "res", 32)
    candidates = [str(efficientnet), str(resnet)]
    out = tmp_path / "bench_rank.json"
    bench.main(
        ["--datasets", "digits", "--checkpoints", *candidates, "--per-class", "4", "--test-per-class", "3"]
        + ["--seeds", "1", "2", "--suggestion-per-class", "2", "--epochs", "1", "--small-epochs", "1"]
        + ["--image-size", "32", "--data-dir", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs")]
        + ["--out", str(out)]
    )
    result = json.loads(out.read_text())
    digits = result["datasets"]["digits"]
    assert (digits["train_examples"], digits["test_examples"], digits["classes"]) == (40, 30, 10)
    assert sorted(digits["scores"]) == sorted(digits["accuracies"]) == sorted(candidates)
    for accuracy in digits["accuracies"].values():
        assert len(accuracy["per_seed"]) == 2 and accuracy["mean"] == pytest.approx(fmean(accuracy["per_seed"]))
    tau = bench.kendall(digits["scores"], {c: a["mean"] for c, a in digits["accuracies"].items()})
    assert digits["kendall_tau"] == pytest.approx(tau, nan_ok=True)
    # The tiny models have 10-class heads of their own, so LEEP and NCE rank them too.
    assert sorted(digits["other_scores"]["leep"]) == sorted(candidates)
    assert set(digits["other_kendall_tau"]) == {"leep", "nce"}
    assert math.isnan(result["mean_kendall_tau"]) or -1 <= result["mean_kendall_tau"] <= 1
    assert 0 < digits["rank_seconds"] and 0 < digits["finetune_seconds"]
    assert result["setup"]["torch_threads"] == 1
    # The main size and the smaller one; the best-ranked candidate's full runs are the grid's, not trained again.
    main, small = digits["suggestions"]
    assert (main["per_class"], small["per_class"]) == (4, 2)
    assert main["accuracies"]["full"]["per_seed"] == digits["accuracies"][main["best_ranked"]]["per_seed"]
    for check in (main, small):
        assert {"freeze_backbone", "full"} <= set(check["accuracies"])
        means = {s: row["mean"] for s, row in check["accuracies"].items() if "mean" in row}
        assert check["best_measured"] == [s for s, m in means.items() if m == max(means.values())]
        assert check["hit"] == (bench.strategy_of(check["suggested"].split()) in check["best_measured"])
    assert result["suggestion_hits"] == f"{main['hit'] + small['hit']}/2"
    assert "| digits |" in out.with_suffix(".md").read_text()


def test_a_local_candidate_keeps_the_name_it_was_given(tmp_path, bench, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "mobilenet").mkdir(parents=True)
    given = ["timm/tf_efficientnet_lite0.in1k", "checkpoints/mobilenet"]
    assert bench.as_given(str(tmp_path / "checkpoints" / "mobilenet"), given) == "checkpoints/mobilenet"
    assert bench.as_given("timm/tf_efficientnet_lite0.in1k", given) == "timm/tf_efficientnet_lite0.in1k"


def test_photo_patches_have_nine_photos_in_both_splits(tmp_path):
    rows = load_script("bench_rank_data").photo_patches(tmp_path, 2, 1, seed=0)
    labels = sorted({label for _, label in rows["train"]})
    assert len(rows["train"]) == 2 * len(labels) and len(rows["test"]) == len(labels) == 9
    assert sorted({label for _, label in rows["test"]}) == labels
