"""The columns the claim analyses read from the collected tables, named once.

A collected table (normexp.tracking.collect) has one row per run: the run's config fields as
dotted names (``train.batch_size``), its summary metrics, and the bookkeeping that collect adds
(``status``, ``run_key``, ``finished_at``, ``provenance.*``). Analyses name these columns only
through the constants below, so a renamed config key or summary metric is changed here once,
and ``tests/unit/test_claims_analyses.py`` checks that every config column named here still
exists in the resolved experiment configs.

Two kinds of absence, kept apart: a table without rows is an experiment not run yet (the verdict
says so); a table with rows but without a column an analysis needs is an error
(``MissingColumnError``), never an empty result, because it means the name no longer matches
what the runs record. Summary metrics that only some runs record (older runs, or runs that
never finished) are checked for explicitly by the analysis that tolerates their absence.
"""

from collections.abc import Iterable

import pandas as pd

from normexp.analysis import one_scale as scales
from normexp.metrics import by_epoch, metric

Tables = dict[str, pd.DataFrame]  # experiment name -> collected table (empty: not run yet)

# --- bookkeeping: every collected row has these ----------------------------------------------
STATUS = "status"  # ok / diverged / failed / running
SEED = "seed"
RUN_KEY = "run_key"
FINISHED_AT = "finished_at"
PROFILE = "profile"
SCALE = scales.SCALE  # what the run's profile sets for it (normexp/analysis/one_scale.py)

# --- config fields (dotted, as collect flattens the resolved config) --------------------------
NORM = "norm.name"
POSITION = "norm.position"
GROUP_SIZE = "norm.group_size"  # ghost BN: images per simulated device
MODEL = "model.name"
ACTIVATION = "model.activation"
WEIGHT_SIDE = "model.weight_side"
BATCH = "train.batch_size"
EPOCHS = "train.epochs"
PROBE_STEP_SIZES = "train.probe_step_sizes"
LR = "optim.lr_per_128"
LR_MULT = "optim.lr_mult"  # the LR protocol's multiplier of the batch-scaled LR (absent: 1)
PEAK_LR = "peak_lr"  # lr_per_128 x batch scaling x lr_mult, added by collect
STAGE = "protocol.stage"  # select (LR selection runs) or record; absent in older runs: record
L1 = "optim.l1"
WEIGHT_DECAY = "optim.weight_decay"
DEVICES = "devices.count"
LEVEL = "data.level"  # PTB: char or word
FINAL_NORM = "model.final_norm"  # CNN: false leaves the last block without its norm (C3's control)
TARGET_ACC = "target.train_acc"  # C9: the training accuracy whose steps-to-reach are compared
# GN's grouping (configs/norm/group.yaml): its rule and number; absent in runs before them
GROUPING = "norm.grouping"
CHANNELS_PER_GROUP = "norm.channels_per_group"
NUM_GROUPS = "norm.num_groups"
ARM = "arm.name"  # an experiment's arm (weight_side, gn_grouping)
GROUPING_FROM = "protocol.grouping_from"  # the experiment whose decision set GN's grouping

CONFIG_COLUMNS = (
    NORM,
    POSITION,
    GROUP_SIZE,
    MODEL,
    ACTIVATION,
    WEIGHT_SIDE,
    BATCH,
    EPOCHS,
    PROBE_STEP_SIZES,
    LR,
    L1,
    WEIGHT_DECAY,
    DEVICES,
    LEVEL,
    FINAL_NORM,
    TARGET_ACC,
    GROUPING,
    CHANNELS_PER_GROUP,
    NUM_GROUPS,
)

