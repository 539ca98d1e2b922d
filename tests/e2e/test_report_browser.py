"""The HTML report as headless Chromium renders it: every figure decodes (the LR selection's in
their claims' sections too) from figures/ beside the page, each a link to its full-size file and
shown at its own size where it fits the column, no markdown markup is left as text, the table
of contents reaches every section, verdicts are coloured in every table, the Chinese quotes
carry ``lang`` and name an installed CJK font, C11's table is a table. One Chromium page load
for all of it. Skipped where Chromium is not installed (.ci/run installs it)."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from normexp.analysis.claims import load_analyses
from normexp.analysis.report import scales, write_report
from normexp.analysis.report.browser import chromium, dump_dom, screenshot
from normexp.analysis.style import COLUMN_PX
from normexp.tracking.store import RECORD_PROFILE, profile_dir
from tests.helpers import REPO

pytestmark = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed")

RESULTS = profile_dir(REPO / "results", RECORD_PROFILE)  # the committed reproduction

# Runs in the page once it has loaded; what it sees is dumped with the DOM.
PROBE = """<script>
window.addEventListener("load", () => {
  const sections = [...document.querySelectorAll("section")];
  const probe = {
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
                                             width: i.naturalWidth, height: i.naturalHeight,
                                             shown: i.width, link: i.closest("a")?.href,
                                             section: i.closest("section")?.id})),
    contents: [...document.querySelectorAll("#contents a")].map(a => {
      const target = document.getElementById(a.getAttribute("href").slice(1));
      return {href: a.getAttribute("href"), found: !!target, shown: !!target?.offsetHeight};
    }),
    verdictCells: [...document.querySelectorAll("td")]
      .filter(td => /^(supported|contradicted|inconclusive)\\b/.test(td.innerText.trim()))
      .map(td => ({text: td.innerText.trim().slice(0, 40), color: getComputedStyle(td).color})),
    bodyColor: getComputedStyle(document.body).color,
    text: [...document.body.children].filter(e => !["PRE", "SCRIPT"].includes(e.tagName))
          .map(e => e.innerText).join("\\n"),
    chinese: [...document.querySelectorAll("[lang]")].filter(e => e !== document.documentElement)
             .map(e => ({lang: e.lang, font: getComputedStyle(e).fontFamily,
                         text: e.textContent})),
    sections: Object.fromEntries(sections.map(s => [s.id, {
      tables: s.querySelectorAll("table").length, images: s.querySelectorAll("img").length}])),
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(probe);
  document.body.appendChild(out);
});
</script>"""

# What markdown left unrendered would look like in the page's text.
MARKUP = {
    "bold": re.compile(r"\*\*|__\w"),
    "code": re.compile(r"`"),
    "emphasis": re.compile(r"(?<![\w*])\*(?=\S)[^*\n]+(?<=\S)\*(?![\w*])"),
    "link or image": re.compile(r"\]\(|!\["),
    "heading": re.compile(r"^#{1,6} ", re.M),
    "table rule": re.compile(r"\|\s*---"),
}


def scales_section() -> dict:
    """The Scales section from the committed verdicts of every profile and its committed figure
    (not redrawn): a section after the claims, with a verdict in most cells."""
    profiles = scales.profiles_in(RESULTS.parent)
    rows = scales.scale_rows({p: scales.read_verdicts(RESULTS.parent / p) for p in profiles})
    text = scales.section_text(rows, profiles)
    return {"section": scales.SECTION, "figures": [RESULTS / "figures" / scales.FIGURE],
            "text": text}  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """report.html built from the committed results' verdicts, figures and collected tables."""
    out = tmp_path_factory.mktemp("report")
    for folder in ("figures", "verdicts"):
        shutil.copytree(RESULTS / folder, out / folder)
    shutil.copy(RESULTS / "sweeps.jsonl", out / "sweeps.jsonl")
    tables = {p.stem: pd.read_parquet(p) for p in sorted((RESULTS / "collected").glob("*.parquet"))}
    write_report(out, load_analyses(), tables, "disabled", extras=[scales_section()])
    return out / "report.html"


