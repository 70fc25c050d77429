"""Top-k accuracy: the true class is among the k highest scores."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Share of examples whose true class is among the k classes with the highest scores."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): one score (logit or probability) per class, per example.
    references (list of int): true class ids.
    k (int): how many of the best-scored classes count as a hit (default 5).
Returns:
    top_<k>_accuracy.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=5):
        scores = np.asarray(predictions)
        if not 0 < k <= scores.shape[1]:
            raise ValueError(f"k={k} needs between 1 and {scores.shape[1]} classes")
        top = np.argsort(-scores, axis=1)[:, :k]
        hits = (top == np.asarray(references)[:, None]).any(axis=1)
        return {f"top_{k}_accuracy": float(hits.mean())}
