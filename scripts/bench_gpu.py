"""Training throughput, peak GPU memory and MFU: hubtune's GPU defaults vs a plain Trainer, and LoRA vs full.

Models are built from their configs with random weights (no download): BERT-base (sequence classification,
texts of 16 to 128 tokens) and ViT-B/16 (224 x 224 images). Setups:
  hubtune  - hubtune's speed settings for the device (`pipelines.training.speed.speed_defaults`: bf16 or fp16, TF32,
             workers) and per-batch padding;
  plain    - a plain `Trainer` as the transformers examples run it: fp32, every text padded to 128;
  lora     - hubtune's settings, LoRA r=8 on the attention query/value projections (memory vs full).
MFU = 6 x parameters x (non-padding) tokens per second / the device's dense bf16 peak (PEAK_TFLOPS); not
reported for LoRA, whose frozen weights take no weight gradients. Writes benchmarks/bench_gpu.json and .md.

Usage: python scripts/bench_gpu.py                  # on a CUDA GPU
       python scripts/bench_gpu.py --tiny --out DIR  # a few steps of tiny configs, on CPU too (the tests)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from pipelines.training.speed import speed_defaults

OUT_DIR = Path(__file__).resolve().parents[1] / "benchmarks"

# Dense bf16 tensor-core peaks in TFLOPS (vendor data sheets, without sparsity), by a part of the device name.
# More specific names first: "H100 PCIe" must match before "H100".
PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A10G": 125.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "V100": 125.0,  # fp16 tensor cores: V100 has no bf16
    "T4": 65.0,  # fp16 tensor cores: T4 has no bf16
}


def peak_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak from PEAK_TFLOPS, or None for a device not in the table (a CPU)."""
    for part, tflops in PEAK_TFLOPS.items():
        if part.lower() in device_name.lower():
            return tflops
    return None


def mfu(parameters: int, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: 6 FLOPs per parameter per token (forward 2, backward 4) over the peak."""
    return None if peak is None else 6 * parameters * tokens_per_s / (peak * 1e12)


@dataclass
class Size:
    text_config: dict[str, Any]
    text_length: int
    vit_config: dict[str, Any]
    batch_size: int
    warmup_steps: int
    steps: int


FULL = Size({}, 128, {}, batch_size=32, warmup_steps=5, steps=40)  # BERT-base, ViT-B/16 as their configs default
TINY = Size(
    {"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    16,
    {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    batch_size=4,
    warmup_steps=1,
    steps=2,
)


class StepTimer(TrainerCallback):
    """Wall time of the steps after the warmup (compilation, allocator growth and cuDNN tuning happen there)."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.started = self.seconds = 0.0

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.started = self._now()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = self._now() - self.started


class Examples(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def text_rows(size: Size, vocab_size: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    rows = []
    for _ in range(count):
        length = rng.randint(size.text_length // 8, size.text_length)
        ids = [rng.randrange(5, vocab_size) for _ in range(length)]
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": rng.randrange(2)})
    return rows


def tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A stand-in tokenizer for the padding collator; the benchmark's texts are token ids already."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {f"t{i}": i for i in range(vocab_size)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t1")), pad_token="t0")


def lora(model: torch.nn.Module, targets: list[str]) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, modules_to_save=["classifier"]))


def measure(model_name: str, setup: str, size: Size, scratch: Path, peak: float | None) -> dict[str, Any]:
    torch.manual_seed(0)
    count = size.batch_size * (size.warmup_steps + size.steps)
    if model_name == "bert":
        config = BertConfig(num_labels=2, **size.text_config)
        model: torch.nn.Module = BertForSequenceClassification(config)
        rows = text_rows(size, config.vocab_size, count)
        padding = "max_length" if setup == "plain" else "longest"
        collator = DataCollatorWithPadding(
            tokenizer(config.vocab_size), padding=padding, max_length=size.text_length, pad_to_multiple_of=8
        )
        tokens_per_sample = sum(len(row["input_ids"]) for row in rows) / len(rows)  # useful (non-padding) tokens
        targets = ["query", "value"]
    else:
        config = ViTConfig(num_labels=2, **size.vit_config)
        model = ViTForImageClassification(config)
        shape = (config.num_channels, config.image_size, config.image_size)
        rows = [{"pixel_values": torch.randn(shape), "labels": i % 2} for i in range(count)]
        collator = None
        tokens_per_sample = (config.image_size // config.patch_size) ** 2 + 1  # patches and the class token
        targets = ["q_proj", "v_proj"]
    parameters = sum(p.numel() for p in model.parameters())
    if setup == "lora":
        model = lora(model, targets)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    speed = {} if setup == "plain" else speed_defaults({})
    args = TrainingArguments(
        output_dir=str(scratch / f"{model_name}-{setup}"),
        per_device_train_batch_size=size.batch_size,
        max_steps=size.warmup_steps + size.steps,
        learning_rate=2e-5,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        **({"use_cpu": not torch.cuda.is_available()} | speed),  # speed may set use_cpu itself (bf16 on AMX)
    )
    timer = StepTimer(size.warmup_steps)
    trainer = Trainer(model=model, args=args, train_dataset=Examples(rows), data_collator=collator, callbacks=[timer])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    samples_per_s = size.steps * size.batch_size / timer.seconds
    tokens_per_s = samples_per_s * tokens_per_sample
    peak_memory = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {
        "model": model_name,
        "setup": setup,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "batch_size": size.batch_size,
        "measured_steps": size.steps,
        "samples_per_s": samples_per_s,
        "tokens_per_s": tokens_per_s,
        "peak_memory_gib": peak_memory,
        "parameters": parameters,
        "trainable_parameters": trainable,
        "mfu": None if setup == "lora" else mfu(parameters, tokens_per_s, peak),
    }


def markdown(report: dict[str, Any]) -> str:
    def cell(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"# GPU training benchmark ({report['device']})",
        "",
        f"torch {report['torch']}, transformers {report['transformers']}, peak "
        f"{cell(report['peak_tflops'], '.0f')} TFLOPS bf16 dense; mode: {report['mode']}.",
        "",
        "| model | setup | precision | samples/s | tokens/s | peak memory (GiB) | MFU | trainable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['model']} | {row['setup']} | {row['precision']} | {row['samples_per_s']:.1f} | "
            f"{row['tokens_per_s']:.0f} | {cell(row['peak_memory_gib'], '.2f')} | {cell(row['mfu'], '.1%')} | "
            f"{row['trainable_parameters']:,} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few steps of tiny configs (runs on CPU)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for bench_gpu.json and bench_gpu.md")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size = TINY if options.tiny else FULL
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = options.peak_tflops or peak_tflops(device)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for model_name in ("bert", "vit"):
            for setup in ("hubtune", "plain", "lora"):
                row = measure(model_name, setup, size, Path(scratch), peak)
                logging.info("%s", row)
                results.append(row)
    report = {
        "device": device,
        "peak_tflops": peak,
        "mode": "tiny" if options.tiny else "full",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "results": results,
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "bench_gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (options.out / "bench_gpu.md").write_text(markdown(report))
    return report


if __name__ == "__main__":
    main()
