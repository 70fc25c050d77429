"""Semantic segmentation metrics: mean IoU, per-class IoU, pixel accuracy and mean class accuracy.

The project's own module rather than the Hub's `mean_iou`: `evaluate.load("mean_iou")` fetches its script from the
Hub, which offline runs cannot reach. The numbers follow the same definitions (mmsegmentation's), from one
confusion matrix over all pixels.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Intersection over union per class (`iou_<label>`) and its mean over classes (`mean_iou`), pixel
accuracy over all labelled pixels (`overall_accuracy`) and per-class accuracy (recall) averaged over classes
(`mean_accuracy`), from one confusion matrix of every pixel of every image. Pixels whose reference is `ignore_index`
are left out. A class that occurs in neither the references nor the predictions has no IoU (NaN, like the Hub's
`mean_iou`): it is left out of the means instead of counting as 0 or 1, so a test set without some class is not
judged on it."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D int arrays): predicted class id of every pixel, one map per image.
    references (list of 2-D int arrays): true class ids, the same shapes.
    num_labels (int): number of classes (ids 0 .. num_labels - 1).
    ignore_index (int): reference value of pixels left out (default 255).
    label_names (list of str, optional): names in id order, for the per-class keys; default: the ids.
Returns:
    mean_iou, mean_accuracy, overall_accuracy, iou_<label> and accuracy_<label> per class.
"""


def confusion(predictions, references, num_labels: int, ignore_index: int) -> np.ndarray:
    """num_labels x num_labels pixel counts (row: reference, column: prediction), ignored pixels left out.

    One bincount over flat indices: the pixel counts of a whole evaluation set in a single pass, with no per-class
    loop or per-image matrix.
    """
    matrix = np.zeros(num_labels * num_labels, dtype=np.int64)
    for predicted, reference in zip(predictions, references):
        predicted, reference = np.asarray(predicted).ravel(), np.asarray(reference).ravel()
        if predicted.shape != reference.shape:
            raise ValueError(f"a prediction has {predicted.size} pixels, its reference {reference.size}")
        kept = reference != ignore_index
        matrix += np.bincount(
            reference[kept].astype(np.int64) * num_labels + predicted[kept], minlength=num_labels * num_labels
        )
    return matrix.reshape(num_labels, num_labels)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_labels, ignore_index=255, label_names=None):
        names = list(label_names) if label_names else [str(i) for i in range(num_labels)]
        matrix = confusion(predictions, references, num_labels, ignore_index)
        true_positive = np.diag(matrix).astype(np.float64)
        in_reference = matrix.sum(axis=1)
        union = in_reference + matrix.sum(axis=0) - true_positive
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, true_positive / union, np.nan)
            accuracy = np.where(in_reference > 0, true_positive / in_reference, np.nan)
        labelled = matrix.sum()
        result = {
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
            "overall_accuracy": float(true_positive.sum() / labelled) if labelled else float("nan"),
        }
        for name, class_iou, class_accuracy in zip(names, iou, accuracy):
            result[f"iou_{name}"] = float(class_iou)
            result[f"accuracy_{name}"] = float(class_accuracy)
        return result
