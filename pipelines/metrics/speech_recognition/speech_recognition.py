"""Word and character error rates of transcripts (jiwer underneath, as the Hub's `wer` and `cer` metrics)."""

import datasets
import evaluate
import jiwer

_DESCRIPTION = """Corpus-level word error rate (WER) and character error rate (CER): edit operations summed over all
transcripts divided by the reference words (characters), so long utterances weigh more, as in the Hub metrics."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): transcripts produced by the model.
    references (list of str): reference transcripts; none may be empty.
Returns:
    wer, cer: floats >= 0 (0 is perfect; insertions can push them above 1).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SpeechRecognition(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return {
            "wer": float(jiwer.wer(list(references), list(predictions))),
            "cer": float(jiwer.cer(list(references), list(predictions))),
        }
