"""Tiny image checkpoints built offline."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor


def save_tiny_vit(folder: Path, processor_side: int | None = 32) -> Path:
    """A two-layer ViT for 32x32 inputs; its processor resizes to `processor_side` (None: transformers' default
    224, for a run that must set `data.image_size` itself)."""
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    ViTForImageClassification(config).save_pretrained(folder)
    size = {"height": processor_side, "width": processor_side} if processor_side else None
    (ViTImageProcessor(size=size) if size else ViTImageProcessor()).save_pretrained(folder)
    return folder
