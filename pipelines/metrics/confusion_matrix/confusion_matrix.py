"""Confusion matrix: counts of (true class, predicted class) pairs."""

import datasets
import evaluate
from sklearn.metrics import confusion_matrix

_DESCRIPTION = """Confusion matrix: row i, column j counts examples of class i predicted as class j."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    num_classes (int, optional): size of the matrix; every class gets a row and a column, seen or not.
Returns:
    confusion_matrix: a list of rows of counts.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_classes=None):
        classes = num_classes or max([*predictions, *references]) + 1
        matrix = confusion_matrix(references, predictions, labels=list(range(classes)))
        return {"confusion_matrix": matrix.tolist()}
