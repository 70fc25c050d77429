"""Feature cache for frozen backbones (`adapt.feature_cache` with `freeze_backbone`).

The frozen backbone's outputs are computed once in eval mode, stored with `datasets` (Arrow, memory-mapped)
under a key of checkpoint + preprocessed-data fingerprint, and the head trains on them: the base model is
swapped for `CachedBackbone`, which returns the stored outputs, so each model's own head code (pooling,
dropout, classifier, loss) runs unchanged. The saved model is the full model with the real backbone.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_from_disk
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pipelines.compat import dataset_fingerprint
from pipelines.config import RecipeConfig
from pipelines.errors import HubtuneError
from pipelines.tasks.base import TaskModel

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when what is stored changes
PROBE_SIZE = 8
TOLERANCE = 1e-4


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "hubtune" / "features"


class CachedBackbone(nn.Module):
    """Stands in for the base model: its main input is a batch of stored features, [batch, 2, hidden] holding
    the first position's last hidden state and the pooled output."""

    def __init__(self, has_pooler: bool):
        super().__init__()
        self.has_pooler = has_pooler

    def forward(self, features: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> BaseModelOutputWithPooling:
        if features is None:
            raise ValueError("the cached backbone takes the stored 'features' and nothing else")
        return BaseModelOutputWithPooling(
            last_hidden_state=features[:, :1], pooler_output=features[:, 1] if self.has_pooler else None
        )


class FeatureCache:
    """Cached features for each split of a frozen-backbone run, and the swap that trains the head on them."""

    def __init__(self, model: TaskModel, config: RecipeConfig, collate: Callable[[list], dict]):
        self.model, self.config, self.collate = model, config, collate
        self.prefix = model.base_model_prefix
        self.backbone = getattr(model, self.prefix)
        self.input_name = model.main_input_name
        self.root = Path(config.adapt.feature_cache_dir or default_cache_dir()).expanduser()
        self.has_pooler = False
        # The cache calls the base model by its input's name and stands in for it with a transformers output; a
        # timm network wrapped by transformers (forward(x), called through forward_features) has neither.
        if self.input_name not in inspect.signature(self.backbone.forward).parameters:
            raise HubtuneError(
                f"'adapt.feature_cache' reads the outputs of a transformers base model, but the base model of "
                f"'{config.model.checkpoint}' ({type(self.backbone).__name__}, model_type "
                f"'{getattr(model.config, 'model_type', '?')}') does not take '{self.input_name}'; leave "
                "adapt.feature_cache off (freeze_backbone then trains the head on the live frozen backbone)"
            )

    def _key(self, dataset: Dataset) -> str:
        identity = {
            "checkpoint": self.config.model.checkpoint,
            "revision": self.config.model.revision,
            "from_scratch": self.config.model.from_scratch,
            # Random weights are the seed's: two seeds' backbones are two different models.
            "seed": self.config.seed if self.config.model.from_scratch else None,
            "model": type(self.model).__name__,
            "data": dataset_fingerprint(dataset),
            "format": FORMAT_VERSION,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def _backbone_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.model.device) for key, value in batch.items() if key != "labels"}

    @torch.no_grad()
    def _features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outputs = self.backbone(**self._backbone_inputs(batch))
        first = outputs.last_hidden_state[:, 0]
        pooled = getattr(outputs, "pooler_output", None)
        self.has_pooler = pooled is not None
        return torch.stack([first, pooled if pooled is not None else torch.zeros_like(first)], dim=1).cpu()

    def _compute(self, dataset: Dataset, batch_size: int) -> Dataset:
        self.backbone.eval()
        rows: dict[str, list] = {self.input_name: [], "labels": []}
        for start in range(0, len(dataset), batch_size):
            batch = self.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            rows[self.input_name] += self._features(batch).tolist()
            rows["labels"] += batch["labels"].tolist()
        return Dataset.from_dict(rows)

    def cached(self, data: dict[str, Dataset], batch_size: int) -> dict[str, Dataset]:
        """Each split's features, computed once and then read back from the memory-mapped cache."""
        result = {}
        for role, dataset in data.items():
            folder = self.root / self._key(dataset)
            meta = folder / "hubtune_features.json"
            if meta.is_file():
                self.has_pooler = json.loads(meta.read_text())["has_pooler"]
                logger.info("feature cache hit for %s: %s", role, folder)
            else:
                logger.info("computing backbone features for %s (%d examples) -> %s", role, len(dataset), folder)
                self._compute(dataset, batch_size).save_to_disk(str(folder))
                meta.write_text(json.dumps({"has_pooler": self.has_pooler, "examples": len(dataset)}))
            result[role] = load_from_disk(str(folder)).with_format("torch")
        self._check(data, result)
        return result

    def collator(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {
            self.input_name: torch.stack([row[self.input_name] for row in rows]),
            "labels": torch.stack([row["labels"] for row in rows]),
        }

    @contextlib.contextmanager
    def standing_in(self) -> Iterator[None]:
        """The model with `CachedBackbone` in place of its base model; the real one is back afterwards."""
        setattr(self.model, self.prefix, CachedBackbone(self.has_pooler))
        try:
            yield
        finally:
            setattr(self.model, self.prefix, self.backbone)

    @torch.no_grad()
    def _check(self, data: dict[str, Dataset], cached: dict[str, Dataset]) -> None:
        """The head on cached features must give the full model's logits, or the cache cannot stand in."""
        role = next(iter(data))
        count = min(PROBE_SIZE, len(data[role]))
        self.model.eval()
        full = self.model(**self._backbone_inputs(self.collate([data[role][i] for i in range(count)]))).logits
        with self.standing_in():
            stored = self.collator([cached[role][i] for i in range(count)])
            head_only = self.model(**{k: v.to(self.model.device) for k, v in stored.items() if k != "labels"}).logits
        difference = float((full - head_only).abs().max()) if full.shape == head_only.shape else float("inf")
        if difference > TOLERANCE:
            raise HubtuneError(
                f"'adapt.feature_cache' cannot stand in for {type(self.model).__name__}'s backbone: its head reads "
                f"more than the first position and the pooled output (logits differ by {difference:.2e}); "
                "set 'adapt.feature_cache: false'"
            )
