"""``python -m normexp.bench``: one table of ratios, each measured side by side in this run;
written with the machine description to results/bench/bench.json."""

import argparse
import importlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from normexp.data.paths import resolve_data_dir
from normexp.tracking.provenance import provenance

# section -> (module, function): each section imports only what it measures (torchvision, the
# RNN kernel's build), so one section runs without the others' dependencies.
RUNNERS = {
    "norms": ("norms", "bench_norms"),
    "data": ("data", "bench_data"),
    "harness": ("harness", "bench_harness"),
    "flops": ("flops", "bench_flops"),
    "options": ("options", "bench_options"),
    "replicas": ("replicas", "bench_replicas"),
    "sweep": ("sweep", "bench_sweep"),
    "rnn": ("rnn", "bench_rnn"),
    "compile": ("compiled", "bench_compile"),
    "validation": ("evaluation", "bench_validation"),
    "sgd": ("sgd", "bench_sgd"),
    "test": ("evaluation", "bench_test_pass"),
}
TAKES_DATA = ("data", "harness", "flops", "sweep", "compile", "validation", "sgd", "test")


def run_section(name: str, data_dir: Path, repeats: int) -> list[dict]:
    module, function = RUNNERS[name]
    try:
        bench = getattr(importlib.import_module(f"normexp.bench.{module}"), function)
    except ModuleNotFoundError:
        if name != "rnn":  # the RNN bench needs the compiled LSTM kernel's toolchain
            raise
        return []
    if name == "norms":
        return bench(repeats=repeats)
    return bench(data_dir) if name in TAKES_DATA else bench()


def fmt(row: dict) -> str:
    ours = row.get("ours", f"{row.get('ours_ms', 0):.2f} ms")
    ref = row.get("reference_value", f"{row.get('reference_ms', 0):.2f} ms")
    mark = row.get("mark") or ("ok" if row["meets_target"] else "MISSES")
    return (
        f"{row['bench']:<13} {row['name']:<26} {row['reference']:<18} {ours:>16} "
        f"{ref:>16} {row['ratio']:>6.2f}  {row['target']} {mark}"
    )


def kept_rows(path: Path, rows: list[dict]) -> list[dict]:
    """``rows`` after the earlier file's rows of benches not rerun now (``--only`` a section
    updates its rows and keeps the others)."""
    try:
        old = json.loads(path.read_text())["rows"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return rows
    rerun = {row["bench"] for row in rows}
    return [row for row in old if row.get("bench") not in rerun] + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--only", nargs="*", choices=tuple(RUNNERS), default=list(RUNNERS))
    parser.add_argument("--repeats", type=int, default=41)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each sweep worker runs
    data_dir = resolve_data_dir(None)
    start = time.time()
    print(
        f"{'bench':<13} {'case':<26} {'reference':<18} {'ours':>16} {'reference':>16} "
        f"{'ratio':>6}  target"
    )
    rows = []
    for section in args.only:
        for row in run_section(section, data_dir, args.repeats):
            print(fmt(row), flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "rows": kept_rows(args.out / "bench.json", rows),
        "seconds": time.time() - start,
        "provenance": provenance("cpu"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    (args.out / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"-> {args.out / 'bench.json'} (load average {record['load_average_1min']:.1f} "
        f"on {record['cpu_count']} cores: ratios are side by side, absolute numbers are not)"
    )


if __name__ == "__main__":
    main()
