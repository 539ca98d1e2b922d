"""C4, C5, C8 and C9 decided on the architecture whose no-norm baseline is clearly worse than BN
at batch 32 (normexp/analysis/verdict/architecture.py, issue #12 item 3): the ResNet when its cells
exist and show the gap, else the VGG-style CNN, stated; the other verdict beside it and a
disagreement said. Synthetic collected tables whose right verdicts are known."""

import pandas as pd
import pytest

from normexp.analysis.claims import bn_small_batch, bn_train_test, ln_in_cnn, not_ics
from normexp.analysis.verdict import architecture
from normexp.analysis.verdict.convergence import record_runs
from tests.unit.test_claims_analyses import check, drawn, plain_table, table
from tests.unit.test_fair_claims import c9, ics_table

RESNET = "bn_small_batch_resnet"


@pytest.fixture(autouse=True)
def every_cell_trained(monkeypatch):
    """These tests are about which architecture decides; C8's convergence rule has tests of its
    own (test_convergence_check.py, test_claims_analyses.py): here every cell counts as trained."""
    monkeypatch.setattr(ln_in_cnn, "passing", lambda df, cells: record_runs(df))


def resnet_table(
    bn_degrades: bool, none_err: float = 0.80, ln_worse: bool = True, cells: str = "all"
) -> pd.DataFrame:
    """bn_small_batch_resnet as standard runs it (BN, GN at 2 and 32; LN, none at 32), or its
    quick baseline only (``cells="baseline"``: none and BN at 32)."""
    errs = {
        ("batch", 2): 0.60 if bn_degrades else 0.40,
        ("group", 2): 0.45,
        ("batch", 32): 0.40,
        ("group", 32): 0.45,
        ("layer", 32): 0.50 if ln_worse else 0.38,
        ("none", 32): none_err,
    }
    if cells == "baseline":
        errs = {k: v for k, v in errs.items() if k in (("batch", 32), ("none", 32))}
    rows = []
    for (norm, batch), err in errs.items():
        summary = {"test_err": err, "test_acc": 1 - err}
        if norm == "batch":
            gap = 0.1 if batch == 2 and bn_degrades else 0.0
            summary.update(test_acc_batch_stats=1 - err - gap, test_acc_precise_bn=1 - err)
        config = {"norm.name": norm, "train.batch_size": batch, "model.name": "resnet"}
        rows.append(({**config, "model.depth": 20}, summary))
    return table(rows)


def cnn_without_gap(bn_degrades: bool, ln_worse: bool = True) -> pd.DataFrame:
    """The CNN's table with no norm as accurate as BN at every batch size."""
    df = plain_table(bn_degrades, ln_worse)
    none, bn = df["norm.name"] == "none", df["norm.name"] == "batch"
    at32 = df["train.batch_size"] == 32
    metrics = ["test_err", "test_acc"]
    df.loc[none & at32, metrics] = df.loc[bn & at32, metrics].to_numpy()
    return df


CLAIMS = (bn_small_batch, bn_train_test, ln_in_cnn)


def arch(v: dict) -> dict:
    return v["details"]["architecture"]


def gap_pp(v: dict, model: str) -> float:
    """The baseline's BN − none test accuracy (pp) of ``model`` as the verdict reports it."""
    return arch(v)["baseline_bn_minus_none_acc_pp"][model]["mean"]


# --- the baseline rule ------------------------------------------------------------------


@pytest.mark.parametrize(("none_err", "gap"), [(0.80, True), (0.46, True), (0.44, False)])
def test_the_gap_is_at_least_5_pp_and_significant(none_err, gap):
    test = architecture.baseline(resnet_table(True, none_err=none_err))
    assert test["mean"] == pytest.approx(100 * (none_err - 0.40), abs=0.5)
    assert test["shows_gap"] is gap


def test_one_seed_never_shows_the_gap():
    df = resnet_table(True)
    assert architecture.baseline(df[df["seed"] == 0])["shows_gap"] is False
    assert architecture.baseline(pd.DataFrame()) == {"seeds": 0, "shows_gap": False}


# --- (a) the ResNet shows the gap and decides -------------------------------------------


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_resnet_with_the_gap_decides(claim, tmp_path):
    tables = {"bn_small_batch": plain_table(True), RESNET: resnet_table(True)}
    v = claim.ANALYSIS.verdict(tables)
    check(v, "supported")
    assert arch(v)["decided_on"] == "resnet" and arch(v)["name"] == "ResNet-20"
    assert v["effect"].startswith("ResNet-20: ")
    assert v["architecture"].startswith("Decided on the ResNet-20 (its own no-norm baseline")
    # the baseline of both, the CNN's verdict beside it, the same call: no disagreement
    assert gap_pp(v, "resnet") == pytest.approx(40, abs=0.5)
    assert gap_pp(v, "cnn") == pytest.approx(25, abs=0.5)
    assert "ResNet-20 +" in v["architecture"] and "VGG-style CNN +" in v["architecture"]
    assert "VGG-style CNN, reported beside it: supported" in v["architecture"]
    assert "differently" not in v["architecture"] and arch(v)["differ"] == []
    assert all(s["statistic"].startswith("ResNet-20: ") for s in v["sub"])
    assert "ResNet's when its deciding cells have runs" in v["rule"]
    drawn(claim.ANALYSIS, tables, tmp_path)


