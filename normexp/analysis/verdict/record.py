"""Seeds of record: which runs a verdict of record may use, declared before the runs are made.

The seeds of record of a profile are the seeds its sweep runs, declared in
``configs/profile/<profile>.yaml`` (``hydra.sweeper.params.seed``): every experiment of that
profile runs them in every cell, and the analyses decide on exactly those. A verdict of record
needs at least ``MIN_SEEDS[profile]`` of them (quick, the fast check: 3; the profiles of record:
5), every one finished (ok or diverged) in every cell that
decides the claim. Otherwise the verdict is not made: a call of supported or contradicted
becomes *inconclusive*, marked incomplete ("3 of 5 declared seeds"), with the estimate and CI
of the seeds present for information.

Runs that are not of record are left out of verdicts and figures (the collected tables keep
them), and each verdict says how many:
- a seed outside the declared set (e.g. seeds 5–9 added to a cell);
- a run made by another experiment file that writes into the same store folder, e.g. the
  ``*_more_seeds`` files, which added seeds to cells after their first seeds had been looked at.
  The store cannot tell which file made a run, so the sweep log (``sweeps.jsonl``) does: a
  sitting whose command ran ``experiment=X`` into store folder Y ≠ X made the runs that finished
  during it. A rerun with more seeds is a new, declared run of the whole cell (its own store).
- a GN run of an experiment that takes GN's grouping from the grouping ablation's decision
  but does not carry the grouping it chose (an earlier design's run left in the folder;
  normexp/analysis/verdict/grouping.py).

Commits: the verdict lists the commits its runs of record came from; more than one is flagged
unless the pair is declared equivalent in ``EQUIVALENT_COMMITS`` with the reason.
"""

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from normexp.analysis import columns as col
from normexp.analysis.columns import Tables, table, unique_values
from normexp.analysis.verdict.grouping import other_grouping
from normexp.catalogue import PROFILE_CONFIGS
from normexp.tracking.store import read_sittings

# The fewest seeds of record a profile may declare and still make calls: quick is the fast check
# (3 seeds: low power, stated), standard and paper the profiles of record; others (smoke) 5.
MIN_SEEDS = {"quick": 3, "standard": 5, "paper": 5}
DEFAULT_MIN_SEEDS = 5


def min_seeds(profiles: Iterable[str]) -> int:
    """The seeds a verdict over runs of ``profiles`` needs declared (the strictest profile's)."""
    return max((MIN_SEEDS.get(str(p), DEFAULT_MIN_SEEDS) for p in profiles), default=5)
