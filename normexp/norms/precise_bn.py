"""Precise BN (as pycls and fvcore do it): after training, replace the running averages of every
BN layer (variants included) by population statistics averaged over training batches."""

import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from normexp.norms.batch_variants import training_noise_off

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Tensor], num_batches: int) -> int:
    """Set each BN layer's running mean/var to the average, over ``num_batches`` inputs, of the
    per-batch mean and unbiased variance of that layer's input, with the network in training mode
    (as during training, but without noisy BN's noise: the statistics are those of the network
    that is evaluated). Returns the number of batches used."""
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    if not bns or num_batches <= 0:
        return 0
    sums: dict[nn.Module, list[Tensor]] = {}

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        x = args[0]
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dim=dims, unbiased=True)
        if module in sums:
            sums[module][0] += mean
            sums[module][1] += var
        else:
            sums[module] = [mean.clone(), var.clone()]

    hooks = [bn.register_forward_pre_hook(record) for bn in bns]
    saved = {
        bn: (bn.running_mean.clone(), bn.running_var.clone())
        for bn in bns
        if bn.track_running_stats
    }
    was_training = model.training
    model.train()
    used = 0
    try:
        with training_noise_off(model):
            for x in itertools.islice(batches, num_batches):  # draws no batch it won't use
                model(x)
                used += 1
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for bn in bns:
        if bn in sums and bn.running_mean is not None:
            bn.running_mean.copy_(sums[bn][0] / used)
            if bn.running_var is not None:
                bn.running_var.copy_(sums[bn][1] / used)
        elif bn in saved:
            bn.running_mean.copy_(saved[bn][0])
            bn.running_var.copy_(saved[bn][1])
    return used
