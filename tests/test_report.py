"""The report builds from partial results: missing claims read "not run yet", never a crash."""

import json

from normexp.analysis.figures import write_figures_and_verdicts


def test_report_from_an_empty_store_has_every_claim(tmp_path):
    verdicts = write_figures_and_verdicts(tmp_path, wandb_mode="disabled")
    claims = [v["claim"] for v in verdicts]
    assert claims[0] == "C1" and len(claims) == len(set(claims)) >= 8
    by_claim = {v["claim"]: v for v in verdicts}
    assert by_claim["C1"]["verdict"] == "supported"  # from the layers, needs no runs
    assert all(v["verdict"] == "not run yet" for c, v in by_claim.items() if c in ("C2", "C4"))
    md = (tmp_path / "REPORT.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for claim in by_claim:
        assert f"| {claim} `" in md
    assert "not run yet" in md and "> 所有Normalization模型" in md  # the blog quoted
    assert "data:image/png;base64," in page and 'src="figures/' not in page  # self-contained
    for name in ("norm_sets", "bn_small_batch"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
        json.loads((tmp_path / "verdicts" / f"{name}.json").read_text())
