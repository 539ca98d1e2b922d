"""The config's schema: every field a user can set, its type, range and choices, in one place.

``validate(config)`` walks the resolved plain config and refuses the first bad field with
ConfigError (``<field>: <what is allowed>``) before anything runs; ``validate_hydra`` does the
same for the Hydra settings the suite relies on. Rules that tie fields together (n_train + n_val,
a norm that does not apply to a model, ...) are the tasks' and the norms' check functions, run
after this one. The table of fields in docs/bad-input.md is ``fields_table()``:
``python -m normexp.schema`` rewrites it. The types of rule (Int, Num, Choice, ..., Field) are
normexp.rules', imported here so that they are also schema.Int, schema.Field and so on; the
registries that name their parameters' rules import them from there, so that this module can
import the registries at its top.

The yaml groups are not registered as Hydra structured configs: a group's options have
different keys (norm, model, train), experiments add their own top-level nodes (arm, devices),
and OmegaConf would type-check only at composition, in a multi-line format, and not the
interpolated values that most fields are. Checking the resolved values covers all of them.
"""

import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from normexp.catalogue import grouping_deciders
from normexp.data.ptb import LEVELS
from normexp.errors import ConfigError
from normexp.models import MODELS
from normexp.models.blocks import ACTIVATIONS
from normexp.models.cnn import HEADS
from normexp.models.loss_network import FEATURES
from normexp.models.lstm_cells import CELLS
from normexp.models.resnet import SHORTCUTS
from normexp.norms.registry import NORMS, norm_spec, param_rules
from normexp.norms.validity import POSITIONS
from normexp.norms.weight_side import WEIGHT_SIDE
from normexp.protocol.select import SELECT_ON, STAGES
from normexp.rules import MAX_PACK as MAX_PACK
from normexp.rules import (
    MAX_SEED,
    MAX_THREADS,
    Bool,
    Choice,
    ChoiceList,
    Field,
    Folder,
    Int,
    Interval,
    IntList,
    JobsRule,
    Name,
    Num,
    NumList,
    Off,
    PackRule,
    SubGrid,
)
from normexp.rules import NAME_PATTERN as NAME_PATTERN
from normexp.rules import Rule as Rule
from normexp.rules import max_jobs as max_jobs
from normexp.rules import show as show
from normexp.tasks import all_tasks
from normexp.tracking.wandb_mirror import MODES
from normexp.train.compiling import COMPILE_MODES
from normexp.train.device import DEVICES
from normexp.train.image_to_image import LOSSES, TARGETS
from normexp.train.instrumented import PROBES
from normexp.train.optim import LR_SCALING, OPTIMIZERS, SCHEDULES


def _choices() -> dict[str, Any]:
    """The allowed names (and the norms' parameter rules), taken from the code that implements
    them."""
    norm_spec("none")  # fills the registry
    return {
        "profile": PROFILES,
        "mode": MODES,
        "task": tuple(all_tasks()),
        "device": DEVICES,
        "probes": PROBES,
        "loss": tuple(LOSSES),
        "target": tuple(TARGETS),
        "features": FEATURES,
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
        "decider": tuple(grouping_deciders()),
        "norm_params": param_rules(),
    }


PROFILES = ("smoke", "quick", "standard", "paper")
# The tasks with train.test_every_epoch (the image-to-image tasks evaluate their test set once).
TESTED_TASKS = ("classification", "instrumented_classification", "language_model")
CLASSIFY_TASKS = ("classification", "instrumented_classification")  # train.val_every


def _run_fields(c: Mapping[str, Any]) -> tuple[Field, ...]:
    """The run's own fields: profile, seed, claim, target, paths, runtime and tracking."""
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
        F("runtime.fused_sgd", Bool(), optional=True, doc="SGD's update in one fused kernel"),
        F("runtime.pack", PackRule(), optional=True, doc="replicas per packed group"),
        F(
            "runtime.compile",
            Choice(COMPILE_MODES),
            optional=True,
            doc="torch.compile of the training step; auto: where the bench table says it pays",
        ),
        F("tracking.mode", Choice(c["mode"])),
        F("tracking.project", Name()),
    )


