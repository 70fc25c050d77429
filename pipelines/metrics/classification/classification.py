"""Single-label classification metrics: accuracy, macro precision/recall/F1, and per-class scores."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

_DESCRIPTION = """Accuracy, macro-averaged precision, recall and F1, and per-class precision, recall and F1.
Per-class keys are `precision_<label>`, `recall_<label>`, `f1_<label>`, with label names when given."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    label_names (list of str, optional): names in id order; every class in it is scored, seen or not.
Returns:
    accuracy, precision_macro, recall_macro, f1_macro, and per-class precision/recall/f1.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, label_names=None):
        names = list(label_names) if label_names else sorted(set(references) | set(predictions))
        label_ids = list(range(len(names))) if label_names else names
        precision, recall, f1, _ = precision_recall_fscore_support(
            references, predictions, labels=label_ids, average=None, zero_division=0
        )
        result = {
            "accuracy": float(accuracy_score(references, predictions)),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "f1_macro": float(f1.mean()),
        }
        for name, p, r, f in zip(names, precision, recall, f1):
            result[f"precision_{name}"] = float(p)
            result[f"recall_{name}"] = float(r)
            result[f"f1_{name}"] = float(f)
        return result
