"""Claim analyses C2, C3, C4 (GN-paper protocol, remedies), C5, C8, C11 on synthetic collected
tables whose right verdict is known, both ways; empty tables give "not run yet"; every figure is
written. Also: the new experiments compose and resolve with the intended grids, and the weight
statistics of a model."""

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import hydra
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import normexp
from normexp.analysis import columns
from normexp.analysis.claims import (
    analysis_named,
    bn_generation,
    bn_position,
    bn_small_batch,
    bn_train_test,
    ln_in_cnn,
    load_analyses,
    recommendations,
    rnn_norm,
    weight_side,
)
from normexp.analysis.figures import verdict_of_record
from normexp.analysis.one_scale import MixedScaleError
from normexp.analysis.style import norm_label
from normexp.analysis.verdict import by_seed
from normexp.analysis.verdict.record import MIN_SEEDS, declared_seeds
from normexp.models import build_model
from normexp.sweep import compose_jobs, sweep_overrides
from normexp.tracking.collect import scale_signature
from normexp.train.weight_stats import weight_statistics
from normexp.validate import resolve_config

SEEDS = (0, 1, 2, 3)
NOISE = 0.002  # per-run noise (fractions): small next to every effect the tables build in


def table(cells: list[tuple[dict, dict]], seeds=SEEDS, noise: float = NOISE) -> pd.DataFrame:
    """One row per (cell, seed) as collect produces it: dotted config columns, summary values
    (each plus a little seeded noise), status, seed."""
    rng = np.random.default_rng(0)
    rows = []
    for config, summary in cells:
        for seed in seeds:
            row = {"status": "ok", "seed": seed, "profile": "quick", "n_train": 4000, **config}
            row.update({k: v + noise * rng.standard_normal() for k, v in summary.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def check(verdict: dict, expected: str) -> None:
    assert verdict["verdict"] == expected, verdict
    json.dumps(verdict, allow_nan=False)  # the verdict file is strict JSON


def drawn(analysis, tables: dict, tmp_path: Path) -> Path:
    out = analysis.draw(tables, tmp_path / f"{analysis.name}.png")
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return out


@pytest.mark.parametrize(
    "analysis",
    [
        weight_side.ANALYSIS,
        bn_position.ANALYSIS,
        bn_small_batch.ANALYSIS,
        bn_train_test.ANALYSIS,
        ln_in_cnn.ANALYSIS,
        recommendations.ANALYSIS,
    ],
    ids=lambda a: a.name,
)
def test_empty_tables_are_not_run_yet_and_still_draw(analysis, tmp_path):
    for tables in ({}, {e: pd.DataFrame() for e in analysis.reads}):
        check(analysis.verdict(tables), "not run yet")
        drawn(analysis, tables, tmp_path)


def test_the_registry_lists_the_new_analyses():
    names = [a.name for a in load_analyses()]
    for name in (
        "weight_side",
        "bn_position",
        "bn_small_batch",
        "bn_train_test",
        "ln_in_cnn",
        "recommendations",
    ):
        assert name in names
    claims = [a.claim for a in load_analyses()]
    assert claims == sorted(claims, key=lambda c: int(c[1:]))


# --- C2 weight_side --------------------------------------------------------------------


def arm(norm="none", side="none", l1=0.0, wd=0.0) -> dict:
    return {
        "norm.name": norm,
        "model.weight_side": side,
        "optim.l1": l1,
        "optim.weight_decay": wd,
        "model.name": "cnn",
    }


def weight_side_table(holds: bool, with_stats: bool = True) -> pd.DataFrame:
    def s(acc, zero, norm):
        out = {"test_acc": acc}
        if with_stats:
            out.update(weight_near_zero_frac=zero, weight_l2_norm=norm, weight_l1_norm=100 * norm)
        return out

    l1_zero = 0.5 if holds else 0.001
    l2_zero = 0.003 if holds else 0.2
    return table(
        [
            (arm("batch"), s(0.50, 0.003, 25.0)),
            (arm(), s(0.35, 0.003, 22.0)),
            (arm(side="weight_norm"), s(0.40 if holds else 0.30, 0.003, 21.0)),
            (arm("mean_only_batch", "weight_norm"), s(0.51 if holds else 0.30, 0.003, 21.0)),
            (arm(wd=5e-4), s(0.35, 0.003, 20.0)),
            (arm(wd=5e-3), s(0.31, l2_zero, 12.0 if holds else 30.0)),
            (arm(l1=5e-5), s(0.35, 0.05, 20.0)),
            (arm(l1=5e-4), s(0.32, l1_zero, 12.0)),
        ]
    )


def test_weight_side_supported_when_l1_sparsifies_l2_shrinks_and_wn_trains(tmp_path):
    tables = {"weight_side": weight_side_table(holds=True)}
    v = weight_side.verdict(tables)
    check(v, "supported")
    assert v["estimate"] == pytest.approx(100 * (0.5 - 0.003), abs=1)
    assert set(v["details"]["decisions"].values()) == {"supported"}
    assert [lv["l1"] for lv in v["details"]["matched_levels"]] == [5e-5, 5e-4]
    drawn(weight_side.ANALYSIS, tables, tmp_path)


def test_weight_side_contradicted_when_l2_is_sparser_than_l1():
    v = weight_side.verdict({"weight_side": weight_side_table(holds=False)})
    check(v, "contradicted")
    decisions = v["details"]["decisions"]
    assert decisions["a_l1_sparser_than_l2"] == "contradicted"
    assert decisions["b_l2_smaller_than_none_pct"] == "contradicted"
    assert decisions["c_wn_minus_none_acc_pp"] == "contradicted"


def test_weight_side_without_weight_statistics_decides_on_what_it_can(tmp_path):
    tables = {"weight_side": weight_side_table(holds=True, with_stats=False)}
    v = weight_side.verdict(tables)
    check(v, "inconclusive")  # accuracy part supported, weight parts not run yet
    assert v["details"]["decisions"]["a_l1_sparser_than_l2"] == "not run yet"
    assert v["estimate"] is None and "weight statistics" in v["notes"]
    drawn(weight_side.ANALYSIS, tables, tmp_path)


def test_weight_side_arm_labels_come_from_the_config():
    assert weight_side.arm_label("mean_only_batch", "weight_norm", 0, 0) == "WN + mean-only BN"
    assert weight_side.arm_label("none", "none", 5e-4, 0) == "L1 0.0005"
    assert weight_side.arm_label("none", "none", 0, 5e-3) == "L2 0.005"


# --- C3 bn_position --------------------------------------------------------------------


def position_table(post_minus_pre: dict) -> pd.DataFrame:
    cells = []
    for (model, act), delta in post_minus_pre.items():
        for position, acc in (("pre", 0.5), ("post", 0.5 + delta)):
            config = {
                "model.name": model,
                "model.activation": act,
                "norm.position": position,
                "norm.name": "batch",
            }
            cells.append((config, {"test_acc": acc}))
    return table(cells)


def test_bn_position_supported_when_post_wins_in_the_relu_cnn(tmp_path):
    deltas = {("cnn", "relu"): 0.03, ("cnn", "tanh"): 0.0, ("mlp", "relu"): 0.01}
    deltas[("mlp", "tanh")] = 0.02
    tables = {"bn_position": position_table(deltas)}
    v = bn_position.verdict(tables)
    check(v, "supported")
    assert v["estimate"] == pytest.approx(3.0, abs=0.5)
    assert v["details"]["cells"]["cnn/tanh"]["decision"] == "inconclusive"
    drawn(bn_position.ANALYSIS, tables, tmp_path)


def test_bn_position_contradicted_when_pre_wins_in_the_relu_cnn():
    deltas = {("cnn", "relu"): -0.03, ("mlp", "relu"): 0.02}
    check(bn_position.verdict({"bn_position": position_table(deltas)}), "contradicted")


def test_bn_position_inconclusive_when_the_relu_cnn_cell_is_unclear():
    deltas = {("cnn", "relu"): 0.0, ("mlp", "tanh"): 0.03}
    v = bn_position.verdict({"bn_position": position_table(deltas)})
    check(v, "inconclusive")
    assert v["details"]["cells"]["mlp/tanh"]["decision"] == "supported"  # reported only


# --- C4 bn_small_batch: plain, GN-paper protocol, remedies ------------------------------

BATCHES = (2, 4, 8, 16, 32, 64, 128)


def plain_table(bn_degrades: bool, ln_worse: bool = True) -> pd.DataFrame:
    """bn_small_batch: test error per (norm, batch) and the BN runs' three accuracies."""
    cells = []
    for b in BATCHES:
        small = b <= 4
        errs = {
            "batch": (0.60 if small and bn_degrades else 0.40),
            "group": 0.45,
            "layer": 0.50 if ln_worse else 0.38,
            "instance": 0.55,
            "none": 0.65,
        }
        for norm, err in errs.items():
            summary = {"test_err": err, "test_acc": 1 - err}
            if norm == "batch":
                gap = 0.1 if small and bn_degrades else 0.0
                summary.update(test_acc_batch_stats=1 - err - gap, test_acc_precise_bn=1 - err)
            cells.append(({"norm.name": norm, "train.batch_size": b}, summary))
    return table(cells)


def devices_table(bn_degrades: bool) -> pd.DataFrame:
    cells = []
    for g in (2, 4, 8, 16):
        err = 0.60 if g <= 4 and bn_degrades else 0.40
        config = {
            "norm.name": "ghost_batch",
            "norm.group_size": g,
            "train.batch_size": 8 * g,
            "devices.count": 8,
        }
        cells.append((config, {"test_err": err, "test_acc": 1 - err}))
    return table(cells)


def remedies_table() -> pd.DataFrame:
    cells = []
    for b in (2, 8, 32):
        for norm, side, err in (("batch_renorm", "none", 0.42), ("group", "weight_std", 0.40)):
            config = {"norm.name": norm, "model.weight_side": side, "train.batch_size": b}
            cells.append((config, {"test_err": err, "test_acc": 1 - err}))
    return table(cells)


def test_bn_small_batch_reads_the_devices_remedies_and_resnet_tables():
    assert bn_small_batch.ANALYSIS.reads == (
        "bn_small_batch",
        "bn_small_batch_devices",
        "bn_small_batch_remedies",
        "bn_small_batch_resnet",
    )


def test_bn_small_batch_both_protocols_and_remedies(tmp_path):
    tables = {
        "bn_small_batch": plain_table(bn_degrades=True),
        "bn_small_batch_devices": devices_table(bn_degrades=True),
        "bn_small_batch_remedies": remedies_table(),
    }
    v = bn_small_batch.ANALYSIS.verdict(tables)
    check(v, "supported")
    gn = v["details"]["gn_paper_protocol"]
    assert gn["call"] == "supported"
    assert (gn["small_per_device"], gn["reference_per_device"]) == (2, 16)
    assert gn["total_batch"] == {"2": 16, "4": 32, "8": 64, "16": 128}
    assert gn["a_gap_growth_pp"]["mean"] == pytest.approx(20.0, abs=1)
    remedies = v["details"]["remedies"]
    assert set(remedies) == {"2", "8", "32"}
    assert remedies["2"]["batch_renorm_minus_bn_pp"]["mean"] == pytest.approx(-18.0, abs=1)
    assert remedies["2"]["gn_ws_minus_gn_pp"]["decision"] == "contradicted"  # GN+WS better
    out = drawn(bn_small_batch.ANALYSIS, tables, tmp_path)
    assert out.stat().st_size > 20_000


def test_bn_small_batch_contradicted_in_both_protocols_when_bn_does_not_degrade():
    tables = {
        "bn_small_batch": plain_table(bn_degrades=False),
        "bn_small_batch_devices": devices_table(bn_degrades=False),
    }
    v = bn_small_batch.ANALYSIS.verdict(tables)
    check(v, "contradicted")
    assert v["details"]["gn_paper_protocol"]["call"] == "contradicted"
    assert v["details"]["remedies"] == {}


def test_bn_small_batch_without_the_devices_runs_keeps_the_plain_verdict(tmp_path):
    tables = {"bn_small_batch": plain_table(bn_degrades=True)}
    v = bn_small_batch.ANALYSIS.verdict(tables)
    check(v, "supported")
    assert v["details"]["gn_paper_protocol"] == {"call": "not run yet"}
    drawn(bn_small_batch.ANALYSIS, tables, tmp_path)


def test_the_gn_paper_protocol_reads_the_splits_whose_total_has_gn_runs():
    """Quick's plain grid (2, 8, 32, 128) has no GN at totals 16 and 64: the protocol is read
    at 4 and 16 images per device (totals 32 and 128), not left "not run yet" by the others."""
    plain = plain_table(bn_degrades=True)
    plain = plain[plain["train.batch_size"].isin([2, 8, 32, 128])]
    tables = {"bn_small_batch": plain, "bn_small_batch_devices": devices_table(True)}
    gn = bn_small_batch.ANALYSIS.verdict(tables)["details"]["gn_paper_protocol"]
    assert (gn["small_per_device"], gn["reference_per_device"]) == (4, 16)
    assert gn["total_batch"] == {"4": 32, "16": 128} and gn["call"] != "not run yet"


def at_scale(df: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """``df``'s runs as collect records them at a profile row of ``epochs`` epochs."""
    row = {"n_train": 4000, "epochs": epochs, "widths": [16, 32, 64]}
    return df.assign(scale=scale_signature({"profile": "quick", "scale": {"quick": row}}))


def test_bn_small_batch_leaves_out_what_runs_at_another_scale_and_its_panel_refuses(tmp_path):
    """The GN-paper protocol and the remedies at another scale than the plain runs: their
    statistics are left out, saying why; the panel that would combine them refuses."""
    plain = at_scale(plain_table(bn_degrades=True), epochs=8)
    tables = {
        "bn_small_batch": plain,
        "bn_small_batch_devices": at_scale(devices_table(bn_degrades=True), epochs=4),
        "bn_small_batch_remedies": at_scale(remedies_table(), epochs=4),
    }
    v = bn_small_batch.ANALYSIS.verdict(tables)
    check(v, "supported")  # the plain protocol decides, at its own scale
    gn = v["details"]["gn_paper_protocol"]
    assert gn["call"] == bn_small_batch.LEFT_OUT and "epochs 4" in gn["why"]
    assert v["details"]["remedies"] == {}
    assert "bn_small_batch_remedies is left out" in v["notes"]
    assert "GN-paper protocol" not in v["effect"]
    fig, ax = plt.subplots()
    with pytest.raises(MixedScaleError, match="GN-paper-protocol panel"):
        bn_small_batch._draw_devices(ax, plain, tables["bn_small_batch_devices"])
    plt.close(fig)
    drawn(bn_small_batch.ANALYSIS, tables, tmp_path)  # the figure leaves the panel out instead


# --- C5 bn_train_test ------------------------------------------------------------------


def test_bn_train_test_supported_when_batch_statistics_change_accuracy(tmp_path):
    tables = {"bn_small_batch": plain_table(bn_degrades=True)}
    v = bn_train_test.ANALYSIS.verdict(tables)
    check(v, "supported")
    assert v["details"]["small_batch"] == 2
    assert v["estimate"] == pytest.approx(-10.0, abs=0.5)
    per = v["details"]["per_batch_pp"]
    assert per["128"]["batch_minus_running"]["decision"] == "inconclusive"
    drawn(bn_train_test.ANALYSIS, tables, tmp_path)


def test_bn_train_test_contradicted_when_the_three_evaluations_agree():
    v = bn_train_test.ANALYSIS.verdict({"bn_small_batch": plain_table(bn_degrades=False)})
    check(v, "contradicted")


def test_bn_train_test_without_batch_statistics_is_not_run_yet():
    df = plain_table(bn_degrades=True).drop(columns=["test_acc_batch_stats"])
    check(bn_train_test.ANALYSIS.verdict({"bn_small_batch": df}), "not run yet")


# --- C8 ln_in_cnn ----------------------------------------------------------------------


def trained(df: pd.DataFrame) -> pd.DataFrame:
    """C8 reads only cells that pass the convergence check: ``df`` (runs of record) plus, per
    cell, a run at twice the epochs on the first seed that gains 0.2 pp of val_acc."""
    df = df.assign(val_acc=0.6, **{"protocol.stage": "record", "train.epochs": 4})
    doubled = df[df["seed"] == df["seed"].min()]
    doubled = doubled.assign(val_acc=0.602, **{"protocol.stage": "check", "train.epochs": 8})
    return pd.concat([df, doubled], ignore_index=True)


def test_ln_in_cnn_supported_when_ln_trails_bn_and_gn(tmp_path):
    tables = {"bn_small_batch": trained(plain_table(bn_degrades=True))}
    v = ln_in_cnn.ANALYSIS.verdict(tables)
    check(v, "supported")
    assert v["details"]["batch_sizes"] == [32, 64, 128]
    assert v["estimate"] == pytest.approx(10.0, abs=0.5)
    assert v["details"]["in_minus_ln_pp"]["decision"] == "supported"
    drawn(ln_in_cnn.ANALYSIS, tables, tmp_path)


def test_ln_in_cnn_contradicted_when_ln_beats_bn():
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": trained(plain_table(True, ln_worse=False))})
    check(v, "contradicted")


def test_ln_in_cnn_pools_only_seeds_with_every_large_batch():
    df = plain_table(bn_degrades=True)
    drop = (df["norm.name"] == "layer") & (df["train.batch_size"] == 64) & (df["seed"] == 3)
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": trained(df[~drop])})
    assert v["details"]["ln_minus_bn_pp"]["seeds"] == len(SEEDS) - 1


# --- C11 recommendations ---------------------------------------------------------------


def generation_table(best: str) -> pd.DataFrame:
    cells = []
    for b in (8, 32):
        for norm in ("batch", "instance", "layer", "none"):
            psnr = 25.0 if norm == best else 22.0
            cells.append(({"norm.name": norm, "train.batch_size": b}, {"test_psnr": psnr}))
    return table(cells, noise=0.05)


def rnn_table(bpc: str | dict) -> pd.DataFrame:
    """Character-level runs (``bpc``: the best cell, or each cell's bpc), plus word-level ones
    (no bpc, another winner) that must be ignored."""
    cells = ("none", "layer", "batch_per_step", "batch_shared", "rms")
    bpc = bpc if isinstance(bpc, dict) else {bpc: 1.40}
    rows = [
        ({"norm.name": n, "data.level": "char"}, {"test_bpc": bpc.get(n, 1.55)}) for n in cells
    ]
    word = [({"norm.name": n, "data.level": "word"}, {"test_ppl": 120.0}) for n in ("none", "rms")]
    return table(rows + word)


# C6's deciding task (the Gram-loss stylization, scored by its test loss: lower is better), and
# the two tasks reported beside it (test PSNR)
GRAM, STYLE, RESTORE = "bn_generation_gram", "bn_generation_style", "bn_generation"


def gram_loss_table(best: str) -> pd.DataFrame:
    """Gram-loss stylization runs: ``best`` has the lowest held-out loss (0.20 against 0.26)."""
    cells = []
    for b in (4, 32):
        for norm in ("batch", "instance", "layer", "none"):
            loss = {"test_stylization_loss": 0.20 if norm == best else 0.26}
            cells.append(({"norm.name": norm, "train.batch_size": b}, loss))
    return table(cells)


def c11_tables(generation: str = "instance", rnn: str | dict = "layer") -> dict:
    """C11's sources, each with a known winner; the reported C6 tasks' the opposite of the Gram
    task's, so reading one of them instead would change the generation row."""
    other = "batch" if generation == "instance" else "instance"
    return {
        "bn_small_batch": plain_table(bn_degrades=True),
        GRAM: gram_loss_table(generation),
        STYLE: generation_table(other),
        RESTORE: generation_table(other),
        "rnn_norm": rnn_table(rnn),
    }


def test_recommendations_supported_when_every_winner_is_the_blogs(tmp_path):
    tables = c11_tables()
    v = recommendations.verdict(tables)
    check(v, "supported")
    rows = {r["scenario"]: r for r in v["details"]["scenarios"]}
    assert rows["tiny batch"]["winner"] == "group"
    assert rows["otherwise (batch ≥ 32)"]["winner"] == "batch"
    assert rows["RNN"]["margin"]["mean"] == pytest.approx(0.15, abs=0.01)
    assert v["estimate"] == 4
    drawn(recommendations.ANALYSIS, tables, tmp_path)


def test_recommendations_contradicted_when_a_winner_clearly_differs():
    v = recommendations.verdict(c11_tables(generation="batch"))
    check(v, "contradicted")
    rows = {r["scenario"]: r for r in v["details"]["scenarios"]}
    assert rows["image generation"]["call"] == "differs"
    assert rows["image generation"]["winner"] == "batch"


def test_recommendations_missing_scenarios_are_not_run_yet(tmp_path):
    tables = {"bn_small_batch": plain_table(bn_degrades=True)}
    v = recommendations.verdict(tables)
    check(v, "inconclusive")
    calls = {r["scenario"]: r["call"] for r in v["details"]["scenarios"]}
    assert calls["image generation"] == calls["RNN"] == "not run yet"
    assert calls["tiny batch"] == "matches"
    drawn(recommendations.ANALYSIS, tables, tmp_path)


def test_c11_reads_c6s_deciding_task_and_follows_it_when_it_changes(monkeypatch):
    """C6 is decided on its deciding task (the Gram-loss stylization, by its test loss, lower is
    better): C11's generation row reads that task, with C6's score, through the registry; the
    lowest loss wins. Another deciding task moves the row with it."""
    c6 = analysis_named("bn_generation")
    task = bn_generation.DECIDING_TASK
    assert c6.score.experiment == task.experiment == GRAM
    assert c6.score.metric == task.metric == "test_stylization_loss"
    assert not c6.score.higher_is_better and not task.higher_is_better
    assert GRAM in analysis_named("recommendations").reads  # the registry adds it
    assert not {STYLE, RESTORE} & set(analysis_named("recommendations").reads)
    tables = c11_tables(generation="instance")  # Gram task: IN lowest; the reported: BN best
    rows = {r["scenario"]: r for r in recommendations.judge_all(tables)}
    row = rows["image generation"]
    assert row["experiment"] == GRAM and row["unit"] == c6.score.unit
    assert row["winner"] == "instance" and row["call"] == "matches"
    assert row["means"]["instance"] == pytest.approx(20.0, abs=0.5)  # the loss ×100
    assert row["blog_vs_rival"]["mean"] == pytest.approx(6.0, abs=0.5)  # > 0: IN's loss lower
    assert recommendations.sub_deciding(tables)["C11 image generation"].keys() == {GRAM}
    # BN's loss lowest: the row differs (a higher loss never wins)
    rows = {r["scenario"]: r for r in recommendations.judge_all(c11_tables(generation="batch"))}
    assert rows["image generation"]["winner"] == "batch"
    assert rows["image generation"]["call"] == "differs"
    # as if C6 were decided on the restoration, by its PSNR (higher is better)
    restoration = replace(
        c6.score, experiment=RESTORE, metric="test_psnr", higher_is_better=True, unit="dB",
        scale=1.0,
    )
    monkeypatch.setattr(bn_generation, "ANALYSIS", replace(c6, score=restoration))
    rows = {r["scenario"]: r for r in recommendations.judge_all(tables)}
    assert rows["image generation"]["experiment"] == RESTORE
    assert rows["image generation"]["winner"] == "batch"
    assert rows["image generation"]["call"] == "differs"


def test_c11_counts_rmsnorm_in_lns_family_as_c7b_does():
    """RMSNorm best, LN next, BN per step behind: the blog's pick (LN) is compared with the
    best cell outside LN's family (BN per step), never with RMSNorm."""
    assert analysis_named("rnn_norm").score.family == rnn_norm.FAMILY == {"rms": "layer"}
    assert "RMSNorm counted in LN's family" in rnn_norm.family_note()
    bpc = {"rms": 1.38, "layer": 1.40, "batch_per_step": 1.45}
    rows = {r["scenario"]: r for r in recommendations.judge_all(c11_tables(rnn=bpc))}
    rnn = rows["RNN"]
    assert rnn["winner"] == "rms" and rnn["rival"] == "batch_per_step"
    assert rnn["blog_vs_rival"]["mean"] == pytest.approx(0.05, abs=0.01)
    assert rnn["call"] == "matches"
    assert f"{norm_label('rms')} in LN's family, not a rival" in rnn["where"]


def with_checks(df: pd.DataFrame, metric: str, value: float, gain: float) -> pd.DataFrame:
    """``df`` as runs of record plus, per cell, a check run at twice the epochs on the first
    seed whose final ``metric`` differs by ``gain`` (one convergence check per cell)."""
    df = df.assign(**{metric: value, "protocol.stage": "record", "train.epochs": 4})
    doubled = df[df["seed"] == df["seed"].min()]
    doubled = doubled.assign(**{metric: value + gain, "protocol.stage": "check", "train.epochs": 8})
    both = pd.concat([df, doubled], ignore_index=True)
    return both.assign(run_key=[f"run{i}" for i in range(len(both))])  # the pairs are found by it


def test_each_c11_row_takes_its_sources_regime():
    """The LSTM cells pass the convergence check, the CNN's are not checked: C11's RNN row keeps
    its call at convergence, its tiny-batch row (C4's cells) reads under-trained, and so does
    the claim."""
    tables = c11_tables()
    tables["rnn_norm"] = with_checks(tables["rnn_norm"], "valid_bpc", 1.5, gain=-0.001)
    c11 = analysis_named("recommendations")
    record = {"declared": {"quick": [0, 1, 2]}, "outside_declared": 0,
              "added_by_other_files": {}, "commits": []}  # fmt: skip
    v = verdict_of_record(c11, tables, record, tables)
    sub = {s["id"]: s for s in v["sub"]}
    rnn, tiny = sub["C11 RNN"], sub["C11 tiny batch"]
    assert rnn["deciding_runs"] == ["rnn_norm"] and rnn["regime"]["kind"] == "at convergence"
    assert rnn["verdict"] == "supported" and not rnn.get("under_trained")
    assert tiny["regime"]["kind"] == "at a fixed budget"
    assert tiny["verdict"] == "inconclusive" and tiny["call_at_budget"] == "supported"
    assert tiny["deciding_runs"] == ["bn_small_batch (cnn)"]
    assert v["under_trained"] and v["call_at_budget"] == "supported"


# --- weight statistics -----------------------------------------------------------------


def test_weight_statistics_use_effective_weights_and_count_near_zeros():
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0, 1e-4, 2.0]] * 3))
        net[2].weight.fill_(0.5)
    stats = weight_statistics(net)
    assert stats["weight_count"] == 12 + 6
    assert stats["weight_near_zero_frac"] == pytest.approx(6 / 18)  # 0 and 1e-4 < 1e-3 * 2
    assert stats["weight_l2_norm"] == pytest.approx(math.sqrt(3 * (1 + 1e-8 + 4) + 6 * 0.25))
    assert stats["weight_l1_norm"] == pytest.approx(3 * 3.0001 + 3.0)


