"""The scale table (issue #18): every claim and sub-claim at every profile that has verdicts, side
by side, with the anchor's number where one exists, and what changes with scale.

Profiles. The store keeps one folder per profile (results/<profile>/verdicts/*.json, written by
``figures``). The table reads the verdicts of each profile of configs/profile/ whose folder has
them, in scale order (SCALE_ORDER, then any other by name), smoke excluded (a plumbing check,
not a measurement), and always the profile whose report it is, smoke included then.

Rows. One row per claim (its verdict: the summary of its sub-claims) and one per sub-claim (C2a,
C4b, C11 tiny batch, ...); a claim whose only sub-claim has the claim's own id (C3, C5, C8) has
one row. Each profile's cell: its call and the effect, the estimate with its 95% CI over seeds in
the sub-claim's unit (the unit as its statistic names it: pp, bpc, dB, %).

Anchor. ANCHORS gives, for the sub-claims whose statistic a published anchor measures too, the
anchor's value of that statistic (computed from the analysis modules' own anchor numbers); it is
shown only where the sub-claim's statistic is the one the anchor measures (a sub-claim decided
by another test, or at another batch size, shows none).

When the effect moves (the rule). Between two profiles, a smaller one s and a larger one l (next
to each other in scale order among those with the row), both with an estimate and a 95% CI of
the same statistic: the effect *moves* when the two CIs do not overlap (a conservative check:
two non-overlapping 95% CIs differ at well under 5%); otherwise there is *no detectable change*.
A move *grows* with scale when both estimates have the same sign and |l| > |s|, *shrinks* when
|l| < |s|, and *changes sign* otherwise; with an anchor it is *toward* the anchor when l lies
closer to it than s does, else *away* from it. A row gets a sentence where the calls of two
profiles differ or the effect moves; without a CI at one profile, or with different statistics,
the change is not judged and the sentence says why. Different statistics are often one statistic
on two architectures (C4 on the CNN at quick, on the ResNet at standard): where the verdict of one
profile reports the other's architecture beside it (normexp/analysis/verdict/architecture.py), that
same statistic at both profiles is compared instead, by the same rule, and the sentence says so.
"""

import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from normexp.analysis.claims import load_analyses
from normexp.analysis.style import NEUTRAL, REFERENCE, caption, figure, save_figure
from normexp.analysis.verdict import anchors
from normexp.analysis.verdict.architecture import NAMES as ARCHITECTURES
from normexp.analysis.verdict.spec import ReportSection
from normexp.catalogue import PROFILE_CONFIGS

SCALE_ORDER = ("smoke", "quick", "standard", "paper")
EXCLUDED = ("smoke",)
FIGURE = "scales.png"
SECTION = ReportSection(
    name="scales",
    title="Scales: every sub-claim at every profile",
    reads=(),
    draw=lambda tables, figures_dir: [],  # drawn from the verdict files: see ``report_extra``
    markdown=lambda tables: [],
)
UNITS = re.compile(r"(?<![\w])(pp|bpc|dB|%)(?![\w])")


def _anchor_values() -> list[tuple[str, str, float, str]]:
    """(sub-claim id, the statistic as it starts, the anchor's value of it, the anchor), from the
    numbers the claims' own analyses compare with (one run each)."""
    gn = "GN paper, ResNet-50 ImageNet"
    by_batch, at_32 = anchors.GN_PAPER_ERROR_BY_BATCH, anchors.GN_PAPER_ERROR_AT_32
    bn_gn = {b: by_batch["batch"][b] - by_batch["group"][b] for b in by_batch["batch"]}
    sk, caffenet = anchors.SALIMANS_KINGMA_ERROR, anchors.CAFFENET_TOP1
    bpc = anchors.COOIJMANS_TEST_BPC
    lstm = bpc["batch_per_step"] - bpc["none"]
    bn_lstm = "BN-LSTM, per-step stats − plain LSTM, test bpc"
    return [
        ("C2c", "test accuracy, WN alone − none", sk["none"] - sk["WN"],
         "Salimans & Kingma 2016, CIFAR-10"),
        ("C3", "test accuracy, post − pre", caffenet["post"] - caffenet["pre"],
         "CaffeNet on ImageNet, top-1"),
        ("C4a", "growth of BN − GN test error from batch 32 to 2", bn_gn[2] - bn_gn[32], gn),
        ("C4b", "BN − GN test error at batch 2", bn_gn[2], gn),
        ("C7a", bn_lstm, lstm, "Cooijmans et al. 2016, PTB characters"),
        ("C7b", bn_lstm, lstm, "Cooijmans et al. 2016, PTB characters"),
        ("C8", "LN − BN test error", at_32["layer"] - at_32["batch"], f"{gn}, batch 32"),
        ("C8", "LN − GN test error", at_32["layer"] - at_32["group"], f"{gn}, batch 32"),
        ("C11 tiny batch", "GN vs BN, pp of error", bn_gn[2], f"{gn}, batch 2"),
        ("C11 otherwise (batch ≥ 32)", "BN vs IN, pp of error",
         at_32["instance"] - at_32["batch"], f"{gn}, batch 32"),
    ]