def test_the_resnet_decides_on_its_own_cells_and_baseline():
    tables = {"bn_small_batch": plain_table(True), RESNET: resnet_table(True)}
    cells = bn_small_batch.ANALYSIS.deciding(tables)
    assert set(cells) == {"bn_small_batch (resnet)", "bn_small_batch baseline (resnet)"}
    assert (cells["bn_small_batch (resnet)"]["model.name"] == "resnet").all()
    assert set(cells["bn_small_batch baseline (resnet)"]["norm.name"]) == {"batch", "none"}
    c5 = bn_train_test.ANALYSIS.deciding(tables)["bn_small_batch (resnet)"]
    assert set(zip(c5["norm.name"], c5["train.batch_size"], strict=True)) == {("batch", 2)}


def test_c9_resnet_with_the_gap_decides(tmp_path):
    cnn = ics_table({"none": None, "batch": 1000, "noisy_batch": 1100}).assign(
        **{"model.name": "cnn"}
    )
    resnet = ics_table({"none": None, "batch": 800, "noisy_batch": 1600}).assign(
        **{"model.name": "resnet", "model.depth": 20}
    )
    resnet.loc[resnet["norm.name"] == "none", "test_acc"] = 0.2  # no norm 30 pp below BN
    tables = {"not_ics": pd.concat([cnn, resnet], ignore_index=True)}
    v = c9(tables["not_ics"])
    assert arch(v)["decided_on"] == "resnet"
    assert v["sub"][0]["verdict"] == "contradicted"  # the ResNet's call, not the CNN's
    assert v["estimate"] == pytest.approx(2.0, rel=0.1)
    assert "C9 (a) contradicted on the ResNet-20, supported on the VGG-style CNN" in v["notes"]
    assert "VGG-style CNN: supported" in v["sub"][0]["note"]
    assert set(not_ics.deciding(tables)["not_ics (resnet)"]["model.name"]) == {"resnet"}
    assert not_ics.record_runs(tables)[0] == "resnet"
    drawn(not_ics.ANALYSIS, tables, tmp_path)


# --- (b) no ResNet cells: the CNN decides, and says so ------------------------------------


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
@pytest.mark.parametrize("resnet", ["absent", "baseline"])
def test_without_the_resnet_cells_the_cnn_decides_and_says_so(claim, resnet, tmp_path):
    tables = {"bn_small_batch": plain_table(True)}
    if resnet == "baseline":  # quick: the ResNet's baseline only, which shows the gap
        tables[RESNET] = resnet_table(True, cells="baseline")
    v = claim.ANALYSIS.verdict(tables)
    check(v, "supported")
    assert arch(v)["decided_on"] == "cnn"
    assert v["effect"].startswith("VGG-style CNN: ")
    assert "'s deciding cells have not run" in v["architecture"]
    assert v["architecture"].startswith("Decided on the VGG-style CNN (ResNet")
    if resnet == "baseline":
        assert gap_pp(v, "resnet") == pytest.approx(40, abs=0.5)
        assert "ResNet-20 +" in v["architecture"] and "shows the gap" in v["architecture"]
    else:
        assert "ResNet: not run yet" in v["architecture"]
    # the CNN's deciding cells, and its baseline: it shows the gap, so its seeds count too
    expected = {"bn_small_batch (cnn)", "bn_small_batch baseline (cnn)"}
    assert set(claim.ANALYSIS.deciding(tables)) == expected
    drawn(claim.ANALYSIS, tables, tmp_path)


def test_no_architecture_with_the_gap_the_cnn_decides_as_the_fallback():
    v = bn_small_batch.ANALYSIS.verdict({"bn_small_batch": cnn_without_gap(True)})
    check(v, "supported")
    assert arch(v)["decided_on"] == "cnn"
    assert "no architecture shows the gap: it decides as the fallback" in v["architecture"]
    assert gap_pp(v, "cnn") == pytest.approx(0, abs=0.5)
    assert "(4 seeds, p" in v["architecture"] and "does not show the gap" in v["architecture"]


