"""Image to image (claim C6): a generator learns to map CIFAR-10 images with per-image contrast /
brightness / colour corruptions (and optional pixel noise) to a target (normexp.data.corruptions):
the clean image (``train.target: clean``, restoration, the default) or a fixed stylization of it
(``style``: per-image statistics are nuisance). Metrics are PSNR and SSIM against the target.

Pixels: the clean target and the reported metrics are in [0, 1]; the network sees the corrupted
image in the CIFAR-normalized space (x - mean) / std (a fixed map, the same for every image: it
undoes nothing) and its output is mapped back to [0, 1] by the inverse map. The loss is on
unclipped [0, 1] outputs; the metrics clip outputs to [0, 1] first, as a saved image would.

Training corruptions are drawn afresh for every batch from the run's generator; validation
corruptions are fixed per run, test corruptions are fixed for all runs (same test inputs).
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from normexp.data.augment import CIFAR10_MEAN, CIFAR10_STD
from normexp.data.corruptions import (
    TARGETS,
    TEST_CORRUPTION_SEED,
    CorruptionRanges,
    corrupt,
    fixed_corruption,
    to_unit,
)
from normexp.errors import ConfigError
from normexp.models.generator import build_generator, check_generator
from normexp.train.cadence import selection_run
from normexp.train.cifar_splits import CifarSplits
from normexp.train.classification import check_cifar10_fields, prepare_cifar10
from normexp.train.device import place_model
from normexp.train.evaluate import has_batch_stats
from normexp.train.fit import TaskHooks, fit
from normexp.train.optim import build_optimizer_and_scheduler
from normexp.train.task import Task
from normexp.validate_fields import check_choice, check_int, check_number

SAMPLE_GRID = "samples.png"  # written into the run folder (see train_image_to_image)
VAL_CORRUPTION_SEED = TEST_CORRUPTION_SEED + 1  # plus the run's seed
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": F.mse_loss, "l1": F.l1_loss}


def check_image_to_image(c: Mapping) -> None:
    """Every rule of an image-to-image run beyond the shared ones, each naming its field."""
    data, train = c["data"], c["train"]
    check_cifar10_fields(data, "image_to_image")
    if data["n_train"] is not None and data["n_train"] < train["batch_size"]:
        raise ConfigError(
            "data.n_train",
            f"{data['n_train']} images make no batch of train.batch_size={train['batch_size']}",
        )
    check_choice("train.loss", train["loss"], tuple(LOSSES))
    check_int("train.samples", train["samples"], minimum=0)
    corruption = train["corruption"]
    for key in ("contrast", "colour_gain"):
        lo_hi = corruption[key]
        if (
            not isinstance(lo_hi, list | tuple)
            or len(lo_hi) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in lo_hi)
            or not 0 < lo_hi[0] <= lo_hi[1]
        ):
            raise ConfigError(
                f"train.corruption.{key}", f"{lo_hi!r} must be [low, high] with 0 < low <= high"
            )
    for key in ("brightness", "colour_offset"):
        check_number(f"train.corruption.{key}", corruption[key])
    # noise and target are optional: the restoration runs' configs predate them
    check_number("train.corruption.noise", corruption.get("noise", 0.0))
    check_choice("train.target", target_name(train), tuple(TARGETS))
    check_generator(c["model"], c["norm"], train["batch_size"])


def target_name(train_cfg: Mapping) -> str:
    """``train.target``; runs whose config has none restore the clean image."""
    return train_cfg.get("target", "clean")


class PixelSpace:
    """The fixed map between [0, 1] pixels and the network's normalized space."""

    def __init__(self, device: torch.device) -> None:
        self.mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(CIFAR10_STD, device=device).view(1, -1, 1, 1)

    def to_net(self, x01: Tensor) -> Tensor:
        return (x01 - self.mean) / self.std

    def to_pixels(self, out: Tensor) -> Tensor:
        return out * self.std + self.mean


