"""COCO mean average precision of detected boxes (torchmetrics' MeanAveragePrecision on pycocotools).

The Hub's detection metrics cannot be fetched offline; this module gives torchmetrics' numbers (computed by the
COCO reference code, pycocotools) under `evaluate.load(path)`.
"""

import datasets
import evaluate
import torch
from torchmetrics.detection import MeanAveragePrecision

_DESCRIPTION = """COCO-style detection scores over all images: `map` (AP averaged over IoU 0.50:0.95), `map_50`,
`map_75`, `map_small` / `map_medium` / `map_large` (by box area, under 32^2, 32^2-96^2, over 96^2 pixels),
`mar_1`, `mar_10`, `mar_100` (recall at 1/10/100 detections per image), and per class `map_<label>`. A score is
-1 where COCO defines none (no true box of that size or class)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of dict): per image, `boxes` ([xmin, ymin, xmax, ymax] in pixels), `scores`, `labels` (ids).
    references (list of dict): per image, the true `boxes` and `labels`.
    label_names (list of str): class names in id order, for the per-class keys.
Returns:
    map, map_50, map_75, map_small, map_medium, map_large, mar_1, mar_10, mar_100, map_<label>.
"""

BOXES = datasets.Sequence(datasets.Sequence(datasets.Value("float64"), length=4))
IDS = datasets.Sequence(datasets.Value("int64"))
SUMMARY = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


def _tensors(image: dict, keys: tuple[str, ...]) -> dict:
    boxes = torch.tensor(image["boxes"], dtype=torch.float64).reshape(-1, 4)
    found = {"boxes": boxes, "labels": torch.tensor(image["labels"], dtype=torch.int64)}
    if "scores" in keys:
        found["scores"] = torch.tensor(image["scores"], dtype=torch.float64)
    return found


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DetectionMap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "boxes": BOXES,
                        "scores": datasets.Sequence(datasets.Value("float64")),
                        "labels": IDS,
                    },
                    "references": {"boxes": BOXES, "labels": IDS},
                }
            ),
        )

    def _compute(self, predictions, references, label_names):
        metric = MeanAveragePrecision(box_format="xyxy", class_metrics=True, backend="pycocotools")
        metric.update(
            [_tensors(image, ("scores",)) for image in predictions], [_tensors(image, ()) for image in references]
        )
        scores = metric.compute()
        result = {key: float(scores[key]) for key in SUMMARY}
        # Per-class values come in the order of `classes`: the ids seen in predictions or references.
        per_class = scores["map_per_class"].reshape(-1).tolist()
        for class_id, value in zip(scores["classes"].reshape(-1).tolist(), per_class):
            result[f"map_{label_names[int(class_id)]}"] = float(value)
        return result
