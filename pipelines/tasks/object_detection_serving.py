"""The serving half of object detection: an image's boxes above `data.score_threshold`, in the image's own pixels,
and the image with its boxes drawn on it (`hubtune predict --draw`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from PIL import ImageDraw

from pipelines.data.images import decode_checked, predict_images, write_probe_images
from pipelines.data.splits import Locate
from pipelines.runs.folder import label_names_of
from pipelines.tasks.serving_base import Batch, TaskServing, file_paths

# Box colours of `--draw`, one per class id (cycled).
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


class ObjectDetectionServing(TaskServing[Any]):
    input_kind = "path"
    input_column_key = "image_column"

    def data_inputs(self, values: list[Any], locate: Locate, column: str) -> list[str]:
        return file_paths(values, locate, column, "image")

    def probe_inputs(self, folder: Path, count: int) -> list[str]:
        return write_probe_images(folder, count)

    def preprocess(self, inputs: list[str]) -> Batch:
        images = predict_images(inputs)
        encoded = self.processor(images=images, return_tensors="pt")
        features = {key: encoded[key] for key in self.processor.model_input_names if key in encoded}
        return Batch(inputs, features, {"sizes": [image.size[::-1] for image in images]})

    def postprocess(self, batch: Batch, outputs: Any) -> list[dict[str, Any]]:
        found = self.processor.post_process_object_detection(
            outputs, threshold=self.task.data.score_threshold, target_sizes=batch.context["sizes"]
        )
        names = label_names_of(self.model)
        records = []
        for item, image in zip(batch.inputs, found):
            order = image["scores"].argsort(descending=True).tolist()
            boxes = [
                {
                    "label": names[int(image["labels"][i])],
                    "score": round(float(image["scores"][i]), 4),
                    "box": [round(float(v), 2) for v in image["boxes"][i]],
                }
                for i in order
            ]
            records.append({"input": item, "boxes": boxes})
        return records

    def format(self, prediction: dict[str, Any]) -> str:
        found = "; ".join(
            f"{box['label']} {box['score']:.3f} [{', '.join(f'{v:.0f}' for v in box['box'])}]"
            for box in prediction["boxes"]
        )
        return f"{len(prediction['boxes'])} boxes\t{found or '-'}\t{prediction['input']}"

    def draw(self, prediction: dict[str, Any]) -> dict[str, PILImage.Image]:
        image = decode_checked({"path": prediction["input"], "bytes": None}, "predict --draw")
        canvas = ImageDraw.Draw(image)
        names = label_names_of(self.model)
        for box in prediction["boxes"]:
            colour = PALETTE[names.index(box["label"]) % len(PALETTE)]
            canvas.rectangle(box["box"], outline=colour, width=2)
            canvas.text((box["box"][0] + 2, box["box"][1] + 1), f"{box['label']} {box['score']:.2f}", fill=colour)
        return {f"{Path(prediction['input']).stem}.png": image}
