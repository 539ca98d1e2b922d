"""The scale table: every sub-claim at every profile, and what changes with scale."""

import json

from normexp.analysis import style
from normexp.analysis.report import extra_markdown, render_html, scales

C4A = "growth of BN − GN test error from batch 32 to 2, pp"  # the statistic the anchor measures
C4B = "BN − GN test error at batch 2, pp"
C2A = "near-zero weights, L1 − L2 at the strongest matched strength, pp"  # no anchor


def _sub(id_: str, statistic: str, verdict: str, est: float, ci: tuple[float, float] | None):
    return {
        "id": id_,
        "statement": f"statement of {id_}",
        "verdict": verdict,
        "statistic": statistic,
        "estimate": est,
        "ci": list(ci) if ci else None,
        "p_holm": 0.01,
        "seeds": 5,
        "note": "",
    }


def _verdict(claim: str, experiment: str, verdict: str, *subs: dict) -> dict:
    return {
        "claim": claim,
        "experiment": experiment,
        "verdict": verdict,
        "effect": "",
        "estimate": subs[0]["estimate"] if subs else None,
        "ci": subs[0]["ci"] if subs else None,
        "ci_note": "",
        "anchor": "",
        "sub": list(subs),
    }


EXPERIMENTS = {"C2": "weight_side", "C4": "bn_small_batch", "C7": "rnn_norm"}


def _one(id_: str, statistic: str, verdict: str, est: float, ci: tuple[float, float]) -> dict:
    """A claim's verdict with one sub-claim, the claim's call the sub-claim's."""
    claim = id_.rstrip("abc")
    return _verdict(claim, EXPERIMENTS[claim], verdict, _sub(id_, statistic, verdict, est, ci))


def _rows(quick: list[dict], standard: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in scales.scale_rows({"quick": quick, "standard": standard})}


def test_agreeing_calls_and_overlapping_cis_show_no_change():
    q = [_one("C4a", C4A, "supported", 5, (4, 6))]
    s = [_one("C4a", C4A, "supported", 5.5, (5, 6))]
    rows = _rows(q, s)
    assert rows["C4a"]["change"] == "no detectable change"
    assert rows["C4"]["change"] == ""  # the claim's row: same call, no effect of its own


def test_effect_that_grows_toward_the_anchor_says_so():
    q = [_one("C4a", C4A, "supported", 2.1, (1.5, 2.7))]
    s = [_one("C4a", C4A, "supported", 5.3, (4.8, 5.8))]
    row = _rows(q, s)["C4a"]
    assert row["anchor"] == (11.1, "GN paper, ResNet-50 ImageNet")  # (34.7−24.1) − (23.6−24.1)
    assert row["change"].startswith("grows with scale: +2.1 pp at quick → +5.3 pp at standard")
    assert "toward the anchor's +11.1 pp" in row["change"]


def test_flipped_call_with_a_moving_effect_names_the_direction_and_the_anchor():
    q = [_one("C4b", C4B, "contradicted", -7, (-8, -6))]
    s = [_one("C4b", C4B, "supported", 3, (2, 4))]
    rows = _rows(q, s)
    change = rows["C4b"]["change"]
    assert change.startswith("changes sign with scale: -7 pp at quick → +3 pp at standard")
    assert "toward the anchor's +10.6 pp" in change
    assert "calls: contradicted at quick → supported at standard" in change
    # the claim's row has no estimate of its own: its calls alone
    assert rows["C4"]["change"] == "calls differ (contradicted at quick → supported at standard)"
    table = "\n".join(scales.markdown_table(list(rows.values()), ["quick", "standard"]))
    assert "| **contradicted** | **supported** |" in table


def test_flipped_call_without_a_moving_effect_is_a_matter_of_precision():
    q = [_one("C4a", C4A, "inconclusive", 3, (-1, 7))]
    s = [_one("C4a", C4A, "supported", 4, (3, 5))]
    change = _rows(q, s)["C4a"]["change"]
    assert change.startswith("calls differ (inconclusive at quick → supported at standard)")
    assert "does not move detectably" in change and "precision" in change


def test_claim_without_anchor_shrinking_effect():
    q = [_one("C2a", C2A, "supported", 48, (40, 56))]
    s = [_one("C2a", C2A, "supported", 20, (15, 25))]
    row = _rows(q, s)["C2a"]
    assert row["anchor"] is None and "anchor's" not in row["change"]
    assert row["change"].startswith("shrinks with scale: +48 pp at quick → +20 pp at standard")
    line = next(x for x in scales.markdown_table([row], ["quick", "standard"]) if "C2a" in x)
    assert line.split(" | ")[-2] == "—"  # the anchor column


