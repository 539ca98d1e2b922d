"""The report of one profile: results/<profile>/REPORT.md and results/<profile>/report.html,
built only from the verdicts, figures and collected tables that ``figures`` wrote in that
profile's folder; the figures and the verdict table are also logged to a W&B run of their own
(its files in the same folder). Both show each figure from figures/ beside them (the PNG, at the
column's width) as a link to its full-size vector copy (PDF), so the page opens from disk with
its folder."""

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from normexp.analysis.columns import COMMIT, Tables, unique_values
from normexp.analysis.report.compute import (
    compute_markdown,
    experiment_compute,
    seeds_of_record,
    sittings_markdown,
    stage_of,
)
from normexp.analysis.report.damage import ANCHOR as DAMAGED_ANCHOR
from normexp.analysis.report.damage import TITLE as DAMAGED_TITLE
from normexp.analysis.report.damage import damaged_runs_html, damaged_runs_markdown
from normexp.analysis.style import vector_copy
from normexp.analysis.verdict import chance_note
from normexp.analysis.verdict.lr_selection import protocol_markdown
from normexp.analysis.verdict.record import commits_note
from normexp.analysis.verdict.regime import UNDER_TRAINED, regime_short
from normexp.analysis.verdict.spec import ClaimAnalysis
from normexp.catalogue import cpu_experiments, makefile_list
from normexp.tracking.collect import DamagedRun
from normexp.tracking.provenance import code_commit
from normexp.tracking.store import atomic_write_json, read_sittings
from normexp.tracking.wandb_mirror import WandbMirror

SCALE_NOTE = (
    "Profiles change scale only, never the method. The `quick` profile trains small networks "
    "(a six-conv VGG of widths 16/32/64, 4,000 CIFAR-10 training images, a few epochs; a small "
    "LSTM on a slice of PTB characters) on a 2-core CPU, so absolute errors are far above the "
    "anchors' (ResNet-50 on ImageNet, long schedules). What it can show: the direction and rough "
    "size of effects that exist early in training and at small scale, with confidence intervals "
    "over seeds. What it cannot show: effects that need long schedules or large models (e.g. GN "
    "matching BN at large batch after 100 epochs). Each verdict is about our setup; where it "
    "disagrees with an anchor, the notes say what differs."
)


VERDICT_NOTE = (
    "One row per sub-claim, each decided by its own statistic: a paired t-test over seeds, "
    "Holm-adjusted within its claim (the Holm p; the CI is the unadjusted 95% one). *supported*: "
    "the adjusted test rejects 0 with the effect on the claimed side; *contradicted*: on the "
    "other side; *inconclusive*: neither, or the seeds of record are incomplete; *inconclusive "
    "(under-trained)*: a sub-claim about final performance whose deciding cells do not all pass "
    "the convergence check, its call at that budget beside it. The regime column says at which "
    "budget each holds (README: How verdicts are decided)."
)

TITLE = "normexp report: which normalization, and why — tested"
BLOG_TITLE = "深度学习中的Normalization模型"
PARTS = (
    ("regime_text", "Regime"),  # at convergence or at a fixed budget (verdict/regime.py)
    ("ladder_note", "Budget ladder"),  # rungs left out (verdict/ladder.py)
    ("architecture", "Architecture"),  # claims run on two architectures (verdict/architecture.py)
    ("rule", "Rule"),
    ("anchor", "Anchor"),
    ("notes", "Notes"),
    ("record_note", "Seeds of record"),
    ("families", "Families"),  # from the grid section (normexp/analysis/report/grid.py)
    ("gn_grouping", "GN's grouping"),  # C4, C8, C11 (normexp/analysis/report/gn_grouping.py)
)
TOP_HEADER = (
    "claim",
    "the blog says",
    "verdict",
    "deciding statistic",
    "estimate [95% CI]",
    "Holm p",
    "seeds",
    "regime",
)


def _fmt_ci(v: dict) -> str:
    if v.get("ci"):
        lo, hi = v["ci"]
        return f"{v['estimate']:+.3g} [{lo:+.3g}, {hi:+.3g}]"
    return "—"


