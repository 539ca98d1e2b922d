"""Local results store, the source of truth: one folder per run, keyed by its config.

Profiles are partitions: each profile has a folder of its own, ``<results>/<profile>/``
(``profile_dir``), holding its runs and everything made from them (collected tables, figures,
verdicts, report), so runs of different profiles never meet in one table or statistic.
``<results>/<profile>/runs/<experiment>/<run_key>/`` holds ``config.json`` (resolved),
``metrics.jsonl`` (one line per epoch), ``summary.json`` and ``status.json``. Every file is
written atomically (temporary file, then rename), so a killed job never leaves a half-written
record that a later step would trust; a lock with a lease keeps two workers, on one host or
many, off the same run (normexp.tracking.lease).

Files can still be damaged afterwards (a copy cut short, a bad merge, a hand edit), so every
reader goes through ``RunRecord.check``: a finished run whose files do not pass it counts as not
finished (the next sweep retrains it) and is left out of the collected tables (the report names
it).
"""

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from normexp.errors import StoreError
from normexp.tracking import lease
from normexp.tracking.lease import RunLocked  # noqa: F401 - the store's callers catch it here

# Fields that say where output goes or how it is watched, not what is computed.
NON_IDENTITY_FIELDS = ("tracking", "paths", "hydra", "runtime")
FINISHED = ("ok", "diverged")  # a run in one of these states is never trained again
STATUSES = ("running", "ok", "diverged", "failed")
ENDED = ("ok", "diverged", "failed")  # statuses written by finish(), with a summary beside them
RECORD_FILES = ("config.json", "metrics.jsonl", "summary.json", "status.json")
# Keys that the job writes into every summary; without one, the summary is not the job's.
SUMMARY_KEYS = ("epochs", "run_key", "status")

# The profile of the committed reproduction: `make run-sweep` and `make figures` default to it.
# The Makefile reads this line (keep it one string literal).
RECORD_PROFILE = "quick"
# Folders of the store root that are not profiles (and so can never be one's name).
NOT_PROFILES = ("bench", "runs", "wandb")

log = logging.getLogger("normexp")


class OldLayout(StoreError):
    """The store holds ``<results>/runs/``: runs of all profiles in one folder, as before
    profiles were partitions. ``python -m normexp.tracking.migrate`` moves them."""


def default_results_dir() -> Path:
    """The store every command reads and writes unless told otherwise: $NORMEXP_RESULTS_DIR, or
    ./results (configs/config.yaml's paths.results_dir says the same for runs)."""
    return Path(os.environ.get("NORMEXP_RESULTS_DIR", "results"))


SWEEP_LOG = "sweeps.jsonl"  # a profile folder's log of sweeps: one JSON line per sweep command


def read_sittings(results_dir: Path) -> list[dict]:
    """The lines of a profile folder's sweep log (normexp.sweep writes one per sweep)."""
    path = Path(results_dir) / SWEEP_LOG
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def profile_dir(results_dir: Path | str, profile: str) -> Path:
    """The folder of one profile's partition of the store rooted at ``results_dir``: its runs,
    collected tables, figures, verdicts and report. The one place this mapping is made."""
    name = str(profile)
    if not name or name in NOT_PROFILES or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"profile {profile!r} cannot name a folder of the results store")
    return Path(results_dir) / name


def check_layout(results_dir: Path | str) -> None:
    """OldLayout if the store root still has the runs of every profile in one ``runs/``."""
    old = Path(results_dir) / "runs"
    if old.is_dir():
        raise OldLayout(
            f"{old} is the old store layout (runs of every profile in one folder); move each "
            f"run into {Path(results_dir)}/<profile>/runs with "
            f"`python -m normexp.tracking.migrate --results-dir {Path(results_dir)}`"
        )


# Fields added after runs were stored, at the value that leaves a run as it was: left out of
# the key there, so that the stored runs keep theirs. (section, field, neutral value).
NEUTRAL_FIELDS = (
    ("optim", "lr_mult", 1.0),
    ("train", "steps", None),
    ("model", "final_norm", True),
    ("train", "max_minutes", None),
    ("train", "test_every_epoch", False),  # what a run logs per epoch, not its final metrics
    ("norm", "grouping", None),  # GN's grouping rule; null: implied by its numbers, as before
    ("norm", "channels_per_group", None),
    ("train", "val_every", 1),  # every epoch, as runs were validated before it
)
OPTIONAL_SECTIONS = (("protocol", "lr_grid"),)  # (section, switch): left out while switch is null
# Fields that say which runs a sweep plans, never what one run computes: left out of every key
# (a check or ladder run differs from its run of record by its budget and protocol.stage).
PLANNING_FIELDS = (
    ("protocol", "check"),
    ("protocol", "check_budget_mult"),
    ("protocol", "check_profiles"),
    ("protocol", "ladder"),
    ("protocol", "ladders"),
    # GN's grouping decision: which experiment decides it, by which rule; a run's own grouping
    # reaches its key through the norm fields the decision sets (normexp/protocol/grouping.py)
    ("protocol", "grouping_decision"),
    ("protocol", "grouping_from"),
)
# Per-profile lookup tables: every profile's row sits in every run's config, but a run reads
# only its own profile's values, and those reach its key through the fields that read them
# (model.widths, train.epochs, protocol.lr_grid, ...). The tables themselves are left out of
# the key, so editing one profile's row never changes another profile's keys (a long sweep
# resumed across sessions keeps its runs). Stores keyed before: ``make migrate`` rekeys them.
LOOKUP_TABLES = ("scale",)  # top-level sections
LOOKUP_FIELDS = (("protocol", "profiles"),)  # (section, field)


