"""What a comparison over seeds says: each side's mean and spread, and a paired bootstrap interval of the gain.

A single seed's difference between two fine-tunings is often smaller than the difference between two seeds of
the same one, so `hubtune compare --seeds` reports the spread and lets the interval, not one pair of numbers,
decide whether transfer hurt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # the sample standard deviation (n - 1); 0 for a single value
    values: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.4f}" if len(self.values) == 1 else f"{self.mean:.4f} ± {self.std:.4f}"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("spread of no values")
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return Spread(float(array.mean()), std, tuple(float(value) for value in array))


def paired_bootstrap(
    gains: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The 95% percentile interval of the mean of `gains` (one per seed: a run minus its baseline on the same
    seed), over resamples of the seeds with replacement. Pairing by seed removes what the two runs share (the
    data order, the head's initialisation) from the spread. With one seed the interval is that one gain."""
    array = np.asarray(gains, dtype=float)
    if len(array) == 0:
        raise ValueError("paired_bootstrap of no gains")
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, len(array), size=(resamples, len(array)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
