"""The loss network of the Gram-loss stylization task (C6): a fixed convolutional network whose
feature maps define the content loss and, through their Gram matrices, the style loss (Johnson,
Alahi & Fei-Fei 2016's "loss network"; Ulyanov et al. 2016 use the same losses). Never trained:
its weights are part of the task's definition, the same for every run.

``random``: VGG-shaped (3x3 convs + ReLU in blocks, 2x2 average pooling between, as Gatys et al.
advise for synthesis), weights drawn once from their own seeded generator: He-normal filters (the
activations keep their scale through depth, which random-weight representations need; He, Wang
& Hopcroft 2016) and PyTorch's default uniform biases, ±1/sqrt(fan-in). Not zero biases: the
generator's initial output, the CIFAR-10 mean colour, is normalized to an all-zero input, whose
features would all be 0, where ReLU passes no gradient, and training could not start. Random
filters reproduce textures (Ustyuzhaninov et al. 2016) and no pretrained weights can be
downloaded here. Blocks of 2, 2 and 3 convs with 16, 32 and 64
channels at 32, 16 and 8 px: VGG-16's first three blocks at a quarter of its widths, sized for
32-px images (relu3_3 sees 40 px, the whole image). Depth and pooling give the several scales
that Ustyuzhaninov et al. get from one layer of multi-scale filters, and keep the layer names of
``vgg16``, so switching the features swaps weights and widths, not the loss's structure.

``vgg16``: torchvision's ImageNet VGG-16 (Johnson et al.'s loss network), only when its weights
are already in torch's cache: never downloaded.

Layers, Johnson et al.'s for style transfer cut to the three blocks a 32-px image supports at
>= 8 px: style from relu1_2, relu2_2, relu3_3; content from relu2_2.
"""

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from normexp.data.augment import CIFAR10_MEAN, CIFAR10_STD
from normexp.errors import ConfigError

FEATURES = ("random", "vgg16")
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3")
CONTENT_LAYER = "relu2_2"
RANDOM_BLOCKS = ((2, 16), (2, 32), (3, 64))  # (convs, channels) per block, 2x2 pool between
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VGG16_WEIGHTS_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1
# torchvision's vgg16().features: the index of each ReLU this module names
VGG16_RELU_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15}


class LossNetwork(nn.Module):
    """[0, 1] images in, the named feature maps out ({layer: (N, C, H, W)}); frozen, eval mode.
    It runs only as deep as the deepest layer asked for."""

    def __init__(
        self, layers: nn.Sequential, names: Mapping[int, str], mean: tuple, std: tuple
    ) -> None:
        super().__init__()
        self.layers = layers.requires_grad_(False).eval()
        self.names = dict(names)  # index in ``layers`` of a ReLU -> its name
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> "LossNetwork":
        return super().train(False)  # fixed: no mode of its own to switch

    def forward(self, x01: Tensor, wanted: tuple[str, ...] = STYLE_LAYERS) -> dict[str, Tensor]:
        h, out = (x01 - self.mean) / self.std, {}
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.names.get(i) in wanted:
                out[self.names[i]] = h
                if len(out) == len(wanted):
                    break
        return out


def random_vgg(seed: int) -> LossNetwork:
    """The ``random`` loss network: weights from a generator seeded with ``seed`` only, so the
    global RNG (and the run's seed) neither moves them nor is moved by them."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    names: dict[int, str] = {}
    channels = 3
    for block, (convs, width) in enumerate(RANDOM_BLOCKS, start=1):
        if block > 1:
            layers.append(nn.AvgPool2d(2))
        for k in range(1, convs + 1):
            conv = skip_init(nn.Conv2d, channels, width, 3, padding=1)  # no global RNG draw
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu", generator=generator)
            bound = 1 / math.sqrt(channels * 9)
            nn.init.uniform_(conv.bias, -bound, bound, generator=generator)
            layers += [conv, nn.ReLU()]
            names[len(layers) - 1] = f"relu{block}_{k}"
            channels = width
    return LossNetwork(nn.Sequential(*layers), names, CIFAR10_MEAN, CIFAR10_STD)


def vgg16_weights_path() -> Path:
    """Where torchvision keeps the ImageNet VGG-16 weights once downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS_FILE


def check_features(name: object) -> None:
    """Raise ConfigError (train.features) for an unknown name, or vgg16 without its weights."""
    if name not in FEATURES:
        raise ConfigError("train.features", f"unknown {name!r}; allowed: {', '.join(FEATURES)}")
    if name == "vgg16" and not vgg16_weights_path().is_file():
        raise ConfigError(
            "train.features",
            f"vgg16 needs torchvision's ImageNet VGG-16 weights at {vgg16_weights_path()}, "
            "which are not there (normexp never downloads them); allowed: random, or vgg16 "
            "once that file exists",
        )


def vgg16() -> LossNetwork:
    """The ``vgg16`` loss network, its first three blocks, from the cached weights only."""
    check_features("vgg16")  # before importing torchvision (seconds): a missing file fails fast
    from torchvision.models import vgg16 as torchvision_vgg16
    net = torchvision_vgg16()
    net.load_state_dict(torch.load(vgg16_weights_path(), map_location="cpu", weights_only=True))
    last = max(VGG16_RELU_INDEX.values())
    names = {i: name for name, i in VGG16_RELU_INDEX.items()}
    return LossNetwork(net.features[: last + 1], names, IMAGENET_MEAN, IMAGENET_STD)


def build_loss_network(features: str, seed: int) -> LossNetwork:
    """The loss network ``train.features`` names (``seed``: the random one's weights)."""
    check_features(features)
    return random_vgg(seed) if features == "random" else vgg16()


def gram(features: Tensor) -> Tensor:
    """Per image, F Fᵀ / (C H W) of its (C, H·W) feature matrix F (Johnson et al.): (N, C, C)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


class StyleContentLoss(nn.Module):
    """Johnson et al.'s perceptual losses toward one style image, per image: the content loss
    ‖φ(y) − φ(x)‖² / (C H W) at CONTENT_LAYER and the style loss Σ_l ‖G_l(y) − G_l(s)‖²_F over
    STYLE_LAYERS, for output y, content image x and style image s (all [0, 1] pixels)."""

    def __init__(self, network: LossNetwork, style01: Tensor) -> None:
        super().__init__()
        self.network = network
        self.layers = tuple(dict.fromkeys((*STYLE_LAYERS, CONTENT_LAYER)))
        with torch.no_grad():
            targets = network(style01.unsqueeze(0), STYLE_LAYERS)
        for layer in STYLE_LAYERS:  # buffers: they follow the module to its device
            self.register_buffer(f"style_gram_{layer}", gram(targets[layer])[0])

    def terms(self, output01: Tensor, content01: Tensor) -> tuple[Tensor, Tensor]:
        """Per image (N,): the content loss and the style loss, unweighted."""
        with torch.no_grad():
            target = self.network(content01, (CONTENT_LAYER,))[CONTENT_LAYER]
        features = self.network(output01, self.layers)
        content = (features[CONTENT_LAYER] - target).pow(2).flatten(1).mean(1)
        style = sum(
            (gram(features[layer]) - getattr(self, f"style_gram_{layer}")).pow(2).sum((1, 2))
            for layer in STYLE_LAYERS
        )
        return content, style
