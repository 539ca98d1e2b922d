"""``python -m normexp.tracking.migrate [--results-dir DIR]``: bring a store up to date without
retraining anything. Two steps, each a no-op on a store that needs none.

**Rekey.** A run's folder is named by its key (normexp.tracking.store.run_key); when the key's
rule changes (the per-profile lookup tables left out of it), each run whose folder name is not
the key its config.json now gives is renamed to it, and its summary.json says the new key. A run
whose new name is taken, or whose config cannot be read, stays and is named.

**Layout.** Move a store of the old layout
(``<results>/runs/<experiment>/<run_key>/``, runs of every profile in one folder) into profile
partitions (``<results>/<profile>/runs/<experiment>/<run_key>/``), without retraining anything.

Each run goes to the folder of the profile its ``config.json`` names; ``sweeps.jsonl`` is split
by the profile of each line. The old top-level outputs (collected tables, figures, verdicts,
report) go to the single profile's folder when the store held one profile; when it held several
they mixed them, so they stay where they are for the user to delete (``make figures
PROFILE=…`` writes each profile's own). A run that cannot be placed (unreadable config, or its
place already taken) stays in ``<results>/runs/`` and is named; the command then exits 1.
"""

import argparse
import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from normexp.tracking.store import (
    atomic_write_json,
    default_results_dir,
    profile_dir,
    read_json,
    run_key,
)

# Outputs of `make figures` in the old layout: made from every run in the store together.
OLD_OUTPUTS = (
    "collected",
    "figures",
    "verdicts",
    "wandb",
    "REPORT.md",
    "report.html",
    "provenance.json",
    "report_screenshot.png",
)


def _profile_folder(results_dir: Path, profile: object) -> Path | None:
    """The partition of ``profile``; None if it is not a profile's name."""
    try:
        return profile_dir(results_dir, profile) if isinstance(profile, str) else None
    except ValueError:
        return None


def _move_runs(results_dir: Path) -> tuple[set[str], list[str]]:
    """(profiles moved into, problems); each run folder renamed into its profile's partition."""
    old = results_dir / "runs"
    profiles, problems = set(), []
    for run in sorted(p for p in old.glob("*/*") if p.is_dir()):
        config = read_json(run / "config.json")
        if config is None and not any(run.iterdir()):
            run.rmdir()  # an empty folder (a job killed before it started) is not a run
            continue
        folder = _profile_folder(results_dir, (config or {}).get("profile"))
        if folder is None:
            problems.append(f"{run}: no profile in a readable config.json, left in place")
            continue
        dest = folder / "runs" / run.parent.name / run.name
        if dest.exists():
            problems.append(f"{run}: {dest} exists already, left in place")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run, dest)
        profiles.add(folder.name)
    for experiment in old.iterdir():  # folders emptied by the move
        if experiment.is_dir() and not any(experiment.iterdir()):
            experiment.rmdir()
    if not any(old.iterdir()):
        old.rmdir()
    return profiles, problems


def _split_sittings(results_dir: Path, problems: list[str]) -> None:
    """Each line of the old sweeps.jsonl appended to its profile's; the old file removed once
    every line found its place."""
    path = results_dir / "sweeps.jsonl"
    if not path.is_file():
        return
    by_profile: dict[Path, list[str]] = defaultdict(list)
    kept = []
    for line in filter(str.strip, path.read_text(encoding="utf-8").splitlines()):
        try:
            profile = json.loads(line).get("profile")
        except (json.JSONDecodeError, AttributeError):
            profile = None
        folder = _profile_folder(results_dir, profile)
        if folder is None:
            kept.append(line)
        else:
            by_profile[folder].append(line)
    for folder, lines in by_profile.items():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "sweeps.jsonl", "a", encoding="utf-8") as f:
            f.write("".join(f"{line}\n" for line in lines))
    if kept:
        path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        problems.append(f"{path}: {len(kept)} line(s) without a profile, left in place")
    else:
        path.unlink()


def _move_outputs(results_dir: Path, profiles: set[str]) -> list[str]:
    """The old report's files into the one profile's folder; left alone (and named) when the
    old store mixed profiles or the place is taken."""
    present = [results_dir / name for name in OLD_OUTPUTS if (results_dir / name).exists()]
    if len(profiles) != 1:
        return [f"{p}: not made from runs of one profile, left in place" for p in present]
    folder = _profile_folder(results_dir, next(iter(profiles)))
    notes = []
    for path in present:
        dest = folder / path.name
        if dest.exists():
            notes.append(f"{path}: {dest} exists already, left in place")
        else:
            shutil.move(path, dest)
    return notes


def migrate(results_dir: Path) -> tuple[set[str], list[str]]:
    """Move an old-layout store into profile partitions: (profiles, what was left in place)."""
    results_dir = Path(results_dir)
    if not (results_dir / "runs").is_dir():
        return set(), []
    profiles, problems = _move_runs(results_dir)
    _split_sittings(results_dir, problems)
    notes = _move_outputs(results_dir, profiles)
    return profiles, problems + notes


def rekey(results_dir: Path) -> tuple[int, list[str]]:
    """Rename every run of every profile partition to the key its config now gives: (runs
    renamed, runs left in place with why)."""
    renamed, problems = 0, []
    for config_path in sorted(Path(results_dir).glob("*/runs/*/*/config.json")):
        run = config_path.parent
        config = read_json(config_path)
        if config is None:
            problems.append(f"{run}: config.json unreadable, left in place")
            continue
        key = run_key(config)
        if key == run.name:
            continue
        dest = run.with_name(key)
        if dest.exists():
            problems.append(f"{run}: its key's folder {dest.name} exists already, left in place")
            continue
        os.replace(run, dest)
        summary = read_json(dest / "summary.json")
        if isinstance(summary, dict) and summary.get("run_key") == run.name:
            atomic_write_json(dest / "summary.json", {**summary, "run_key": key})
        renamed += 1
    return renamed, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normexp.tracking.migrate", description=__doc__)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=default_results_dir(),
        help="the store (default: $NORMEXP_RESULTS_DIR or ./results)",
    )
    args = parser.parse_args(argv)
    if not (args.results_dir / "runs").is_dir():
        print(f"migrate: {args.results_dir} has no runs/ folder: nothing to move")
        renamed, problems = rekey(args.results_dir)
        for problem in problems:
            print(f"migrate: {problem}", file=sys.stderr)
        print(f"migrate: {renamed} run(s) renamed to the key their config now gives")
        return 1 if problems else 0
    profiles, problems = migrate(args.results_dir)
    for problem in problems:
        print(f"migrate: {problem}", file=sys.stderr)
    moved = ", ".join(f"{args.results_dir / p}/" for p in sorted(profiles)) or "nowhere"
    print(f"migrate: runs moved into {moved}")
    return 1 if (args.results_dir / "runs").exists() else 0


if __name__ == "__main__":
    raise SystemExit(main())
