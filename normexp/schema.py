"""The config's schema: every field a user can set, its type, range and choices, in one place.

``validate(config)`` walks the resolved plain config and refuses the first bad field with
ConfigError (``<field>: <what is allowed>``) before anything runs; ``validate_hydra`` does the
same for the Hydra settings the suite relies on. Rules that tie fields together (n_train + n_val,
a norm that does not apply to a model, ...) are the tasks' and the norms' check functions, run
after this one. The table of fields in docs/bad-input.md is ``fields_table()``:
``python -m normexp.schema`` rewrites it.

The yaml groups are not registered as Hydra structured configs: a group's options have
different keys (norm, model, train), experiments add their own top-level nodes (arm, devices),
and OmegaConf would type-check only at composition, in a multi-line format, and not the
interpolated values that most fields are. Checking the resolved values covers all of them.
"""

import functools
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normexp.errors import ConfigError

MAX_SEED = 2**32 - 1  # numpy's seed range; Python's and torch's are wider
MAX_THREADS = 1024  # absolute; a run is also held to this machine's CPU count (validate.py)
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a folder name, never '..' or hidden


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


@dataclass(frozen=True)
class Int:
    lo: int = 1
    hi: int | None = None
    null: bool = False

    def ok(self, v: object) -> bool:
        return _is_int(v) and v >= self.lo and (self.hi is None or v <= self.hi)

    def describe(self) -> str:
        if self.hi is None:
            return f"an integer >= {self.lo}"
        return f"an integer from {self.lo} to {self.hi}"


@dataclass(frozen=True)
class Num:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False
    null: bool = False

    def ok(self, v: object) -> bool:
        if not _is_num(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return self.hi is None or not (v > self.hi or (self.hi_open and v == self.hi))

    def describe(self) -> str:
        if self.hi is None:
            return f"a finite number {'>' if self.lo_open else '>='} {_num(self.lo)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"a number in {left}{_num(self.lo)}, {_num(self.hi)}{right}"


@dataclass(frozen=True)
class Bool:
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, str) and v in self.options

    def describe(self) -> str:
        return ", ".join(self.options)


@dataclass(frozen=True)
class Name:
    """A string that becomes a folder or project name."""

    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, str) and NAME_PATTERN.fullmatch(v) is not None

    def describe(self) -> str:
        return "a non-empty name of letters, digits, '_', '-' and '.', not starting with '.'"


@dataclass(frozen=True)
class Folder:
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, str) and v.strip() != "" and "\0" not in v

    def describe(self) -> str:
        return "a non-empty path"


@dataclass(frozen=True)
class IntList:
    lo: int = 1
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, list) and len(v) > 0 and all(_is_int(w) and w >= self.lo for w in v)

    def describe(self) -> str:
        return f"a non-empty list of integers >= {self.lo}"


@dataclass(frozen=True)
class NumList:
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, list) and all(_is_num(w) and w > 0 for w in v)

    def describe(self) -> str:
        return "a list of finite numbers > 0"


@dataclass(frozen=True)
class ChoiceList:
    options: tuple[str, ...]
    null: bool = False

    def ok(self, v: object) -> bool:
        return isinstance(v, list) and all(isinstance(w, str) and w in self.options for w in v)

    def describe(self) -> str:
        return f"a list of: {', '.join(self.options)}"


@dataclass(frozen=True)
class Interval:
    """[low, high] with 0 < low <= high, both finite."""

    null: bool = False

    def ok(self, v: object) -> bool:
        return (
            isinstance(v, list) and len(v) == 2 and all(map(_is_num, v)) and 0 < v[0] <= v[1]
        )

    def describe(self) -> str:
        return "[low, high] with 0 < low <= high"


@dataclass(frozen=True)
class SubGrid:
    """A declared sub-grid: {dotted config field: "v1,v2" or [v1, v2]}, at least one field."""

    null: bool = False

    @staticmethod
    def _values_ok(w: object) -> bool:
        if isinstance(w, str):
            return w.strip() != ""
        scalars = isinstance(w, list) and all(isinstance(x, str | int | float) for x in w)
        return scalars and len(w) > 0

    def ok(self, v: object) -> bool:
        return (
            isinstance(v, Mapping)
            and len(v) > 0
            and all(isinstance(k, str) and k != "" and self._values_ok(w) for k, w in v.items())
        )

    def describe(self) -> str:
        return '{field: "v1,v2" or [v1, v2], ...} with at least one field'


