"""Registered tasks: recipe key `task` -> Task class."""

from __future__ import annotations

from pipelines.errors import HubtuneError
from pipelines.tasks.audio_classification import AudioClassification
from pipelines.tasks.base import PreparedData, Task
from pipelines.tasks.image_classification import ImageClassification
from pipelines.tasks.object_detection import ObjectDetection
from pipelines.tasks.semantic_segmentation import SemanticSegmentation
from pipelines.tasks.speech_ctc import SpeechRecognitionCTC
from pipelines.tasks.speech_seq2seq import SpeechRecognitionSeq2Seq
from pipelines.tasks.text_classification import TextClassification
from pipelines.tasks.token_classification import TokenClassification

__all__ = ["TASKS", "PreparedData", "Task", "get_task"]

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (
        TextClassification,
        TokenClassification,
        ImageClassification,
        ObjectDetection,
        SemanticSegmentation,
        AudioClassification,
        SpeechRecognitionCTC,
        SpeechRecognitionSeq2Seq,
    )
}


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise HubtuneError(f"unknown task '{name}' in recipe key 'task'; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