def test_anchor_only_for_the_statistic_it_measures():
    # C4a decided at batch 4 instead of 2: the GN paper's number is not that statistic
    assert scales.anchor_for("C4a", "growth of BN − GN test error from batch 32 to 4, pp") is None
    assert scales.anchor_for("C8", "LN − GN test error at batch ≥ 32, pp")[0] == 1.2
    on_resnet = scales.anchor_for("C4b", "ResNet-20: BN − GN test error at batch 2, pp")
    assert on_resnet == scales.anchor_for("C4b", "BN − GN test error at batch 2, pp")
    assert on_resnet is not None
    assert scales.unit_of("BN-LSTM, per-step stats − plain LSTM, test bpc") == "bpc"
    assert scales.unit_of("log10(BN / no norm) of the loss range") == ""


def test_different_statistics_are_not_compared():
    other = "LN-LSTM − plain LSTM, test bpc"
    bn = "BN-LSTM, per-step stats − plain LSTM, test bpc"
    q = [_one("C7b", bn, "contradicted", -0.3, (-0.4, -0.2))]
    s = [_one("C7b", other, "supported", -0.1, (-0.15, -0.05))]
    row = _rows(q, s)["C7b"]
    assert "different statistics" in row["change"] and "not compared" in row["change"]
    assert row["anchor"] is None  # the largest profile's statistic is not the anchor's


def test_profile_missing_a_claim_and_a_store_with_one_profile(tmp_path):
    q = [
        _one("C4a", C4A, "supported", 5, (4, 6)),
        _one("C2a", C2A, "supported", 48, (40, 56)),
    ]
    s = [_one("C4a", C4A, "supported", 5, (4, 6))]
    rows = _rows(q, s)
    assert list(rows) == ["C2", "C2a", "C4", "C4a"]  # claim order, the claim before its parts
    assert set(rows["C2a"]["cells"]) == {"quick"} and rows["C2a"]["change"] == ""
    table = scales.markdown_table([rows["C2a"]], ["quick", "standard"])
    line = next(x for x in table if "C2a" in x)
    assert "| **supported** +48 pp [+40, +56] | — |" in line
    # a store with quick's verdicts only (smoke's left out): one column, and it says so
    for profile, verdicts in (("quick", q), ("smoke", s)):
        (tmp_path / profile / "verdicts").mkdir(parents=True)
        for v in verdicts:
            path = tmp_path / profile / "verdicts" / f"{v['experiment']}.json"
            path.write_text(json.dumps(v))
    assert scales.profiles_in(tmp_path) == ["quick"]
    assert scales.profiles_in(tmp_path, own="smoke") == ["smoke", "quick"]
    extra = scales.report_extra(tmp_path / "quick")
    text = "\n".join(extra["text"])
    assert "Only `quick` has been run" in text and "with scale |" not in text
    assert "| C4a |" in text


def _store(tmp_path) -> None:
    for profile, est in (("quick", 2.1), ("standard", 5.3)):
        folder = tmp_path / profile / "verdicts"
        folder.mkdir(parents=True)
        sub = _sub("C4a", C4A, "supported", est, (est - 0.5, est + 0.5))
        (folder / "bn_small_batch.json").write_text(
            json.dumps(_verdict("C4", "bn_small_batch", "supported", sub))
        )


def test_report_renders_the_scales_section(tmp_path):
    _store(tmp_path)
    with style.formats(["png", "pdf"]):
        extra = scales.report_extra(tmp_path / "quick")  # quick's report reads standard's too
    figure = tmp_path / "quick" / "figures" / scales.FIGURE
    assert extra["figures"] == [figure] and figure.stat().st_size > 5_000
    md = "\n".join(extra_markdown([extra]))
    assert md.startswith("## Scales: every sub-claim at every profile")
    assert "[![scales](figures/scales.png)](figures/scales.pdf)" in md  # links its vector copy
    assert figure.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert "| claim | the blog says | statistic | quick | standard | anchor | with scale |" in md
    assert "grows with scale: +2.1 pp at quick → +5.3 pp at standard" in md
    page = render_html([], {"compute": []}, [extra])
    assert '<section id="scales">' in page and 'src="figures/scales.png"' in page
    assert '<a href="figures/scales.pdf" title="full size, vector"><img alt="scales"' in page
    assert "<th>with scale</th>" in page and "toward the anchor" in page


def test_effect_moving_away_from_the_anchor_says_scale_does_not_explain_the_gap():
    q = [_one("C4a", C4A, "supported", 8, (7, 9))]
    s = [_one("C4a", C4A, "supported", 3, (2, 4))]
    change = _rows(q, s)["C4a"]["change"]
    assert change.startswith("shrinks with scale: +8 pp at quick → +3 pp at standard")
    assert "away from the anchor's +11.1 pp" in change and "does not explain" in change