Rule = (
    Int | Num | Bool | Choice | Name | Folder | IntList | NumList | ChoiceList | Interval | SubGrid
)


@dataclass(frozen=True)
class Field:
    path: str  # dotted, as on the command line
    rule: Rule
    needs: tuple[str, tuple[str, ...]] | None = None  # present and checked when path's value in
    optional: bool = False  # may be absent (a constructor default applies)
    doc: str = ""

    def allowed(self) -> str:
        text = self.rule.describe()
        return text + (" or null" if self.rule.null else "")

    def check(self, value: object) -> None:
        if value is None and self.rule.null:
            return
        if self.rule.ok(value):
            return
        if isinstance(self.rule, Choice):
            raise ConfigError(self.path, f"unknown {show(value)}; allowed: {self.allowed()}")
        raise ConfigError(self.path, f"{show(value)} is not allowed; must be {self.allowed()}")


def _choices() -> dict[str, Any]:
    """The allowed names (and the norms' parameter rules), taken from the code that implements
    them."""
    from normexp.data.ptb import LEVELS
    from normexp.models import MODELS
    from normexp.models.blocks import ACTIVATIONS
    from normexp.models.cnn import HEADS
    from normexp.models.lstm_cells import CELLS
    from normexp.models.resnet import SHORTCUTS
    from normexp.norms.registry import NORMS, norm_spec, param_rules
    from normexp.norms.validity import POSITIONS
    from normexp.norms.weight_side import WEIGHT_SIDE
    from normexp.protocol.select import SELECT_ON, STAGES
    from normexp.tasks import all_tasks
    from normexp.tracking.wandb_mirror import MODES
    from normexp.train.device import DEVICES
    from normexp.train.image_to_image import LOSSES, TARGETS
    from normexp.train.instrumented import PROBES
    from normexp.train.optim import LR_SCALING, OPTIMIZERS, SCHEDULES

    norm_spec("none")  # fills the registry
    return {
        "profile": PROFILES,
        "mode": MODES,
        "task": tuple(all_tasks()),
        "device": DEVICES,
        "probes": PROBES,
        "loss": tuple(LOSSES),
        "target": tuple(TARGETS),
        "optim": OPTIMIZERS,
        "lr_scaling": LR_SCALING,
        "schedule": SCHEDULES,
        "data": ("cifar10", "ptb"),
        "level": LEVELS,
        "model": (*MODELS, "generator", "lstm"),
        "activation": tuple(sorted(ACTIVATIONS)),
        "head": HEADS,
        "shortcut": SHORTCUTS,
        "weight_side": WEIGHT_SIDE,
        "norm": tuple(sorted(set(NORMS) | set(CELLS))),
        "position": POSITIONS,
        "select_on": SELECT_ON,
        "stage": STAGES,
        "norm_params": param_rules(),
    }


PROFILES = ("smoke", "quick", "standard", "paper")
CLASSIFY = ("classification", "instrumented_classification")
IMAGES = ("classification", "instrumented_classification", "image_to_image")


