"""Entity-level precision, recall and F1 with seqeval semantics, per-type F1, and token accuracy.

The Hub's `seqeval` metric script cannot be fetched offline; this module computes the same numbers
with the seqeval package and loads with `evaluate.load(path)`.
"""

import warnings

import datasets
import evaluate
import seqeval.scheme
from seqeval.metrics import accuracy_score, classification_report

_DESCRIPTION = """Entity-level scores of tag sequences (seqeval): an entity counts only when its type and its
exact span match. Keys: `precision`, `recall`, `f1` (micro over entities), `accuracy` (token level), and
per entity type `precision_<type>`, `recall_<type>`, `f1_<type>`, `number_<type>` (true entities)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): predicted tags per sentence, e.g. [["B-PER", "I-PER", "O"]].
    references (list of list of str): true tags per sentence, of the same lengths.
    scheme (str, optional): None for conlleval's lenient chunking (accepts IOB1, IOB2 and IOBES tags);
        or IOB1, IOB2, IOE1, IOE2, IOBES, BILOU for seqeval's strict mode with that scheme.
Returns:
    precision, recall, f1, accuracy, and per-type precision/recall/f1/number.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Ner(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, scheme=None):
        for row, (predicted, true) in enumerate(zip(predictions, references)):
            if len(predicted) != len(true):
                raise ValueError(f"sentence {row}: {len(predicted)} predicted tags for {len(true)} true tags")
        options = {"mode": "strict", "scheme": getattr(seqeval.scheme, scheme)} if scheme else {}
        with warnings.catch_warnings():
            # Averages over zero entities (all-O data) warn from numpy; zero_division already defines them as 0.
            warnings.simplefilter("ignore", RuntimeWarning)
            report = classification_report(references, predictions, output_dict=True, zero_division=0, **options)
        micro = report.pop("micro avg")
        result = {
            "precision": float(micro["precision"]),
            "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]),
            "accuracy": float(accuracy_score(references, predictions)),
        }
        for name, scores in report.items():
            if name.endswith(" avg"):
                continue
            result[f"precision_{name}"] = float(scores["precision"])
            result[f"recall_{name}"] = float(scores["recall"])
            result[f"f1_{name}"] = float(scores["f1-score"])
            result[f"number_{name}"] = int(scores["support"])
        return result
