"""One job of a sweep: the store decides whether it runs; W&B mirrors what it does."""

import errno
import logging
import traceback
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from normexp.errors import StoreError
from normexp.tasks import get_task
from normexp.tracking.provenance import provenance
from normexp.tracking.store import FINISHED, RunLocked, RunRecord, cannot_write, record_of
from normexp.tracking.wandb_mirror import WandbMirror, run_identity
from normexp.train import Diverged
from normexp.train.device import pick_device
from normexp.validate import resolve_config

log = logging.getLogger("normexp")
HEADLINE_METRICS = ("test_acc", "test_psnr", "test_bpc", "test_ppl")  # the first one present
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
        return _run_job(cfg, progress_position)
    except StoreError as exc:
        if not in_sweep:
            raise
        log.error("normexp: error: %s", exc)
        return None


def _run_job(cfg: DictConfig, progress_position: int) -> dict | None:
    config = resolve_config(cfg)  # validated plain dict; ConfigError before anything is written
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


def _train(config: dict, record: RunRecord, progress_position: int) -> dict:
    record.start(config)
    mirror = WandbMirror(
        mode=config["tracking"]["mode"],
        project=config["tracking"]["project"],
        run_dir=record.path,
        **run_identity(config, record.key),
    )

    def log_epoch(metrics: dict) -> None:
        record.append_metrics(metrics)
        mirror.log(metrics)

    status, error, summary = "ok", None, {}
    checkpoint = record.path / CHECKPOINT
    try:
        task = get_task(config["train"]["task"])
        summary = task.train(config, log_epoch, progress_position, checkpoint=checkpoint)
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed run; the sweep goes on
        if isinstance(exc, OSError) and store_fault(exc, config):
            raise  # the store's fault, not the run's: it stays resumable from its checkpoint
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("%s failed:\n%s", describe(config), traceback.format_exc())
    if status != "ok":
        epochs = record.metrics()
        summary = {**(epochs[-1] if epochs else {}), "epochs": len(epochs)}
    summary = {
        **summary,
        "status": status,
        "run_key": record.key,
        "provenance": provenance(str(pick_device(config["train"]["device"]))),
    }
    mirror.finish(summary, exit_code=0 if status == "ok" else 1, run_dir=record.path)
    if mirror.error:  # recorded, never fatal: the local store is the source of truth
        summary["wandb_error"] = mirror.error
    record.finish(status, summary, error)
    if status in FINISHED:
        checkpoint.unlink(missing_ok=True)  # a finished run is never resumed
    headline = next((k for k in HEADLINE_METRICS if k in summary), None)
    result = f" {headline}={summary[headline]:.4g}" if headline else ""
    log.info("%s %s [%s]%s", status, describe(config), record.key, result)
    return summary