def lr_figures() -> dict[str, str]:
    """{claim's section: its LR selection's figure}, from the committed verdicts."""
    found = {}
    for path in sorted((RESULTS / "verdicts").glob("*.json")):
        name = (json.loads(path.read_text()).get("protocol") or {}).get("lr_figure")
        if name:
            found[path.stem] = Path(name).stem
    return found


@pytest.fixture(scope="module")
def probe(report) -> dict:
    page = report.with_name("probed.html")
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    found = re.search(r'<pre id="probe">(.*?)</pre>', dump_dom(page), re.S)
    assert found, "the probe script did not run"
    return json.loads(html.unescape(found.group(1)))


def test_every_figure_decodes_in_the_browser(probe):
    claims = {a.name for a in load_analyses()}  # the page is built without the grid section
    figures = [p.stem for p in (RESULTS / "figures").glob("*.png") if p.stem in claims]
    figures = [f for f in figures if f != "recommendations"] + [*lr_figures().values(), "scales"]
    images = probe["images"]
    assert sorted(i["alt"] for i in images) == sorted(figures)
    broken = [i["alt"] for i in images if not (i["complete"] and i["width"] > 100)]
    assert not broken, f"images the browser could not decode: {broken}"


def test_every_figure_links_to_its_full_size_file_and_fits_the_column_unscaled(probe, report):
    for image in probe["images"]:
        assert image["link"], f"{image['alt']}: not a link"
        target = Path(image["link"].removeprefix("file://"))
        assert target.parent == report.parent / "figures" and target.exists(), image
        if image["width"] <= COLUMN_PX:  # a page-sized PNG is shown at its own size
            assert image["shown"] == image["width"], image


def test_the_lr_figures_appear_in_their_claims_sections(probe):
    expected = lr_figures()
    assert len(expected) >= 5  # the committed claims with LR selection
    shown = {(i["section"], i["alt"]) for i in probe["images"]}
    assert set(expected.items()) <= shown
    assert probe["text"].count("Chosen LR (") >= len(expected)


def test_the_table_of_contents_links_resolve(probe):
    contents = probe["contents"]
    hrefs = [c["href"] for c in contents]
    claims = [f"#{a.name}" for a in load_analyses()]
    assert hrefs == ["#scale", *claims, f"#{scales.SECTION.name}", "#compute"]
    unresolved = [c["href"] for c in contents if not (c["found"] and c["shown"])]
    assert not unresolved, f"contents links to nothing shown: {unresolved}"


def test_verdicts_are_coloured_in_every_table(probe):
    cells = probe["verdictCells"]
    assert len(cells) > 20  # the top table's and the Scales table's
    plain = [c["text"] for c in cells if c["color"] == probe["bodyColor"]]
    assert not plain, f"verdict cells in the body's colour: {plain}"


def test_no_markdown_markup_is_left_as_text(probe):
    text = probe["text"]
    assert "Verdict: supported." in text and "What was run." in text
    for what, pattern in MARKUP.items():
        hit = pattern.search(text)
        around = text[max(0, hit.start() - 60) : hit.end() + 60] if hit else ""
        assert hit is None, f"literal {what} markup: {around!r}"


def test_c11_is_an_html_table(probe):
    c11 = probe["sections"]["recommendations"]
    assert c11 == {"tables": 1, "images": int("recommendations" in lr_figures())}  # no figure
    assert "blog's pick vs best rival" in probe["text"]


def test_the_chinese_text_has_lang_and_an_installed_cjk_font(probe):
    chinese = [e for e in probe["chinese"] if e["lang"].startswith("zh")]
    quoted = {e["text"] for e in chinese}
    assert all(a.quote.zh in quoted for a in load_analyses())
    # Chromium on Linux finds fonts through fontconfig: some family the page names for the
    # Chinese text must be one fontconfig has with Chinese glyphs.
    listed = subprocess.run(
        ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=True
    ).stdout
    installed = {f.strip() for line in listed.splitlines() for f in line.split(",")}
    assert installed, "no font with Chinese glyphs is installed (apt-get install fonts-noto-cjk)"
    for element in chinese:
        named = {f.strip().strip('"') for f in element["font"].split(",")}
        assert named & installed, f"{element['font']} names no installed CJK font"


def test_first_screen_screenshot(report, tmp_path):
    shot = screenshot(report, tmp_path / "first_screen.png")
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colors = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colors) > 50  # text and tables drawn, not a blank page
