"""Weights & Biases mirror of the results store.

W&B only mirrors: any failure of it (no network, bad credentials, its own exception) is recorded
and never loses or blocks the local result.
"""

import logging
import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from normexp.errors import ConfigError

log = logging.getLogger(__name__)
MODES = ("auto", "offline", "online", "disabled")


def resolve_mode(mode: str) -> str:
    """``auto``: WANDB_MODE if set; online when the user has logged in; else offline."""
    if mode not in MODES:
        raise ConfigError("tracking.mode", f"unknown {mode!r}; allowed: {', '.join(MODES)}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    return "online" if _logged_in() else "offline"


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


class WandbMirror:
    """One W&B run per job; every call is guarded, ``error`` holds the first failure."""

    def __init__(
        self,
        mode: str,
        project: str,
        group: str,
        name: str,
        tags: Sequence[str],
        config: Mapping,
        run_dir: Path,
        job_type: str = "train",
    ) -> None:
        self.mode = resolve_mode(mode)
        self.error: str | None = None
        self.run = None
        if self.mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(
                project=project,
                group=group,
                name=name,
                tags=list(tags),
                job_type=job_type,
                config=dict(config),
                dir=str(run_dir),
                mode=self.mode,
                reinit="create_new",
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
        except Exception as exc:  # noqa: BLE001 - the mirror must never take the run down
            self._fail("init", exc)

    def _fail(self, what: str, exc: BaseException) -> None:
        if self.error is None:
            self.error = f"wandb {what} failed: {type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("%s (the local result is kept)", self.error)

    def log(self, metrics: Mapping, step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            self.run.log(dict(metrics), step=step)
        except Exception as exc:  # noqa: BLE001
            self._fail("log", exc)

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({k: wandb.Image(str(p)) for k, p in images.items()})
        except Exception as exc:  # noqa: BLE001
            self._fail("log", exc)

    def finish(self, summary: Mapping, exit_code: int) -> None:
        """Always called, also when the job failed."""
        if self.run is None:
            return
        try:
            self.run.summary.update(dict(summary))
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            self._fail("finish", exc)
        self.run = None

    @property
    def run_path(self) -> str | None:
        return None if self.run is None else str(getattr(self.run, "dir", ""))
