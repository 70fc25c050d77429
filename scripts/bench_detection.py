"""Object detection transfer: `hubtune compare` (ImageNet backbone vs a random one, the same recipe) on the two
offline detection recipes, scored on their test sets.

- Tree crowns: recipes/tree-crowns-detr-efficientnet-lite0-offline.yaml, tested on the held-out NEON images
  OSBS_029 and SOAP_061.
- Canvas: recipes/canvas-detection-efficientnet-lite0-offline.yaml, Fashion-MNIST garments on 128x128 canvases.

Writes benchmarks/bench_detection.json and .md: test mAP@.5 and mAP@.5:.95 of both inits, with wall times.
Usage: HF_HUB_OFFLINE=1 python scripts/bench_detection.py [--runs DIR] [--only canvas] [--name FILE] [key=value ...]
(the overrides go to both recipes, e.g. training.max_steps=500 for a longer run written as benchmarks/FILE.*).
`make assets-vision` places the data first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from pipelines.runner.compare import compare

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks"
RECIPES = {
    "tree crowns (NEON, 2 held-out images)": "recipes/tree-crowns-detr-efficientnet-lite0-offline.yaml",
    "canvas (Fashion-MNIST garments, 200 test canvases)": "recipes/canvas-detection-efficientnet-lite0-offline.yaml",
}
METRICS = ("test_map_50", "test_map", "test_map_75", "test_mar_100", "test_samples", "train_runtime", "wall_time_s")


def bench(runs: Path, overrides: list[str], recipes: dict[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, recipe in recipes.items():
        report = compare(ROOT / recipe, overrides, out_dir=runs / Path(recipe).stem)
        rows = {}
        for row in report.rows:
            results = json.loads((Path(row["run"]) / "all_results.json").read_text())
            rows[row["init"]] = {key: results[key] for key in METRICS}
        found[name] = {"recipe": recipe, "overrides": overrides, "runs": rows, "warnings": report.warnings}
    return found


def markdown(found: dict[str, Any], threads: int) -> str:
    lines = [
        "# Object detection: ImageNet backbone vs random backbone (`hubtune compare`)",
        "",
        "| data | init | test mAP@.5 | test mAP@.5:.95 | test mAP@.75 | test mAR@100 | train time (s) | run time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in found.items():
        for init, scores in entry["runs"].items():
            lines.append(
                f"| {name} | {init} | {scores['test_map_50']:.3f} | {scores['test_map']:.3f} | "
                f"{scores['test_map_75']:.3f} | {scores['test_mar_100']:.3f} | {scores['train_runtime']:.0f} | "
                f"{scores['wall_time_s']:.0f} |"
            )
    lines += ["", f"CPU, {threads} torch thread(s); times include a busy shared machine.", ""]
    for name, entry in found.items():
        lines.append(f"- {name}: `{entry['recipe']}` {' '.join(entry['overrides'])}".rstrip())
        lines += [f"  - warning: {warning}" for warning in entry["warnings"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "bench-detection"), help="where the runs go")
    # On a small shared CPU torch's multi-thread pool stalls at every op: one thread ran these steps 2-3x faster.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--only", choices=["tree-crowns", "canvas"], help="run one recipe only")
    parser.add_argument("--name", default="bench_detection", help="file name of the results in benchmarks/")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for both recipes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipes = {name: path for name, path in RECIPES.items() if args.only is None or args.only in path}
    found = bench(Path(args.runs), args.overrides, recipes)
    OUT_DIR.mkdir(exist_ok=True)
    record = {"torch_threads": torch.get_num_threads(), "results": found}
    (OUT_DIR / f"{args.name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (OUT_DIR / f"{args.name}.md").write_text(markdown(found, torch.get_num_threads()))


if __name__ == "__main__":
    main()
