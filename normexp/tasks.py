"""Tasks: what a run does, chosen by ``train.task``. Each task brings its own config rules, its
data preparation (run before anything is written) and its training loop."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from normexp.errors import ConfigError
from normexp.validate_fields import check_int

LogEpoch = Callable[[dict], None]
CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000


@dataclass(frozen=True)
class Task:
    check: Callable[[Mapping], None]  # raise ConfigError naming the field
    prepare_data: Callable[[Mapping], None]  # DataError if the data is missing or corrupt
    train: Callable[..., dict]  # (config, log_epoch, bar row, checkpoint=path) -> summary;
    # every task resumes from its checkpoint (normexp.train.fit)
    amp: bool = False  # honours train.amp (bf16 autocast on CUDA)
    models: tuple[str, ...] = ("cnn", "mlp", "resnet")  # model.name values it trains
    data: str = "cifar10"  # the data.name it reads
    groups: str = "train=classification data=cifar10 model=cnn"  # the choices that select it
    example: str = "bn_small_batch"  # an experiment file that runs it


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
    if data["n_val"] + (data["n_train"] or 0) > CIFAR10_TRAIN:
        raise ConfigError(
            "data.n_train",
            f"n_train + n_val = {data['n_val'] + data['n_train']} exceeds the {CIFAR10_TRAIN} "
            f"CIFAR-10 training images; at most {CIFAR10_TRAIN - data['n_val']} with this n_val",
        )
    if data["n_val"] >= CIFAR10_TRAIN:
        raise ConfigError("data.n_val", f"must be < {CIFAR10_TRAIN}, the training images")
    if (data["n_test"] or 0) > CIFAR10_TEST:
        raise ConfigError("data.n_test", f"at most {CIFAR10_TEST} (the CIFAR-10 test set) or null")
    n_train = data["n_train"] if data["n_train"] is not None else CIFAR10_TRAIN - data["n_val"]
    batch_size = c["train"]["batch_size"]
    if batch_size > n_train:  # an epoch of no full batch: nothing would train
        raise ConfigError(
            "train.batch_size",
            f"{batch_size} is larger than the {n_train} training images (data.n_train); "
            f"allowed: 1 to {n_train}",
        )
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


def _check_instrumented(c: Mapping) -> None:
    from normexp.train.instrumented import check_probes

    _check_classification(c)
    check_probes(c["train"])


def _train_instrumented(
    c: Mapping, log_epoch: LogEpoch, bar_row: int, checkpoint: Path | None = None
) -> dict:
    from normexp.train.instrumented import train_instrumented

    return train_instrumented(c, log_epoch, bar_row, checkpoint)


def _check_image_to_image(c: Mapping) -> None:
    from normexp.train.image_to_image import check_image_to_image

    check_image_to_image(c)


def _train_image_to_image(
    c: Mapping, log_epoch: LogEpoch, bar_row: int, checkpoint: Path | None = None
) -> dict:
    from normexp.train.image_to_image import train_image_to_image

    # The run folder is where the job keeps the checkpoint: the sample grid goes beside it.
    run_dir = checkpoint.parent if checkpoint is not None else None
    return train_image_to_image(c, log_epoch, bar_row, checkpoint, artifacts_dir=run_dir)


def _check_language_model(c: Mapping) -> None:
    from normexp.train.language_model import check_language_model

    check_language_model(c)


def _prepare_ptb(c: Mapping) -> None:
    from normexp.data.paths import resolve_data_dir
    from normexp.data.ptb import load_ptb

    data = c["data"]
    load_ptb(resolve_data_dir(c["paths"]["data_dir"]), data["level"], data["download"])


def _train_language_model(
    c: Mapping, log_epoch: LogEpoch, bar_row: int, checkpoint: Path | None = None
) -> dict:
    from normexp.train.language_model import train_language_model

    return train_language_model(c, log_epoch, bar_row, checkpoint)


TASKS: dict[str, Task] = {
    "classification": Task(
        _check_classification, _prepare_cifar10, _train_classification, amp=True
    ),
    # C9, C10: classification plus probes of ICS and of the loss landscape
    "instrumented_classification": Task(
        _check_instrumented,
        _prepare_cifar10,
        _train_instrumented,
        groups="train=instrumented data=cifar10 model=cnn",
        example="not_ics",
    ),
    # C6: undo per-image contrast / colour changes of CIFAR-10 images (C6a), or map them to a
    # fixed stylization that discards them (C6b), with a generator
    "image_to_image": Task(
        _check_image_to_image,
        _prepare_cifar10,
        _train_image_to_image,
        models=("generator",),
        groups="train=image_to_image data=cifar10 model=generator optim=adam",
        example="bn_generation",
    ),
    # C7: LSTM language model on PTB, the cell chosen by norm.name
    "language_model": Task(
        _check_language_model,
        _prepare_ptb,
        _train_language_model,
        models=("lstm",),
        data="ptb",
        groups="train=language_model data=ptb model=lstm optim=adam_lm",
        example="rnn_norm",
    ),
}
DEFAULT_TASK = "classification"  # configs/config.yaml's train group


def check_task_groups(task: str, model: str, data: str) -> None:
    """Refuse a task, model and data set that do not belong together, before the config is
    resolved (its interpolations would fail first, naming a key, not the mistake), saying which
    groups to set. The task meant is the one a non-default choice belongs to. Names no task
    knows are left to the schema's checks."""
    known_models = {m for t in TASKS.values() for m in t.models}
    known_data = {t.data for t in TASKS.values()}
    if task not in TASKS or model not in known_models or data not in known_data:
        return
    meant = task
    if task == DEFAULT_TASK:  # the first task listing the model, else the data, if not this one
        by_model = next(n for n, t in TASKS.items() if model in t.models)
        by_data = next(n for n, t in TASKS.items() if t.data == data)
        meant = by_model if by_model != task else by_data
    wanted = TASKS[meant]
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
    if name not in TASKS:
        raise ConfigError("train.task", f"unknown {name!r}; allowed: {', '.join(sorted(TASKS))}")
    return TASKS[name]