def anchor_for(row_id: str, statistic: str) -> tuple[float, str] | None:
    """The anchor's (value, source) of this sub-claim's statistic, None where no anchor measures
    it (or the sub-claim was decided by another statistic). The anchor measures one architecture
    (ResNet-50, CaffeNet, ...), so a statistic named after ours ("ResNet-20: ...") matches too."""
    named = (statistic, statistic.split(": ", 1)[-1])  # as it is, and without an architecture
    for id_, start, value, source in _anchor_values():
        if id_ == row_id and any(s.startswith(start) for s in named):
            return round(value, 6), source
    return None


def unit_of(statistic: str) -> str:
    """The unit the statistic names (pp, bpc, dB, %), '' for none (a ratio, a count)."""
    found = UNITS.findall(statistic or "")
    return found[-1] if found else ""


def scale_key(profile: str) -> tuple[int, str]:
    order = SCALE_ORDER.index(profile) if profile in SCALE_ORDER else len(SCALE_ORDER)
    return order, profile


def profiles_in(store: Path, own: str | None = None) -> list[str]:
    """The profiles of configs/profile/ whose folder in ``store`` has verdicts, smoke excluded,
    with ``own`` (the reported profile) always, in scale order."""
    configs = PROFILE_CONFIGS
    named = {p.stem for p in configs.glob("*.yaml")} - set(EXCLUDED)
    found = {p for p in named if any((store / p / "verdicts").glob("*.json"))}
    return sorted(found | ({own} if own else set()), key=scale_key)


def read_verdicts(profile_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((profile_dir / "verdicts").glob("*.json"))]


