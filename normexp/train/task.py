"""What a task declares (``TASK = Task(...)`` in the train module that trains it);
normexp.tasks finds every declaration."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

LogEpoch = Callable[[dict], None]


@dataclass(frozen=True)
class Task:
    name: str  # its train.task value
    check: Callable[[Mapping], None]  # raise ConfigError naming the field
    prepare_data: Callable[[Mapping], None]  # DataError if the data is missing or corrupt
    train: Callable[..., dict]  # (config, log_epoch, bar row, checkpoint=path) -> summary;
    # every task resumes from its checkpoint (normexp.train.fit)
    amp: bool = False  # honours train.amp (bf16 autocast on CUDA)
    # (configs, log_epochs, bar row, checkpoints=paths) -> a summary or Diverged per config: the
    # runs of one cell trained as one packed model (normexp/train/packed_fit.py); None: the
    # task trains every run separately
    train_packed: Callable[..., list] | None = None
    models: tuple[str, ...] = ("cnn", "mlp", "resnet")  # model.name values it trains
    data: str = "cifar10"  # the data.name it reads
    groups: str = "train=classification data=cifar10 model=cnn"  # the choices that select it
    example: str = "bn_small_batch"  # an experiment file that runs it
