"""One job of a sweep: the store decides whether it runs; W&B mirrors what it does."""

import contextlib
import copy
import errno
import logging
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from normexp.errors import StoreError
from normexp.protocol.pack import member_overrides, why_not_packed
from normexp.tasks import get_task
from normexp.tracking.provenance import provenance
from normexp.tracking.store import FINISHED, RunLocked, RunRecord, cannot_write, record_of
from normexp.tracking.wandb_mirror import WandbMirror, exit_code
from normexp.train import Diverged
from normexp.train.device import pick_device
from normexp.train.packed_fit import GroupMismatch
from normexp.validate import resolve_config

log = logging.getLogger("normexp")
# The metric a finished run logs on its line: the first one its summary has. An LR selection's
# run has no test metrics and logs the one it is read on (protocol.select_on: its validation
# metric, or C9's training accuracy).
HEADLINE_METRICS = ("test_acc", "test_psnr", "test_stylization_loss", "test_bpc", "test_ppl",
                    "val_acc", "val_psnr", "val_stylization_loss", "valid_bpc", "valid_ppl",
                    "train_acc")  # fmt: skip


def headline_metric(config: Mapping, summary: Mapping) -> str | None:
    """The metric a finished run's line shows (HEADLINE_METRICS; a selection run's select_on)."""
    protocol = config.get("protocol") or {}
    if protocol.get("stage") == "select" and protocol.get("select_on") in summary:
        return protocol["select_on"]
    return next((k for k in HEADLINE_METRICS if k in summary), None)


# Write failures that mean "the store cannot be written", not "this run failed".
STORE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
CHECKPOINT = "checkpoint.pt"


def describe(cfg: Mapping) -> str:
    norm = cfg["norm"]
    return (
        f"{cfg['claim']['name']} {cfg['model']['name']} norm={norm['name']}/{norm['position']} "
        f"batch={cfg['train']['batch_size']} seed={cfg['seed']}"
    )


def prepare_data(config: Mapping) -> None:
    """Make the run's dataset present and verified (download if allowed); DataError if not.
    Cached per process, so the training that follows reads it from memory."""
    get_task(config["train"]["task"]).prepare_data(config)


def run_job(cfg: DictConfig, progress_position: int = 0, in_sweep: bool = False) -> dict | None:
    """Run (or skip) the job; return its summary. Raises only for invalid input, or when the
    store cannot be written (StoreError); in a sweep that is logged and the job returns None,
    so the sweep's closing count shows the run as not run."""
    try:
        if OmegaConf.select(cfg, "runtime.pack_with", default=None):
            return _run_group(cfg, progress_position)
        return _run_job(cfg, progress_position)
    except StoreError as exc:
        if not in_sweep:
            raise
        log.error("normexp: error: %s", exc)
        return None


def _run_job(cfg: DictConfig, progress_position: int) -> dict | None:
    config = resolve_config(cfg)  # validated plain dict; ConfigError before anything is written
    return _run_config(config, progress_position)


def _run_config(config: dict, progress_position: int) -> dict | None:
    """Run (or skip) the job of the resolved ``config``; its summary."""
    record = record_of(config)  # in the partition of the run's profile
    key = record.key
    if record.is_finished():
        log.info("skip %s [%s]: already %s", describe(config), key, record.status["status"])
        record.remove_stale_lock()  # left by a job killed outright; nothing else would remove it
        return None
    prepare_data(config)  # DataError before anything is written
    try:
        with record.lock():
            if record.is_finished():  # finished by another worker between the check and the lock
                log.info("skip %s [%s]: finished meanwhile", describe(config), key)
                return None
            return _train(config, record, progress_position)
    except RunLocked as exc:
        log.warning("skip %s: %s", describe(config), exc)
        return None
    except OSError as exc:
        if not store_fault(exc, config):
            raise
        raise cannot_write(exc, config["paths"]["results_dir"]) from None


def store_fault(exc: OSError, config: Mapping) -> bool:
    """Whether an OSError is the store's: a write refused (full disk, quota, read-only, no
    permission) or any error on a path inside the results directory."""
    if exc.errno in STORE_ERRNOS:
        return True
    where = exc.filename
    return bool(where) and Path(str(where)).is_relative_to(config["paths"]["results_dir"])


class Started:
    """A run of the store in training: its record, its W&B mirror and its epoch logger."""

    def __init__(self, config: dict, record: RunRecord) -> None:
        record.start(config)
        self.config, self.record = config, record
        self.mirror = WandbMirror.for_run(config, record.key, record.path)
        self.checkpoint = record.path / CHECKPOINT

    def log_epoch(self, metrics: dict) -> None:
        self.record.append_metrics(metrics)
        self.mirror.log(metrics)


def _failure(exc: Exception, configs: Sequence[Mapping]) -> str:
    """A training error as the run records it; the store's own faults are raised instead (the
    run stays resumable from its checkpoint)."""
    if isinstance(exc, OSError) and any(store_fault(exc, c) for c in configs):
        raise exc
    for config in configs:
        log.error("%s failed:\n%s", describe(config), traceback.format_exc())
    return f"{type(exc).__name__}: {exc}"


