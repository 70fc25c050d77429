"""Multi-label classification metrics: micro, macro and per-example F1, subset accuracy and per-label scores."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

_DESCRIPTION = """F1 of multi-label predictions averaged over all decisions (micro), over labels (macro) and over
examples (samples), micro precision and recall, subset accuracy (every label of an example right), and per-label
precision, recall and F1 as `precision_<label>`, `recall_<label>`, `f1_<label>`."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): predicted multi-hot vectors (1: the label is predicted).
    references (list of list of int): true multi-hot vectors.
    label_names (list of str, optional): names in id order; default: the ids.
Returns:
    f1_micro, f1_macro, f1_samples, precision_micro, recall_micro, subset_accuracy and per-label scores.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultiLabel(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None):
        names = list(label_names) if label_names else [str(i) for i in range(len(references[0]))]
        precision, recall, f1, _ = precision_recall_fscore_support(
            references, predictions, average=None, zero_division=0
        )
        micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(
            references, predictions, average="micro", zero_division=0
        )
        result = {
            "f1_micro": float(micro_f1),
            "f1_macro": float(f1.mean()),
            "f1_samples": float(f1_score(references, predictions, average="samples", zero_division=0)),
            "precision_micro": float(micro_p),
            "recall_micro": float(micro_r),
            # accuracy_score on multi-hot rows counts an example right only when all its labels are.
            "subset_accuracy": float(accuracy_score(references, predictions)),
        }
        for name, p, r, f in zip(names, precision, recall, f1):
            result[f"precision_{name}"] = float(p)
            result[f"recall_{name}"] = float(r)
            result[f"f1_{name}"] = float(f)
        return result
