"""CPU training steps in fp32 against bf16 autocast, at each instruction set oneDNN may use.

hubtune trains in bf16 mixed precision on a CPU only where the CPU has AMX tiles (pipelines/training/speed.py).
This measures why: the same all-MiniLM-L6-v2 training steps (batch 32 of real reviews, dynamic padding,
AdamW), in fp32 and under `torch.autocast("cpu", torch.bfloat16)`, each in its own process with oneDNN held to
an instruction set by `ONEDNN_MAX_CPU_ISA`: AMX (all it has), AVX-512 with the bf16 dot product (Cooper Lake, Zen
4) and AVX-512 without bf16 (Cascade and Ice Lake). On a CPU without AMX the first row repeats the second.

Writes benchmarks/bench_cpu_precision.json and .md.

Usage: HF_HUB_OFFLINE=1 python scripts/bench_cpu_precision.py [--steps 15]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BATCH = 32
# oneDNN's names (its ONEDNN_MAX_CPU_ISA values), widest first.
ISAS = {
    "AMX (AVX512_CORE_AMX)": "AVX512_CORE_AMX",
    "AVX-512 with bf16 dot product (AVX512_CORE_BF16)": "AVX512_CORE_BF16",
    "AVX-512 without bf16 (AVX512_CORE_VNNI)": "AVX512_CORE_VNNI",
}


def measure(steps: int) -> dict[str, float]:
    """Training samples/s in fp32 and in bf16 autocast, in this process (its oneDNN ISA already fixed)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    with (ROOT / "data" / "rotten_tomatoes" / "train.csv").open(newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][: BATCH * (steps + 1)]
    batches = [
        tokenizer(texts[start : start + BATCH], padding=True, truncation=True, max_length=128, return_tensors="pt")
        for start in range(0, len(texts), BATCH)
    ]
    result = {}
    for precision in ("fp32", "bf16"):
        model = AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=2).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
        autocast = torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        for index, batch in enumerate(batches):
            if index == 1:  # the first step warms oneDNN's kernels up
                started = time.perf_counter()
            with autocast:
                loss = model(**batch, labels=torch.zeros(len(batch["input_ids"]), dtype=torch.long)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        result[f"{precision}_samples_per_second"] = BATCH * (len(batches) - 1) / (time.perf_counter() - started)
    result["bf16_speedup"] = result["bf16_samples_per_second"] / result["fp32_samples_per_second"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one ISA's run, in a child
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.steps)))
        return
    rows = {}
    for name, isa in ISAS.items():
        child = subprocess.run(
            [sys.executable, __file__, "--measure", f"--steps={args.steps}"],
            env=os.environ | {"ONEDNN_MAX_CPU_ISA": isa},
            capture_output=True,
            text=True,
            check=True,
        )
        rows[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "bench_cpu_precision.json").write_text(
        json.dumps({"batch": BATCH, "model": MODEL, **rows}, indent=2) + "\n"
    )
    lines = ["| oneDNN instruction set | fp32 samples/s | bf16 autocast samples/s | bf16 / fp32 |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {row['fp32_samples_per_second']:.1f} | {row['bf16_samples_per_second']:.1f} | "
        f"{row['bf16_speedup']:.2f}x |"
        for name, row in rows.items()
    ]
    (OUT_DIR / "bench_cpu_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
