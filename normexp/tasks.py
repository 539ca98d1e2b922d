"""Tasks: what a run does, chosen by ``train.task``. Each task brings its own config rules, its
data preparation (run before anything is written) and its training loop."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from normexp.errors import ConfigError
from normexp.validate_fields import check_int

LogEpoch = Callable[[dict], None]


@dataclass(frozen=True)
class Task:
    check: Callable[[Mapping], None]  # raise ConfigError naming the field
    prepare_data: Callable[[Mapping], None]  # DataError if the data is missing or corrupt
    train: Callable[..., dict]  # (config, log_epoch, bar row[, checkpoint=path]) -> summary
    resumable: bool = False  # train() takes checkpoint=<path> and resumes from it


def _check_classification(c: Mapping) -> None:
    from normexp.models import check_model

    data = c["data"]
    if data["name"] != "cifar10":
        raise ConfigError(
            "data.name", f"unknown {data['name']!r} for classification; allowed: cifar10"
        )
    check_int("data.n_train", data["n_train"], allow_none=True)
    check_int("data.n_val", data["n_val"])
    check_int("data.n_test", data["n_test"], allow_none=True)
    check_model(c["model"], c["norm"], c["train"]["batch_size"])


def _prepare_cifar10(c: Mapping) -> None:
    from normexp.data.cifar10 import load_cifar10
    from normexp.data.paths import resolve_data_dir

    data = c["data"]
    load_cifar10(resolve_data_dir(c["paths"]["data_dir"]), data["download"], data["verify"])


def _train_classification(
    c: Mapping, log_epoch: LogEpoch, bar_row: int, checkpoint: Path | None = None
) -> dict:
    from normexp.train.classification import train_classifier

    return train_classifier(c, log_epoch, bar_row, checkpoint)


TASKS: dict[str, Task] = {
    "classification": Task(
        _check_classification, _prepare_cifar10, _train_classification, resumable=True
    ),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError("train.task", f"unknown {name!r}; allowed: {', '.join(sorted(TASKS))}")
    return TASKS[name]