@pytest.mark.parametrize("side", ["weight_norm", "weight_std"])
def test_weight_statistics_of_a_weight_normalized_cnn(side):
    model = build_model(
        {
            "name": "cnn",
            "widths": [4, 8],
            "convs_per_stage": 1,
            "activation": "relu",
            "weight_side": side,
        },
        {
            "name": "group" if side == "weight_std" else "none",
            "position": "pre",
            **({"num_groups": 2} if side == "weight_std" else {}),
        },
    )
    conv = model.features[0][0]
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        if side == "weight_norm":
            conv.parametrizations.weight.original0.mul_(3.0)  # g: the effective weight grows
        effective = torch.cat([m.weight.flatten() for m in layers]).double()
        raw = torch.cat(  # what the optimizer holds: v for WN, the unstandardized filter for WS
            [
                m.parametrizations.weight.original1.flatten()
                if side == "weight_norm" and hasattr(m, "parametrizations")
                else m.parametrizations.weight.original.flatten()
                if hasattr(m, "parametrizations")
                else m.weight.flatten()
                for m in layers
            ]
        ).double()
    stats = weight_statistics(model)
    assert stats["weight_l2_norm"] == pytest.approx(float(effective.norm()), rel=1e-6)
    assert stats["weight_l2_norm"] != pytest.approx(float(raw.norm()), rel=1e-3)
    assert stats["weight_count"] == effective.numel()


