"""Statistics of a trained model's weights, for claim C2 (weight-side normalization).

Measured on the *effective* weights, i.e. what the layer multiplies its input by: for weight
norm g·v/‖v‖, for weight standardization the standardized filter (``layer.weight`` of a
parametrized layer computes exactly that), so runs with and without a weight-side method are
compared on the same footing. Every conv and linear layer counts, the classifier head too (the
L1 penalty ``optim.l1`` and the weight decay act on all of them); biases and norm gains do not.
"""

import math

import torch
from torch import nn

# A weight counts as near zero when |w| < NEAR_ZERO_REL × the largest |w| of its own layer.
# Relative to the layer, so the count does not depend on a layer's scale (the first conv's
# weights are several times larger than the deeper ones at initialization); 1e-3 is far below
# where an unpenalized weight ends up (about 0.3% of Gaussian weights fall below it), so a large
# fraction means weights were driven to zero, as an L1 penalty does.
NEAR_ZERO_REL = 1e-3

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


@torch.no_grad()
def weight_statistics(model: nn.Module, near_zero_rel: float = NEAR_ZERO_REL) -> dict:
    """Summary entries over the effective weights of every conv/linear layer of ``model``:

    ``weight_near_zero_frac``: fraction of weights with |w| < near_zero_rel × max |w| of their
    layer (exact zeros always count); ``weight_l2_norm``: sqrt(Σ w²); ``weight_l1_norm``: Σ |w|;
    ``weight_count``: how many weights these are taken over."""
    count, near_zero, squares, absolute = 0, 0, 0.0, 0.0
    for layer in model.modules():
        if not isinstance(layer, WEIGHT_LAYERS):
            continue
        w = layer.weight.detach().abs().double()
        threshold = near_zero_rel * w.max()
        near_zero += int(((w < threshold) | (w == 0)).sum())
        count += w.numel()
        squares += float(w.square().sum())
        absolute += float(w.sum())
    if count == 0:
        return {}
    return {
        "weight_near_zero_frac": near_zero / count,
        "weight_l2_norm": math.sqrt(squares),
        "weight_l1_norm": absolute,
        "weight_count": count,
    }
