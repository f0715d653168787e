"""What a model is for: classify, detect, ocr-rec, text-det or fidelity — each a Task that decodes the
model's outputs and scores them by its own metric (base.py); evaluate.py runs a model over a folder."""

from edgepipe.runtime.tasks.base import (
    TASK_KEY,
    Score,
    Task,
    get_task,
    parse_settings,
    register_task,
    task_from_args,
    task_names,
    task_of,
)

__all__ = [
    "TASK_KEY",
    "Score",
    "Task",
    "get_task",
    "parse_settings",
    "register_task",
    "task_from_args",
    "task_names",
    "task_of",
]
