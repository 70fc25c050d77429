"""Run by `accelerate launch` in test_distributed.py: one rank of a recipe run that records what it did.

Per rank it writes `rank<R>.json` with the training examples its collator saw and which run-folder files it
wrote itself. Not a test module (no `test_` prefix): pytest does not collect it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import datasets
import torch

import pipelines.runner.recipe as recipe_module
from pipelines import Recipe
from pipelines.tasks.text_classification import TextClassification


def main() -> None:
    recipe_path, record_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    record = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")), "batches": [], "wrote": []}

    make_collator = TextClassification.data_collator

    def recording_collator(self, processor):
        collate = make_collator(self, processor)

        def wrapped(features):
            record["batches"].append([list(feature["input_ids"]) for feature in features])
            return collate(features)

        return wrapped

    def recording(name, function):
        def wrapped(*args, **kwargs):
            record["wrote"].append(name)
            return function(*args, **kwargs)

        return wrapped

    class CachedLoads(logging.Handler):
        """Counts datasets' "Loading cached processed dataset" lines: a map this rank read instead of running."""

        def emit(self, entry: logging.LogRecord) -> None:
            record["cached_loads"] += "Loading cached processed dataset" in entry.getMessage()

    record["cached_loads"] = 0
    datasets.utils.logging.set_verbosity_info()
    datasets.utils.logging.get_logger().addHandler(CachedLoads())
    TextClassification.data_collator = recording_collator
    recipe_module.write_json = recording("write_json", recipe_module.write_json)
    recipe_module.dump_recipe_config = recording("dump_recipe_config", recipe_module.dump_recipe_config)
    results = Recipe.from_yaml(recipe_path).run()
    record["results"] = dict(results)
    (record_dir / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