def _verdict_text(v: dict) -> str:
    """'inconclusive', or for a call withheld 'inconclusive (incomplete: 3 of 5 declared seeds;
    the seeds present give: contradicted)' or 'inconclusive (under-trained; at this budget:
    contradicted)' or 'inconclusive (LR at the grid's edge; as run: supported)'."""
    why = []
    if v.get("incomplete"):
        present = v.get("call_on_seeds_present")
        why.append(v["incomplete"] + (f"; the seeds present give: {present}" if present else ""))
    if v.get("under_trained"):
        why.append(f"{UNDER_TRAINED}; at this budget: {v['call_at_budget']}")
    if v.get("lr_at_edge"):
        as_run = f"; as run: {v['call_untuned']}" if v.get("call_untuned") else ""
        why.append(f"LR at the grid's edge{as_run}")
    return f"{v['verdict']} ({'; '.join(why)})" if why else v["verdict"]


def _seeds_text(part: dict, verdict: dict) -> str:
    """The seeds a top-table row rests on: its own test's, else (a claim without sub-claims)
    the seeds of record finished in the claim's weakest deciding cell; "—" without runs."""
    seeds = part.get("seeds")
    if seeds is None:
        seeds = (verdict.get("record", {}).get("finished_of_declared") or [None])[0]
    return "—" if seeds is None else str(seeds)


def top_rows(secs: list[dict]) -> list[dict]:
    """The top table: one row per sub-claim (one per claim without sub-claims), each with the
    statistic that decided it."""
    rows = []
    for s in secs:
        a, v = s["analysis"], s["verdict"]
        for sub in v.get("sub") or [None]:
            part = sub or v
            p = part.get("p_holm")
            rows.append(
                {
                    "claim": sub["id"] if sub else a.claim,
                    "name": a.name,
                    "says": sub["statement"] if sub else a.title,
                    "verdict": _verdict_text(part),
                    "css": part["verdict"].split()[0],
                    "statistic": part.get("statistic") or part.get("ci_note") or "—",
                    "ci": _fmt_ci(part) if part.get("estimate") is not None else "—",
                    "p": f"{p:.3g}" if p is not None else "—",
                    "seeds": _seeds_text(part, v),
                    "regime": regime_short(part.get("regime") or v.get("regime")),
                }
            )
    return rows