@functools.cache
def fields() -> tuple[Field, ...]:
    """Every field of a run's config a user can set (hydra's own are in HYDRA_FIELDS)."""
    c = _choices()
    task, model, data = "train.task", "model.name", "data.name"
    F = Field
    return (
        F("profile", Choice(c["profile"]), doc="scale of every run"),
        F("seed", Int(0, MAX_SEED)),
        F("claim.id", Name()),
        F("claim.name", Name(), doc="the run folder's parent under results/<profile>/runs/"),
        F(
            "target.train_acc",
            Num(0, 1, lo_open=True, hi_open=True, null=True),
            optional=True,
            doc="C9: the training accuracy whose steps-to-reach are compared",
        ),
        F("paths.results_dir", Folder()),
        F("paths.data_dir", Folder(null=True)),
        F("runtime.threads", Int(1, MAX_THREADS), doc="also at most this machine's CPUs"),
        F("runtime.progress", Bool()),
        F("runtime.channels_last", Bool(), optional=True),
        F("tracking.mode", Choice(c["mode"])),
        F("tracking.project", Name()),
        F("train.task", Choice(c["task"])),
        F("train.epochs", Int(1)),
        F("train.steps", Int(1, null=True), optional=True, doc="null: a budget of train.epochs"),
        F(
            "train.max_minutes",
            Num(0, lo_open=True, null=True),
            optional=True,
            doc="null: no wall budget; else no epoch starts that would end past it",
        ),
        F("train.batch_size", Int(1)),
        F("train.eval_batch_size", Int(1)),
        F("train.device", Choice(c["device"]), doc="cuda: a GPU must be visible"),
        F("train.deterministic", Bool()),
        F("train.amp", Bool(), optional=True),
        F("train.precise_bn_batches", Int(0), optional=True),
        F("train.probe_every", Int(0), (task, ("instrumented_classification",))),
        F("train.probes", ChoiceList(c["probes"]), (task, ("instrumented_classification",))),
        F("train.probe_step_sizes", NumList(), (task, ("instrumented_classification",))),
        F("train.loss", Choice(c["loss"]), (task, ("image_to_image",))),
        F("train.samples", Int(0), (task, ("image_to_image",))),
        F("train.corruption.contrast", Interval(), (task, ("image_to_image",))),
        F("train.corruption.colour_gain", Interval(), (task, ("image_to_image",))),
        F("train.corruption.brightness", Num(0, 1), (task, ("image_to_image",))),
        F("train.corruption.colour_offset", Num(0, 1), (task, ("image_to_image",))),
        F("train.corruption.noise", Num(0), (task, ("image_to_image",)), optional=True),
        F("train.target", Choice(c["target"]), (task, ("image_to_image",)), optional=True),
        F("train.seq_len", Int(1), (task, ("language_model",))),
        F("train.long_eval_factor", Int(1), (task, ("language_model",))),
        F("optim.name", Choice(c["optim"])),
        F("optim.lr_per_128", Num(0, lo_open=True)),
        F("optim.lr_scaling", Choice(c["lr_scaling"])),
        F("optim.lr_mult", Num(0, lo_open=True), optional=True, doc="x the batch-scaled LR"),
        F("optim.momentum", Num(0, 1), ("optim.name", ("sgd",))),
        F("optim.nesterov", Bool(), ("optim.name", ("sgd",))),
        F("optim.weight_decay", Num(0)),
        F("optim.decay_norm_and_bias", Bool()),
        F("optim.schedule", Choice(c["schedule"])),
        F("optim.warmup_frac", Num(0, 1, hi_open=True)),
        F("optim.l1", Num(0), optional=True),
        F("optim.clip_grad_norm", Num(0, lo_open=True, null=True), optional=True),
        F("protocol.lr_grid", NumList(null=True), optional=True, doc="null: no LR selection"),
        F("protocol.selection_seeds", IntList(0), optional=True),
        F("protocol.select_on", Choice(c["select_on"]), optional=True),
        F("protocol.max_widen", Int(0), optional=True),
        F("protocol.select_batch_size", Int(1, null=True), optional=True),
        F("protocol.check", SubGrid(null=True), optional=True,
          doc="the cells the convergence check trains at twice the budget; null: none"),
        F("protocol.check_budget_mult", Int(2), optional=True, doc="the check run's budget x"),
        F("protocol.check_profiles", ChoiceList(PROFILES, null=True), optional=True,
          doc="the profiles whose sweeps run the check stage; null: every profile"),
        F("protocol.stage", Choice(c["stage"]), optional=True),
        F("data.name", Choice(c["data"])),
        F("data.download", Bool()),
        F("data.verify", Bool(), (data, ("cifar10",))),
        F("data.n_train", Int(1, null=True), (data, ("cifar10",))),
        F("data.n_val", Int(1), (data, ("cifar10",))),
        F("data.n_test", Int(1, null=True), (data, ("cifar10",))),
        F("data.augment", Bool(), (data, ("cifar10",))),
        F("data.level", Choice(c["level"]), (data, ("ptb",))),
        F("data.train_tokens", Int(2, null=True), (data, ("ptb",))),
        F("data.valid_tokens", Int(2, null=True), (data, ("ptb",))),
        F("data.test_tokens", Int(2, null=True), (data, ("ptb",))),
        F("model.name", Choice(c["model"])),
        F("model.widths", IntList(1), (model, ("cnn", "generator"))),
        F("model.convs_per_stage", Int(1), (model, ("cnn",))),
        F(
            "model.activation",
            Choice(c["activation"]),
            (model, ("cnn", "mlp", "generator", "resnet")),
        ),
        F("model.head", Choice(c["head"]), optional=True),
        F("model.weight_side", Choice(c["weight_side"]), optional=True),
        F(
            "model.final_norm",
            Bool(),
            (model, ("cnn",)),
            optional=True,
            doc="false: no norm in the last conv block (C3's control)",
        ),
        F("model.hidden", Int(1), (model, ("mlp", "lstm"))),
        F("model.depth", Int(1), (model, ("mlp", "resnet")), doc="resnet: 6n + 2"),
        F("model.width_mult", Int(1), (model, ("resnet",))),
        F("model.shortcut", Choice(c["shortcut"]), (model, ("resnet",))),
        F("model.res_blocks", Int(0), (model, ("generator",))),
        F("model.skips", Bool(), (model, ("generator",))),
        F("model.emb", Int(1), (model, ("lstm",))),
        F("model.layers", Int(1), (model, ("lstm",))),
        F("model.dropout", Num(0, 1, hi_open=True), (model, ("lstm",))),
        F("model.tie_weights", Bool(), (model, ("lstm",))),
        F("norm.name", Choice(c["norm"])),
        F("norm.position", Choice(c["position"])),
        # each norm's parameters, with the rules its registry entry gives them
        *(F(f"norm.{name}", rule, optional=True) for name, rule in c["norm_params"].items()),
    )


