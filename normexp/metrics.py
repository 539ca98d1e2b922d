"""Every metric a run logs, named once: its key (in summary.json, metrics.jsonl and the collected
tables), its unit, which direction is better, the tasks that log it and whether it is logged
every epoch. The analysis names the metrics it reads through ``metric`` (normexp.analysis
.columns), the W&B dashboards refuse a panel on a metric not registered here, the W&B mirror
gives each its name (``normexp.tracking.wandb_mirror.wandb_key``), and a test checks that every
key the tasks log is here, for the tasks that log it (docs/extending.md: "Add a metric").

The table is data, as pycls keeps its ``metrics_info``: adding a metric is one
``register_metric`` line below, next to the task that logs it.
"""

from dataclasses import dataclass

BETTER = ("higher", "lower", None)  # None: neither (a count, a setting, a duration)


@dataclass(frozen=True)
class Metric:
    name: str  # the key a run logs (test_acc)
    unit: str  # "fraction", "dB", "bits/char", "s", "count", ... ("" for a plain number)
    better: str | None  # one of BETTER
    tasks: tuple[str, ...]  # the train.task values that log it
    per_epoch: bool = False  # may be logged every epoch (metrics.jsonl), not only in the summary
    doc: str = ""


METRICS: dict[str, Metric] = {}
# What the job writes into every summary beside the task's metrics: not metrics.
BOOKKEEPING = ("provenance", "run_key", "status", "resumed_at_epoch")


def register_metric(
    name: str,
    unit: str,
    better: str | None,
    tasks: tuple[str, ...],
    per_epoch: bool = False,
    doc: str = "",
) -> str:
    """Register ``name`` (once) and return it."""
    if name in METRICS:
        raise ValueError(f"metric {name!r} is registered twice")
    if better not in BETTER:
        raise ValueError(f"metric {name!r}: better must be one of {BETTER}, not {better!r}")
    METRICS[name] = Metric(name, unit, better, tuple(tasks), per_epoch, doc)
    return name


def metric(name: str) -> str:
    """``name``, which must be a registered metric (a typo fails where it is written)."""
    if name not in METRICS:
        raise KeyError(f"{name!r} is not a registered metric; see normexp.metrics")
    return name


def by_epoch(name: str) -> str:
    """The collected table's column of a per-epoch metric's curve (normexp.tracking.collect)."""
    if not METRICS[metric(name)].per_epoch:
        raise ValueError(f"metric {name!r} is not logged every epoch")
    return f"{name}_by_epoch"


def did_not_train(final_val_acc: float, classes: int = 10) -> bool:
    """Whether a classifier ended within CHANCE_MARGIN of chance (its final validation
    accuracy): it never learned, or it fell back."""
    return bool(final_val_acc <= 1 / classes + CHANCE_MARGIN)


def logged_by(task: str) -> set[str]:
    """The metrics ``task`` may log."""
    return {m.name for m in METRICS.values() if task in m.tasks}


CLASSIFY = ("classification", "instrumented_classification")
IMAGE_TASKS = (*CLASSIFY, "image_to_image", "stylization")
LM = ("language_model",)
EVERY = (*IMAGE_TASKS, *LM)

# --- every task ---------------------------------------------------------------------------
register_metric("train_loss", "nats", "lower", EVERY, per_epoch=True, doc="last epoch's mean")
register_metric("lr", "", None, EVERY, per_epoch=True, doc="the learning rate at the epoch's end")
register_metric("epoch_time_s", "s", None, EVERY, per_epoch=True)
register_metric("epochs", "count", None, EVERY, doc="epochs trained")
register_metric("n_params", "count", None, EVERY)
register_metric("wall_time_s", "s", None, EVERY, doc="the run's wall time, evaluation included")
register_metric("epoch", "count", None, EVERY, per_epoch=True, doc="the step metric")

# --- image tasks (classification, instrumented classification, image-to-image) -------------
register_metric("images_per_s", "images/s", None, IMAGE_TASKS, per_epoch=True)
for split in ("n_train", "n_val", "n_test"):
    register_metric(split, "images", None, IMAGE_TASKS)

# --- classification ---------------------------------------------------------------------------
# The test metrics are the final model's, in the summary; metrics.jsonl has them every epoch
# only with train.test_every_epoch (and in runs stored before it existed): still per_epoch.
ONCE = "every epoch only with train.test_every_epoch"
for name, doc in (
    ("train_acc", "last epoch, as trained"),
    ("val_acc", "held-out part of the training set"),
    ("test_acc", f"BN with its running averages, as deployed; {ONCE}"),
    ("test_acc_batch_stats", f"BN normalizing each test batch by its own statistics; {ONCE}"),
):
    register_metric(name, "fraction", "higher", CLASSIFY, per_epoch=True, doc=doc)
