"""Packed groups: which jobs of a sweep train as one packed model (docs/packing.md).

Runs of one cell that differ only in their seed and LR multiplier (the seeds of record of a
cell, the LR candidates of one selection, one rung of a ladder) can train side by side as one
grouped model (normexp/models/packed.py), each replica with its own initialisation, data order,
LR and norm statistics, each writing its own run folder exactly as its separate run would
(normexp/train/packed_fit.py). Whether a job packs, and with how many replicas, is decided here
from its resolved config: ``runtime.pack`` (auto, off or K), the task, model, norm and
optimizer (``pack_limit``), and, for auto, the frozen bench table ``PACK_TABLE``.

The sweeper (hydra_plugins/normexp_sweeper) groups the jobs of each launch round with
``group_jobs``: one group job is the first member's overrides plus ``runtime.pack_with``, the
other members' seeds and multipliers; it is not part of any run key (``runtime`` never is),
so every member's run key is its separate run's. Finished members are never packed: a group
with a finished member trains only the unfinished ones.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from normexp.errors import ConfigError
from normexp.models.packed import pack_refusal
from normexp.protocol.overrides import Job, without
from normexp.protocol.select import LR_MULT
from normexp.train.packed_optim import packed_optim_refusal

if TYPE_CHECKING:
    from normexp.protocol.plan import JobRecords

SEED = "seed"
PACK_WITH = "runtime.pack_with"
# The frozen table ``auto`` reads: the largest batch at which each model packs, and the most
# replicas per group. CPU, from `make bench` (normexp/bench/replicas.py: packed against separate
# per replica-image, one thread, K=4): the CNN gains 1.6-1.8x at batch 2 and 1.15-1.19x at 8,
# loses at 32 (0.65-0.73x); the ResNet-20 gains 1.5x at 2 and 1.29x at 4, about nothing at 8
# (1.00-1.12x) and loses at 32; the MLP loses at every batch (0.44-0.73x: its matmuls are
# already one call). CUDA (reasoned, not measured here): a step is host-bound up to large
# batches, so every batch of every packable model packs, up to 16 replicas.
PACK_TABLE = {
    "cpu": {"max_k": 10, "max_batch": {"cnn": 8, "resnet": 4}},
    "cuda": {"max_k": 16, "max_batch": {"cnn": 4096, "resnet": 4096, "mlp": 4096}},
}
PACK_TASKS = ("classification",)


def why_not_packed(config: Mapping) -> str | None:
    """None when the run (resolved config) can train packed; else why it trains separately."""
    train, runtime = config["train"], config["runtime"]
    if runtime.get("pack", "auto") == "off":
        return "runtime.pack is off"
    if train["task"] not in PACK_TASKS:
        return f"train.task {train['task']} trains separately"
    if why := packed_optim_refusal(config["optim"]):
        return why
    if train.get("amp"):
        return "bf16 autocast (train.amp) trains separately"
    if train.get("max_minutes") is not None:
        return "a wall-time budget (train.max_minutes) trains separately"
    return pack_refusal(config["model"], config["norm"])


def pack_limit(config: Mapping, device: str = "cpu") -> int:
    """The most replicas the run's packed group may hold on ``device`` (1: it trains alone)."""
    if why_not_packed(config) is not None:
        return 1
    pack = config["runtime"].get("pack", "auto")
    if pack != "auto":
        return int(pack)
    table = PACK_TABLE["cuda" if device.startswith("cuda") else "cpu"]
    largest = table["max_batch"].get(config["model"]["name"], 0)
    return table["max_k"] if config["train"]["batch_size"] <= largest else 1


def group_key(job: Sequence[str]) -> Job:
    """What the members of a group share: every override but the seed and the multiplier."""
    return without(job, SEED, LR_MULT)


def pack_with(members: Sequence[Sequence[str]], records: "JobRecords") -> str:
    """The ``runtime.pack_with`` override naming ``members`` (each one's seed and multiplier)."""
    entries = []
    for job in members:
        config = records(job)[0]
        entries.append(f"{{seed:{config['seed']},lr_mult:{float(config['optim']['lr_mult'])!r}}}")
    return f"{PACK_WITH}=[{','.join(entries)}]"


def group_jobs(jobs: Sequence[Job], records: "JobRecords", device: str = "cpu") -> list[Job]:
    """``jobs`` with the unfinished members of each group (``group_key``) merged into group jobs
    of at most ``pack_limit`` members, each at the place of its first member; finished jobs and
    jobs that train alone stay as they are (a finished one skips itself)."""
    by_key: dict[Job, list[Job]] = {}
    for job in jobs:
        by_key.setdefault(group_key(job), []).append(tuple(job))
    out: list[Job] = []
    placed: set[Job] = set()
    for job in jobs:
        job = tuple(job)
        if job in placed:
            continue
        members = [m for m in by_key[group_key(job)] if m not in placed]
        config, record = records(job)
        limit = pack_limit(config, device)
        todo = [m for m in members if not records(m)[1].is_finished()]
        if limit <= 1 or record.is_finished() or len(todo) < 2:
            out.append(job)
            placed.add(job)
            continue
        group = todo[:limit]
        out.append((*group[0], pack_with(group[1:], records)))
        placed.update(group)
    return out


def member_overrides(pack: object) -> list[dict]:
    """``runtime.pack_with`` as a list of {seed, lr_mult}; ConfigError naming the field if not."""
    if pack is None:
        return []
    ok = isinstance(pack, Sequence) and not isinstance(pack, str)
    members = list(pack) if ok else []
    for m in members:
        if not isinstance(m, Mapping) or set(m) != {"seed", "lr_mult"}:
            ok = False
    if not ok:
        raise ConfigError(
            PACK_WITH, f"{pack!r} must be null or a list of {{seed: s, lr_mult: m}} (the sweeper "
            "sets it)"
        )
    return [{"seed": int(m["seed"]), "lr_mult": float(m["lr_mult"])} for m in members]