# --- experiments: compose, resolve, grid sizes -----------------------------------------

CONFIG_DIR = Path(normexp.__file__).parent.parent / "configs"
GRIDS = {  # experiment -> (claim id, grid points per seed, or {profile: points})
    "weight_side": ("C2", 8),
    "bn_position": ("C3", 8),
    # the splits whose total is in bn_small_batch's grid at the profile (quick: 32 and 128)
    "bn_small_batch_devices": ("C4", {"smoke": 4, "quick": 2}),
    "bn_small_batch_remedies": ("C4", 4),
}
# Reported beside C4's verdict, not decided on: they run the profile's report seeds
# (scale.<profile>.sweep.report_seeds: quick and standard 0-2), not its seeds of record.
REPORTED = {"bn_small_batch_devices", "bn_small_batch_remedies"}


pytestmark = pytest.mark.usefixtures("results_in_tmp")


def jobs_of(experiment: str, profile: str) -> list[dict]:
    cfg = hydra.compose(
        "config",
        overrides=[f"experiment={experiment}", f"profile={profile}"],
        return_hydra_config=True,
    )
    return [resolve_config(job) for job in compose_jobs(cfg)]  # as the launcher composes them


@pytest.mark.parametrize("profile", ["smoke", "quick"])
@pytest.mark.parametrize("experiment", sorted(GRIDS))
def test_new_experiments_resolve_with_their_grid(hydra_ctx, experiment, profile):
    claim, points = GRIDS[experiment]
    points = points[profile] if isinstance(points, dict) else points
    jobs = jobs_of(experiment, profile)
    seeds = {j["seed"] for j in jobs}
    if experiment in REPORTED:
        report = jobs[0]["scale"][profile]["sweep"]["report_seeds"]
        assert seeds == {int(s) for s in str(report).split(",")}
        assert seeds <= set(declared_seeds(profile)) or profile == "smoke"
    else:
        # the sweep runs exactly the seeds of record the profile declares (at least 5 at quick)
        assert seeds == set(declared_seeds(profile))
        assert len(seeds) == (1 if profile == "smoke" else MIN_SEEDS[profile])
    assert len(jobs) == points * len(seeds)
    assert {(j["claim"]["id"], j["claim"]["name"]) for j in jobs} == {(claim, experiment)}
    assert {j["profile"] for j in jobs} == {profile}
    distinct = {
        json.dumps({k: v for k, v in j.items() if k != "seed"}, sort_keys=True) for j in jobs
    }
    assert len(distinct) == points


