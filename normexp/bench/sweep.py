"""Sweep throughput: completed runs per minute for the local launcher's default layout (one
process per core, one torch thread each) vs one process using all cores, on six runs of the
quick profile's own size (BN, batch 32, 4,000 images, 4 epochs): with runs of a few seconds,
worker start-up would dominate, which a real sweep of minutes-long runs amortizes."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def runs_per_minute(data_dir: Path, n_jobs: int, threads: int, seeds: str = "0,1,2,3,4,5") -> float:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable,
            "-m",
            "normexp.run",
            "-m",
            "profile=quick",
            "norm=batch",
            "train.batch_size=32",
            f"seed={seeds}",
            "tracking.mode=disabled",
            "runtime.progress=false",
            f"runtime.threads={threads}",
            f"hydra.launcher.n_jobs={n_jobs}",
            f"hydra.sweep.dir={tmp}/hydra",
            f"paths.results_dir={tmp}/results",
            f"paths.data_dir={data_dir}",
        ]
        t0 = time.perf_counter()
        subprocess.run(
            args,
            cwd=REPO,
            check=True,
            capture_output=True,
            env={**os.environ, "NORMEXP_VERBOSE": ""},
        )
        minutes = (time.perf_counter() - t0) / 60
    return len(seeds.split(",")) / minutes


def bench_sweep(data_dir: Path) -> list[dict]:
    cores = os.cpu_count() or 1
    default = runs_per_minute(data_dir, n_jobs=cores, threads=1)
    single = runs_per_minute(data_dir, n_jobs=1, threads=cores)
    ratio = default / single
    return [
        {
            "bench": "sweep",
            "name": f"{cores} workers x 1 thread",
            "reference": f"1 x {cores} threads",
            "ours": f"{default:.1f} runs/min",
            "reference_value": f"{single:.1f} runs/min",
            "ratio": ratio,
            "target": "> 1 (default faster)",
            "meets_target": ratio > 1,
        }
    ]
