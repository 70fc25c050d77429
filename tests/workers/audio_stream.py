"""Run by `accelerate launch` in test_distributed.py: one rank of several streamed speech runs in turn (a YAML list
of recipes), recording the audio of every batch its collators decoded.

Per rank it writes `rank<R>.json`: for each recipe, its results and the audio values of each collated batch.
Not a test module (no `test_` prefix): pytest does not collect it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import yaml

from pipelines import Recipe
from pipelines.tasks.audio_task import AudioTask


def main() -> None:
    recipes_path, record_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    runs: list[dict] = []
    waveforms = AudioTask.waveforms

    def recording_waveforms(self, processor, rows):
        runs[-1]["batches"].append([row[self.data.audio_column] for row in rows])
        return waveforms(self, processor, rows)

    AudioTask.waveforms = recording_waveforms
    for values in yaml.safe_load(Path(recipes_path).read_text()):
        runs.append({"task": values["task"], "batches": []})
        runs[-1]["results"] = dict(Recipe.from_dict(values).run())
    (record_dir / f"rank{rank}.json").write_text(
        json.dumps({"world_size": int(os.environ["WORLD_SIZE"]), "runs": runs})
    )


if __name__ == "__main__":
    main()
