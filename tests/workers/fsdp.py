"""Run by `accelerate launch` in test_distributed.py: one rank of a recipe run under FSDP on CPU.

accelerate 1.15 does not shard on CPU: a CPU run (`use_cpu`, which hubtune sets without a GPU) is
`DistributedType.MULTI_CPU`, and `AcceleratorState` keeps the FSDP plugin only for the GPU-type distributed types,
so an FSDP config on CPU silently trains as DDP. This worker starts the gloo process group as a CPU run would and
gives that state a GPU-type distributed type; the recipe's `accelerator_config.use_configured_state` makes the
Trainer keep it. accelerate and the Trainer then take their real FSDP2 path (torch's `fully_shard` runs on CPU).

Per rank it writes `rank<R>.json` (how the parameters were held while training, the run's results); rank 0 also
writes `trained.pt`, the full state dict gathered at the end of training. Not collected by pytest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import TrainerCallback

from pipelines import Recipe


class RecordSharding(TrainerCallback):
    def __init__(self, record_dir: Path, record: dict):
        self.record_dir = record_dir
        self.record = record

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            self.record["parameter_types"] = sorted({type(p).__name__ for p in model.parameters()})
            self.record["local_numel"] = sum(
                (p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters()
            )

    def on_train_end(self, args, state, control, model=None, **kwargs):
        # A collective: every rank takes part, rank 0 receives the full weights.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(model, options=options)
        if state.is_world_process_zero:
            torch.save(weights, self.record_dir / "trained.pt")


def main() -> None:
    recipe_path, record_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    state = PartialState(cpu=True)  # the gloo process group, as hubtune's use_cpu=True sets it up
    state.distributed_type = DistributedType.MULTI_GPU  # the shared state AcceleratorState reads
    rank = state.process_index
    record: dict = {"rank": rank, "world_size": state.num_processes}
    results = Recipe.from_yaml(recipe_path).run(callbacks=[RecordSharding(record_dir, record)])
    record["results"] = dict(results)
    (record_dir / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