PROFILES = PROFILE_CONFIGS
FINISHED = ("ok", "diverged")  # a diverged run is a result (a failed configuration)
# frozenset of full commit hashes -> why their runs are equivalent (reviewed, with a test)
EQUIVALENT_COMMITS: dict[frozenset[str], str] = {}
_RANGE = re.compile(r"range\((\d+)(?:,\s*(\d+))?\)")


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from a sweep value: '0,1,2' or 'range(5)' / 'range(0,5)'."""
    text = str(text).strip()
    if m := _RANGE.fullmatch(text):
        lo, hi = (0, int(m[1])) if m[2] is None else (int(m[1]), int(m[2]))
        return tuple(range(lo, hi))
    return tuple(int(s) for s in text.split(",") if s.strip())


def declared_seeds(profile: str, profiles_dir: Path = PROFILES) -> tuple[int, ...]:
    """The seeds of record of ``profile``; () for an unknown profile."""
    path = profiles_dir / f"{profile}.yaml"
    if not path.exists():
        return ()
    seeds = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params.seed", default="")
    return parse_seeds(seeds)


def extension_keys(results_dir: Path | None, experiment: str, df: pd.DataFrame) -> set[str]:
    """Run keys of ``experiment``'s store folder made by another experiment file's sittings."""
    if results_dir is None or df.empty or col.FINISHED_AT not in df or col.RUN_KEY not in df:
        return set()
    keys: set[str] = set()
    for sitting in read_sittings(results_dir):
        made_by = re.search(r"experiment=(\S+)", sitting.get("command", ""))
        if sitting.get("experiment") != experiment or not made_by or made_by[1] == experiment:
            continue
        start = float(sitting.get("started", math.nan))
        end = start + float(sitting.get("wall_s", math.nan))
        done = pd.to_numeric(df[col.FINISHED_AT], errors="coerce")
        keys |= set(df.loc[(done >= start) & (done <= end), col.RUN_KEY])
    return keys


def of_record(tables: Tables, results_dir: Path | None = None) -> tuple[Tables, dict]:
    """The runs of record of each table, and what was left out: {"declared": {profile: seeds},
    "outside_declared": n, "added_by_other_files": {experiment: n}, "other_grouping":
    {experiment: n}, "commits": [...]}."""
    out: Tables = {}
    info: dict = {"declared": {}, "outside_declared": 0, "added_by_other_files": {},
                  "other_grouping": {}}
    commits: set[str] = set()
    for experiment, df in tables.items():
        if df.empty or col.PROFILE not in df:
            out[experiment] = df
            continue
        keep = pd.Series(True, index=df.index)
        for profile in df[col.PROFILE].dropna().unique():
            seeds = info["declared"].setdefault(str(profile), list(declared_seeds(str(profile))))
            rows = df[col.PROFILE] == profile
            outside = rows & ~df[col.SEED].isin(seeds)
            info["outside_declared"] += int(outside.sum())
            keep &= ~outside
        added = extension_keys(results_dir, experiment, df) if col.RUN_KEY in df else set()
        extra = keep & df[col.RUN_KEY].isin(added) if added else pd.Series(False, df.index)
        if extra.any():
            info["added_by_other_files"][experiment] = int(extra.sum())
        stale = keep & other_grouping(df, results_dir)
        if stale.any():
            info["other_grouping"][experiment] = int(stale.sum())
        out[experiment] = df[keep & ~extra & ~stale]
        commits |= set(unique_values(out[experiment], col.COMMIT))
    info["commits"] = sorted(commits)
    return out, info


def seeds_finished(tables: Tables, declared: Mapping[str, list[int]]) -> tuple[int, int] | None:
    """(fewest declared seeds finished in any cell, seeds declared) over the cells of ``tables``;
    a cell is the runs that share every config column but the seed. None without cells."""
    worst = None
    for df in tables.values():
        if df.empty or col.PROFILE not in df:
            continue
        keys = [c for c in col.CONFIG_COLUMNS if c in df] + [col.PROFILE]
        for _, cell in df.groupby(keys, dropna=False):
            wanted = declared.get(str(cell[col.PROFILE].iloc[0]), [])
            done = set(cell.loc[cell[col.STATUS].isin(FINISHED), col.SEED]) & set(wanted)
            if worst is None or len(done) < worst[0] or len(wanted) < worst[1]:
                worst = (len(done), len(wanted))
    return worst


def commits_note(commits: list[str]) -> str:
    """'' for one commit (or none); else the commits and whether they are declared equivalent."""
    if len(commits) <= 1:
        return ""
    short = ", ".join(c[:10] for c in commits)
    reason = EQUIVALENT_COMMITS.get(frozenset(commits))
    if reason:
        return f"runs from {len(commits)} commits ({short}), declared equivalent: {reason}"
    return f"runs from {len(commits)} commits ({short}), NOT declared equivalent"


def apply_record(verdict: dict, info: dict, deciding: Tables) -> dict:
    """``verdict`` made of record: a call on incomplete seeds (fewer than declared in a deciding
    cell, or fewer than MIN_SEEDS declared) becomes inconclusive, marked incomplete, in the claim
    and every sub-claim; ``record`` and ``record_note`` say what the verdict rests on."""
    finished = seeds_finished(deciding, info["declared"])
    least = min_seeds(info["declared"])
    record = {**info, "min_seeds": least}
    parts = []
    if finished is not None:
        done, wanted = finished
        record["finished_of_declared"] = [done, wanted]
        parts.append(f"{done} of {wanted} declared seeds in the weakest deciding cell")
        if done < wanted or wanted < least:
            why = f"{done} of {wanted} declared seeds" if done < wanted else ""
            if wanted < least:
                why = ", ".join(p for p in (why, f"fewer than {least} declared") if p)
            record["incomplete"] = why
            _withhold(verdict, f"incomplete: {why}")
            for sub in verdict.get("sub", []):
                _withhold(sub, f"incomplete: {why}")
    if info["outside_declared"]:
        parts.append(f"{info['outside_declared']} runs with undeclared seeds left out")
    for experiment, n in info["added_by_other_files"].items():
        parts.append(f"{n} runs added to {experiment} by another experiment file left out")
    for experiment, n in info.get("other_grouping", {}).items():
        parts.append(f"{n} GN runs of {experiment} without the decided grouping left out")
    if note := commits_note(info["commits"]):
        parts.append(note)
    verdict["record"] = record
    verdict["record_note"] = "; ".join(parts)
    return verdict


def _withhold(v: dict, why: str) -> None:
    if v["verdict"] in ("supported", "contradicted"):
        v["call_on_seeds_present"] = v["verdict"]
        v["verdict"] = "inconclusive"
    v["incomplete"] = why


def select(df: pd.DataFrame, where: Mapping[str, object]) -> pd.DataFrame:
    """Rows of ``df`` whose column equals each wanted value (a list or tuple: is one of them)."""
    if df.empty:
        return df
    mask = pd.Series(True, index=df.index)
    for column, wanted in where.items():
        many = isinstance(wanted, list | tuple)
        mask &= df[column].isin(wanted) if many else df[column] == wanted
    return df[mask]


def load_tables(results_dir: Path) -> Tables:
    """The tables ``make figures`` collected in one profile's folder: {experiment: one row per
    run}, every stage (``runs_of_record`` keeps the ones the report averages)."""
    folder = Path(results_dir) / "collected"
    return {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def runs_of_record(tables: Tables, results_dir: Path | None = None) -> Tables:
    """The runs of record of every collected table, as the report reads them: stage record
    (one scale), declared seeds, made by the declaring experiment file (the sweep log of the
    profile folder ``results_dir`` says which file made a run; None: not checked)."""
    record, _ = of_record({e: table(tables, e) for e in tables}, results_dir)
    return record
