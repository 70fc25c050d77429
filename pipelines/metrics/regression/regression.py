"""Regression metrics: mean squared and absolute error, Pearson and Spearman correlation."""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error

_DESCRIPTION = """Mean squared error, mean absolute error (both in the targets' units), and the Pearson (linear) and
Spearman (rank) correlation of predictions with targets. A correlation is NaN when the predictions or the targets
are all equal: it is undefined there, not zero."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted values.
    references (list of float): true values.
Returns:
    mse, mae, pearson, spearman.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Regression(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        constant = len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(references) == 0
        return {
            "mse": float(mean_squared_error(references, predictions)),
            "mae": float(mean_absolute_error(references, predictions)),
            "pearson": float("nan") if constant else float(pearsonr(predictions, references).statistic),
            "spearman": float("nan") if constant else float(spearmanr(predictions, references).statistic),
        }