def _train(config: dict, record: RunRecord, progress_position: int) -> dict:
    run = Started(config, record)
    status, error, summary = "ok", None, {}
    try:
        task = get_task(config["train"]["task"])
        summary = task.train(config, run.log_epoch, progress_position, checkpoint=run.checkpoint)
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed run; the sweep goes on
        status, error = "failed", _failure(exc, [config])
    return _finish(run, status, error, summary)


def _finish(run: Started, status: str, error: str | None, summary: dict) -> dict:
    """Write the run's summary and status (and close its mirror) as every job ends."""
    config, record, mirror, checkpoint = run.config, run.record, run.mirror, run.checkpoint
    if status != "ok":
        epochs = record.metrics()
        summary = {**(epochs[-1] if epochs else {}), "epochs": len(epochs)}
    summary = {
        **summary,
        "status": status,
        "run_key": record.key,
        "provenance": provenance(str(pick_device(config["train"]["device"]))),
    }
    headline = headline_metric(config, summary)
    result = f" {headline}={summary[headline]:.4g}" if headline else ""
    # before the mirror finishes, so that the run's W&B Logs tab ends with its outcome
    log.info("%s %s [%s]%s", status, describe(config), record.key, result)
    mirror.finish(summary, exit_code=exit_code(status), run_dir=record.path)
    if mirror.error:  # recorded, never fatal: the local store is the source of truth
        summary["wandb_error"] = mirror.error
    record.finish(status, summary, error)
    if status in FINISHED:
        checkpoint.unlink(missing_ok=True)  # a finished run is never resumed
    return summary


def member_configs(cfg: DictConfig) -> list[DictConfig]:
    """The configs of a packed group's members (``runtime.pack_with``): the job's own, then each
    member's seed and LR multiplier in its place; none of them names the group (each is the
    config its separate job composes, run key included)."""
    members = member_overrides(OmegaConf.to_container(cfg.runtime.pack_with))
    out = []
    for member in [None, *members]:
        mine = copy.deepcopy(cfg)
        with open_dict(mine):
            mine.runtime.pack_with = None
            if member is not None:
                mine.seed, mine.optim.lr_mult = member["seed"], member["lr_mult"]
        out.append(mine)
    return out


def _run_group(cfg: DictConfig, progress_position: int) -> dict:
    """A packed group job: its members resolved and validated first, then the unfinished ones
    trained as one packed model (each locked, each written as its separate run), or one after
    another where they cannot pack. The summary: the group's status and its members'."""
    configs = [resolve_config(c) for c in member_configs(cfg)]
    todo = [c for c in configs if not record_of(c).is_finished()]
    for config in configs:
        if config not in todo:
            log.info("skip %s: already finished", describe(config))
    if len(todo) < 2 or why_not_packed(todo[0]) is not None:
        summaries = [_run_config(c, progress_position) for c in todo]
        return _group_summary(summaries)
    prepare_data(todo[0])
    with contextlib.ExitStack() as locks:
        held = []
        for config in todo:
            record = record_of(config)
            try:
                locks.enter_context(record.lock())
            except RunLocked as exc:
                log.warning("skip %s: %s", describe(config), exc)
                continue
            if not record.is_finished():  # else finished by another worker meanwhile
                held.append((config, record))
        try:
            return _group_summary(_train_group(held, progress_position))
        except OSError as exc:
            if not any(store_fault(exc, c) for c, _ in held):
                raise
            raise cannot_write(exc, held[0][0]["paths"]["results_dir"]) from None


def _group_summary(summaries: Sequence[dict | None]) -> dict:
    ran = [s for s in summaries if s is not None]
    failed = any(s.get("status") == "failed" for s in ran)
    return {"status": "failed" if failed else "ok", "members": ran}


def _train_group(held: list[tuple[dict, RunRecord]], progress_position: int) -> list[dict]:
    """Train the locked, unfinished members ``held`` packed; one summary each."""
    if len(held) < 2:
        return [_train(c, r, progress_position) for c, r in held]
    runs = [Started(c, r) for c, r in held]
    configs = [run.config for run in runs]
    task = get_task(configs[0]["train"]["task"])
    try:
        outcomes = task.train_packed(
            configs,
            [run.log_epoch for run in runs],
            progress_position,
            checkpoints=[run.checkpoint for run in runs],
        )
    except GroupMismatch as exc:  # checkpoints at different epochs: each resumes on its own
        log.info("packed group trains separately: %s", exc)
        for run in runs:
            run.mirror.finish({}, exit_code=0, run_dir=run.record.path)
        return [_train(c, r, progress_position) for c, r in held]
    except Exception as exc:  # noqa: BLE001 - every member failed with the group
        error = _failure(exc, configs)
        return [_finish(run, "failed", error, {}) for run in runs]
    out = []
    for run, outcome in zip(runs, outcomes, strict=True):
        if isinstance(outcome, Diverged):
            out.append(_finish(run, "diverged", str(outcome), {}))
        else:
            out.append(_finish(run, "ok", None, outcome))
    return out
