"""report.html carries everything REPORT.md carries (rendered from the same sections), plus a
table of contents that reaches every section and verdicts coloured in every table; the top table
gives a claim without sub-claims its statistic, p and seeds. Built from a small synthetic report
(the committed one in the browser test)."""

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from normexp.analysis.report import (
    _MD,
    render_html,
    render_markdown,
    top_rows,
    verdict_class,
)
from normexp.analysis.report.damage import ANCHOR as DAMAGED

BLOCKS = {"p", "li", "td", "th", "h1", "h2", "h3", "pre", "blockquote"}


class _Blocks(HTMLParser):
    """The text of each block element of a page, and its ids, links and images."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []
        self.images: list[dict] = []
        self.cells: list[tuple[str | None, str]] = []  # (class, text) of each td
        self._open: list[tuple[str, list[str], str | None]] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):  # noqa: ANN001 - HTMLParser's
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a)
        if tag in ("style", "script"):
            self._skip += 1
        if tag in BLOCKS:
            self._open.append((tag, [], a.get("class")))

    def handle_endtag(self, tag):  # noqa: ANN001
        if tag in ("style", "script"):
            self._skip -= 1
        if tag in BLOCKS and self._open and self._open[-1][0] == tag:
            _, parts, css = self._open.pop()
            text = " ".join("".join(parts).split())
            if text:
                self.blocks.append(text)
            if tag == "td":
                self.cells.append((css, text))
            if self._open:  # a block's text is its enclosing block's too
                self._open[-1][1].append(" " + "".join(parts) + " ")

    def handle_data(self, data):  # noqa: ANN001
        if not self._skip and self._open:
            self._open[-1][1].append(data)


def parse(page: str) -> _Blocks:
    parser = _Blocks()
    parser.feed(page)
    return parser


def _png(path: Path) -> Path:
    Image.new("RGB", (8, 8), "white").save(path)
    return path


@pytest.fixture
def report(tmp_path) -> tuple[str, str, dict]:
    """REPORT.md and report.html of two claims (one with sub-claims, LR evidence and a ladder;
    one without), a section after the claims with a verdict table, and a damaged run."""
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("toy", "toy_lr", "toy_ladder", "other", "scales"):
        _png(figures / f"{name}.png")
    (figures / "toy.pdf").write_bytes(b"%PDF-1.4\n")  # toy's vector copy (the others have none)
    sub = {"statement": "a", "verdict": "contradicted", "estimate": -1.5, "ci": [-2, -1],
           "p_holm": 0.004, "seeds": 5, "statistic": "A − B, pp"}  # fmt: skip
    toy = {
        "claim": "T1", "verdict": "contradicted", "effect": "B *beats* A", "estimate": -1.5,
        "ci": [-2, -1], "sub": [{**sub, "id": "T1a"}, {**sub, "id": "T1b", "verdict": "supported"}],
        "ladder_figure": "figures/toy_ladder.png", "rule": "the `rule`", "notes": "a note",
        "protocol": {
            "chosen_lr": {"toy_exp": [{"cell": "norm=batch", "lr_mult": 2.0},
                                      {"cell": "norm=group", "lr_mult": 0.5}]},
            "lr_figure": "figures/toy_lr.png",
            "unconverged_cells": {"toy_exp": 2},
        },
    }  # fmt: skip
    other = {
        "claim": "T2", "verdict": "supported", "effect": "it holds", "estimate": 3.3,
        "ci": [3.1, 3.5], "ci_note": "", "statistic": "IN − BN, dB", "p_holm": 0.01,
        "record": {"finished_of_declared": [5, 5]},
    }  # fmt: skip
    secs = [
        {"analysis": SimpleNamespace(claim=v["claim"], name=name, title=f"{name} title"),
         "verdict": v, "blog": {"zh": "中文", "en": "English"}, "run": f"{name}: 20 runs",
         "figure": figures / f"{name}.png", "table": None}
        for name, v in (("toy", toy), ("other", other))
    ]  # fmt: skip
    extras = [{
        "section": SimpleNamespace(name="scales", title="Scales: every sub-claim"),
        "figures": [figures / "scales.png"],
        "text": ["| claim | quick | standard |", "|---|---|---|",
                 "| T1a | **contradicted** -1.5 pp | **inconclusive** -1 pp |",
                 "| T2 | supported (+3.3 dB) | not run yet |"],
    }]  # fmt: skip
    provenance = {"compute": [], "sittings": [], "commits": ["0123456789abcdef"]}
    damaged = f'<h2 id="{DAMAGED}">Damaged runs (left out)</h2><p>one</p>'
    md = render_markdown(secs, provenance, extras)
    page = render_html(secs, provenance, extras, damaged)
    return md, page, {"secs": secs}


def test_the_page_carries_every_block_of_report_md(report):
    md, page, _ = report
    wanted = parse(_MD.render(md))
    shown = parse(page)
    text = " ".join(shown.blocks)
    missing = [b for b in wanted.blocks if b not in text]
    assert not missing, f"REPORT.md blocks not in report.html: {missing}"
    assert "Chosen LR (toy_exp, multiplier of the batch-scaled base). norm=batch: x2" in text
    assert "Convergence check (toy_exp). 2 cell(s) fail it" in text
    # every figure REPORT.md shows or links is shown from figures/ beside the page, at its own
    # size, each a link to its vector copy where it has one (else to itself); its links are kept
    figures = {Path(s).stem for s in re.findall(r"\]\((figures/[^)]+\.png)\)", md)}
    assert figures == {"toy", "toy_lr", "toy_ladder", "other", "scales"}
    assert {Path(i["src"]).stem for i in shown.images} == figures
    assert all(i["src"].startswith("figures/") and i["width"] == "8" for i in shown.images)
    assert "data:image" not in page
    assert "figures/toy.pdf" in shown.links and "[![toy](figures/toy.png)](figures/toy.pdf)" in md
    assert "figures/other.png" in shown.links  # no vector copy: the PNG itself
    assert "figures/toy_lr.png" in shown.links


def test_the_contents_reach_every_section(report):
    _, page, extra = report
    shown = parse(page)
    contents = page[page.index('<nav id="contents"') : page.index("</nav>")]
    targets = re.findall(r'href="#([^"]+)"', contents)
    names = [s["analysis"].name for s in extra["secs"]]
    assert targets == ["scale", *names, "scales", "compute", DAMAGED]
    assert all(shown.ids.count(t) == 1 for t in targets)  # each resolves to one element
    top = page[: page.index('<nav id="contents"')]
    assert set(re.findall(r'href="#([^"]+)"', top)) == set(names)  # the top table's links too


def test_verdicts_are_coloured_in_every_table(report):
    _, page, _ = report
    cells = dict((text, css) for css, text in parse(page).cells)
    assert cells["contradicted -1.5 pp"] == "contradicted"
    assert cells["inconclusive -1 pp"] == "inconclusive"
    assert cells["supported (+3.3 dB)"] == "supported" and cells["not run yet"] == "not"
    assert cells["T1a"] is None  # a cell that states no verdict
    assert [verdict_class(t) for t in ("differs", "**tie**", "matches at this budget")] == [
        "differs", "tie", "matches",
    ]  # fmt: skip
    assert verdict_class("tied runs") is None and verdict_class("— supported") is None
    for css in ("supported", "contradicted", "inconclusive", "not", "matches", "differs", "tie"):
        assert re.search(rf"\.{css}\{{", page), f"no style for .{css}"


def test_a_claim_without_sub_claims_shows_its_statistic_p_and_seeds(report):
    _, page, extra = report
    toy_a, toy_b, other = top_rows(extra["secs"])
    assert (toy_a["claim"], toy_a["statistic"], toy_a["p"], toy_a["seeds"]) == (
        "T1a", "A − B, pp", "0.004", "5",
    )  # fmt: skip
    assert (other["statistic"], other["p"], other["seeds"]) == ("IN − BN, dB", "0.01", "5")
    assert other["ci"] == "+3.3 [+3.1, +3.5]"
    row = re.search(r'<tr><td><a href="#other">.*?</tr>', page).group(0)
    assert [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)[3:7]] == [
        "IN − BN, dB", "+3.3 [+3.1, +3.5]", "0.01", "5",
    ]  # fmt: skip
    # no seeds on record (C1, from the layers): a dash
    assert top_rows([{**extra["secs"][1], "verdict": {"verdict": "supported"}}])[0]["seeds"] == "—"