def test_weight_side_arms(hydra_ctx):
    arms = {
        (j["norm"]["name"], j["model"]["weight_side"], j["optim"]["l1"], j["optim"]["weight_decay"])
        for j in jobs_of("weight_side", "smoke")
    }
    assert arms == {
        ("batch", "none", 0.0, 0.0),
        ("none", "none", 0.0, 0.0),
        ("none", "weight_norm", 0.0, 0.0),
        ("mean_only_batch", "weight_norm", 0.0, 0.0),
        ("none", "none", 0.0, 5e-4),
        ("none", "none", 0.0, 5e-3),
        ("none", "none", 5e-5, 0.0),
        ("none", "none", 5e-4, 0.0),
    }
    # matched strengths: l1 = 0.1 x weight_decay, pairwise
    assert all(j["train"]["batch_size"] == 32 for j in jobs_of("weight_side", "smoke"))


def test_bn_position_grid(hydra_ctx):
    cells = {
        (j["model"]["name"], j["model"]["activation"], j["norm"]["position"], j["norm"]["name"])
        for j in jobs_of("bn_position", "smoke")
    }
    assert cells == {
        (m, a, p, "batch")
        for m in ("cnn", "mlp")
        for a in ("relu", "tanh")
        for p in ("pre", "post")
    }


