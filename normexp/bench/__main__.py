"""``python -m normexp.bench``: print one table of ratios and write results/bench/bench.json."""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from normexp.bench.norms import bench_norms
from normexp.tracking.provenance import provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default: 1, as each sweep worker uses)",
    )
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    rows = bench_norms(repeats=args.repeats)
    print(
        f"{'bench':<14} {'name':<16} {'reference':<16} {'ours ms':>9} {'ref ms':>9} "
        f"{'ratio':>6}  target"
    )
    for r in rows:
        mark = "ok" if r["meets_target"] else "MISSES"
        print(
            f"{r['bench']:<14} {r['name']:<16} {r['reference']:<16} {r['ours_ms']:>9.2f} "
            f"{r['reference_ms']:>9.2f} {r['ratio']:>6.2f}  {r['target']} {mark}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "rows": rows,
        "threads": args.threads,
        "seconds": time.time() - start,
        "provenance": provenance("cpu"),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
    }
    (args.out / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"-> {args.out / 'bench.json'}")


if __name__ == "__main__":
    main()