def _without_neutral(identity: dict) -> dict:
    for section, name, neutral in NEUTRAL_FIELDS:
        node = identity.get(section)
        if isinstance(node, Mapping) and name in node and node[name] == neutral:
            identity[section] = {k: v for k, v in node.items() if k != name}
    for section, name in (*PLANNING_FIELDS, *LOOKUP_FIELDS):
        node = identity.get(section)
        if isinstance(node, Mapping) and name in node:
            identity[section] = {k: v for k, v in node.items() if k != name}
    for section, switch in OPTIONAL_SECTIONS:
        node = identity.get(section)
        if isinstance(node, Mapping) and node.get(switch) is None:
            identity.pop(section)
    for table in LOOKUP_TABLES:
        identity.pop(table, None)
    return identity


def run_key(config: Mapping) -> str:
    """A stable hash of the resolved config minus output/tracking fields (and minus fields at
    their neutral value: NEUTRAL_FIELDS)."""
    identity = _without_neutral(
        {k: v for k, v in config.items() if k not in NON_IDENTITY_FIELDS}
    )
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def portable(config: Mapping) -> dict:
    """The config as the store keeps it: the machine's paths left out (they say where a run
    wrote and read, not what it computed, and a committed store must not carry them)."""
    out = dict(config)
    if isinstance(out.get("paths"), Mapping):
        out["paths"] = dict.fromkeys(out["paths"])
    return out


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: the old file stays whole, no partial copy beside it
        tmp.unlink(missing_ok=True)
        exc.filename = exc.filename or str(path)
        raise


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunDamaged(ValueError):
    """A file of a run folder cannot be read as the store wrote it."""