def test_devices_split_batch_over_eight_devices(hydra_ctx):
    jobs = jobs_of("bn_small_batch_devices", "smoke")
    pairs = sorted((j["norm"]["group_size"], j["train"]["batch_size"]) for j in jobs)
    assert pairs == [(2, 16), (4, 32), (8, 64), (16, 128)]
    for j in jobs:
        assert j["norm"]["name"] == "ghost_batch"
        assert j["train"]["batch_size"] == j["devices"]["count"] * j["devices"]["per_device"]
        assert j["devices"]["count"] == 8
        assert j["devices"]["batch"] == j["train"]["batch_size"]


def test_devices_and_remedies_run_at_the_plain_runs_scale_and_totals(hydra_ctx):
    """GN/LN/IN/none for the GN-paper protocol are read from bn_small_batch at the same total,
    and BN/GN beside the remedies: at every profile those runs exist, at the same scale (one
    scale per figure and statistic)."""

    def rows(experiment: str) -> dict:  # every profile's scale row, without composing jobs
        cfg = hydra.compose("config", overrides=[f"experiment={experiment}"])
        return OmegaConf.to_container(cfg.scale, resolve=True)

    plain, devices, remedies = (
        rows(e) for e in ("bn_small_batch", "bn_small_batch_devices", "bn_small_batch_remedies")
    )
    for profile in ("smoke", "quick", "standard", "paper"):

        def scale(table: dict, p: str = profile) -> str:
            return scale_signature({"profile": p, "scale": table})

        assert scale(devices) == scale(remedies) == scale(plain), profile
        sizes = {int(b) for b in plain[profile]["sweep"]["batch_sizes"].split(",")}
        # each split states its total (test_devices_split_batch_over_eight_devices checks it)
        totals = {int(b) for b in re.findall(r"batch: (\d+)", devices[profile]["sweep"]["devices"])}
        assert totals and totals <= sizes, profile