def psnr_per_image(pred01: Tensor, clean01: Tensor) -> Tensor:
    """PSNR in dB of each image, peak 1, outputs clipped to [0, 1]."""
    mse = (pred01.clamp(0, 1) - clean01).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5, device: torch.device | None = None):
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim_per_image(pred01: Tensor, clean01: Tensor) -> Tensor:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, peak 1) of
    each image, mean over valid windows and channels; outputs clipped to [0, 1]."""
    x, y = pred01.clamp(0, 1), clean01
    w = _gaussian_window(device=x.device)
    c = x.shape[1]

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w[:c], groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def _batches(x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


@torch.no_grad()
def _quality(
    model: nn.Module, space: PixelSpace, x01: Tensor, clean01: Tensor, batch_size: int, ssim: bool
) -> tuple[float, float | None]:
    """(mean PSNR, mean SSIM or None) over the images, the model in its current mode."""
    psnr, sims = [], []
    for xb, yb in _batches(x01, clean01, batch_size):
        pred = space.to_pixels(model(space.to_net(xb)))
        psnr.append(psnr_per_image(pred, yb))
        if ssim:
            sims.append(ssim_per_image(pred, yb))
    mean_ssim = torch.cat(sims).mean().item() if ssim else None
    return torch.cat(psnr).mean().item(), mean_ssim


def evaluate_quality(
    model: nn.Module,
    space: PixelSpace,
    x01: Tensor,
    clean01: Tensor,
    batch_size: int,
    ssim: bool = False,
) -> tuple[float, float | None]:
    """Inference as deployed: eval mode, BN uses its running averages."""
    model.eval()
    try:
        return _quality(model, space, x01, clean01, batch_size, ssim)
    finally:
        model.train()


def evaluate_quality_with_batch_stats(
    model: nn.Module, space: PixelSpace, x01: Tensor, clean01: Tensor, batch_size: int
) -> float:
    """Mean PSNR with BN normalizing each test batch (of the training batch size) by its own
    statistics, as in training; the running averages are restored afterwards."""
    buffers = {
        k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k
    }
    model.train()
    n = len(x01) - len(x01) % batch_size if len(x01) % batch_size == 1 else len(x01)
    try:
        return _quality(model, space, x01[:n], clean01[:n], batch_size, ssim=False)[0]
    finally:
        model.load_state_dict(buffers, strict=False)


@torch.no_grad()
def save_sample_grid(
    model: nn.Module, space: PixelSpace, x01: Tensor, clean01: Tensor, path: Path
) -> None:
    """PNG with one column per image and three rows: corrupted input, output, target (``clean01``;
    all clipped to [0, 1]), 2-pixel white gaps. Eval mode."""
    model.eval()
    try:
        pred = space.to_pixels(model(space.to_net(x01)))
    finally:
        model.train()
    rows = torch.stack([x01, pred, clean01]).clamp(0, 1).cpu()  # (3, S, C, H, W)
    r, s, c, h, w = rows.shape
    gap = 2
    canvas = torch.ones(c, r * (h + gap) + gap, s * (w + gap) + gap)
    for i in range(r):
        for j in range(s):
            top, left = gap + i * (h + gap), gap + j * (w + gap)
            canvas[:, top : top + h, left : left + w] = rows[i, j]
    pixels = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(pixels).save(tmp)
    tmp.replace(path)


def pixel_batches(
    splits: CifarSplits,
    device: torch.device,
    batch_size: int,
    augment: bool,
    generator: torch.Generator,
) -> Iterable:
    """The training images as [0, 1] pixels (mean 0, std 1: no standardization), the input and
    the target of the image-to-image tasks."""
    return splits.train_batches(
        device, batch_size, augment, generator, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
    )


class ImageToImage(TaskHooks):
    """Map fresh corruptions of each training batch to the target of their clean images;
    validation PSNR after every epoch, test PSNR / SSIM (and a sample grid in
    ``artifacts_dir``) of the final model only."""

    headline = "val_psnr"

    def __init__(self, cfg: Mapping, device: torch.device, artifacts_dir: Path | None) -> None:
        data_cfg, train_cfg = cfg["data"], cfg["train"]
        self.cfg, self.artifacts_dir = cfg, artifacts_dir
        self.ranges = ranges = CorruptionRanges.from_config(train_cfg["corruption"])
        self.space = PixelSpace(device)
        self.loss_fn = LOSSES[train_cfg["loss"]]
        self.target = TARGETS[target_name(train_cfg)]  # clean image -> target; "clean": itself
        self.splits = s = CifarSplits.of_run(cfg)
        self.generator = torch.Generator(device=device).manual_seed(cfg["seed"])
        self.batch_size, self.eval_bs = train_cfg["batch_size"], train_cfg["eval_batch_size"]
        self.train_batches = pixel_batches(
            s, device, self.batch_size, data_cfg["augment"], self.generator
        )
        val_clean = to_unit(s.cifar.train_x[s.val_idx].to(device))
        self.val_in = fixed_corruption(val_clean, ranges, VAL_CORRUPTION_SEED + cfg["seed"])
        self.val_target = self.target(val_clean)
        test_clean = to_unit(s.cifar.test_x[s.test_idx].to(device))
        self.test_in = fixed_corruption(test_clean, ranges)
        self.test_target = self.target(test_clean)
        self.model = place_model(build_generator(cfg["model"], cfg["norm"]), device, cfg["runtime"])
        self.steps_per_epoch = len(self.train_batches)
        self.optimizer, self.scheduler = build_optimizer_and_scheduler(
            self.model, cfg, self.steps_per_epoch
        )
        self.batch_stats = has_batch_stats(self.model)

    def stateful(self) -> dict[str, object]:
        return {"generator": self.generator}

    def batches(self) -> Iterable:
        return self.train_batches

    def loss(self, batch: tuple[Tensor, Tensor], step: int) -> tuple[Tensor, int]:
        clean, _ = batch
        x_in, _ = corrupt(clean, self.ranges, self.generator)
        pred = self.space.to_pixels(self.model(self.space.to_net(x_in)))
        return self.loss_fn(pred, self.target(clean)), len(clean)

    def evaluate(self, metrics: dict) -> None:
        metrics["val_psnr"], _ = evaluate_quality(
            self.model, self.space, self.val_in, self.val_target, self.eval_bs
        )

    def summary(self, history: list[dict], final: dict) -> dict:
        """Test metrics of the final model only: the verdict reads nothing else (none, and no
        sample grid, in an LR selection's run: normexp/train/cadence.py)."""
        out = {
            "best_val_psnr": max(m["val_psnr"] for m in history),
            **self.splits.sizes(),
            "sample_grid": None,  # file name inside the run folder, or None
        }
        if selection_run(self.cfg):
            return out
        model, space, test_in, test_target = self.model, self.space, self.test_in, self.test_target
        final["test_psnr"], final["test_ssim"] = evaluate_quality(
            model, space, test_in, test_target, self.eval_bs, ssim=True
        )
        if self.batch_stats:
            final["test_psnr_batch_stats"] = evaluate_quality_with_batch_stats(
                model, space, test_in, test_target, self.batch_size
            )
        # The reference without a network: the target map applied to the corrupted input (for
        # restoration the input itself; for the style, stylizing the noisy input undenoised).
        final["input_psnr"] = psnr_per_image(self.target(test_in), test_target).mean().item()
        if self.artifacts_dir is not None and self.cfg["train"]["samples"] > 0:
            k = min(self.cfg["train"]["samples"], len(test_in))
            path = Path(self.artifacts_dir) / SAMPLE_GRID
            save_sample_grid(model, space, test_in[:k], test_target[:k], path)
            out["sample_grid"] = SAMPLE_GRID
        return out


def train_image_to_image(
    cfg: Mapping,
    log_epoch: Callable[[dict], None],
    progress_position: int = 0,
    checkpoint: Path | None = None,
    artifacts_dir: Path | None = None,
) -> dict:
    """Train as ``cfg`` says; call ``log_epoch`` after each epoch; return the run summary.

    With ``checkpoint``, the state after every epoch is saved there and a killed run resumes
    after its last finished epoch. With ``artifacts_dir`` (the run folder), the sample grid of
    the final model is written there as ``samples.png`` and the summary names it."""
    return fit(
        cfg,
        lambda device: ImageToImage(cfg, device, artifacts_dir),
        log_epoch,
        progress_position,
        checkpoint,
    )


def _train_task(
    c: Mapping, log_epoch: Callable[[dict], None], bar_row: int, checkpoint: Path | None = None
) -> dict:
    # The run folder is where the job keeps the checkpoint: the sample grid goes beside it.
    run_dir = checkpoint.parent if checkpoint is not None else None
    return train_image_to_image(c, log_epoch, bar_row, checkpoint, artifacts_dir=run_dir)


# C6 (reported tasks): undo per-image contrast / colour changes of CIFAR-10 images, or map them
# to a fixed stylization that discards them, with a generator
TASK = Task(
    "image_to_image",
    check_image_to_image,
    prepare_cifar10,
    _train_task,
    models=("generator",),
    groups="train=image_to_image data=cifar10 model=generator optim=adam",
    example="bn_generation",
)
