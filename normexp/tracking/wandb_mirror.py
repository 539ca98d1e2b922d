"""Weights & Biases mirror of the results store.

W&B only mirrors: any failure of it (no network, bad credentials, its own exception) is recorded
and never loses or blocks the local result. Online mode is bounded: the server is probed first
(seconds), ``wandb.init`` and ``finish`` have timeouts, and after the first online failure in a
process every later run of that process goes offline (one warning line), to be synced later.

A live run (normexp.job) and a run replayed from the store (normexp.tracking.wandb_replay) are
opened, logged and finished by the same code (``WandbMirror.for_run``, ``log``, ``finish`` with
``exit_code``), so they carry the same id, name, group, tags, config and metric names.
"""

import logging
import netrc
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from normexp.errors import ConfigError
from normexp.tracking.store import portable

log = logging.getLogger(__name__)
MODES = ("auto", "offline", "online", "disabled")

PROBE_TIMEOUT_S = 3.0  # TCP connect to the W&B server before an online init
INIT_TIMEOUT_S = 20.0  # wandb.init online (W&B's default is 90 s)
FINISH_TIMEOUT_S = 60.0  # upload at finish; past it W&B marks the run crashed, the store keeps it
_online_failure: str | None = None  # process-wide: set by the first online failure

# Store metric name prefix -> W&B namespace. The store's names stay as they are.
NAMESPACES = (
    ("train_", "train"),
    ("valid_", "val"),
    ("val_", "val"),
    ("test_", "test"),
    ("probe_", "probe"),
    ("weight_", "weights"),
)
STEP_METRIC = "epoch"
STAGE_PATH = "protocol.stage"  # select, record, ladder or check (normexp/protocol/select.py)
RECORD_STAGE = "record"  # the runs of record; a stored run without the field is one
PERF_SUFFIXES = ("_per_s", "_time_s")
# wandb.Settings of a live run: its console output (log lines, progress bars) is captured into
# W&B's Logs tab ("wrap": the write methods of sys.stdout/stderr, the terminal is left as it is);
# no system metrics (a CPU sweep's workers would each sample the machine).
LIVE_SETTINGS = {
    "silent": True,
    "console": "wrap",
    "x_disable_stats": True,
    "init_timeout": INIT_TIMEOUT_S,
    "finish_timeout": FINISH_TIMEOUT_S,
}
# Files a task writes into its run folder that are logged as media at finish.
MEDIA_FILES = {"media/samples": "samples.png"}

# (tag label, config path) for every factor some experiment sweeps.
FACTORS = (
    ("norm", "norm.name"),
    ("position", "norm.position"),
    ("batch", "train.batch_size"),
    ("seed", "seed"),
    ("model", "model.name"),
    ("activation", "model.activation"),
    ("lr_per_128", "optim.lr_per_128"),
    ("arm", "arm.name"),
    ("per_device", "devices.per_device"),
    ("groups", "norm.num_groups"),
)
# Experiment -> the factors beyond norm/position/batch/seed that tell its runs apart in a name.
NAME_EXTRAS = {
    "bn_position": (("model.name", ""), ("model.activation", "")),
    "smoothness": (("optim.lr_per_128", "lr"),),
    "weight_side": (("arm.name", ""),),
    "gn_grouping": (("model.name", ""), ("arm.name", "")),  # GN's grouping arms, CNN and ResNet
    "bn_small_batch_devices": (("devices.per_device", "pd"),),
    "gpu_small_batch_devices": (("devices.per_device", "pd"),),
    # retired (gn_grouping replaced it): the names of its committed runs
    "bn_small_batch_groups": (("norm.num_groups", "g"),),
    "norm_position": (("model.name", ""),),
    "not_ics": (("model.name", ""),),  # from standard on the CNN and the ResNet-20
    # a batch-2 cell's LR is selected at batch 32: its selection runs name the cell they serve
    "bn_small_batch_resnet": (("cell.batch", "cell"),),
}