def _train_fields(c: Mapping[str, Any]) -> tuple[Field, ...]:
    """train.*: the task, its budget and batches, and each task's own fields."""
    task = "train.task"
    F = Field
    return (
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
        F(
            "train.test_every_epoch",
            Bool(),
            (task, TESTED_TASKS),
            optional=True,
            doc="false: the test set once, on the final model; true: every epoch too",
        ),
        F(
            "train.val_every",
            Int(0),
            (task, CLASSIFY_TASKS),
            optional=True,
            doc="validation every N epochs and after the last; 0: the last only",
        ),
        F("train.probe_every", Int(0), (task, ("instrumented_classification",))),
        F("train.probes", ChoiceList(c["probes"]), (task, ("instrumented_classification",))),
        F("train.probe_step_sizes", NumList(), (task, ("instrumented_classification",))),
        F("train.loss", Choice(c["loss"]), (task, ("image_to_image",))),
        F("train.samples", Int(0), (task, ("image_to_image", "stylization"))),
        F("train.corruption.contrast", Interval(), (task, ("image_to_image",))),
        F("train.corruption.colour_gain", Interval(), (task, ("image_to_image",))),
        F("train.corruption.brightness", Num(0, 1), (task, ("image_to_image",))),
        F("train.corruption.colour_offset", Num(0, 1), (task, ("image_to_image",))),
        F("train.corruption.noise", Num(0), (task, ("image_to_image",)), optional=True),
        F("train.target", Choice(c["target"]), (task, ("image_to_image",)), optional=True),
        F(
            "train.features",
            Choice(c["features"]),
            (task, ("stylization",)),
            doc="vgg16: torchvision's weights must be in torch's cache (never downloaded)",
        ),
        F("train.features_seed", Int(0), (task, ("stylization",))),
        F("train.style_seed", Int(0), (task, ("stylization",))),
        F(
            "train.style_weight",
            Num(0, lo_open=True, null=True),
            (task, ("stylization",)),
            doc="null: the rule (content unchanged and style pasted cost the same)",
        ),
        F("train.seq_len", Int(1), (task, ("language_model",))),
        F("train.long_eval_factor", Int(1), (task, ("language_model",))),
    )


def _optim_fields(c: Mapping[str, Any]) -> tuple[Field, ...]:
    """optim.*: the optimizer, its learning rate and schedule."""
    F = Field
    return (
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
    )


def _protocol_fields(c: Mapping[str, Any]) -> tuple[Field, ...]:
    """protocol.*: LR selection, the convergence check and the budget ladder."""
    F = Field
    return (
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
        F("protocol.ladder", NumList(null=True, below=1), optional=True,
          doc="fractions of the record's budget the checked cells also train at; null: none"),
        F("protocol.stage", Choice(c["stage"]), optional=True),
        F("protocol.grouping_from", Choice(c["decider"], null=True), optional=True,
          doc="the experiment whose decision sets GN's grouping; null: the norm's own"),
    )


def _data_fields(c: Mapping[str, Any]) -> tuple[Field, ...]:
    """data.*: the data set and, per data set, its sizes."""
    data = "data.name"
    F = Field
    return (
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
    )


def _model_fields(c: Mapping[str, Any]) -> tuple[Field, ...]:
    """model.*: the architecture and, per model, its shape."""
    model = "model.name"
    F = Field
    return (
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
    )


def _norm_fields(c: Mapping[str, Any]) -> tuple[Field, ...]:
    """norm.*: the norm, its position, and each norm's parameters."""
    F = Field
    return (
        F("norm.name", Choice(c["norm"])),
        F("norm.position", Choice(c["position"])),
        # each norm's parameters, with the rules its registry entry gives them
        *(F(f"norm.{name}", rule, optional=True) for name, rule in c["norm_params"].items()),
    )


@functools.cache
def fields() -> tuple[Field, ...]:
    """Every field of a run's config a user can set (hydra's own are in HYDRA_FIELDS)."""
    c = _choices()
    return (
        *_run_fields(c),
        *_train_fields(c),
        *_optim_fields(c),
        *_protocol_fields(c),
        *_data_fields(c),
        *_model_fields(c),
        *_norm_fields(c),
    )


HYDRA_FIELDS = (
    Field("hydra.job.chdir", Off()),  # type: ignore[arg-type]
    Field("hydra.launcher.n_jobs", JobsRule(), optional=True),  # type: ignore[arg-type]
)


_MISSING = object()


def field(path: str) -> Field | None:
    """The schema's entry for a dotted path, if it has one."""
    return next((f for f in (*fields(), *HYDRA_FIELDS) if f.path == path), None)


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