def test_remedies_pair_gn_with_weight_standardization(hydra_ctx):
    cells = {
        (j["norm"]["name"], j["model"]["weight_side"], j["train"]["batch_size"])
        for j in jobs_of("bn_small_batch_remedies", "smoke")
    }
    assert cells == {
        (n, w, b) for n, w in (("batch_renorm", "none"), ("group", "weight_std")) for b in (2, 32)
    }


# --- the column vocabulary --------------------------------------------------------------


def _flat(tree: dict, prefix: str = "") -> set[str]:
    """Dotted names of a resolved config's leaves, as collect names the table's columns."""
    names = set()
    for key, value in tree.items():
        name = f"{prefix}{key}"
        names |= _flat(value, f"{name}.") if isinstance(value, dict) else {name}
    return names


def test_every_config_column_the_analyses_read_is_in_a_resolved_config(hydra_ctx):
    """A renamed config key fails here, not as a silent "not run yet" in the report."""
    experiments = sorted(p.stem for p in (CONFIG_DIR.parent / "experiments").glob("*.yaml"))
    names = set()
    for experiment in experiments:
        cfg = hydra.compose(
            "config",
            overrides=[f"experiment={experiment}", "profile=smoke"],
            return_hydra_config=True,
        )
        first_job = sweep_overrides(cfg)[0]
        names |= _flat(resolve_config(hydra.compose("config", overrides=first_job)))
    assert set(columns.CONFIG_COLUMNS) <= names, set(columns.CONFIG_COLUMNS) - names