def wandb_key(key: str) -> str:
    """The W&B name of a store metric: ``train_loss`` -> ``train/loss``, ``valid_bpc`` ->
    ``val/bpc``, ``best_val_acc`` -> ``val/best_acc``, ``lr`` -> ``train/lr``,
    ``images_per_s`` -> ``perf/images_per_s``; anything else -> ``run/<key>``."""
    if key == STEP_METRIC:
        return key
    if key.startswith("best_"):
        namespace, _, rest = wandb_key(key[len("best_") :]).partition("/")
        return f"{namespace}/best_{rest}"
    for prefix, namespace in NAMESPACES:
        if key.startswith(prefix):
            return f"{namespace}/{key[len(prefix) :]}"
    if key == "lr":
        return "train/lr"
    if key.endswith(PERF_SUFFIXES):
        return f"perf/{key}"
    return f"run/{key}"


def wandb_metrics(metrics: Mapping) -> dict:
    return {wandb_key(k): v for k, v in metrics.items()}


def _get(config: Mapping, path: str):
    node = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _budget(config: Mapping) -> str:
    """A run's budget in its name: ``s<steps>`` where a step budget is set, else ``e<epochs>``."""
    steps = _get(config, "train.steps")
    return f"s{steps}" if steps is not None else f"e{_get(config, 'train.epochs')}"


def run_identity(config: Mapping, key: str) -> dict:
    """The W&B id, name, group, tags and config of a store run. The id is the run key, so a
    resumed run continues its W&B run; the config is the store's (no machine paths), with
    ``protocol.stage`` always set (runs stored before the field were runs of record), so a
    dashboard or a user filters the runs of record on it, as on the ``stage:`` tag."""
    experiment = config["claim"]["name"]
    norm = config["norm"]
    name = (
        f"{experiment}/{norm['name']}-{norm['position']}"
        f"-b{config['train']['batch_size']}-s{config['seed']}"
    )
    for path, prefix in NAME_EXTRAS.get(experiment, ()):
        if _get(config, path) is not None:
            name += f"-{prefix}{_get(config, path)}"
    # The fair protocol's runs beside the runs of record: a selection run per LR multiplier,
    # ladder runs at lower budgets, a check run at the doubled budget (README "Fair protocol").
    stage = _get(config, STAGE_PATH) or RECORD_STAGE
    if stage == "select":
        name += f"-select-lr{_get(config, 'optim.lr_mult'):g}x"
    elif stage in ("ladder", "check"):
        name += f"-{stage}-{_budget(config)}"
    tags = [config["claim"]["id"], experiment, f"stage:{stage}"]
    tags += [f"{label}:{_get(config, p)}" for label, p in FACTORS if _get(config, p) is not None]
    stored = portable(config)
    stored["protocol"] = {**(stored.get("protocol") or {}), "stage": stage}
    return {
        "run_id": key,
        "name": name,
        "group": experiment,
        "tags": tags,
        "config": {**stored, "run_key": key},
    }


def exit_code(status: str) -> int:
    """The exit code a run's W&B run finishes with: 0 for ``ok``, 1 for ``diverged`` or
    ``failed`` (W&B shows them as failed)."""
    return 0 if status == "ok" else 1


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


