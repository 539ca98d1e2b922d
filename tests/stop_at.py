"""A Hydra callback for tests: SIGTERM to the sweep at a named moment of its life, so that an
interrupt test hits that moment every time instead of guessing it with a timer. Added on the
command line after the suite's own callback:

    +hydra.callbacks.stop_at._target_=tests.stop_at.StopAt +hydra.callbacks.stop_at.moment=...

Moments: ``planned`` (every job composed, the store checked, no job started: the sweep process
signals itself), ``jobs_start`` (a worker, as its first job starts, signals the sweep process
only, which must stop the workers itself), ``closing`` (every job returned, before the closing
count: Hydra calls this callback's on_multirun_end before the suite's)."""

import os
import signal
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

MOMENTS = ("planned", "jobs_start", "closing")


class StopAt(Callback):
    def __init__(self, moment: str) -> None:
        assert moment in MOMENTS, moment
        self.moment = moment
        self.sweep_pid = os.getpid()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_pid = os.getpid()
        if self.moment == "planned":
            os.kill(self.sweep_pid, signal.SIGTERM)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.moment == "jobs_start" and os.getpid() != self.sweep_pid:
            os.kill(self.sweep_pid, signal.SIGTERM)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.moment == "closing":
            os.kill(self.sweep_pid, signal.SIGTERM)
