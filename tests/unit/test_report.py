"""The report builds from partial results: missing claims read "not run yet", never a crash."""

import json
import re

import pandas as pd
from PIL import Image

from normexp.analysis.figures import write_figures_and_verdicts
from normexp.analysis.report.compute import compute_markdown, experiment_compute


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
    # each figure shown from figures/ beside the page, a link to its full-size file there (its
    # PDF where one is written: tests/unit/test_scales.py; the tests write PNGs only)
    assert "data:image" not in page
    shown = re.findall(r'<a href="([^"]+)"[^>]*><img alt="[^"]*" src="([^"]+)"', page)
    assert len(shown) == len(list((tmp_path / "figures").glob("*.png"))) - 1  # C11: a table
    for href, src in shown:
        with Image.open(tmp_path / src) as image:
            image.verify()
        assert href == src
    # Markdown rendered, not escaped: emphasis and code become tags, no markup is left as text.
    assert "<em>supported</em>" in page and "<code>make figures</code>" in page
    text = re.sub(r"<pre>.*?</pre>|<[^>]+>", " ", page, flags=re.S)
    assert "**" not in text and "`" not in text
    assert '<section id="recommendations">' in page and "<th>blog says</th>" in page
    assert page.count('lang="zh-Hans"') == len(by_claim) + 1  # each quote and the blog's title
    for name in ("norm_sets", "bn_small_batch"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
        json.loads((tmp_path / "verdicts" / f"{name}.json").read_text())


def _table(finished: list[float], durations: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "profile": "quick",
            "seed": range(len(finished)),
            "status": "ok",
            "finished_at": finished,
            "wall_time_s": durations,
            "provenance.commit": "abc1234567890",
            "provenance.device": "cpu",
            "provenance.cpu_threads": 1,
        }
    )


def test_compute_wall_time_from_the_store_is_first_start_to_last_finish(tmp_path):
    # Two runs side by side: 100..160 s and 130..190 s; the sweep spans 90 s, the runs 120 s.
    rows = experiment_compute({"exp": _table([160.0, 190.0], [60.0, 60.0])}, tmp_path)
    assert rows[0]["sweep_wall_minutes"] == 1.5 and rows[0]["training_minutes"] == 2.0
    assert rows[0]["wall_source"].startswith("store")
    lines = compute_markdown(rows)
    assert lines[2].startswith("| `exp` | quick | 2 (2 ok) | 2 | 1.5 | 2.0 | cpu, 1 | abc1234567")
    assert lines[-1] == "| **total** | | 2 | | 1.5 | 2.0 | | |"


def test_compute_wall_time_prefers_the_sweep_sittings(tmp_path):
    sittings = [{"experiment": "exp", "wall_s": 600.0}, {"experiment": "other", "wall_s": 5.0}]
    sittings.append({"experiment": "exp", "wall_s": 300.0})
    (tmp_path / "sweeps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sittings))
    rows = experiment_compute({"exp": _table([160.0], [60.0])}, tmp_path)
    assert rows[0]["sweep_wall_minutes"] == 15.0 and rows[0]["wall_source"] == "2 sweep sitting(s)"


def test_what_was_run_counts_seeds_of_record_not_the_protocols_own():
    """Selection (seed 100) and check runs are counted by stage, not as seeds of record."""
    from normexp.analysis.report import _what_was_run, run_summary

    df = pd.DataFrame(
        {
            "status": "ok",
            "profile": "quick",
            "seed": [0, 1, 2, 0, 100, 100, 7],
            "protocol.stage": ["record", "record", "record", "check", "select", "select", None],
        }
    )
    summary = run_summary({"exp": df})
    assert summary["seeds"] == 3  # seed 7: not declared at quick, so left out of verdicts
    analysis = type("A", (), {"reads": ["exp"]})()
    line = _what_was_run(summary, analysis)
    assert "7 runs (7 ok; 4 of record, 2 LR selection, 1 convergence check)" in line
    assert "3 seed(s) of record" in line
    plain = run_summary({"exp": df.drop(columns="protocol.stage").head(3)})
    assert "(3 ok)" in _what_was_run(plain, analysis)  # no protocol: no stage counts


def test_sittings_group_consecutive_sweep_commands_and_mark_interrupted_ones():
    from normexp.analysis.report.compute import group_sittings, sittings_markdown

    def line(experiment, started, wall, **more):
        return {
            "experiment": experiment,
            "started": started,
            "wall_s": wall,
            "runs": 10,
            "skipped": 2,
            "counts": {"ok": 10},
            "commit": "abcdef1234567",
            "host": "vm",
            "cpu_count": 2,
            **more,
        }

    day = 1_800_000_000.0
    lines = [
        line("b", day + 600, 300),  # follows a's end by 0 s: same sitting
        line("a", day, 600),
        # 14 min later: still the same sitting; interrupted with 5 runs ended (2 before)
        line("c", day + 1740, 60, interrupted=True, counts={"ok": 5, "not run": 4, "running": 1}),
        line("a", day + 86_400, 120),  # the next day: a new sitting
    ]
    groups = group_sittings(lines)
    assert [[s["experiment"] for s in g] for g in groups] == [["a", "b", "c"], ["a"]]
    md = sittings_markdown(lines)
    assert md[4].startswith("| 1 | ") and "| 16.0 | a, b, c (interrupted) | 19 |" in md[4]
    assert "| 2.0 | a | 8 |" in md[5] and md[6] == "| **total** | | 18.0 | | | | |"
    assert sittings_markdown([]) == []


def test_a_store_part_way_through_its_sweep_says_so_at_the_top():
    from normexp.analysis.report import not_run, progress_line

    ran = {"bn_position": pd.DataFrame({"status": ["ok"]}), "weight_side": pd.DataFrame()}
    missing = not_run(ran)
    assert "bn_position" not in missing and "weight_side" in missing and "rnn_words" in missing
    assert not any(e.startswith("gpu_") for e in missing)  # the GPU bundle's: never on a CPU
    line = progress_line({"not_run": missing, "experiments": {"bn_position": 1}})
    assert line.startswith(f"**Sweep in progress:** 1 of {len(missing) + 1} experiments have runs")
    assert "`weight_side`" in line
    assert progress_line({"not_run": [], "experiments": {"bn_position": 1}}) == ""  # all ran
    assert progress_line({"not_run": missing, "experiments": {}}) == ""  # nothing ran yet
    assert "decided by the CNN until the ResNet has run" in line  # bn_small_batch_resnet missing
    # paper: the GPU bundle's runs alone are not a CPU sweep in progress
    gpu_only = {"not_run": not_run({}), "experiments": {"gpu_rnn_cooijmans": 3}}
    assert progress_line(gpu_only) == ""


def test_provenance_names_run_grid_once_a_grid_experiment_has_runs():
    from normexp.analysis.report import commands

    one = pd.DataFrame({"seed": [0]})
    assert commands({"bn_position": one}, "standard") == [
        "make run-sweep PROFILE=standard",
        "make figures PROFILE=standard",
    ]
    assert "make run-grid PROFILE=standard" in commands(
        {"bn_position": one, "mlp_small_batch": one}, "standard"
    )
    assert len(commands({"mlp_small_batch": pd.DataFrame()}, "quick")) == 2  # no runs yet