def _unreachable(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the server cannot be reached within ``timeout`` (DNS included), or None."""
    url = urlparse(base_url)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return f"bad base URL {base_url!r}"
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    # In a thread: name resolution has no timeout of its own.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer within {timeout:.0f} s"
    return outcome[0] and f"{base_url} unreachable ({outcome[0]})"


def _go_offline(reason: str) -> None:
    global _online_failure
    if _online_failure is None:
        _online_failure = reason
        log.warning(
            "wandb online failed (%s); this and later runs of this process are written offline "
            "(upload them with `wandb sync`, see README)",
            reason,
        )


class WandbMirror:
    """One W&B run per job; every call is guarded, ``error`` holds the first failure.

    With ``run_id`` the W&B run is resumed when it exists (``resume="allow"``); ``settings``
    override LIVE_SETTINGS (wandb.Settings fields)."""

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
        run_id: str | None = None,
        settings: Mapping | None = None,
    ) -> None:
        self.mode = resolve_mode(mode)
        self.settings = {**LIVE_SETTINGS, **(settings or {})}
        self.error: str | None = None
        self.run = None
        if self.mode == "disabled":
            return
        try:
            import wandb  # only when a run mirrors to W&B (half a second to import)

            if self.mode == "online" and _online_failure is not None:
                self.mode = "offline"
            if self.mode == "online":
                # The environment first: W&B's settings object may predate a change to it.
                url = os.environ.get("WANDB_BASE_URL") or wandb.setup().settings.base_url
                reason = _unreachable(url)
                if reason:
                    _go_offline(reason)
                    self.mode = "offline"
            kwargs = {
                "project": project,
                "group": group,
                "name": name,
                "tags": list(tags),
                "job_type": job_type,
                "config": dict(config),
                "dir": str(run_dir),
                "reinit": "create_new",
            }
            if run_id is not None:
                kwargs.update(id=run_id, resume="allow")
            kwargs["settings"] = wandb.Settings(**self.settings)
            try:
                self.run = wandb.init(mode=self.mode, **kwargs)
            except Exception as exc:  # noqa: BLE001
                if self.mode != "online":
                    raise
                _go_offline(f"{type(exc).__name__}: {exc}".splitlines()[0])
                self.mode = "offline"
                self.run = wandb.init(mode=self.mode, **kwargs)
            self._define_metrics()
        except Exception as exc:  # noqa: BLE001 - the mirror must never take the run down
            self._fail("init", exc)

    @classmethod
    def for_run(
        cls,
        config: Mapping,
        key: str,
        run_dir: Path,
        mode: str | None = None,
        settings: Mapping | None = None,
    ) -> "WandbMirror":
        """The W&B run of the store run ``key`` of this resolved ``config`` (``run_identity``),
        in the project and mode its ``tracking`` section names (``mode`` overrides it), its
        files under ``run_dir``."""
        return cls(
            mode=mode or config["tracking"]["mode"],
            project=config["tracking"]["project"],
            run_dir=run_dir,
            settings=settings,
            **run_identity(config, key),
        )

    def _define_metrics(self) -> None:
        """Every namespace plotted against the epoch, so resumed runs line up."""
        self.run.define_metric(STEP_METRIC)
        namespaces = {ns for _, ns in NAMESPACES} | {"perf"}
        for namespace in sorted(namespaces):
            self.run.define_metric(f"{namespace}/*", step_metric=STEP_METRIC)

    def _fail(self, what: str, exc: BaseException) -> None:
        if self.error is None:
            self.error = f"wandb {what} failed: {type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("%s (the local result is kept)", self.error)

    def log(self, metrics: Mapping) -> None:
        """One epoch's store metrics, under their W&B names (``epoch`` is the x axis)."""
        if self.run is None:
            return
        try:
            self.run.log(wandb_metrics(metrics))
        except Exception as exc:  # noqa: BLE001
            self._fail("log", exc)

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self.run is None:
            return
        try:
            import wandb  # only when a run mirrors to W&B (half a second to import)

            self.run.log({k: wandb.Image(str(p)) for k, p in images.items()})
        except Exception as exc:  # noqa: BLE001
            self._fail("log", exc)

    def finish(self, summary: Mapping, exit_code: int, run_dir: Path | None = None) -> None:
        """Always called, also when the job failed. The summary goes under W&B names; the media
        a task wrote into ``run_dir`` (MEDIA_FILES) are logged first."""
        if self.run is None:
            return
        if run_dir is not None:
            media = {k: run_dir / f for k, f in MEDIA_FILES.items() if (run_dir / f).exists()}
            if media:
                self.log_images(media)
        try:
            self.run.summary.update(wandb_metrics(summary))
            self.run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            self._fail("finish", exc)
        self.run = None

    @property
    def run_path(self) -> str | None:
        return None if self.run is None else str(getattr(self.run, "dir", ""))