def max_jobs() -> int:
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class JobsRule:
    """joblib's n_jobs: -1 (one per core) or a bounded positive count."""

    null: bool = False

    def ok(self, v: object) -> bool:
        return _is_int(v) and (v == -1 or 1 <= v <= max_jobs())

    table = "-1 (one per core) or an integer from 1 to 4 x this machine's CPUs"

    def describe(self) -> str:
        return f"-1 (one per core) or an integer from 1 to {max_jobs()} (4 x this machine's CPUs)"


@dataclass(frozen=True)
class Off:
    null: bool = False

    def ok(self, v: object) -> bool:
        return v is False

    def describe(self) -> str:
        return "false (paths.results_dir is relative to where you run the command)"


HYDRA_FIELDS = (
    Field("hydra.job.chdir", Off()),  # type: ignore[arg-type]
    Field("hydra.launcher.n_jobs", JobsRule(), optional=True),  # type: ignore[arg-type]
)


_MISSING = object()


def field(path: str) -> Field | None:
    """The schema's entry for a dotted path, if it has one."""
    return next((f for f in (*fields(), *HYDRA_FIELDS) if f.path == path), None)


def show(value: object) -> str:
    """A value as the user typed it: true/false/null, strings quoted."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def lookup(config: Mapping, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _walk(config: Mapping, schema: tuple[Field, ...]) -> None:
    for f in schema:
        if f.needs is not None and lookup(config, f.needs[0]) not in f.needs[1]:
            continue
        value = lookup(config, f.path)
        if value is _MISSING:
            if f.optional:
                continue
            raise ConfigError(f.path, f"missing; must be {f.allowed()}")
        f.check(value)


# Fields whose values other fields read as keys (${scale.${profile}...}): checked on the
# composed config before it is resolved, so that a bad one is named, not what reads it.
KEY_FIELDS = ("profile", "data.level", "norm.name")


def validate(config: Mapping) -> None:
    """Refuse the first field of the resolved plain config whose value is not allowed."""
    _walk(config, fields())


def validate_hydra(hydra: Mapping) -> None:
    """The Hydra settings a run depends on (``hydra`` is the composed config's hydra node)."""
    _walk({"hydra": hydra}, HYDRA_FIELDS)


# --- the table of fields in docs/bad-input.md --------------------------------------------

FIELDS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "bad-input.md"
BEGIN = "<!-- fields: generated by `python -m normexp.schema`; do not edit by hand -->"
END = "<!-- end of fields -->"


def fields_table() -> str:
    """The table of every field and what it allows, as docs/bad-input.md shows it."""
    rows = ["| field | allowed | checked when |", "|---|---|---|"]
    for f in (*fields(), *HYDRA_FIELDS):
        when = f"`{f.needs[0]}` is {' or '.join(f.needs[1])}" if f.needs else "always"
        if f.optional:
            when += ", if set"
        allowed = getattr(f.rule, "table", None) or f.allowed()
        if isinstance(f.rule, Choice):
            allowed = f"one of {allowed}"
        allowed = allowed.replace("|", "\\|") + (f"; {f.doc}" if f.doc else "")
        rows.append(f"| `{f.path}` | {allowed} | {when} |")
    return "\n".join(rows)


def fields_block(text: str) -> str:
    """The generated part of the page's text (between the markers)."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write_fields_page(path: Path = FIELDS_PAGE) -> None:
    text = path.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{fields_table()}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    write_fields_page()
    print(f"wrote the field table into {FIELDS_PAGE}", file=sys.stderr)