def _claim_number(claim: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", claim)
    return (int(digits[0]) if digits else 10**6), claim


def _titles() -> dict[str, str]:
    """{claim id: the claim in a few words} from the claim analyses."""
    return {a.claim: a.title for a in load_analyses()}


def _entries(verdict: Mapping, titles: Mapping[str, str]) -> list[dict]:
    """One claim's rows at one profile: the claim's own, then each sub-claim's."""
    subs = verdict.get("sub") or []
    claim = verdict["claim"]
    title = titles.get(claim, f"`{verdict['experiment']}`")
    own = {
        "id": claim,
        "claim": claim,
        "statement": title + (" (all its sub-claims)" if subs else ""),
        "statistic": "" if subs else verdict.get("ci_note", ""),
        "verdict": verdict["verdict"],
        "present": verdict.get("call_on_seeds_present"),
        "incomplete": verdict.get("incomplete"),
        "estimate": None if subs else verdict.get("estimate"),
        "ci": None if subs else verdict.get("ci"),
    }
    out = [own]
    for s in subs:
        entry = {
            "id": s["id"],
            "claim": claim,
            "statement": s["statement"],
            "statistic": s.get("statistic", ""),
            "verdict": s["verdict"],
            "present": s.get("call_on_seeds_present"),
            "incomplete": s.get("incomplete"),
            "estimate": s.get("estimate"),
            "ci": s.get("ci"),
        }
        entry["beside"] = _beside(verdict, s["id"])
        if s["id"] == claim:  # the claim's single sub-claim: one row
            out[0] = entry
        else:
            out.append(entry)
    return out


def _beside(verdict: Mapping, sub_id: str) -> list[dict]:
    """The sub-claim as the other architectures measured it (reported beside the verdict of
    record, normexp/analysis/verdict/architecture.py): statistic named after the architecture,
    estimate, CI and call; [] for a claim decided on one architecture."""
    others = verdict.get("details", {}).get("architecture", {}).get("others", {})
    out = []
    for brief in others.values():
        for s in brief.get("sub") or []:
            if s["id"] == sub_id and s.get("statistic") and brief.get("name"):
                out.append({
                    "statistic": f"{brief['name']}: {s['statistic']}",
                    **{k: s.get(k) for k in ("verdict", "estimate", "ci")},
                })
    return out


def same_statistic(small: Mapping, large: Mapping) -> tuple[Mapping, Mapping] | None:
    """A pair measured by one statistic (one architecture) at both profiles, from each
    profile's entry and what it reports beside it; None without one."""
    for s in (small, *small.get("beside", [])):
        for lg in (large, *large.get("beside", [])):
            if s.get("statistic") and s["statistic"] == lg.get("statistic"):
                return s, lg
    return None


def scale_rows(by_profile: Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """The table's rows from {profile: its verdict dicts} (profiles in scale order): ``id``,
    ``claim``, ``statement``, ``statistic``, ``unit``, ``cells`` ({profile: entry, only where
    the profile has the row}), ``anchor`` ((value, source) or None) and ``change`` (the
    sentence, '' where nothing to say)."""
    profiles = list(by_profile)
    rows: dict[str, dict] = {}
    titles = _titles()
    for profile in profiles:
        for verdict in by_profile[profile]:
            for entry in _entries(verdict, titles):
                row = rows.setdefault(entry["id"], {"id": entry["id"], "claim": entry["claim"]})
                row.setdefault("cells", {})[profile] = entry
    ordered = sorted(rows.values(), key=lambda r: _claim_number(r["claim"]))
    for row in ordered:
        # the largest profile's words (its statistic is the one the anchor is matched with)
        last = row["cells"][max(row["cells"], key=scale_key)]
        row["statement"], row["statistic"] = last["statement"], last["statistic"]
        row["unit"] = unit_of(row["statistic"])
        row["anchor"] = anchor_for(row["id"], row["statistic"])
        row["change"] = change_sentence(row, [p for p in profiles if p in row["cells"]])
    return ordered


def fmt(value: float, unit: str = "") -> str:
    return f"{value:+.3g}" + (f" {unit}" if unit else "")


def fmt_effect(entry: Mapping | None, unit: str) -> str:
    """'+5.37 pp [+4, +6.73]', '+2 (no CI)', or '—'."""
    if not entry or entry.get("estimate") is None:
        return "—"
    if not entry.get("ci"):
        return f"{fmt(entry['estimate'], unit)} (no CI)"
    lo, hi = entry["ci"]
    return f"{fmt(entry['estimate'], unit)} [{lo:+.3g}, {hi:+.3g}]"


def _call(entry: Mapping) -> str:
    if entry["verdict"] == "inconclusive" and entry.get("present"):
        return f"inconclusive (seeds incomplete; present: {entry['present']})"
    return entry["verdict"]


def moves(small: Mapping, large: Mapping) -> bool | None:
    """Whether the effect moves from ``small`` to ``large`` (the module's rule): CIs that do
    not overlap; None where either lacks an estimate or a CI."""
    if any(e.get("estimate") is None or not e.get("ci") for e in (small, large)):
        return None
    (lo_s, hi_s), (lo_l, hi_l) = small["ci"], large["ci"]
    return hi_s < lo_l or hi_l < lo_s


def direction(small: float, large: float) -> str:
    if small * large > 0:
        return "grows" if abs(large) > abs(small) else "shrinks"
    return "changes sign"


def _implication(small: float, large: float, anchor: tuple[float, str] | None, unit: str) -> str:
    """Toward or away from the anchor, and what that says about the anchor's scale."""
    way = direction(small, large)
    if anchor is None:
        return {
            "grows": "extrapolated, the effect is at least as large at larger scales",
            "shrinks": "extrapolated, it may vanish at larger scales (no anchor number to check)",
        }.get(way, "the smaller scale's direction does not hold at the larger one")
    value = anchor[0]
    if abs(large - value) < abs(small - value):
        return (
            f"toward the anchor's {fmt(value, unit)}: the gap to the anchor narrows with scale, "
            "so it is (at least partly) a matter of scale"
        )
    return (
        f"away from the anchor's {fmt(value, unit)}: the gap to the anchor widens with scale, "
        "so scale does not explain it; what else differs (data, architecture, schedule) must"
    )


NOT_RUN = "not run yet"
# 'ResNet-20: BN − GN …': a statistic named after the architecture that measured it
_ARCHITECTURE = re.compile(
    rf"^((?:{'|'.join(re.escape(n) for n in ARCHITECTURES.values())})(?:-\d+)?): (.+)$"
)


def split_architecture(statistic: str) -> tuple[str | None, str]:
    """('ResNet-20', 'BN − GN …') from 'ResNet-20: BN − GN …'; (None, statistic) without one."""
    m = _ARCHITECTURE.match(statistic or "")
    return (m[1], m[2]) if m else (None, statistic)


def _not_compared(
    small: Mapping, large: Mapping, small_p: str, large_p: str, calls_differ: str
) -> str:
    """Why two different statistics are not compared: another architecture decides (each call
    named with its architecture), or another statistic altogether (then ``calls_differ``)."""
    (arch_s, rest_s), (arch_l, rest_l) = (
        split_architecture(e["statistic"]) for e in (small, large)
    )
    if arch_s and arch_l and rest_s == rest_l:
        return (
            f"decided on different architectures ({arch_s} at {small_p}: {small['verdict']}; "
            f"{arch_l} at {large_p}: {large['verdict']}): not compared"
        )
    return (
        f"measured by different statistics at {small_p} and {large_p} "
        f"({small['statistic']}; {large['statistic']}): not compared{calls_differ}"
    )


def mixed_architectures(row: Mapping) -> bool:
    """Whether the row's profiles decided on different architectures (its cells then name
    theirs, and its statistic column leaves the architecture out)."""
    names = {split_architecture(e.get("statistic") or "")[0] for e in row["cells"].values()}
    return len(names - {None}) > 1


def _pair_sentence(row: Mapping, small_p: str, large_p: str) -> str:
    """What changes from profile ``small_p`` to ``large_p`` ('' for nothing)."""
    small, large, unit = row["cells"][small_p], row["cells"][large_p], row["unit"]
    if NOT_RUN in (small["verdict"], large["verdict"]):  # nothing to compare yet, not a call
        return ""
    if small.get("incomplete") or large.get("incomplete"):
        partial = ", ".join(p for p, e in ((small_p, small), (large_p, large)) if e["incomplete"])
        return f"not compared: the seeds of record are incomplete at {partial}"
    calls_differ = small["verdict"] != large["verdict"]
    calls = f"{small['verdict']} at {small_p} → {large['verdict']} at {large_p}"
    if small["statistic"] != large["statistic"] and None not in (
        small.get("estimate"),
        large.get("estimate"),
    ):
        differ = f"; calls differ ({calls})" if calls_differ else ""
        return _not_compared(small, large, small_p, large_p, differ) + _same_architecture(
            small, large, small_p, large_p
        )
    moved = moves(small, large)
    if moved:
        s, lg = small["estimate"], large["estimate"]
        return (
            f"{direction(s, lg)} with scale: {fmt(s, unit)} at {small_p} → {fmt(lg, unit)} at "
            f"{large_p}; {_implication(s, lg, row['anchor'], unit)}"
            + (f" (calls: {calls})" if calls_differ else "")
        )
    if moved is None:
        missing = small_p if not small.get("ci") else large_p
        has_effect = any(e.get("estimate") is not None for e in (small, large))
        if calls_differ:  # a claim's own row has no effect: its call alone
            return f"calls differ ({calls})" + (
                f"; no effect with a CI at {missing} to compare" if has_effect else ""
            )
        if small.get("estimate") is not None and small.get("estimate") != large.get("estimate"):
            return f"no CI at {missing}: the change is not judged"
        return ""
    if calls_differ:
        return (
            f"calls differ ({calls}) but the effect does not move detectably "
            f"({fmt_effect(small, unit)} → {fmt_effect(large, unit)}): a difference of "
            "precision (seeds, schedule), not of the effect"
        )
    return "no detectable change"


def _same_architecture(small: Mapping, large: Mapping, small_p: str, large_p: str) -> str:
    """'; VGG-style CNN at both: ...' where an architecture reported beside the verdict of
    record measured the row's statistic at both profiles ('' otherwise)."""
    pair = same_statistic(small, large)
    if pair is None:
        return ""
    s, lg = pair
    unit = unit_of(s["statistic"])
    effects = (
        f"{fmt_effect(s, unit)} ({s['verdict']}) at {small_p} → {fmt_effect(lg, unit)} "
        f"({lg['verdict']}) at {large_p}"
    )
    moved = moves(s, lg)
    if moved is None:
        what = "no CI at one of them: the change is not judged"
    elif moved:
        what = f"{direction(s['estimate'], lg['estimate'])} with scale"
    else:
        what = "no detectable change"
    arch = split_architecture(s["statistic"])[0]
    which = f"{arch} at both" if arch else f"the same statistic at both ({s['statistic']})"
    return f"; {which}: {effects}, {what}"


def change_sentence(row: Mapping, profiles: Sequence[str]) -> str:
    """The row's 'with scale' sentence over its profiles (in scale order), '' with one profile;
    a profile not run yet is passed over (its neighbours are compared)."""
    profiles = [p for p in profiles if row["cells"][p]["verdict"] != NOT_RUN]
    pairs = [_pair_sentence(row, s, lg) for s, lg in zip(profiles, profiles[1:], strict=False)]
    said = [p for p in pairs if p and p != "no detectable change"]
    if said:
        return "; then ".join(said)
    return "no detectable change" if "no detectable change" in pairs else ""


def _cell(row: Mapping, profile: str, mixed: bool = False) -> str:
    """The profile's call and effect; with ``mixed`` architectures, the one it was decided on."""
    entry = row["cells"].get(profile)
    if entry is None:
        return "—"
    effect = fmt_effect(entry, row["unit"])
    arch = split_architecture(entry.get("statistic") or "")[0]
    on = f" ({arch})" if arch and mixed else ""
    return f"**{_call(entry)}**" + (f" {effect}" if effect != "—" else "") + on


def _anchor_text(row: Mapping) -> str:
    if row["anchor"] is None:
        return "—"
    value, source = row["anchor"]
    return f"{fmt(value, row['unit'])} ({source})"


def markdown_table(rows: Sequence[Mapping], profiles: Sequence[str]) -> list[str]:
    header = ["claim", "the blog says", "statistic", *profiles, "anchor"]
    if len(profiles) > 1:
        header.append("with scale")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        statistic, mixed = r["statistic"] or "—", mixed_architectures(r)
        if mixed:  # each cell names its own architecture
            statistic = split_architecture(statistic)[1]
        cells = [r["id"], r["statement"], statistic]
        cells += [_cell(r, p, mixed) for p in profiles] + [_anchor_text(r)]
        if len(profiles) > 1:
            cells.append(r["change"] or "—")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def section_text(rows: Sequence[Mapping], profiles: Sequence[str]) -> list[str]:
    """The section's markdown: what is compared, the table, the rule."""
    if len(profiles) == 1:
        intro = (
            f"Only `{profiles[0]}` has been run, so there is nothing to compare yet; its column "
            "is shown. Once another profile's verdicts are in the store, each row shows both and "
            "says which way the effect moves with scale."
        )
    else:
        intro = (
            f"Each claim and sub-claim at {', '.join(f'`{p}`' for p in profiles)} (smallest "
            "first): the call and the effect (estimate [95% CI over seeds], in the statistic's "
            "unit), the anchor's value of the same statistic where a published anchor measures "
            "it, and what changes with scale."
        )
    rule = (
        "*With scale.* Between two profiles the effect moves when their 95% CIs do not overlap "
        "(otherwise: no detectable change); it grows or shrinks in size, or changes sign, and "
        "moves toward or away from the anchor's number. A row says so where the calls differ or "
        "the effect moves (normexp/analysis/report/scales.py)."
    )
    return [intro, "", *markdown_table(rows, profiles), "", rule]


def axis_label(row: Mapping) -> str:
    """A panel's y label: the statistic's unit, else what kind of number it is (a ratio, a
    log10 ratio, a count), else the statistic itself, shortened."""
    if row["unit"]:
        return row["unit"]
    statistic = split_architecture(row["statistic"] or "")[1]
    for word, label in (("log10", "log10 ratio"), ("ratio", "ratio"), ("count", "count")):
        if word in statistic:
            return label
    return textwrap.shorten(statistic, 24, placeholder="…") or "value"


def draw(rows: Sequence[Mapping], profiles: Sequence[str], out: Path) -> Path:
    """Per sub-claim (one panel each, its own unit), the estimate with its 95% CI at each
    profile (a dot and whisker, a marker per profile) and the anchor's value as a dashed line;
    a panel whose profiles decided on different architectures names each under its profile
    and marks the change with a dotted line between them."""
    shown = [r for r in rows if any(c.get("estimate") is not None for c in r["cells"].values())]
    cols = min(4, max(1, len(shown)))
    nrows = max(1, -(-len(shown) // cols))
    fig = figure(0.9 + 2.05 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    markers = ("o", "s", "D", "^", "v")
    for ax, row in zip(axes.flat, shown, strict=False):
        mixed = mixed_architectures(row)
        ticks = []
        for i, profile in enumerate(profiles):
            entry = row["cells"].get(profile)
            arch = split_architecture((entry or {}).get("statistic") or "")[0]
            ticks.append(f"{profile}\n{_short_arch(arch)}" if mixed and arch else profile)
            if not entry or entry.get("estimate") is None:
                continue
            est = entry["estimate"]
            lo, hi = entry.get("ci") or (est, est)
            ax.errorbar(i, est, yerr=[[est - lo], [hi - est]], fmt=markers[i % len(markers)],
                        color="black", capsize=3)  # fmt: skip
        ax.axhline(0, color=REFERENCE, lw=0.8)
        if row["anchor"] is not None:
            ax.axhline(row["anchor"][0], color="black", ls="--", lw=1)
        if mixed:  # the architecture changes between two profiles
            for i in range(1, len(profiles)):
                ax.axvline(i - 0.5, color=NEUTRAL, ls=":", lw=1.2)
        ax.set_xlim(-0.55, len(profiles) - 0.45)
        ax.set_xticks(range(len(profiles)), ticks)
        ax.set_title(f"{row['id']}{' ‡' if mixed else ''}\n({axis_label(row)})", loc="center")
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    if not shown:
        axes.flat[0].text(0.5, 0.5, "no estimates yet", ha="center", va="center")
    if any(mixed_architectures(r) for r in shown):
        caption(fig, "‡ decided on different architectures at different profiles (named under "
                "each profile; dotted line: the change): the estimates measure different "
                "networks.")  # fmt: skip
    title = "Each sub-claim's estimate (95% CI over seeds) by profile; dashed: the anchor"
    return save_figure(fig, out, title)


def _short_arch(name: str) -> str:
    """'VGG-style CNN' -> 'VGG', 'ResNet-20' stays: an architecture under a tick."""
    return name.replace("-style CNN", "").replace(" CNN", "")


def report_extra(results_dir: Path) -> dict:
    """The Scales section of the report of the profile whose folder is ``results_dir`` (its
    verdicts written): the figure, drawn into its figures/, and the text, for ``write_report``'s
    ``extras``."""
    profiles = profiles_in(results_dir.parent, own=results_dir.name)
    by_profile = {
        p: read_verdicts(results_dir if p == results_dir.name else results_dir.parent / p)
        for p in profiles
    }
    rows = scale_rows(by_profile)
    figure = draw(rows, profiles, results_dir / "figures" / FIGURE)
    return {"section": SECTION, "figures": [figure], "text": section_text(rows, profiles)}
