"""Gram-loss stylization (claim C6's deciding task): a feed-forward generator learns to stylize
CIFAR-10 content images toward one fixed style image with the losses of Johnson et al. 2016 and
Ulyanov et al. 2016: a content loss on feature maps plus a Gram-matrix style loss, the features
those of a fixed loss network (normexp.models.loss_network: random seeded filters, or VGG-16
where its weights are cached); the style image is a seeded procedural texture
(normexp.data.style_image). As in Johnson et al., the input is the content image alone.

Loss: content + style_weight × style, per image, averaged over the batch (content weight 1).
``train.style_weight`` null applies the rule written before any run of record
(``balanced_style_weight``): the weight at which the two trivial outputs cost the same, the
content image returned unchanged (content loss 0, all style loss) and the style image pasted in
its place (style loss 0, all content loss), averaged over the first CALIBRATION_IMAGES images of
CIFAR-10's training set. Neither preserving the content nor imposing the style is favoured, and
the optimum is a compromise: on those images (random features, weight 0.93) both extremes cost
0.27, a half-contrast copy of each image 0.16 and the generator's flat initial output 0.40. (A
first rule, the two terms equal for that initial output, made the unchanged content image cost
more than the flat one, 0.79 against 0.59: it would have rewarded erasing the content. It was
replaced from these values on fixed images, before any run of record.) The summary records the
weight.

Held-out metric: the same loss on validation (every epoch) and test content images (the final
model; the same test images for every run), the outputs clipped to [0, 1] as a saved image
would be. Pixels and the network's space as in the image-to-image task (PixelSpace).
"""

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from normexp.data.corruptions import to_unit
from normexp.data.paths import resolve_data_dir
from normexp.data.style_image import procedural_style
from normexp.errors import ConfigError
from normexp.models.generator import build_generator, check_generator
from normexp.models.loss_network import StyleContentLoss, build_loss_network, check_features
from normexp.train.cadence import selection_run
from normexp.train.cifar_splits import CifarSplits
from normexp.train.classification import check_cifar10_fields, prepare_cifar10
from normexp.train.device import place_model
from normexp.train.evaluate import has_batch_stats
from normexp.train.fit import TaskHooks, fit
from normexp.train.image_to_image import (
    SAMPLE_GRID,
    PixelSpace,
    pixel_batches,
    save_sample_grid,
)
from normexp.train.optim import build_optimizer_and_scheduler
from normexp.train.task import Task
from normexp.validate_fields import check_int, check_number

CALIBRATION_IMAGES = 256  # the style weight's rule averages over CIFAR-10's first training images
HELD_OUT = "stylization_loss"  # val_/test_ + this: content + style_weight x style
_RULE_WEIGHTS: dict[tuple, float] = {}  # the rule's weight per loss and data (Stylization)


def check_stylization(c: Mapping) -> None:
    """Every rule of a stylization run beyond the shared ones, each naming its field."""
    data, train = c["data"], c["train"]
    check_cifar10_fields(data, "stylization")
    if data["n_train"] is not None and data["n_train"] < train["batch_size"]:
        raise ConfigError(
            "data.n_train",
            f"{data['n_train']} images make no batch of train.batch_size={train['batch_size']}",
        )
    check_int("train.samples", train["samples"], minimum=0)
    check_features(train["features"])
    check_int("train.features_seed", train["features_seed"], minimum=0)
    check_int("train.style_seed", train["style_seed"], minimum=0)
    if train["style_weight"] is not None:
        check_number("train.style_weight", train["style_weight"], strict=True)
    check_generator(c["model"], c["norm"], train["batch_size"])


def balanced_style_weight(loss: StyleContentLoss, content01: Tensor, style01: Tensor) -> float:
    """The rule: the style weight at which returning each content image unchanged (its style
    loss, weighted) costs as much as returning the style image ``style01`` (its content loss),
    both averaged over the images ``content01``."""
    with torch.no_grad():
        _, unchanged_style = loss.terms(content01, content01)
        pasted_content, _ = loss.terms(style01.expand_as(content01), content01)
    return (pasted_content.mean() / unchanged_style.mean()).item()


