"""Which experiments exist and which make target trains each: the files of experiments/ and the
Makefile's lists, their one source of truth. Read by the report, the cost projection and the
tests; it imports nothing of the suite, so neither the analysis nor the core depends on the
benchmarks or the GPU bundle to know them."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE_CONFIGS = REPO / "configs" / "profile"  # one file per profile
GPU_PREFIX = "gpu_"  # the GPU bundle's experiments (normexp/gpu_bundle.py), as the Makefile's


def experiment_names() -> list[str]:
    """Every file of experiments/, in `make run-sweep`'s order: the Makefile's
    FIRST_EXPERIMENTS (whose outcome others read when they plan), then the rest by name."""
    names = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
    first = [n for n in makefile_list("FIRST_EXPERIMENTS") if n in names]
    return first + [n for n in names if n not in first]


def makefile_list(variable: str) -> list[str]:
    """The names a ``VARIABLE := a b c`` line of the Makefile lists."""
    for line in (REPO / "Makefile").read_text().splitlines():
        name, sep, value = line.partition(":=")
        if sep and name.strip() == variable:
            return value.split("#")[0].split()
    raise KeyError(f"Makefile sets no {variable}")


def gpu_experiments() -> list[str]:
    """The GPU bundle's experiments, trained on a CUDA machine (`make run-sweep` leaves them
    out: the Makefile's GPU_EXPERIMENTS is experiments/gpu_*.yaml)."""
    return [name for name in experiment_names() if name.startswith(GPU_PREFIX)]


def sweep_experiments() -> list[str]:
    """The experiments `make run-sweep` runs: all but the grid's and the GPU bundle's."""
    left_out = set(makefile_list("GRID_EXPERIMENTS")) | set(gpu_experiments())
    return [name for name in experiment_names() if name not in left_out]


def cpu_experiments() -> list[str]:
    """The experiments a CPU profile runs (`make run-sweep`, `make run-grid`)."""
    return [name for name in experiment_names() if name not in gpu_experiments()]


def grouping_deciders() -> list[str]:
    """The experiments that decide GN's grouping (their file declares
    ``protocol.grouping_decision``): what ``protocol.grouping_from`` may name."""
    import yaml  # only here: the catalogue is otherwise names and the Makefile

    out = []
    for name in experiment_names():
        doc = yaml.safe_load((REPO / "experiments" / f"{name}.yaml").read_text()) or {}
        if (doc.get("protocol") or {}).get("grouping_decision") is not None:
            out.append(name)
    return out
