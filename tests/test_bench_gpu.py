"""scripts/bench_gpu.py: its MFU arithmetic, the device peak table, and a tiny run's output files (in a tmp dir)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["bench_gpu"]


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA A10G", 125.0),
        ("cpu", None),
    ],
)
def test_peak_by_device_name(bench, name, tflops):
    assert bench.peak_tflops(name) == tflops


def test_mfu_arithmetic(bench):
    # BERT-base (110M parameters) at 150k tokens/s on an H100: 6 * 110e6 * 150e3 / 989e12 = 10.0%.
    assert bench.mfu(110_000_000, 150_000, 989.0) == pytest.approx(0.1001, abs=1e-4)
    assert bench.mfu(110_000_000, 150_000, None) is None


def test_tiny_run_writes_json_and_markdown(bench, tmp_path):
    report = bench.main(["--tiny", "--out", str(tmp_path), "--peak-tflops", "1"])
    written = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert written == report
    assert written["device"] == "cpu" and written["mode"] == "tiny"
    rows = {(row["model"], row["setup"]): row for row in written["results"]}
    assert set(rows) == {(m, s) for m in ("bert", "vit") for s in ("hubtune", "plain", "lora")}
    for (_, setup), row in rows.items():
        assert row["samples_per_s"] > 0
        expected = None if setup == "lora" else 6 * row["parameters"] * row["tokens_per_s"] / 1e12
        assert row["mfu"] == (expected if expected is None else pytest.approx(expected))
    assert rows["bert", "lora"]["trainable_parameters"] < rows["bert", "hubtune"]["trainable_parameters"]
    table = (tmp_path / "bench_gpu.md").read_text()
    assert table.startswith("# GPU training benchmark (cpu)")
    assert table.count("\n| bert |") == 3 and table.count("\n| vit |") == 3
