"""The model card's widget example: a short real text of the run's test split, as `hubtune predict --data` reads it.

The Hub's inference widget of a text model opens with the card's `widget` text. A real example from the data the
model was tested on shows what it was made for better than an invented one; it is read through the recipe and
the task's own data reader (CoNLL files, tables) and its serving half (a sentence's words joined into a text).
"""

from __future__ import annotations

import dataclasses
import logging

from huggingface_hub import constants as hub_constants

from pipelines.config import RecipeConfig
from pipelines.data.splits import columns_of, load_splits, streamed
from pipelines.data.streams import StreamingDataConfig
from pipelines.errors import HubtuneError
from pipelines.tasks import get_task

logger = logging.getLogger(__name__)

# The test rows looked at, and the length a widget text should stay within: the shortest is taken otherwise.
EXAMPLE_ROWS = 100
SHORT_TEXT = 200


def widget_text(config: RecipeConfig) -> str | None:
    """A text of the run's test split for the card's widget; None for a task that reads files (images, audio), a
    pair classifier (the widget sends one text), or where the test split cannot be read on this machine."""
    task_class = get_task(config.task)
    serving_class = task_class.serving
    if serving_class.input_kind != "text" or getattr(config.data, "text_pair_column", None):
        return None
    data = config.data
    column = getattr(data, serving_class.input_column_key)
    if data.dataset and isinstance(data, StreamingDataConfig) and not hub_constants.HF_HUB_OFFLINE:
        # Online, the first rows of a Hub dataset's test split are streamed rather than every split downloaded
        # (on the machine that trained, offline, they are read from the datasets cache).
        data = dataclasses.replace(data, streaming=True)
    task = task_class(config)
    try:
        splits = load_splits(data, config.seed, task.load_data_file, ("test",), task.data_path_kind())
    except (HubtuneError, OSError) as error:
        logger.info("the model card goes without a widget example: the test split cannot be read here (%s)", error)
        return None
    if "test" not in splits or column not in columns_of(splits["test"]):
        return None
    test = splits["test"]
    values = (
        [row[column] for row in test.take(EXAMPLE_ROWS)]
        if streamed(test)
        else test.select(range(min(EXAMPLE_ROWS, len(test))))[column]
    )
    serving = serving_class(task, None, None)  # only reads inputs: no model, no processor
    texts = []
    for value in values:
        try:
            texts += serving.data_inputs([value], lambda _: splits.sources["test"], column)
        except HubtuneError:
            continue  # a row that holds no text: `predict --data` would refuse it too
    short = [text for text in texts if len(text) <= SHORT_TEXT]
    return short[0] if short else min(texts, key=len, default=None)
