"""Which architecture decides a claim that runs on more than one (issue #12, item 3): C4, C5, C8
and C9 run on the CIFAR ResNet and on the VGG-style CNN, and each analysis computes its verdict
on each architecture's runs apart (never pooled); this module picks the verdict of record and
writes what the two say.

Baseline rule (fixed before any run). An architecture *shows the gap* when, on its own runs of
the claim's experiment, BN − no-norm test accuracy at batch 32 (pp, paired by seed) is at least
GAP_PP = 5 pp and its two-sided paired t-test against 0 rejects at ALPHA = 5%, with at least 2
seeds. The verdict of record is decided on the first architecture of ORDER (the ResNet, then the
VGG-style CNN) whose deciding cells have finished runs and that shows the gap: a network that
trains as well without a norm cannot show what a norm does. Among those, one whose deciding cells
all pass the convergence check decides before one whose cells do not (the regime rule,
normexp/analysis/verdict/regime.py). When none shows the gap, the VGG-style CNN
decides (the quick profile runs only the ResNet's baseline), and the verdict says that no
architecture with the gap was there to decide. The other architecture's verdict is reported
beside it, and a claim or sub-claim the two decide differently is named.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.one_scale import one_scale
from normexp.analysis.style import mark_not_run, norm_color, norm_label, seed_bar
from normexp.analysis.verdict import ALPHA, by_seed, join_notes
from normexp.analysis.verdict.paired import batch_cells, difference, fmt_ci, json_safe
from normexp.analysis.verdict.record import select
from normexp.analysis.verdict.regime import CONVERGED, deciding_cells, regime_of

Tables = dict[str, pd.DataFrame]
Differ = list[tuple[str, str, str]]  # (claim or sub-claim id, other model, its call there)
ORDER = ("resnet", "cnn")  # preferred first
FALLBACK = "cnn"
GAP_PP = 5.0
BASELINE_BATCH = 32
BASELINE = "baseline"  # the key of the baseline's cells among the deciding tables
NAMES = {"cnn": "VGG-style CNN", "resnet": "ResNet"}
NOT_RUN = "'s deciding cells have not run"
DEPTH = "model.depth"  # the ResNet's depth, for its name (ResNet-20)
RULE = (
    "Architecture: each architecture's runs are decided apart; the verdict of record is the "
    f"ResNet's when its deciding cells have runs and its baseline shows the gap (BN − no-norm "
    f"test accuracy at batch {BASELINE_BATCH} ≥ {GAP_PP:g} pp, paired by seed, paired t-test "
    f"against 0 at {ALPHA:g}), else the VGG-style CNN's (the CNN's too needs the gap, else it "
    "is the fallback and says so); an architecture whose deciding cells all pass the "
    "convergence check decides before one whose cells do not; the other architecture's "
    "verdict is reported beside it."
)


def name(model: str, df: pd.DataFrame | None = None) -> str:
    """'ResNet-20', 'VGG-style CNN': the architecture as the verdicts name it."""
    base = NAMES.get(model, model)
    depth = col.first(df, DEPTH) if model == "resnet" and df is not None else None
    return f"{base}-{int(depth)}" if depth is not None else base


def baseline(df: pd.DataFrame) -> dict:
    """BN − no-norm test accuracy (pp) at batch 32, paired by seed (a ``difference``), with
    ``shows_gap`` by the rule above and each norm's mean accuracy (``cells``)."""
    if not col.has_rows(df, col.NORM, col.BATCH) or col.TEST_ACC not in df:
        return {"seeds": 0, "shows_gap": False}
    at = {
        norm: by_seed(df, col.TEST_ACC, {col.NORM: norm, col.BATCH: BASELINE_BATCH})
        for norm in ("batch", "none")
    }
    test = difference(at["batch"], at["none"], scale=100)
    test["shows_gap"] = bool(
        test["seeds"] >= 2 and test["mean"] >= GAP_PP and test["p"] <= ALPHA
    )
    return test


def baseline_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The baseline's runs: BN and no norm at batch 32."""
    if not col.has_rows(df, col.NORM, col.BATCH):
        return df
    return select(df, {col.NORM: ["batch", "none"], col.BATCH: BASELINE_BATCH})


