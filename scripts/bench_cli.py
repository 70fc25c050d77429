"""How long the command line takes to answer before any work: `hubtune --help` and `--version`, against the
import of the training path (torch, transformers, accelerate) that they no longer pay for.

Writes benchmarks/bench_cli.json and .md. Each figure is the median wall time of several fresh processes.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
COMMANDS = {
    "hubtune --help": [sys.executable, "-m", "pipelines", "--help"],
    "hubtune --version": [sys.executable, "-m", "pipelines", "--version"],
    "hubtune train --help": [sys.executable, "-m", "pipelines", "train", "--help"],
    "import pipelines.runner.recipe (the training path)": [sys.executable, "-c", "import pipelines.runner.recipe"],
}


def median_seconds(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    results = {name: round(median_seconds(command), 3) for name, command in COMMANDS.items()}
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    out = ROOT / "benchmarks"
    out.mkdir(exist_ok=True)
    (out / "bench_cli.json").write_text(
        json.dumps({"median_seconds": results, "runs": RUNS, "machine": machine}, indent=2) + "\n"
    )
    lines = ["| command | median wall time (s) |", "|---|---|"]
    lines += [f"| `{name}` | {seconds:.3f} |" for name, seconds in results.items()]
    lines += [
        "",
        f"Median of {RUNS} fresh processes each ({machine['machine']}, {machine['cpus']} CPUs, "
        f"Python {machine['python']}).",
    ]
    (out / "bench_cli.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
