"""The project's own `evaluate` metric modules.

`evaluate.load("accuracy")` fetches its script from the Hub; these folders load with `evaluate.load(path)`
with no network, and compute the same numbers (scikit-learn underneath).
"""

from __future__ import annotations

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent


def load_metric(name: str) -> evaluate.EvaluationModule:
    return evaluate.load(str(METRICS_DIR / name))
