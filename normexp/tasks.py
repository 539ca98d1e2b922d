"""Tasks: what a run does, chosen by ``train.task``. Each task brings its own config rules, its
data preparation (run before anything is written) and its training loop, and is registered by
the module that trains it (normexp.train.classification, .instrumented, .image_to_image,
.stylization, .language_model)."""

from normexp.errors import ConfigError
from normexp.train import (
    classification,
    image_to_image,
    instrumented,
    language_model,
    stylization,
)
from normexp.train.task import Task

DEFAULT_TASK = "classification"  # configs/config.yaml's train group
# Every task by name, each declared by the module that trains it, in the order error lines list
# them; the first that trains a model is the task that model means.
TASKS: dict[str, Task] = {
    m.TASK.name: m.TASK
    for m in (classification, instrumented, image_to_image, stylization, language_model)
}


def all_tasks() -> dict[str, Task]:
    return TASKS


def check_task_groups(task: str, model: str, data: str) -> None:
    """Refuse a task, model and data set that do not belong together, before the config is
    resolved (its interpolations would fail first, naming a key, not the mistake), saying which
    groups to set. The task meant is the one a non-default choice belongs to. Names no task
    knows are left to the schema's checks."""
    tasks = all_tasks()
    known_models = {m for t in tasks.values() for m in t.models}
    known_data = {t.data for t in tasks.values()}
    if task not in tasks or model not in known_models or data not in known_data:
        return
    meant = task
    if task == DEFAULT_TASK:  # the first task listing the model, else the data, if not this one
        by_model = next(n for n, t in tasks.items() if model in t.models)
        by_data = next(n for n, t in tasks.items() if t.data == data)
        meant = by_model if by_model != task else by_data
    wanted = tasks[meant]
    fits = {
        "model.name": (model, model in wanted.models),
        "data.name": (data, data == wanted.data),
        "train.task": (task, task == meant),
    }
    wrong = [f"{field}={value}" for field, (value, ok) in fits.items() if not ok]
    if wrong:
        raise ConfigError(
            wrong[0].split("=")[0],
            f"the {meant} task (model {'/'.join(wanted.models)}, data {wanted.data}) does not "
            f"go with {', '.join(wrong)}: set {wanted.groups} (as experiment={wanted.example} "
            "does)",
        )


def get_task(name: str) -> Task:
    tasks = all_tasks()
    if name not in tasks:
        raise ConfigError("train.task", f"unknown {name!r}; allowed: {', '.join(sorted(tasks))}")
    return tasks[name]