register_metric("test_acc_precise_bn", "fraction", "higher", CLASSIFY, doc="precise BN")
register_metric("best_val_acc", "fraction", "higher", CLASSIFY)
register_metric("test_err", "fraction", "lower", CLASSIFY)
# A classifier that ends at chance (never left it, or fell back to it) is named, not hidden:
# it stays in the statistics as the run it is, and the report lists it beside its cell.
CHANCE_MARGIN = 0.02  # within 2 pp of chance (1 / classes): about 2 s.e. on 1,000 images
register_metric(
    "did_not_train", "", None, CLASSIFY, doc="final validation accuracy within 2 pp of chance"
)
register_metric("val_loss", "nats", "lower", CLASSIFY, per_epoch=True)
register_metric(
    "packed_replicas", "count", None, CLASSIFY, doc="runs in its packed group (wall time shared)"
)
register_metric(
    "compiled", "", None, CLASSIFY, doc="its training step ran compiled (runtime.compile)"
)
register_metric("test_loss", "nats", "lower", (*CLASSIFY, *LM), per_epoch=True, doc=ONCE)
register_metric("precise_bn_batches_used", "count", None, CLASSIFY)
register_metric("weight_count", "count", None, CLASSIFY)
register_metric("weight_l1_norm", "", None, CLASSIFY, doc="C2: the weights' L1 norm")
register_metric("weight_l2_norm", "", None, CLASSIFY, doc="C2: the weights' L2 norm")
register_metric("weight_near_zero_frac", "fraction", None, CLASSIFY, doc="C2: sparsity")

# --- instrumented classification (C9, C10): probes along training ---------------------------
INSTRUMENTED = ("instrumented_classification",)
PROBES = (  # normexp.train.instrumented / landscape: (name, unit, ICS per layer too)
    ("ics_l2", "", True),
    ("ics_l2_rel", "", True),
    ("ics_cos", "", True),
    ("loss_range", "nats", False),
    ("beta_smoothness", "", False),
    ("grad_norm", "", False),
    ("grad_predictiveness", "", False),
)
for probe, unit, by_layer in PROBES:
    register_metric(f"probe_{probe}", unit, None, INSTRUMENTED, per_epoch=True)
    register_metric(f"probe_{probe}_by_epoch", unit, None, INSTRUMENTED)
    register_metric(f"probe_{probe}_mean", unit, None, INSTRUMENTED, doc="over training")
    register_metric(f"probe_{probe}_series", unit, None, INSTRUMENTED, doc="at probe_steps")
    if by_layer:
        register_metric(f"probe_{probe}_by_layer", unit, None, INSTRUMENTED)
for name in ("probe_steps", "probe_points", "probe_ics_layers", "running_train_acc_steps"):
    register_metric(name, "count", None, INSTRUMENTED)
register_metric("probe_time_s", "s", None, INSTRUMENTED)
register_metric("trained_steps", "count", None, INSTRUMENTED, doc="optimizer steps of the run")
register_metric("running_train_acc_series", "fraction", "higher", INSTRUMENTED)
register_metric("train_acc_by_epoch", "fraction", "higher", INSTRUMENTED)
register_metric(
    "test_acc_by_epoch", "fraction", "higher", INSTRUMENTED, doc="only with train.test_every_epoch"
)
register_metric("train_loss_by_epoch", "nats", "lower", INSTRUMENTED)

# --- image-to-image (C6) --------------------------------------------------------------------
I2I = ("image_to_image",)
register_metric("val_psnr", "dB", "higher", I2I, per_epoch=True)
register_metric("best_val_psnr", "dB", "higher", I2I)
register_metric("test_psnr", "dB", "higher", I2I, doc="BN with its running averages")
register_metric("test_psnr_batch_stats", "dB", "higher", I2I)
register_metric("test_ssim", "", "higher", I2I)
register_metric("input_psnr", "dB", None, I2I, doc="the corrupted input against its target")
register_metric("sample_grid", "", None, (*I2I, "stylization"), doc="the run's sample grid file")

# --- Gram-loss stylization (C6's deciding task) ----------------------------------------------
# The loss (content + style_weight x Gram style) on held-out content images, outputs clipped.
GRAM = ("stylization",)
LOSS_DOC = "content + style_weight x style loss, outputs clipped to [0, 1]"
register_metric("val_stylization_loss", "", "lower", GRAM, per_epoch=True, doc=LOSS_DOC)
register_metric("best_val_stylization_loss", "", "lower", GRAM)
register_metric("test_stylization_loss", "", "lower", GRAM, doc=f"{LOSS_DOC}; BN as deployed")
register_metric("test_stylization_loss_batch_stats", "", "lower", GRAM)
register_metric("test_content_loss", "", "lower", GRAM, doc="its content term")
register_metric("test_style_loss", "", "lower", GRAM, doc="its style term, weighted")
register_metric("input_stylization_loss", "", None, GRAM, doc="the content image unchanged")
register_metric("style_weight", "", None, GRAM, doc="the style term's weight (rule or setting)")

# --- language model (C7) --------------------------------------------------------------------
for name in ("bpc", "ppl", "loss"):
    unit = {"bpc": "bits/char", "ppl": "", "loss": "nats"}[name]
    for split in ("train", "valid", "test"):
        doc = ONCE if split == "test" else ""
        if (split, name) not in (("test", "loss"), ("train", "loss")):
            register_metric(f"{split}_{name}", unit, "lower", LM, per_epoch=True, doc=doc)
    for split in ("valid", "test"):
        doc = ONCE if split == "test" else ""
        register_metric(f"{split}_{name}_long", unit, "lower", LM, per_epoch=True, doc=doc)
register_metric("best_valid_bpc", "bits/char", "lower", LM)
register_metric("best_valid_ppl", "", "lower", LM)
register_metric("tokens_per_s", "tokens/s", None, LM, per_epoch=True)
register_metric("cpu_time_s", "s", None, LM)
register_metric("seq_len", "tokens", None, LM)
register_metric("long_eval_len", "tokens", None, LM)
register_metric("vocab_size", "count", None, LM)
for split in ("train", "valid", "test"):
    register_metric(f"n_{split}_tokens", "tokens", None, LM)
register_metric("train_tokens_read", "tokens", None, LM)
