"""The GPU bundle end to end on the CPU: build a smoke bundle, run its one command in a Python
that has PyTorch and numpy but neither Hydra, OmegaConf, W&B nor the rest (they must come from
the bundle's wheels), and read the packed runs back."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers import REPO, real_data_dir, real_ptb

pytestmark = pytest.mark.slow
# What a PyTorch-only machine has: torch, its own requirements, numpy.
TORCH_ONLY = ("torch", "torchgen", "numpy", "numpy.libs", "nvidia", "cuda", "triton",
              "typing_extensions.py", "sympy", "mpmath", "networkx", "filelock", "fsspec",
              "jinja2", "markupsafe")
ABSENT = ("hydra", "omegaconf", "wandb", "yaml", "tqdm", "joblib", "pandas", "antlr4")


def torch_only_python(root: Path) -> Path:
    """A venv that sees this environment's torch (and its requirements) and nothing else."""
    import torch

    site = Path(torch.__file__).resolve().parent.parent
    shelf = root / "torch_only"
    shelf.mkdir()
    for name in TORCH_ONLY:
        for path in [site / name, *site.glob(f"{name.split('.')[0]}-*.dist-info")]:
            if path.exists() and not (shelf / path.name).exists():
                (shelf / path.name).symlink_to(path)
    base = Path(getattr(sys, "_base_executable", sys.executable))
    venv = root / "venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    (next((venv / "lib").glob("python3*")) / "site-packages" / "torch_only.pth").write_text(
        f"{shelf}\n"
    )
    return venv / "bin" / "python"


def test_smoke_bundle_runs_both_parts_on_a_torch_only_python(tmp_path):
    data = real_data_dir()
    if data is None or real_ptb() is None:
        pytest.skip("builds from the real CIFAR-10 and PTB under NORMEXP_DATA_DIR")
    bundle = tmp_path / "bundle"
    build = subprocess.run(
        [sys.executable, "-m", "normexp.gpu_bundle", "build", "--out", str(bundle), "--smoke",
         "--data-dir", str(data)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    python = torch_only_python(tmp_path)
    probe = f"import importlib.util as u; print([m for m in {ABSENT!r} if u.find_spec(m)])"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    seen = subprocess.run([str(python), "-c", probe], env=clean, capture_output=True, text=True)
    assert seen.stdout.strip() == "[]", seen.stdout + seen.stderr  # none of them before the run

    pack = tmp_path / "out" / "gpu_results.tar.gz"
    result = subprocess.run(
        ["bash", str(bundle / "run_gpu.sh"), "--smoke", "--device", "cpu", "--jobs", "1",
         "--minutes", "3"],
        cwd=tmp_path, env={**clean, "PYTHON": str(python), "OUT": str(pack.parent)},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"hydra {bundle / 'work' / 'site' / 'hydra'}" in result.stdout  # from the bundle

    with tarfile.open(pack) as tar:
        names = tar.getnames()
        configs = [n for n in names if n.endswith("/config.json")]
        experiments = {Path(n).parts[2] for n in configs}
        assert experiments == {"gpu_rnn_cooijmans", "gpu_small_batch_devices",
                               "gpu_small_batch_norms"}
        assert len(configs) == 12  # 3 LSTM cells, 5 ghost-BN splits, 4 norms
        for name in configs:
            config = json.load(tar.extractfile(name))
            status = json.load(tar.extractfile(name.replace("config.json", "status.json")))
            summary = json.load(tar.extractfile(name.replace("config.json", "summary.json")))
            assert status["status"] == "ok", (name, status)
            assert config["train"]["device"] == "cpu" and config["train"]["max_minutes"] > 0
            assert "stopped_by_time" in summary
            if config["data"]["name"] == "cifar10":
                assert config["gpu"]["cifar_subset"] and config["data"]["verify"] is False
        assert "gpu_bundle/gpu_plan.json" in names

    # A rerun keeps the plan: the same runs, all finished, so nothing trains again.
    again = subprocess.run(
        ["bash", str(bundle / "run_gpu.sh"), "--smoke", "--device", "cpu", "--jobs", "1"],
        cwd=tmp_path, env={**clean, "PYTHON": str(python), "OUT": str(pack.parent)},
        capture_output=True, text=True, timeout=900,
    )
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    logs = "".join(p.read_text() for p in (bundle / "work" / "logs").glob("*.log"))
    assert logs.count("finished already, so no job was started") == 3, logs[-3000:]