def top_table_markdown(secs: list[dict]) -> list[str]:
    """The verdict table (markdown lines): one row per sub-claim of the claims of ``secs``
    (each a dict with ``analysis`` and ``verdict``), as REPORT.md opens with it; each claim's
    W&B report shows its own rows (normexp.analysis.report.dashboards)."""
    lines = ["| " + " | ".join(TOP_HEADER) + " |", "|" + "---|" * len(TOP_HEADER)]
    for r in top_rows(secs):
        cells = (
            f"{r['claim']} `{r['name']}`",
            r["says"],
            f"**{r['verdict']}**",
            r["statistic"],
            r["ci"],
            r["p"],
            r["seeds"],
            r["regime"],
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def verdict_line(verdict: dict) -> str:
    """A claim's verdict as its report section states it, with its effect."""
    return f"**Verdict: {_verdict_text(verdict)}.** {verdict.get('effect', '')}"


def commits_line(provenance: dict) -> str:
    """Which commit(s) the runs of record came from; several are flagged unless declared
    equivalent (record.commits_note); stored runs from other commits are named too."""
    commits = provenance.get("commits", [])
    others = sorted(set(provenance.get("commits_in_store", [])) - set(commits))
    rest = (
        f" The store also holds runs from {', '.join(f'`{c[:10]}`' for c in others)}, none of "
        "them of record."
        if others
        else ""
    )
    if not commits:
        return "No runs of record." + rest
    if len(commits) == 1:
        return f"All runs of record come from one commit, `{commits[0][:10]}`." + rest
    return f"**Warning:** {commits_note(commits)}." + rest


def commands(tables: Tables, profile: str) -> list[str]:
    """The make targets that produced this store and its report: ``run-grid`` too once one of
    the grid's experiments has runs."""
    ran = {e for e, t in tables.items() if t is not None and not t.empty}
    grid = ran & set(makefile_list("GRID_EXPERIMENTS"))
    return [
        f"make run-sweep PROFILE={profile}",
        *([f"make run-grid PROFILE={profile}"] if grid else []),
        f"make figures PROFILE={profile}",
    ]


def not_run(tables: Tables) -> list[str]:
    """The CPU profile's experiments with no runs here."""
    return [e for e in cpu_experiments() if tables.get(e) is None or tables[e].empty]


def progress_line(provenance: dict) -> str:
    """A store part-way through its CPU sweep says so at the top ('' when every CPU experiment
    has runs, or none has: the paper profile's GPU bundle alone is not a sweep in progress)."""
    missing = provenance.get("not_run", [])
    cpu = cpu_experiments()
    ran = [e for e, n in provenance.get("experiments", {}).items() if n and e in cpu]
    if not missing or not ran:
        return ""
    names = ", ".join(f"`{e}`" for e in missing)
    line = (
        f"**Sweep in progress:** {len(ran)} of {len(ran) + len(missing)} experiments have "
        f"runs; not run yet: {names}. A claim that reads only these says *not run yet*; one "
        "that reads some of them rests on those that have run."
    )
    if "bn_small_batch_resnet" in missing:
        line += " C4, C5, C8 and C9 are decided by the CNN until the ResNet has run."
    return line


def _progress(provenance: dict) -> list[str]:
    line = progress_line(provenance)
    return [line, ""] if line else []


STAGE_LABELS = {"select": "LR selection", "ladder": "budget ladder", "check": "convergence check"}


def run_summary(tables: Tables) -> dict:
    """What was run, from the collected tables: runs by status, seeds, compute, provenance."""
    frames = [t for t in tables.values() if not t.empty]
    if not frames:
        return {"runs": 0}
    df = pd.concat(frames, ignore_index=True)
    stage = stage_of(df)
    out = {
        "runs": len(df),
        "by_status": df["status"].value_counts().to_dict(),
        "by_stage": stage.value_counts().to_dict(),
        "experiments": {e: len(t) for e, t in tables.items()},
        "profiles": sorted(df["profile"].dropna().unique().tolist()) if "profile" in df else [],
        "seeds": seeds_of_record(df),
        "cpu_minutes": float(df.get("wall_time_s", pd.Series(dtype=float)).sum()) / 60,
    }
    for key in ("provenance.commit", "provenance.device", "provenance.machine"):
        if key in df:
            out[key.split(".")[1] + "s"] = unique_values(df, key)
    stuck = {e: note for e, t in tables.items() if not t.empty and (note := chance_note(t))}
    if stuck:
        out["did_not_train"] = stuck
    return out


def _what_was_run(summary: dict, analysis: ClaimAnalysis) -> str:
    if not analysis.reads:
        return "No training runs: measured from the layers themselves (autograd Jacobians)."
    if summary["runs"] == 0:
        return f"Not run yet (reads {', '.join(analysis.reads)})."
    status = ", ".join(f"{n} {s}" for s, n in summary["by_status"].items())
    stages = summary.get("by_stage", {})
    others = [f"{stages[s]} {label}" for s, label in STAGE_LABELS.items() if stages.get(s)]
    if others:
        status += f"; {stages.get('record', 0)} of record, " + ", ".join(others)
    exps = ", ".join(f"`{e}` ({n})" for e, n in summary["experiments"].items())
    commits = ", ".join(c[:10] for c in summary.get("commits", [])) or "?"
    devices = ", ".join(summary.get("devices", [])) or "?"
    stuck = "".join(f" In `{e}`: {note}." for e, note in summary.get("did_not_train", {}).items())
    return (
        f"{summary['runs']} runs ({status}) from {exps}; profile "
        f"{', '.join(summary['profiles'])}; {summary['seeds']} seed(s) of record; "
        f"{summary['cpu_minutes']:.1f} minutes of training on {devices}; code {commits}.{stuck}"
    )


def sections(results_dir: Path, analyses: list[ClaimAnalysis], tables: Tables) -> list[dict]:
    out = []
    for a in analyses:
        path = results_dir / "verdicts" / f"{a.name}.json"
        verdict = json.loads(path.read_text()) if path.exists() else {"verdict": "not run yet"}
        mine = {e: tables.get(e, pd.DataFrame()) for e in a.reads}
        out.append(
            {
                "analysis": a,
                "verdict": verdict,
                "blog": vars(a.quote) if a.quote else {},
                "run": _what_was_run(run_summary(mine), a),
                "figure": results_dir / "figures" / f"{a.name}.png",
                "table": a.table(mine) if a.table else None,
            }
        )
    return out


def extra_markdown(extras: Sequence[dict]) -> list[str]:
    """The report sections after the claims (the grid): title, figures, text."""
    lines = []
    for x in extras:
        section = x["section"]
        lines += [f"## {section.title}", ""]
        lines += [figure_markdown(p.stem, p) for p in x["figures"] if p.exists()] + [""]
        lines += [*x["text"], ""]
    return lines


def compute_lines(provenance: dict) -> list[str]:
    """The compute table, then the sittings' (each stretch of sweeping and its wall time)."""
    sittings = sittings_markdown(provenance.get("sittings", []))
    return compute_markdown(provenance["compute"]) + (["", *sittings] if sittings else [])


def render_markdown(secs: list[dict], provenance: dict, extras: Sequence[dict] = ()) -> str:
    compute = compute_lines(provenance)
    lines = [
        f"# {TITLE}",
        "",
        f"Each claim of the blog post *{BLOG_TITLE}* tested with real runs. "
        "Regenerate with `make figures` (from the results store) after `make run-sweep`.",
        "",
        *top_table_markdown(secs),
    ]
    lines += ["", VERDICT_NOTE, "", commits_line(provenance), ""]
    lines += _progress(provenance)
    lines += ["## Scale", "", SCALE_NOTE, ""]
    for s in secs:
        a, v, blog = s["analysis"], s["verdict"], s["blog"]
        lines += [f"## {a.claim} `{a.name}`: {a.title}", ""]
        if blog:
            lines += [f"> {blog['zh']}", ">", f"> *{blog['en']}*", ""]
        lines += [f"**What was run.** {s['run']}", ""]
        if v.get("ladder_figure"):  # the deciding statistics at every budget: they lead
            ladder = s["figure"].parent / Path(v["ladder_figure"]).name
            lines += [figure_markdown(f"{a.name} budget ladder", ladder), ""]
        if s["table"]:
            lines += [*s["table"], ""]
        elif s["figure"].exists():
            lines += [figure_markdown(a.name, s["figure"]), ""]
        lines += [verdict_line(v), ""]
        for key, label in PARTS:
            if v.get(key):
                lines += [f"*{label}.* {v[key]}", ""]
        lines += protocol_markdown(v)
    lines += extra_markdown(extras)
    lines += ["## Compute and provenance", "", *compute, ""]
    lines += ["```", json.dumps(_brief(provenance), indent=2), "```", ""]
    return "\n".join(lines)


def figure_ref(path: Path) -> dict:
    """A figure as the report shows it, by paths relative to the report (which lies beside
    figures/): ``src`` the PNG, ``href`` its full-size vector copy (the PNG itself without
    one), ``width`` and ``height`` the PNG's pixels."""
    from PIL import Image  # the PNG's header: its size

    folder = path.parent.name
    vector = vector_copy(path)
    with Image.open(path) as image:
        width, height = image.size
    return {
        "src": f"{folder}/{path.name}",
        "href": f"{folder}/{(vector or path).name}",
        "width": width,
        "height": height,
    }


def figure_markdown(alt: str, path: Path) -> str:
    """A figure in REPORT.md: the PNG, a link to its vector copy."""
    ref = figure_ref(path)
    return f"[![{alt}]({ref['src']})]({ref['href']})"


def _brief(provenance: dict) -> dict:
    """What the report prints under its compute table; provenance.json has all of it."""
    return {k: v for k, v in provenance.items() if k not in ("compute", "sittings")}


# CommonMark with tables; raw HTML in the texts is shown as text, never inserted.
_MD = MarkdownIt("commonmark", {"html": False}).enable("table")
# A table cell whose text starts with a verdict (or C11's call) is coloured as the top table's.
VERDICT_CLASSES = {
    "supported": "supported",
    "contradicted": "contradicted",
    "inconclusive": "inconclusive",
    "not run yet": "not",
    "matches": "matches",
    "differs": "differs",
    "tie": "tie",
}
_VERDICT_START = re.compile(r"[*_\s]*(" + "|".join(VERDICT_CLASSES) + r")\b")


def verdict_class(text: str) -> str | None:
    """The CSS class of a table cell that states a verdict ("**supported** +1.2 pp ...",
    "inconclusive (...)", "differs"); None for any other cell."""
    found = _VERDICT_START.match(text)
    return VERDICT_CLASSES[found.group(1)] if found else None


def _td_open(renderer, tokens, idx, options, env) -> str:  # noqa: ANN001 - markdown-it's rule
    inline = tokens[idx + 1] if idx + 1 < len(tokens) else None
    if inline is not None and inline.type == "inline" and (css := verdict_class(inline.content)):
        tokens[idx].attrJoin("class", css)
    return renderer.renderToken(tokens, idx, options, env)


_MD.add_render_rule("td_open", _td_open)
_TEMPLATES = Environment(
    loader=PackageLoader("normexp.analysis.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    keep_trailing_newline=True,
)


def _figure_at(figures: Path, name: str | None) -> dict | None:
    """A figure a verdict names (``figures/<file>.png``) as ``figure_ref`` gives it; None
    without one."""
    path = figures / Path(name).name if name else None
    return figure_ref(path) if path is not None and path.exists() else None


def _lr_figure(figures: Path, verdict: dict) -> tuple[str, dict] | None:
    """The LR selection's figure of a verdict (REPORT.md links it), as (alt, its reference)."""
    name = (verdict.get("protocol") or {}).get("lr_figure")
    ref = _figure_at(figures, name)
    return (Path(name).stem, ref) if ref else None


def _inline(text: str) -> Markup:
    return Markup(_MD.renderInline(str(text)))


def _block(lines: list[str]) -> Markup:
    return Markup(_MD.render("\n".join(lines)))


def contents(secs: list[dict], extras: Sequence[dict], closing: str = "") -> list[tuple]:
    """The page's table of contents: (anchor, title) of every section, in page order."""
    entries = [("scale", "Scale")]
    entries += [(a.name, f"{a.claim} `{a.name}`: {a.title}") for a in (s["analysis"] for s in secs)]
    entries += [(x["section"].name, x["section"].title) for x in extras]
    entries.append(("compute", "Compute and provenance"))
    if closing:
        entries.append((DAMAGED_ANCHOR, DAMAGED_TITLE))
    return [(anchor, _inline(title)) for anchor, title in entries]


def render_html(
    secs: list[dict], provenance: dict, extras: Sequence[dict] = (), closing: str = ""
) -> str:
    """The same content as REPORT.md, its markdown rendered and laid out by the template, each
    figure the PNG beside the page linking to its vector copy (``figure_ref``), a table of
    contents, and ``closing`` (the damaged runs' section, when any) at the end."""
    rows = []
    for s in secs:
        a, v, blog = s["analysis"], s["verdict"], s["blog"]
        rows.append(
            {
                "claim": a.claim,
                "name": a.name,
                "title": _inline(a.title),
                "verdict": _verdict_text(v),
                "css": v["verdict"].split()[0],
                "ci": _fmt_ci(v),
                "zh": blog.get("zh", ""),
                "en": blog.get("en", ""),
                "run": _inline(s["run"]),
                "table": _block(s["table"]) if s["table"] else None,
                "image": figure_ref(s["figure"]) if s["figure"].exists() else None,
                "ladder": _figure_at(s["figure"].parent, v.get("ladder_figure")),
                "effect": _inline(v.get("effect", "")),
                "parts": [(label, _inline(v[key])) for key, label in PARTS if v.get(key)],
                # chosen LRs, the LR figure's link, convergence-check lines: as in REPORT.md
                "protocol": _block(protocol_markdown(v)) if protocol_markdown(v) else None,
                "lr_figure": _lr_figure(s["figure"].parent, v),
            }
        )
    top = [
        {**r, "says": _inline(r["says"]), "statistic": _inline(r["statistic"])}
        for r in top_rows(secs)
    ]
    return _TEMPLATES.get_template("report.html.j2").render(
        title=TITLE,
        blog_title=BLOG_TITLE,
        sections=rows,
        extras=[
            {
                "name": x["section"].name,
                "title": _inline(x["section"].title),
                "images": [(p.stem, figure_ref(p)) for p in x["figures"] if p.exists()],
                "text": _block(x["text"]),
            }
            for x in extras
        ],
        top=top,
        top_header=TOP_HEADER,
        contents=contents(secs, extras, closing),
        closing=Markup(closing),
        top_note=_block([VERDICT_NOTE, "", commits_line(provenance), "", *_progress(provenance)]),
        scale=_block([SCALE_NOTE]),
        compute=_block(compute_lines(provenance)),
        provenance=json.dumps(_brief(provenance), indent=2),
    )


def report_run_id(profile: str, commit: str) -> str:
    """The W&B id of a profile's report run at one code commit: every `make figures` at that
    commit logs into the same W&B run (resumed), a new commit starts another."""
    digest = hashlib.sha256(f"{profile}\n{commit}".encode()).hexdigest()[:12]
    return f"report-{re.sub(r'[^A-Za-z0-9_-]', '-', profile)}-{digest}"


def log_to_wandb(secs: list[dict], results_dir: Path, mode: str) -> str | None:
    """The figures and the verdict table in a W&B run of their own, one per profile and code
    commit (``report_run_id``); returns the error, if any."""
    profile, commit = results_dir.name, code_commit()
    mirror = WandbMirror(
        mode=mode,
        project="normexp",
        group="report",
        name=f"report-{profile}",
        tags=["report", f"profile:{profile}", f"commit:{commit[:10]}"],
        config={"profile": profile, "commit": commit},  # the dashboards show one profile's runs
        run_dir=results_dir,
        job_type="report",
        run_id=report_run_id(profile, commit),
    )
    if mirror.run is not None:
        try:
            import wandb  # only when the report is logged to W&B

            table = wandb.Table(columns=["claim", "name", "verdict", "effect"])
            for s in secs:
                table.add_data(
                    s["analysis"].claim,
                    s["analysis"].name,
                    s["verdict"]["verdict"],
                    s["verdict"].get("effect", ""),
                )
            mirror.run.log({"verdicts": table})
        except Exception as exc:  # noqa: BLE001 - the mirror never fails the report
            mirror._fail("log", exc)
    mirror.log_images(
        {f"figures/{s['analysis'].name}": s["figure"] for s in secs if s["figure"].exists()}
    )
    mirror.finish({}, exit_code=0)
    return mirror.error


def write_report(
    results_dir: Path,
    analyses: list[ClaimAnalysis],
    tables: Tables,
    wandb_mode: str = "auto",
    damaged: Sequence[DamagedRun] = (),
    extras: Sequence[dict] = (),
) -> tuple[Path, Path]:
    """Write the report of the profile whose folder is ``results_dir`` (its name: the profile);
    ``extras``: sections after the claims ({"section": ReportSection, "figures", "text"})."""
    secs = sections(results_dir, analyses, tables)
    profile = results_dir.name
    provenance = {
        "generated_from": f"{results_dir.parent.name}/{profile}",
        "profile": profile,
        "experiments": {e: len(t) for e, t in tables.items()},
        "commands": commands(tables, profile),
        "compute": experiment_compute(tables, results_dir),
        "sittings": read_sittings(results_dir),
        "not_run": not_run(tables),
    }
    for key in ("machines", "hosts"):  # where the runs ran, for the report's own summary
        provenance[key] = sorted({m for row in provenance["compute"] for m in row[key]})
    # the commits of the runs of record (what the verdicts rest on), and of every stored run
    of_record = {c for sec in secs for c in sec["verdict"].get("record", {}).get("commits", [])}
    frames = [t for t in tables.values() if not t.empty]
    provenance["commits"] = sorted(of_record)
    provenance["commits_in_store"] = unique_values(pd.concat(frames), COMMIT) if frames else []
    cores = {s["cpu_count"] for s in provenance["sittings"] if s.get("cpu_count")}
    provenance["cpu_count"] = sorted(cores)
    atomic_write_json(results_dir / "provenance.json", provenance)
    md = results_dir / "REPORT.md"
    # Damaged runs (none in a clean store: nothing added) close the report.
    text = render_markdown(secs, provenance, extras) + damaged_runs_markdown(damaged, analyses)
    md.write_text(text, encoding="utf-8")
    page = results_dir / "report.html"
    damage = damaged_runs_html(damaged, analyses)
    page.write_text(render_html(secs, provenance, extras, damage), "utf-8")
    error = log_to_wandb(secs, results_dir, wandb_mode)
    if error:
        print(f"report: {error} (the report files are written)")
    return md, page
