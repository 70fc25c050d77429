"""Weight files in a model or adapter folder: whether there are any, and whether they are whole."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from safetensors import SafetensorError, safe_open

from pipelines.errors import HubtuneError

# (preferred, fallback) weight file patterns of a model and of a PEFT adapter: loading reads the first it finds.
WEIGHT_FORMATS = (("model*.safetensors", "pytorch_model*.bin"), ("adapter_model.safetensors", "adapter_model.bin"))
SAFETENSORS_LENGTH_BYTES = 8  # a safetensors file starts with its header's length, a little-endian uint64
SAFETENSORS_MAX_HEADER = 100_000_000  # safetensors refuses longer headers: a longer length is damage
PICKLE_START = b"\x80"  # a pickle's PROTO opcode: torch's format before its zip archives


def has_weights(folder: Path) -> bool:
    """Whether a model folder holds weights in a format transformers 5 loads (safetensors, or torch .bin)."""
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def missing_weights(folder: Path, what: str) -> HubtuneError:
    return HubtuneError(
        f"{what} '{folder}' holds a config.json but no model weights (model.safetensors or pytorch_model.bin): "
        "it was saved without its weights, or the copy is incomplete"
    )


def check_weight_files(folder: Path, what: str) -> None:
    """Refuse a model or adapter folder whose weight files are cut short or damaged (an interrupted copy or
    download), naming the file: safetensors and torch would fail deep in loading with a message that names
    neither. Only what loading checks first is read: a safetensors header against the file's size, a .bin's zip
    directory; a sharded checkpoint's index must name files that are there."""
    for index in sorted(folder.glob("*.index.json")):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (ValueError, AttributeError) as error:
            raise damaged_weights(_in_folder(folder, index, what), "it is not a readable shard index") from error
        for shard in sorted(shards):
            if not (folder / shard).is_file():
                raise damaged_weights(
                    _in_folder(folder, index, what), f"it names the shard '{shard}', which is not in the folder"
                )
    for weights in _loaded_weight_files(folder):
        problem = weight_file_problem(weights)
        if problem:
            raise damaged_weights(_in_folder(folder, weights, what), problem)


def _in_folder(folder: Path, weights: Path, what: str) -> str:
    return f"{what} '{folder}': weight file '{weights.name}'"


def _loaded_weight_files(folder: Path) -> list[Path]:
    """The weight files transformers and PEFT read from a folder: safetensors where there are any, else torch's
    .bin (a .bin beside the safetensors it was converted to is never read)."""
    files: list[Path] = []
    for preferred, fallback in WEIGHT_FORMATS:
        files += sorted(folder.glob(preferred)) or sorted(folder.glob(fallback))
    return files


def weight_file_problem(weights: Path) -> str | None:
    if weights.suffix == ".safetensors":
        try:
            # Opening parses the header and checks that the tensors it lists end where the file ends.
            with safe_open(str(weights), framework="pt"):
                return None
        except SafetensorError as error:
            size, described = weights.stat().st_size, _described_size(weights)
            if described not in (None, size):
                return f"it holds {size:,} of the {described:,} bytes its header describes"
            reason = str(error).removeprefix("Error while deserializing header: ")
            return f"safetensors cannot read its {size:,} bytes: {reason}"
    if zipfile.is_zipfile(weights):
        return None
    with weights.open("rb") as handle:
        # torch.save wrote a pickle instead of a zip archive before torch 1.6: such a file is read as it is.
        if handle.read(1) == PICKLE_START:
            return None
    return f"its {weights.stat().st_size:,} bytes lack the zip directory that torch.save ends its files with"


def _described_size(weights: Path) -> int | None:
    """The size in bytes a safetensors file's header says the file has (an 8-byte header length, the JSON
    header, then the tensors it places), or None where that header does not parse."""
    with weights.open("rb") as handle:
        length = int.from_bytes(handle.read(SAFETENSORS_LENGTH_BYTES), "little")
        if length > SAFETENSORS_MAX_HEADER:
            return None
        try:
            header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None
    return SAFETENSORS_LENGTH_BYTES + length + int(end)


def damaged_weights(weights: str, problem: str) -> HubtuneError:
    return HubtuneError(
        f"{weights} is truncated or damaged ({problem}), as an interrupted copy or download leaves it: copy or "
        "download it again"
    )