class Stylization(TaskHooks):
    """Stylize each training batch; the held-out loss on validation after every epoch, on the
    test images (and a sample grid in ``artifacts_dir``) for the final model only."""

    headline = f"val_{HELD_OUT}"

    def __init__(self, cfg: Mapping, device: torch.device, artifacts_dir: Path | None) -> None:
        data_cfg, train_cfg = cfg["data"], cfg["train"]
        self.cfg, self.artifacts_dir = cfg, artifacts_dir
        self.space = PixelSpace(device)
        network = build_loss_network(train_cfg["features"], train_cfg["features_seed"])
        self.style = procedural_style(train_cfg["style_seed"]).to(device)
        self.perceptual = StyleContentLoss(network, self.style.cpu()).to(device)
        self.splits = s = CifarSplits.of_run(cfg)
        self.style_weight = train_cfg["style_weight"]
        if self.style_weight is None:
            self.style_weight = self.rule_weight(cfg, device)
        self.generator = torch.Generator(device=device).manual_seed(cfg["seed"])
        self.batch_size, self.eval_bs = train_cfg["batch_size"], train_cfg["eval_batch_size"]
        self.train_batches = pixel_batches(
            s, device, self.batch_size, data_cfg["augment"], self.generator
        )
        self.val_x = to_unit(s.cifar.train_x[s.val_idx].to(device))
        self.test_x = to_unit(s.cifar.test_x[s.test_idx].to(device))
        self.model = place_model(build_generator(cfg["model"], cfg["norm"]), device, cfg["runtime"])
        self.steps_per_epoch = len(self.train_batches)
        self.optimizer, self.scheduler = build_optimizer_and_scheduler(
            self.model, cfg, self.steps_per_epoch
        )

    def rule_weight(self, cfg: Mapping, device: torch.device) -> float:
        """``balanced_style_weight`` on the calibration images; computed once per process for
        each loss network, style image and data folder (the runs of a sweep share it)."""
        train = cfg["train"]
        key = (train["features"], train["features_seed"], train["style_seed"],
               str(resolve_data_dir(cfg["paths"]["data_dir"])), device.type)  # fmt: skip
        if key not in _RULE_WEIGHTS:
            calibration = to_unit(self.splits.cifar.train_x[:CALIBRATION_IMAGES].to(device))
            _RULE_WEIGHTS[key] = balanced_style_weight(self.perceptual, calibration, self.style)
        return _RULE_WEIGHTS[key]

    def stateful(self) -> dict[str, object]:
        return {"generator": self.generator}

    def batches(self) -> Iterable:
        return self.train_batches

    def stylize(self, x01: Tensor) -> Tensor:
        return self.space.to_pixels(self.model(self.space.to_net(x01)))

    def objective(self, output01: Tensor, content01: Tensor) -> Tensor:
        """Per image: content + style_weight × style."""
        content, style = self.perceptual.terms(output01, content01)
        return content + self.style_weight * style

    def loss(self, batch: tuple[Tensor, Tensor], step: int) -> tuple[Tensor, int]:
        content, _ = batch
        return self.objective(self.stylize(content), content).mean(), len(content)

    @torch.no_grad()
    def held_out(self, x01: Tensor, batch_size: int) -> tuple[float, float, float]:
        """Mean (loss, content term, weighted style term) over ``x01``, outputs clipped to
        [0, 1], the model in its current mode."""
        sums = torch.zeros(3, device=x01.device)
        for i in range(0, len(x01), batch_size):
            x = x01[i : i + batch_size]
            content, style = self.perceptual.terms(self.stylize(x).clamp(0, 1), x)
            style = self.style_weight * style
            sums += torch.stack([(content + style).sum(), content.sum(), style.sum()])
        total, content, style = (sums / len(x01)).tolist()
        return total, content, style

    def deployed(self, x01: Tensor) -> tuple[float, float, float]:
        """``held_out`` as deployed: eval mode, BN with its running averages."""
        self.model.eval()
        try:
            return self.held_out(x01, self.eval_bs)
        finally:
            self.model.train()

    def with_batch_stats(self, x01: Tensor) -> float:
        """The held-out loss with BN normalizing each batch of the training batch size by its
        own statistics, as in training; the running averages are restored afterwards."""
        model = self.model
        buffers = {
            k: v.clone()
            for k, v in model.state_dict().items()
            if "running" in k or "num_batches" in k
        }
        n = len(x01) - len(x01) % self.batch_size if len(x01) % self.batch_size == 1 else len(x01)
        model.train()
        try:
            return self.held_out(x01[:n], self.batch_size)[0]
        finally:
            model.load_state_dict(buffers, strict=False)

    def evaluate(self, metrics: dict) -> None:
        metrics[f"val_{HELD_OUT}"] = self.deployed(self.val_x)[0]

    def summary(self, history: list[dict], final: dict) -> dict:
        """Test metrics of the final model only: the verdict reads nothing else (none, and no
        sample grid, in an LR selection's run: normexp/train/cadence.py)."""
        out = {
            f"best_val_{HELD_OUT}": min(m[f"val_{HELD_OUT}"] for m in history),
            "style_weight": self.style_weight,
            **self.splits.sizes(),
            "sample_grid": None,  # file name inside the run folder, or None
        }
        if selection_run(self.cfg):
            return out
        total, content, style = self.deployed(self.test_x)
        final[f"test_{HELD_OUT}"], final["test_content_loss"], final["test_style_loss"] = (
            total, content, style,
        )  # fmt: skip
        if has_batch_stats(self.model):
            final[f"test_{HELD_OUT}_batch_stats"] = self.with_batch_stats(self.test_x)
        # The reference without a network: each content image returned unchanged.
        with torch.no_grad():
            final[f"input_{HELD_OUT}"] = self.objective(self.test_x, self.test_x).mean().item()
        if self.artifacts_dir is not None and self.cfg["train"]["samples"] > 0:
            k = min(self.cfg["train"]["samples"], len(self.test_x))
            path = Path(self.artifacts_dir) / SAMPLE_GRID
            styles = self.style.expand(k, *self.style.shape)
            save_sample_grid(self.model, self.space, self.test_x[:k], styles, path)
            out["sample_grid"] = SAMPLE_GRID
        return out


def train_stylization(
    cfg: Mapping,
    log_epoch: Callable[[dict], None],
    progress_position: int = 0,
    checkpoint: Path | None = None,
) -> dict:
    """Train as ``cfg`` says; call ``log_epoch`` after each epoch; return the run summary. With
    ``checkpoint``, the state after every epoch is saved there (a killed run resumes after its
    last finished epoch) and the sample grid of the final model goes beside it."""
    artifacts_dir = checkpoint.parent if checkpoint is not None else None
    return fit(
        cfg,
        lambda device: Stylization(cfg, device, artifacts_dir),
        log_epoch,
        progress_position,
        checkpoint,
    )


# C6: stylize CIFAR-10 images toward a fixed style image with a content and a Gram-matrix
# style loss (Johnson et al. 2016, Ulyanov et al. 2016), with a generator
TASK = Task(
    "stylization",
    check_stylization,
    prepare_cifar10,
    train_stylization,
    models=("generator",),
    groups="train=stylization data=cifar10 model=generator optim=adam",
    example="bn_generation_gram",
)
