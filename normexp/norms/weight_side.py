"""Weight-side normalization: reparametrize the weights instead of normalizing activations.

- ``weight_norm`` (Salimans & Kingma 2016): w = g · v/‖v‖ per output unit, through PyTorch's
  parametrization; g is ``...parametrizations.weight.original0`` and is kept out of weight decay
  by ``train.optim.parameter_groups`` (it is a scale, like γ).
- ``weight_std`` (Qiao et al. 2019): each conv filter standardized to zero mean, unit variance
  over (in, kh, kw) at every forward pass; used with GN (GN+WS).
L1/L2 penalties, the other weight-side "normalization" of the blog, are ``optim.l1`` and
``optim.weight_decay``.
"""

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from normexp.errors import ConfigError

WEIGHT_SIDE = ("none", "weight_norm", "weight_std")
WEIGHT_NORM_GAIN = "parametrizations.weight.original0"  # name suffix of weight norm's g


class Standardize(nn.Module):
    """w -> (w − mean) / std per output filter, statistics over all other axes."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, w: Tensor) -> Tensor:
        dims = list(range(1, w.dim()))
        var, mean = torch.var_mean(w, dim=dims, keepdim=True, unbiased=False)
        return (w - mean) / (var + self.eps).sqrt()


def apply_weight_side(model: nn.Module, method: str) -> nn.Module:
    """Reparametrize every conv and linear layer of ``model`` except the classifier head."""
    if method not in WEIGHT_SIDE:
        raise ConfigError(
            "model.weight_side", f"unknown {method!r}; allowed: {', '.join(WEIGHT_SIDE)}"
        )
    if method == "none":
        return model
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    head = layers[-1]
    for layer in layers:
        if layer is head:
            continue
        if method == "weight_norm":
            weight_norm(layer, name="weight", dim=0)
        elif isinstance(layer, nn.Conv2d):  # WS is defined for convolutions
            parametrize.register_parametrization(layer, "weight", Standardize())
    return model


def l1_penalty(model: nn.Module) -> Tensor:
    """Sum of |w| over weight matrices and filters (not biases, norm gains or WN's g)."""
    terms = [
        p.abs().sum()
        for name, p in model.named_parameters()
        if p.ndim > 1 and not name.endswith(WEIGHT_NORM_GAIN)
    ]
    return torch.stack(terms).sum()