def test_a_profile_not_run_yet_or_with_incomplete_seeds_is_not_compared():
    """A sweep in progress: 'not run yet' is not a call that differs, and a call withheld for
    incomplete seeds is not an effect that moved."""
    q = [_one("C4a", C4A, "supported", 2.1, (1.5, 2.7))]
    s = [_verdict("C4", "bn_small_batch", "not run yet")]
    rows = _rows(q, s)
    assert rows["C4"]["change"] == "" and rows["C4a"]["change"] == ""
    withheld = _one("C4a", C4A, "inconclusive", 9.0, (8.5, 9.5))
    withheld["sub"][0].update(call_on_seeds_present="supported", incomplete="3 of 5 seeds")
    row = _rows(q, [withheld])["C4a"]
    assert row["change"] == "not compared: the seeds of record are incomplete at standard"


def test_a_middle_profile_not_run_yet_is_passed_over():
    """quick and paper are compared when standard has not run yet."""
    q = [_one("C4a", C4A, "inconclusive", 2.1, (-1.5, 5.7))]
    s = [
        _verdict("C4", "bn_small_batch", "not run yet", _sub("C4a", C4A, "not run yet", None, None))
    ]
    p = [_one("C4a", C4A, "supported", 5.3, (4.8, 5.8))]
    rows = {r["id"]: r for r in scales.scale_rows({"quick": q, "standard": s, "paper": p})}
    assert rows["C4a"]["change"].startswith(
        "calls differ (inconclusive at quick → supported at paper)"
    )
    assert rows["C4"]["change"] == "calls differ (inconclusive at quick → supported at paper)"


def test_a_statistic_measured_on_one_architecture_at_both_scales_is_compared():
    """C4b decided on the CNN at quick and on the ResNet at standard: the two are not compared,
    but the CNN reported beside the ResNet at standard is, with the CNN at quick."""
    cnn = "VGG-style CNN: BN − GN test error at batch 2, pp"
    quick = {"claim": "C4", "experiment": "bn_small_batch", "verdict": "inconclusive",
             "sub": [{"id": "C4b", "statement": "GN wins", "verdict": "inconclusive",
                      "statistic": cnn, "estimate": -5.0, "ci": [-10.0, 0.2]}]}
    standard = {"claim": "C4", "experiment": "bn_small_batch", "verdict": "contradicted",
                "sub": [{"id": "C4b", "statement": "GN wins", "verdict": "contradicted",
                         "statistic": "ResNet-20: BN − GN test error at batch 2, pp",
                         "estimate": -5.7, "ci": [-7.5, -3.9]}],
                "details": {"architecture": {"others": {"cnn": {
                    "name": "VGG-style CNN",
                    "sub": [{"id": "C4b", "verdict": "contradicted",
                             "statistic": "BN − GN test error at batch 2, pp",
                             "estimate": -20.0, "ci": [-22.0, -18.0]}]}}}}}
    change = scales.scale_rows({"quick": [quick], "standard": [standard]})
    row = next(r for r in change if r["id"] == "C4b")
    assert row["change"].startswith(
        "decided on different architectures (VGG-style CNN at quick: inconclusive; ResNet-20 at "
        "standard: contradicted): not compared; VGG-style CNN at both: -5 pp [-10, +0.2] "
        "(inconclusive) at quick → -20 pp [-22, -18] (contradicted) at standard"
    )
    line = next(x for x in scales.markdown_table([row], ["quick", "standard"]) if "C4b" in x)
    cells = line.split(" | ")
    assert cells[2] == "BN − GN test error at batch 2, pp"  # each cell names its architecture
    assert cells[3].endswith("(VGG-style CNN)") and cells[4].endswith("(ResNet-20)")
    assert row["change"].endswith("grows with scale")
    standard["details"]["architecture"]["others"]["cnn"]["sub"][0].update(estimate=-5, ci=[-9, -1])
    row = next(r for r in scales.scale_rows({"quick": [quick], "standard": [standard]})
               if r["id"] == "C4b")
    assert row["change"].endswith("no detectable change")


def test_only_an_architecture_name_is_split_off_a_statistic():
    assert scales.split_architecture("ResNet-20: BN − GN test error at batch 2, pp") == (
        "ResNet-20",
        "BN − GN test error at batch 2, pp",
    )
    assert scales.split_architecture("VGG-style CNN: ICS ratio")[0] == "VGG-style CNN"
    counted = "grid LRs that train: BN 4/4, no norm 3/4 (a count)"
    assert scales.split_architecture(counted) == (None, counted)
