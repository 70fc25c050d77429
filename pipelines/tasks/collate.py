"""Batch helpers more than one task uses."""

from __future__ import annotations

import torch

# Label positions the losses skip (transformers' convention, shared by its cross-entropy and CTC losses).
IGNORE = -100

# Text batches pad to a multiple of this many tokens (tensor cores and CPU kernels favour aligned widths).
PAD_TO_MULTIPLE = 8


def pad_labels(sequences: list[list[int]]) -> torch.Tensor:
    """Label sequences of different lengths as one tensor, padded with IGNORE."""
    labels = torch.full((len(sequences), max(map(len, sequences))), IGNORE)
    for i, sequence in enumerate(sequences):
        labels[i, : len(sequence)] = torch.tensor(sequence)
    return labels
