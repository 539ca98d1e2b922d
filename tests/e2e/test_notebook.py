"""The exploration notebook: its helpers slice and summarize runs, and it executes against the
committed results with the report's verdicts and CIs in its outputs."""

import base64
import io
import json
import math

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from normexp.analysis.explore import (
    NOTEBOOK,
    cell_means,
    execute_notebook,
    plot_cell_means,
    slice_runs,
)
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import norm_color, norm_label
from normexp.catalogue import PROFILE_CONFIGS
from normexp.norms.registry import palette
from normexp.tracking.store import RECORD_PROFILE, profile_dir
from tests.helpers import REPO

RESULTS = profile_dir(REPO / "results", RECORD_PROFILE)  # the committed reproduction


def _runs() -> pd.DataFrame:
    rows = []
    for norm in ("batch", "group"):
        for batch in (2, 32):
            for seed in range(3):
                err = 0.5 + 0.1 * (norm == "group") + 0.01 * seed + 0.001 * batch
                rows.append(
                    {
                        "norm.name": norm,
                        "norm.position": "pre",
                        "model.name": "cnn",
                        "train.batch_size": batch,
                        "seed": seed,
                        "status": "diverged" if (norm, batch, seed) == ("group", 2, 2) else "ok",
                        "test_err": err,
                    }
                )
    return pd.DataFrame(rows)


def test_slice_runs_by_value_or_list_keeps_finished_runs():
    df = _runs()
    assert len(slice_runs(df)) == 11  # one diverged run left out
    assert len(slice_runs(df, status=None)) == 12
    one = slice_runs(df, norm="group", batch=2)
    assert set(one["seed"]) == {0, 1}
    assert len(slice_runs(df, batch=[2, 32], seed=[0, 1], model="cnn", position="pre")) == 8
    with pytest.raises(ValueError, match="unknown axes"):
        slice_runs(df, width=16)


def test_cell_means_gives_the_mean_and_ci_over_seeds():
    cells = cell_means(slice_runs(_runs()), "test_err", by=["norm", "batch"], scale=100)
    assert list(cells.index) == [("batch", 2), ("batch", 32), ("group", 2), ("group", 32)]
    row = cells.loc[("group", 32)]
    mean, lo, hi = mean_ci([100 * (0.6 + 0.01 * s + 0.032) for s in range(3)])
    assert row["seeds"] == 3 and math.isclose(row["mean"], mean)
    assert math.isclose(row["ci_low"], lo) and math.isclose(row["ci_high"], hi)
    assert cells.loc[("group", 2), "seeds"] == 2


def test_notebook_executes_on_the_committed_results(tmp_path):
    out = execute_notebook(RESULTS, out=tmp_path / "executed.ipynb")
    notebook = nbformat.read(out, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert all(c.outputs for c in code)  # every cell shows something
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the error-bar plot
    # Reruns write the same bytes: no timings, cell ids numbered.
    assert [c["id"] for c in notebook.cells] == [f"cell-{i}" for i in range(len(notebook.cells))]
    assert not [c for c in notebook.cells if "execution" in c.metadata]
    # The verdict table shows the report's verdicts and CIs.
    verdicts = next(o for o in outputs if "C11" in o.get("data", {}).get("text/plain", ""))
    text = verdicts["data"]["text/plain"]
    for path in sorted((RESULTS / "verdicts").glob("*.json")):
        v = json.loads(path.read_text())
        assert v["claim"] in text and v["verdict"] in text
        if v.get("ci"):
            assert f"{v['ci'][0]:.2f}" in text and f"{v['ci'][1]:.2f}" in text
    markdown = [o.get("data", {}).get("text/markdown", "") for o in outputs]
    assert any("blog's pick vs best rival" in m for m in markdown)  # C11's table
    # It names the profile it read, and counts runs of record apart from the protocol's others.
    assert any(f"Profile **`{RECORD_PROFILE}`**" in m for m in markdown)
    runs = next(o for o in outputs if "seeds of record" in o.get("data", {}).get("text/html", ""))
    assert all(f"<th>{h}</th>" in runs["data"]["text/html"] for h in ("of record", "LR selection"))
    # The error-bar plot draws each norm in its registry colour, as the report does, and no
    # other colour of the palette (matplotlib's default cycle would give GN orange, LN red).
    png = next(o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {}))
    with Image.open(io.BytesIO(base64.b64decode(png))) as image:
        pixels = {to_hex(np.array(c) / 255) for _, c in image.convert("RGB").getcolors(1 << 20)}
    drawn = ("batch", "group", "layer", "instance", "none")  # C4's norms
    assert {norm_color(n) for n in drawn} <= pixels
    others = set(palette().values()) - {norm_color(n) for n in drawn}
    assert not others & pixels, f"colours of norms not drawn: {others & pixels}"


def test_the_plot_helper_draws_each_norm_in_its_registry_colour_and_name():
    cells = cell_means(slice_runs(_runs()), "test_err", by=["norm", "batch"], scale=100)
    fig = plot_cell_means(cells, ylabel="test error (%)")
    legend = fig.axes[0].get_legend()
    pairs = zip(legend.legend_handles, legend.get_texts(), strict=True)
    shown = {t.get_text(): to_hex(h.get_color()) for h, t in pairs}
    assert shown == {norm_label(n): norm_color(n) for n in ("batch", "group")}
    plt.close(fig)


def test_the_notebooks_text_names_no_profile_of_its_own():
    """Its executed copies serve every profile: the profile it read is in its outputs only."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    named = [p.stem for p in PROFILE_CONFIGS.glob("*.yaml") if f"`{p.stem}`" in text]
    assert not named, f"the notebook's text names the profile(s) {named}"