# --- (c) the two architectures disagree ---------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "cnn", "resnet", "ids"),
    [
        (bn_small_batch, plain_table(False), resnet_table(True), ("C4a", "C4b")),
        (bn_train_test, plain_table(False), resnet_table(True), ("C5",)),
        (ln_in_cnn, plain_table(True), resnet_table(True, ln_worse=False), ("C8",)),
    ],
    ids=["C4", "C5", "C8"],
)
def test_a_claim_the_two_decide_differently_says_so(claim, cnn, resnet, ids):
    v = claim.ANALYSIS.verdict({"bn_small_batch": cnn, RESNET: resnet})
    assert arch(v)["decided_on"] == "resnet"
    other = arch(v)["others"]["cnn"]["verdict"]
    assert other != v["verdict"]
    assert "The two architectures decide differently" in v["architecture"]
    assert "the two architectures decide differently" in v["notes"]
    differ = {d["id"] for d in arch(v)["differ"]}
    assert differ and differ <= set(ids)
    for sub in v["sub"]:
        assert ("VGG-style CNN: " in sub["note"]) is (sub["id"] in differ)


# --- (d) a ResNet whose baseline shows no gap does not decide -----------------------------


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_resnet_without_the_gap_does_not_decide(claim):
    # the ResNet would contradict C4/C5 and C8, but no norm is as good as BN there
    resnet = resnet_table(False, none_err=0.41, ln_worse=False)
    v = claim.ANALYSIS.verdict({"bn_small_batch": plain_table(True), RESNET: resnet})
    check(v, "supported")  # the CNN's call
    assert arch(v)["decided_on"] == "cnn"
    assert "ResNet-20's baseline does not show the gap" in v["architecture"]
    assert gap_pp(v, "resnet") == pytest.approx(1, abs=0.5)
    assert arch(v)["others"]["resnet"]["verdict"] == "contradicted"
    assert "decide differently" in v["architecture"]


# --- C11 reads C4's architecture of record ------------------------------------------------


def test_c11_otherwise_reads_c8s_architecture_and_batch_sizes():
    """C11's batch ≥ 32 row reads C8's architecture of record and the batch sizes of C8's
    deciding cells: here the ResNet's, at 32."""
    from normexp.analysis.claims import recommendations

    tables = {"bn_small_batch": plain_table(True), RESNET: resnet_table(bn_degrades=False)}
    assert arch(ln_in_cnn.ANALYSIS.verdict(tables))["decided_on"] == "resnet"
    rows = {r["scenario"]: r for r in recommendations.judge_all(tables)}
    large = rows["otherwise (batch ≥ 32)"]
    assert large["experiment"] == RESNET
    assert large["where"].startswith("ResNet-20, C8's batch sizes, 32")
    assert recommendations.sub_deciding(tables)["C11 otherwise (batch ≥ 32)"].keys() == {
        "bn_small_batch (resnet)"
    }


def test_c11_tiny_batch_reads_the_architecture_that_decides_c4():
    from normexp.analysis.claims import recommendations

    cnn = plain_table(bn_degrades=True)  # GN ahead at the CNN's smallest batch
    tables = {"bn_small_batch": cnn, RESNET: resnet_table(bn_degrades=False)}  # BN ahead
    rows = {r["scenario"]: r for r in recommendations.judge_all(tables)}
    tiny = rows["tiny batch"]
    assert tiny["experiment"] == RESNET and tiny["where"].startswith("ResNet-20")
    assert tiny["where"].endswith("(BN, GN)")  # the ResNet runs two norms at batch 2
    # its regime rests on C4's deciding cells there, exactly (the baseline's aside)
    mine = recommendations.sub_deciding(tables)["C11 tiny batch"]
    c4 = bn_small_batch.ANALYSIS.deciding(tables)
    assert mine.keys() == {"bn_small_batch (resnet)"} == c4.keys() - {
        k for k in c4 if architecture.is_baseline(k)
    }
    assert mine["bn_small_batch (resnet)"].equals(c4["bn_small_batch (resnet)"])
    assert tiny["winner"] == "batch" and tiny["call"] == "differs"
    assert arch(bn_small_batch.ANALYSIS.verdict(tables))["decided_on"] == "resnet"
    sub = {s["id"]: s for s in recommendations.verdict(tables)["sub"]}
    assert sub["C11 tiny batch"]["statistic"].startswith("ResNet-20: GN vs BN")
    # Without the ResNet's cells both read the CNN.
    rows = {r["scenario"]: r for r in recommendations.judge_all({"bn_small_batch": cnn})}
    assert rows["tiny batch"]["experiment"] == "bn_small_batch"
    assert rows["tiny batch"]["winner"] == "group"


def test_an_architecture_whose_deciding_cells_converge_decides_first():
    from normexp.analysis.verdict.architecture import choose

    ran = {"verdict": "supported", "claim": "C4"}
    verdicts = {"resnet": ran, "cnn": ran}
    gap = {"resnet": {"shows_gap": True}, "cnn": {"shows_gap": True}}
    assert choose(verdicts, gap) == "resnet"  # ORDER, as before
    assert choose(verdicts, gap, {"resnet": False, "cnn": True}) == "cnn"
    no_gap = {**gap, "cnn": {"shows_gap": False}}  # converged but without the gap: not first
    assert choose(verdicts, no_gap, {"resnet": False, "cnn": True}) == "resnet"