def baseline_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy (%) with its 95% CI per norm of the baseline (for figures)."""
    runs = baseline_runs(df)
    if runs.empty or col.TEST_ACC not in runs:
        return pd.DataFrame()
    return batch_cells(runs, col.TEST_ACC, "acc", scale=100)


def _ran(verdict: dict) -> bool:
    return verdict["verdict"] != "not run yet"


def choose(
    verdicts: Mapping[str, dict],
    baselines: Mapping[str, dict],
    trained: Mapping[str, bool] | None = None,
) -> str:
    """The architecture whose verdict is of record (the rule above); ``trained``: whether each
    architecture's deciding cells all pass the convergence check."""
    trained = trained or {}
    ran = [m for m in ORDER if m in verdicts and _ran(verdicts[m])]
    for model in sorted(ran, key=lambda m: not trained.get(m, False)):  # trained first, in ORDER
        if baselines[model]["shows_gap"]:
            return model
    if FALLBACK in verdicts and _ran(verdicts[FALLBACK]):
        return FALLBACK
    return ran[0] if ran else FALLBACK


def all_trained(tables: Tables, deciding_of: Callable[[Tables], Tables] | None) -> bool:
    """Whether every deciding cell of one architecture's tables passes the convergence check
    (False without ``deciding_of``: nothing to check)."""
    if deciding_of is None:
        return False
    return regime_of(deciding_cells(tables, deciding_of(tables)), "")["kind"] == CONVERGED


def _baseline_text(label: str, test: dict) -> str:
    if not test.get("seeds"):
        return f"{label}: not run yet"
    shows = "shows the gap" if test["shows_gap"] else "does not show the gap"
    return f"{label} {fmt_ci(test)} ({test['seeds']} seeds, p {test['p']:.2g}; {shows})"


def _calls(verdict: dict) -> dict[str, str]:
    """{claim or sub-claim id: call} of a verdict that was run."""
    return {s["id"]: s["verdict"] for s in verdict.get("sub", [])} or {
        verdict["claim"]: verdict["verdict"]
    }


def _brief(verdict: dict) -> dict:
    keep = ("verdict", "effect", "estimate", "ci", "notes")
    return {
        **{k: verdict.get(k) for k in keep},
        "sub": [
            {k: s.get(k) for k in ("id", "verdict", "statistic", "estimate", "ci")}
            for s in verdict.get("sub", [])
        ],
    }


def _earlier(chosen: str) -> tuple[str, ...]:
    """The architectures ORDER prefers to ``chosen``."""
    return ORDER[: ORDER.index(chosen)] if chosen in ORDER else ()


def _why_sentence(
    chosen: str,
    verdicts: Mapping[str, dict],
    baselines: Mapping[str, dict],
    names: dict,
    trained: Mapping[str, bool],
) -> str:
    """Why ``chosen`` decides: each preferred architecture passed over, then its own baseline."""
    why = [
        names[m] + _passed_over(m, chosen, verdicts, baselines, trained)
        for m in _earlier(chosen)
        if m in verdicts
    ]
    if baselines[chosen]["shows_gap"]:
        why.append(f"its own no-norm baseline is clearly worse than BN at batch {BASELINE_BATCH}")
    else:
        why.append("no architecture shows the gap: it decides as the fallback")
    return f"Decided on the {names[chosen]} ({'; '.join(why)})."


def _passed_over(
    model: str,
    chosen: str,
    verdicts: Mapping[str, dict],
    baselines: Mapping[str, dict],
    trained: Mapping[str, bool],
) -> str:
    if not _ran(verdicts[model]):
        return NOT_RUN
    if baselines[model]["shows_gap"] and trained.get(chosen) and not trained.get(model):
        return "'s deciding cells do not all pass the convergence check"
    return "'s baseline does not show the gap"


def _baseline_sentence(baselines: Mapping[str, dict], names: dict) -> str:
    """Every architecture's baseline test, in ORDER."""
    shown = [_baseline_text(names[m], baselines[m]) for m in ORDER if m in baselines]
    return (
        f"Baseline, BN − no-norm test accuracy at batch {BASELINE_BATCH} (paired by seed; the "
        f"gap: ≥ {GAP_PP:g} pp at p ≤ {ALPHA:g}): " + "; ".join(shown) + "."
    )


def _beside(
    chosen: str, others: list[str], verdicts: Mapping[str, dict], names: dict
) -> tuple[list[str], Differ]:
    """A sentence on each other architecture's verdict, and every claim or sub-claim it calls
    differently from ``chosen``."""
    text, differ = [], []
    for m in others:
        if not _ran(verdicts[m]):  # said in ``why`` when it was preferred
            if m not in _earlier(chosen):
                text.append(f"The {names[m]}{NOT_RUN}.")
            continue
        text.append(
            f"{names[m]}, reported beside it: {verdicts[m]['verdict']}; {verdicts[m]['effect']}."
        )
        mine, theirs = _calls(verdicts[chosen]), _calls(verdicts[m])
        differ += [(i, m, theirs[i]) for i in mine if i in theirs and theirs[i] != mine[i]]
    return text, differ