def _read_object(path: Path) -> tuple[dict | None, str | None]:
    """(the JSON object in the file, None) or (None, what is wrong with it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path.name}: unreadable ({type(exc).__name__})"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None, f"{path.name}: unreadable JSON"
    if not isinstance(obj, dict):
        return None, f"{path.name}: not a JSON object"
    return obj, None


def _parse_metrics(text: str) -> tuple[list[dict], list[str]]:
    """(epochs, problems) of a metrics.jsonl: one JSON object per line, epochs 1, 2, 3..."""
    epochs, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"metrics.jsonl line {number}: not JSON")
            continue
        if not isinstance(obj, dict):
            problems.append(f"metrics.jsonl line {number}: not a JSON object")
            continue
        if obj.get("epoch") != len(epochs) + 1:
            problems.append(
                f"metrics.jsonl line {number}: epoch {obj.get('epoch')!r}, "
                f"expected {len(epochs) + 1}"
            )
        epochs.append(obj)
    return epochs, problems


class RunRecord:
    """The store folder of one run, in ``folder``: the partition of the run's profile
    (``profile_dir``; ``record_of`` finds it from the run's config)."""

    def __init__(self, folder: Path, experiment: str, key: str) -> None:
        self.key = key
        self.experiment = experiment
        self.path = Path(folder) / "runs" / experiment / key

    @property
    def status(self) -> dict | None:
        return _read_object(self.path / "status.json")[0]

    def is_started(self) -> bool:
        """Whether any record file exists (a folder with only a lock or temporary files, or
        none, is a job killed before start(): not a run)."""
        return any((self.path / name).exists() for name in RECORD_FILES)

    def check(self) -> list[str]:
        """What is wrong with the run's files, as the store writes them (empty: nothing, or the
        run has not started). A running run needs a readable config, status and metrics; an
        ended one also a summary with the job's keys, agreeing with its status, its folder
        and the number of epochs in its metrics."""
        if not self.is_started():
            return []
        problems = []
        _, problem = _read_object(self.path / "config.json")
        if problem:
            problems.append(problem)
        status, problem = _read_object(self.path / "status.json")
        if problem:
            problems.append(problem)
        elif status.get("status") not in STATUSES:
            problems.append(f"status.json: unknown status {status.get('status')!r}")
            status = None
        try:
            epochs, metric_problems = _parse_metrics(
                (self.path / "metrics.jsonl").read_text(encoding="utf-8")
            )
        except FileNotFoundError:
            epochs, metric_problems = [], ["metrics.jsonl missing"]
        except (OSError, UnicodeDecodeError) as exc:
            epochs, metric_problems = [], [f"metrics.jsonl: unreadable ({type(exc).__name__})"]
        problems += metric_problems
        if status is None or status["status"] not in ENDED:
            return problems
        summary, problem = _read_object(self.path / "summary.json")
        if problem:
            return [*problems, problem]
        missing = [k for k in SUMMARY_KEYS if k not in summary]
        if missing:
            return [*problems, f"summary.json incomplete: no {', '.join(missing)}"]
        if summary["status"] != status["status"]:
            problems.append(
                f"summary.json says {summary['status']!r}, status.json {status['status']!r}"
            )
        if summary["run_key"] != self.key:
            problems.append(f"summary.json is of run {summary['run_key']!r}")
        if not metric_problems and summary["epochs"] != len(epochs):
            problems.append(
                f"metrics.jsonl has {len(epochs)} epochs, summary says {summary['epochs']!r}"
            )
        return problems

    def is_finished(self) -> bool:
        """Ended as ok or diverged, with files that pass check(): a damaged run is retrained."""
        status = self.status
        return status is not None and status.get("status") in FINISHED and not self.check()

    def start(self, config: Mapping) -> None:
        """Begin (or restart) the run: config written, old metrics of an unfinished try dropped,
        and temporary files that a killed writer left behind removed (we hold the lock). Every
        record file is rewritten or removed, so the damage of an earlier try goes with it."""
        problems = self.check()
        if problems:
            log.warning("retraining damaged run %s: %s", self.path, "; ".join(problems))
        self.path.mkdir(parents=True, exist_ok=True)
        for stray in self.path.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        atomic_write_json(self.path / "config.json", portable(config))
        atomic_write_text(self.path / "metrics.jsonl", "")
        with contextlib.suppress(FileNotFoundError):
            (self.path / "summary.json").unlink()
        self.write_status("running")

    def append_metrics(self, metrics: Mapping) -> None:
        # Rewritten whole so a reader never sees a torn last line; a run has few epochs.
        path = self.path / "metrics.jsonl"
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        atomic_write_text(path, old + json.dumps(metrics, sort_keys=True) + "\n")

    def metrics(self) -> list[dict]:
        """The epochs logged so far; RunDamaged if the file does not parse as written."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        try:
            epochs, problems = _parse_metrics(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            epochs, problems = [], ["metrics.jsonl: not UTF-8 text"]
        if problems:
            raise RunDamaged(f"{self.path}: {'; '.join(problems)}")
        return epochs

    def finish(self, status: str, summary: Mapping, error: str | None = None) -> None:
        """Summary first, then status: a status of ok always has its summary beside it."""
        atomic_write_json(self.path / "summary.json", summary)
        self.write_status(status, error)

    def write_status(self, status: str, error: str | None = None) -> None:
        assert status in STATUSES, status
        record = {"status": status, "time": time.time(), "host": socket.gethostname()}
        if error:
            record["error"] = error
        atomic_write_json(self.path / "status.json", record)

    @property
    def lock_path(self) -> Path:
        return self.path / "run.lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run exclusively while the block trains it (normexp.tracking.lease: a stale
        lock is taken over, a live one raises RunLocked)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with lease.held(self.lock_path):
            yield

    def remove_stale_lock(self) -> bool:
        """Remove run.lock if it is stale (a job killed outright): a live one stays."""
        return lease.remove_if_stale(self.lock_path)


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file in it: StoreError naming the path if the store
    cannot be written (read-only, full, no permission, a parent that cannot be made)."""
    probe = Path(folder) / f".write-probe.{os.getpid()}.tmp"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(probe, "normexp\n")
        probe.unlink()
    except OSError as exc:
        raise cannot_write(exc, folder) from None


def cannot_write(exc: OSError, fallback: Path | str) -> StoreError:
    """The one line of a store that cannot be written, naming the path (``fallback`` when the
    error names none)."""
    return StoreError(f"paths.results_dir: cannot write {exc.filename or fallback}: {exc.strerror}")


def record_of(config: Mapping) -> RunRecord:
    """The store folder of the run a resolved config describes: in its profile's partition."""
    results = config["paths"]["results_dir"]
    check_layout(results)
    folder = profile_dir(results, config["profile"])
    return RunRecord(folder, config["claim"]["name"], run_key(config))


def selection_path(folder: Path, experiment: str) -> Path:
    """Where the LR protocol writes an experiment's selection (normexp.protocol.plan), in a
    profile's ``folder`` (``profile_dir``)."""
    return Path(folder) / "runs" / experiment / "selection.json"


def experiments_in_store(folder: Path) -> list[str]:
    """The experiments with runs in a profile's folder."""
    runs = Path(folder) / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def iter_records(folder: Path, experiment: str) -> Iterator[RunRecord]:
    """The run folders of one experiment in a profile's ``folder``."""
    runs = Path(folder) / "runs" / experiment
    if not runs.is_dir():
        return
    for child in sorted(runs.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            yield RunRecord(folder, experiment, child.name)