@pytest.mark.parametrize(
    ("analysis", "experiment", "table_of", "renamed"),
    [
        (
            bn_position,
            "bn_position",
            lambda: position_table({("cnn", "relu"): 0.05}),
            "model.activation",
        ),
        (bn_small_batch, "bn_small_batch", lambda: plain_table(True), "train.batch_size"),
        (bn_train_test, "bn_small_batch", lambda: plain_table(True), "train.batch_size"),
        (ln_in_cnn, "bn_small_batch", lambda: plain_table(True), "norm.name"),
        (recommendations, "bn_small_batch", lambda: plain_table(True), "train.batch_size"),
        (weight_side, "weight_side", lambda: weight_side_table(holds=True), "optim.l1"),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)).rsplit(".", 1)[-1],
)
def test_runs_without_a_column_are_an_error_not_a_verdict(
    analysis, experiment, table_of, renamed, tmp_path
):
    df = table_of().rename(columns={renamed: renamed + "_renamed"})
    with pytest.raises(columns.MissingColumnError, match=renamed):
        analysis.ANALYSIS.verdict({experiment: df})
    with pytest.raises(columns.MissingColumnError, match=renamed):
        analysis.draw({experiment: df}, tmp_path / "figure.png")


def test_by_seed_tells_no_rows_from_a_missing_column():
    df = table([({"norm.name": "batch"}, {"test_acc": 0.5})])
    assert by_seed(df.iloc[:0], "test_acc", {"norm.name": "batch"}) == {}  # not run yet
    assert by_seed(df, "test_acc", {"norm.name": "batch"}).keys() == set(SEEDS)
    with pytest.raises(columns.MissingColumnError, match="test_err"):
        by_seed(df, "test_err", {"norm.name": "batch"})
    with pytest.raises(columns.MissingColumnError, match="norm.position"):
        by_seed(df, "test_acc", {"norm.position": "pre"})