def _disagreement(out: dict, differ: Differ, names: dict, chosen: str) -> str:
    """The claims and sub-claims the two architectures decide differently, in one clause."""
    said = "; ".join(
        f"{i} {_calls(out)[i]} on the {names[chosen]}, {c} on the {names[m]}"
        for i, m, c in differ
    )
    return f"the two architectures decide differently: {said}"


def _name_in_subs(out: dict, differ: Differ, names: dict, chosen: str) -> None:
    """Each sub-claim's statistic names the deciding architecture; a sub-claim the other calls
    differently notes that call."""
    for sub in out.get("sub", []):
        sub["statistic"] = f"{names[chosen]}: {sub['statistic']}"
        for i, m, c in differ:
            if i == sub["id"]:
                sub["note"] = join_notes(sub.get("note", ""), f"{names[m]}: {c}")


def decide(
    per_arch: Mapping[str, Tables],
    experiment: str,
    verdict_of: Callable[[Tables], dict],
    deciding_of: Callable[[Tables], Tables] | None = None,
) -> dict:
    """The verdict of record from each architecture's tables ({model: tables}; the baseline is
    read from ``experiment``'s table of each), with the architecture named in the effect, the
    sub-claims' statistics and the ``architecture`` paragraph, the other verdicts beside it and
    every disagreement said."""
    verdicts = {m: verdict_of(t) for m, t in per_arch.items()}
    if not any(_ran(v) for v in verdicts.values()):
        return verdicts.get(FALLBACK) or next(iter(verdicts.values()))
    dfs = {m: col.table(t, experiment) for m, t in per_arch.items()}
    names = {m: name(m, dfs[m]) for m in per_arch}
    baselines = {m: baseline(dfs[m]) for m in per_arch}
    trained = {m: all_trained(t, deciding_of) for m, t in per_arch.items()}
    chosen = choose(verdicts, baselines, trained)
    out = verdicts[chosen]
    others = [m for m in ORDER if m in per_arch and m != chosen]
    beside, differ = _beside(chosen, others, verdicts, names)
    text = [
        _why_sentence(chosen, verdicts, baselines, names, trained),
        _baseline_sentence(baselines, names),
    ]
    text += beside
    if differ:
        sentence = _disagreement(out, differ, names, chosen)
        text.append(f"{sentence[0].upper()}{sentence[1:]}.")
        out["notes"] = join_notes(out.get("notes", ""), sentence)
    _name_in_subs(out, differ, names, chosen)
    out["effect"] = f"{names[chosen]}: {out['effect']}"
    out["architecture"] = " ".join(text)
    out["rule"] = f"{out['rule']} {RULE}"
    out["details"]["architecture"] = json_safe(
        {
            "decided_on": chosen,
            "name": names[chosen],
            "baseline_bn_minus_none_acc_pp": baselines,
            "others": {m: {**_brief(verdicts[m]), "name": names[m]} for m in others},
            "differ": [{"id": i, "model": m, "call": c} for i, m, c in differ],
        }
    )
    return out


def of_record(
    per_arch: Mapping[str, Tables],
    experiment: str,
    verdict_of: Callable[[Tables], dict],
    deciding_of: Callable[[Tables], Tables] | None = None,
) -> tuple[str, dict]:
    """(the architecture of record, its baseline test)."""
    verdicts = {m: verdict_of(t) for m, t in per_arch.items()}
    baselines = {m: baseline(col.table(t, experiment)) for m, t in per_arch.items()}
    trained = {m: all_trained(t, deciding_of) for m, t in per_arch.items()}
    chosen = choose(verdicts, baselines, trained)
    return chosen, baselines[chosen]


def deciding(
    per_arch: Mapping[str, Tables],
    experiment: str,
    verdict_of: Callable[[Tables], dict],
    deciding_of: Callable[[Tables], Tables],
) -> Tables:
    """The deciding cells of the architecture of record; with its baseline's cells when the
    baseline chose it (their seeds of record count too)."""
    chosen, test = of_record(per_arch, experiment, verdict_of, deciding_of)
    cells = deciding_on(chosen, per_arch[chosen], deciding_of)
    if test["shows_gap"]:
        runs = baseline_runs(col.table(per_arch[chosen], experiment))
        cells[f"{experiment} {BASELINE} ({chosen})"] = runs
    return cells


def deciding_on(model: str, tables: Tables, deciding_of: Callable[[Tables], Tables]) -> Tables:
    """The deciding cells of one architecture's tables, each named after it ('bn_small_batch
    (resnet)'), its baseline's aside."""
    return {f"{k} ({model})": v for k, v in deciding_of(tables).items()}