# --- summary metrics --------------------------------------------------------------------------
TEST_ACC = metric("test_acc")  # BN with its running averages, as deployed
VAL_ACC = metric("val_acc")  # the final model on the validation split (what selection reads)
TEST_ERR = metric("test_err")
TRAIN_ACC = metric("train_acc")  # last epoch, as trained
TRAIN_LOSS = metric("train_loss")  # last epoch's mean, as trained
TEST_ACC_BATCH_STATS = metric("test_acc_batch_stats")
TEST_ACC_PRECISE_BN = metric("test_acc_precise_bn")
TRAIN_ACC_BY_EPOCH = metric("train_acc_by_epoch")
TEST_ACC_BY_EPOCH = metric("test_acc_by_epoch")
VAL_ACC_BY_EPOCH = by_epoch("val_acc")  # from metrics.jsonl, added by collect
N_TRAIN = metric("n_train")
WALL_TIME = metric("wall_time_s")
# image-to-image generation
TEST_PSNR = metric("test_psnr")
TEST_PSNR_BATCH_STATS = metric("test_psnr_batch_stats")
INPUT_PSNR = metric("input_psnr")
SAMPLE_GRID = metric("sample_grid")
# Gram-loss stylization (content + weighted style loss on held-out images; lower is better)
TEST_STYLIZATION_LOSS = metric("test_stylization_loss")
TEST_STYLIZATION_LOSS_BATCH_STATS = metric("test_stylization_loss_batch_stats")
INPUT_STYLIZATION_LOSS = metric("input_stylization_loss")
STYLE_WEIGHT = metric("style_weight")
# language model
TEST_BPC = metric("test_bpc")
TEST_BPC_LONG = metric("test_bpc_long")
TEST_PPL = metric("test_ppl")
TEST_PPL_LONG = metric("test_ppl_long")
SEQ_LEN = metric("seq_len")
LONG_EVAL_LEN = metric("long_eval_len")
TOKENS_PER_S = metric("tokens_per_s")
N_TRAIN_TOKENS = metric("n_train_tokens")
# weight statistics
NEAR_ZERO = metric("weight_near_zero_frac")
L2_NORM = metric("weight_l2_norm")
# probes along training (normexp.train.landscape): per-run means and over-training lists
PROBE_STEPS = metric("probe_steps")
ICS_L2_MEAN = metric("probe_ics_l2_mean")
ICS_COS_MEAN = metric("probe_ics_cos_mean")
ICS_L2_SERIES = metric("probe_ics_l2_series")
ICS_COS_SERIES = metric("probe_ics_cos_series")
ICS_REL_MEAN = metric("probe_ics_l2_rel_mean")  # ‖G − G'‖ / ‖G‖
ICS_REL_SERIES = metric("probe_ics_l2_rel_series")
# the running training accuracy of instrumented runs (normexp/train/instrumented.py)
RUNNING_ACC_STEPS = metric("running_train_acc_steps")
RUNNING_ACC_SERIES = metric("running_train_acc_series")
TRAINED_STEPS = metric("trained_steps")


def probe_mean(name: str) -> str:
    """The per-run mean of a landscape probe (``loss_range``, ``beta_smoothness``, ...)."""
    return f"probe_{name}_mean"


def probe_series(name: str) -> str:
    """The over-training list of a landscape probe."""
    return f"probe_{name}_series"


# --- provenance (collect prefixes the summary's provenance fields) ----------------------------
COMMIT = "provenance.commit"
HOST = "provenance.host"
DEVICE = "provenance.device"
MACHINE = "provenance.machine"
CPU_THREADS = "provenance.cpu_threads"


class MissingColumnError(KeyError):
    """A collected table has runs but not a column an analysis reads (a renamed key?)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def require(df: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise MissingColumnError naming every column of ``columns`` that ``df`` lacks."""
    missing = [c for c in dict.fromkeys(columns) if c not in df]
    if missing:
        have = ", ".join(sorted(map(str, df.columns)))
        raise MissingColumnError(
            f"collected table has no column {', '.join(map(repr, missing))} "
            f"(renamed config key or summary metric? see normexp.analysis.columns); "
            f"it has: {have}"
        )


def has_rows(df: pd.DataFrame, *columns: str) -> bool:
    """False for a table without rows (not run yet); True when it has rows and every column
    (with ``status`` and ``seed``); a table with rows that lacks one raises MissingColumnError."""
    if df.empty:
        return False
    require(df, (STATUS, SEED, *columns))
    return True


def table(tables: dict[str, pd.DataFrame], experiment: str) -> pd.DataFrame:
    """The runs of record of ``experiment``; an empty table if it was not run. LR-selection
    runs (protocol.stage select) only choose the LR: no analysis reads them as results. Runs of
    record at two scales (normexp/analysis/one_scale.py) are refused: every statistic and panel
    reads its runs through here."""
    df = tables.get(experiment, pd.DataFrame())
    if STAGE in df:
        df = df[df[STAGE].fillna("record") == "record"].reset_index(drop=True)
    scales.one_scale(f"the runs of record of {experiment}", {experiment: df})
    return df


def unique_values(df: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-missing values of a column, as sorted text ([] without the column)."""
    return sorted(df[column].dropna().astype(str).unique().tolist()) if column in df else []


def first(df: pd.DataFrame, column: str, default: object = None) -> object:
    """The first non-missing value of ``column``; ``default`` without one (or without the
    column: scale notes in figures are optional)."""
    if column in df and df[column].notna().any():
        return df[column].dropna().iloc[0]
    return default
