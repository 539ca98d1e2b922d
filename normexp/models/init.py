"""Weight initialisation shared by the models, matched to the activation's gain."""

from torch import nn


def init_weights(model: nn.Module, activation: str) -> None:
    # He init keeps the un-normalized baseline trainable at depth; the norms then start at identity.
    nonlinearity = "relu" if activation in ("relu", "gelu") else activation
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if nonlinearity in ("relu", "tanh", "sigmoid"):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm) and m.affine:
            if m.weight is not None:  # mean-only BN has a shift but no scale
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Small classifier weights: near-uniform initial predictions, whatever the norm upstream.
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.normal_(head.weight, std=0.01)