def is_baseline(key: str) -> bool:
    """Whether a key of ``deciding``'s tables holds the baseline's cells (they choose the
    architecture; they are not the claim's comparison)."""
    return f" {BASELINE} (" in key


def by_model(df: pd.DataFrame, default: str = FALLBACK) -> dict[str, pd.DataFrame]:
    """{model.name: its runs} of a table that sweeps the model; runs from before the model was
    swept are the CNN's."""
    if df.empty or col.MODEL not in df:
        return {default: df}
    models = df[col.MODEL].fillna(default)
    order = [m for m in ORDER if m in set(models)] + sorted(set(models) - set(ORDER))
    return {str(m): df[models == m].reset_index(drop=True) for m in order}


def own_store(tables: Tables, experiment: str, resnet: str) -> dict[str, Tables]:
    """{model: its tables} for claims whose ResNet cells have their own store folder
    (``resnet``, e.g. bn_small_batch_resnet): the CNN's tables as they are, the ResNet's table
    as it was handed in under ``experiment``'s name, so one verdict function reads either. Each
    reader strips it to runs of record itself (``columns.table``); C8 is handed the check runs
    there too and pairs them."""
    return {FALLBACK: tables, "resnet": {experiment: tables.get(resnet, pd.DataFrame())}}


@dataclass(frozen=True)
class PerArchitecture:
    """A claim decided on each architecture apart (its CNN runs under ``experiment``, the
    ResNet's in their own store folder ``resnet``), the one the baseline rule picks deciding:
    the claim writes only ``verdict_of`` and ``deciding_of`` for one architecture's tables."""

    experiment: str
    resnet: str
    verdict_of: Callable[[Tables], dict]
    deciding_of: Callable[[Tables], Tables]

    def architectures(self, tables: Tables) -> dict[str, Tables]:
        return own_store(tables, self.experiment, self.resnet)

    def verdict(self, tables: Tables) -> dict:
        """The verdict of record."""
        return decide(
            self.architectures(tables), self.experiment, self.verdict_of, self.deciding_of
        )

    def deciding(self, tables: Tables) -> Tables:
        """The deciding cells, on the architecture of record."""
        return deciding(
            self.architectures(tables), self.experiment, self.verdict_of, self.deciding_of
        )


def draw_baseline(ax, dfs: Mapping[str, pd.DataFrame]) -> None:  # noqa: ANN001 - a matplotlib Axes
    """The baseline of each architecture ({model: its runs}): BN and no-norm test accuracy at
    batch 32 (mean, 95% CI, seeds as dots), the paired gap written above each pair; the
    architectures' runs at one scale."""
    one_scale("the baseline panel", {name(m, df): df for m, df in dfs.items()})
    ticks, labels, top = [], [], 0.0
    for i, (model, df) in enumerate(dfs.items()):
        test = baseline(df)
        if not test["seeds"]:
            continue
        for j, norm in enumerate(("batch", "none")):
            where = {col.NORM: norm, col.BATCH: BASELINE_BATCH}
            acc = [100 * v for v in by_seed(df, col.TEST_ACC, where).values()]
            seed_bar(ax, 3 * i + j, acc, norm_color(norm), width=0.8)
            ticks.append(3 * i + j)
            labels.append(norm_label(norm))
            top = max(top, *acc)
        shows = "gap" if test["shows_gap"] else "no gap"
        label = f"{name(model, df)}\n{test['mean']:+.1f} pp: {shows}"
        ax.text(3 * i + 0.5, 0.97, label, ha="center", va="top",
                transform=ax.get_xaxis_transform())
    if not ticks:
        mark_not_run(ax, f"BN and no norm at batch {BASELINE_BATCH}")
        return
    ax.set_ylim(0, 1.35 * top)
    ax.set_xticks(ticks, [lb.replace(" ", "\n") for lb in labels])
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel(f"a gap ≥ {GAP_PP:g} pp (paired): it may decide")
    ax.set_title(f"Baseline at batch {BASELINE_BATCH}")
    ax.grid(alpha=0.3, axis="y")


def swept(tables: Tables, experiment: str) -> dict[str, Tables]:
    """{model: its tables} for an experiment that sweeps the model in one store folder (not_ics):
    each architecture's runs under the experiment's name; ORDER's architectures always present
    (an empty table: not run)."""
    models = by_model(col.table(tables, experiment))
    names = dict.fromkeys([*ORDER, *models])
    return {m: {experiment: models.get(m, pd.DataFrame())} for m in names}
