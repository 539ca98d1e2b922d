"""BatchNorm variants written here: ghost BN, batch renormalization, noisy BN, mean-only BN.

Each keeps BN's buffers (running_mean, running_var, num_batches_tracked), so precise-BN and the
train/test comparisons of claim C5 treat them all alike. Running variances are unbiased, as in
``nn.BatchNorm``; normalization uses the biased batch variance.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.norms.layers import BatchNorm
from normexp.norms.registry import ACROSS_SAMPLES, EPS, MOMENTUM, NormContext, register_norm
from normexp.rules import Int, Num

GHOST_GROUP_SIZE = 8  # samples per statistic unless configured: a typical per-device batch


def _channel_view(t: Tensor, x: Tensor) -> Tensor:
    return t.view(1, -1, *([1] * (x.dim() - 2)))


def _group_size(ctx: NormContext) -> object:
    return ctx.kwargs.get("group_size", GHOST_GROUP_SIZE)


def _check_ghost_groups(ctx: NormContext) -> None:
    group_size = _group_size(ctx)
    if not isinstance(group_size, int) or group_size < 1 or ctx.batch_size % group_size:
        raise ConfigError(
            "norm.group_size",
            f"{group_size!r} must be a positive divisor of train.batch_size={ctx.batch_size}",
        )


def _ghost_pooled_values(ctx: NormContext) -> int:
    # One statistic pools one group of samples, not the whole batch.
    return ctx.values_per_statistic // ctx.batch_size * _group_size(ctx)


@register_norm(
    "ghost_batch",
    params={"group_size": Int(1), "eps": EPS, "momentum": MOMENTUM},
    pooled_over="the samples of one consecutive group of group_size, one channel, all positions",
    color="#393b79",
    uses_batch_stats=True,
    check=_check_ghost_groups,
    pooled_values=_ghost_pooled_values,
)
class GhostBatchNorm(BatchNorm):
    """BN whose training statistics come from consecutive groups of ``group_size`` samples: what
    each device sees when a batch is split over devices (the GN paper's protocol). The running
    statistics are updated with the average over groups of the groups' statistics."""

    def __init__(
        self,
        num_features: int,
        group_size: int = GHOST_GROUP_SIZE,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        if not self.training or n == self.group_size:
            return super().forward(x)
        if n % self.group_size:
            raise ValueError(f"batch of {n} does not split into groups of {self.group_size}")
        groups = n // self.group_size
        # One native batch_norm per group on a contiguous slice of the batch (no transposed
        # copies); each writes its group's statistics into a scratch row (momentum 1), and the
        # running buffers then move by the average over groups.
        batch_mean = self.running_mean.new_zeros(groups, c)
        batch_var = self.running_var.new_ones(groups, c)
        parts = [
            F.batch_norm(
                chunk, batch_mean[i], batch_var[i], self.weight, self.bias, True, 1.0, self.eps
            )
            for i, chunk in enumerate(x.split(self.group_size))
        ]
        with torch.no_grad():
            self.running_mean.lerp_(batch_mean.mean(0), self.momentum)
            self.running_var.lerp_(batch_var.mean(0), self.momentum)
            self.num_batches_tracked.add_(1)
        return torch.cat(parts)


@register_norm(
    "batch_renorm",
    params={
        "rmax": Num(1),
        "dmax": Num(0),
        "relax_start": Int(0),
        "relax_end": Int(0),
        "eps": EPS,
        "momentum": MOMENTUM,
    },
    color="#9467bd",
    uses_batch_stats=True,
    pooled_over=ACROSS_SAMPLES,
)
class BatchRenorm(BatchNorm):
    """Batch renormalization (Ioffe 2017): y = γ·((x−μ_B)/σ_B · r + d) + β with
    r = clip(σ_B/σ, 1/r_max, r_max) and d = clip((μ_B−μ)/σ, −d_max, d_max), both without gradient.

    r_max and d_max stay at 1 and 0 (plain BN) until ``relax_start`` training steps, then relax
    linearly to their final values ``rmax``, ``dmax`` at ``relax_end``, as the paper warms them up
    (it uses r_max 3, d_max 5, plain BN for the first 5k steps; the defaults here are
    configs/norm/batch_renorm.yaml's, that schedule shortened to our runs' length)."""

    def __init__(
        self,
        num_features: int,
        rmax: float = 3.0,
        dmax: float = 5.0,
        relax_start: int = 200,
        relax_end: int = 1000,
        eps: float = 1e-5,
        momentum: float = 0.01,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.rmax, self.dmax = rmax, dmax
        self.relax_start, self.relax_end = relax_start, relax_end

    def limits(self) -> tuple[float, float]:
        """(r_max, d_max) at the current training step."""
        step = int(self.num_batches_tracked)
        if step < self.relax_start:
            t = 0.0
        elif step >= self.relax_end:
            t = 1.0
        else:
            t = (step - self.relax_start) / (self.relax_end - self.relax_start)
        return 1.0 + t * (self.rmax - 1.0), t * self.dmax

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        rmax, dmax = self.limits()
        with torch.no_grad():
            # The batch statistics first, from the native kernel (momentum 1 into scratch
            # buffers: mu_B and the unbiased var_B), since r and d depend on them.
            batch_mean = torch.zeros_like(self.running_mean)
            batch_var = torch.ones_like(self.running_var)
            F.batch_norm(x, batch_mean, batch_var, None, None, True, 1.0, self.eps)
            n = x.numel() / x.shape[1]
            std = (batch_var * ((n - 1) / n) + self.eps).sqrt()
            running_std = (self.running_var + self.eps).sqrt()
            r = (std / running_std).clamp(1.0 / rmax, rmax)
            d = ((batch_mean - self.running_mean) / running_std).clamp(-dmax, dmax)
            self.running_mean.lerp_(batch_mean, self.momentum)
            self.running_var.lerp_(batch_var, self.momentum)
            self.num_batches_tracked.add_(1)
        # gamma*(x_hat*r + d) + beta = x_hat*(gamma*r) + (beta + gamma*d), r and d constants for
        # the gradient: the native kernel (batch statistics, with their gradient) does it in one
        # pass with that scale and shift as its affine.
        scale = self.weight * r
        shift = self.bias + self.weight * d
        return F.batch_norm(x, None, None, scale, shift, True, 0.0, self.eps)


@register_norm(
    "noisy_batch",
    color="#e377c2",
    params={
        "step_shift": Num(0),
        "step_scale": Num(1),
        "max_shift": Num(0),
        "max_scale": Num(1),
        "eps": EPS,
        "momentum": MOMENTUM,
    },
    uses_batch_stats=True,
    pooled_over=ACROSS_SAMPLES,
)
class NoisyBatchNorm(BatchNorm):
    """BN followed, in the training loop's forward passes only, by noise whose distribution moves
    at every step: Santurkar et al. 2018's "noisy BN" (Sec. 2.1: "i.i.d. noise sampled from a
    non-zero mean and non-unit variance distribution [...] this noise distribution changes at
    each time step"). Each training-mode forward pass t draws, per channel j, the step's centres
    μ_jt ~ U(−step_shift, step_shift) and σ_jt ~ U(1, step_scale), shared by the batch; then
    each sample i draws its own scale and shift around them, i.i.d.:

        y_ij ← s_ij · BN(x)_ij + m_ij,
        s_ij = σ_jt · U(1, max_scale),  m_ij = μ_jt + U(−max_shift, max_shift)

    so every channel's mean and scale differ from step to step (the per-sample part alone,
    ``step_shift=0, step_scale=1``, is a fixed distribution whose shifts average out over the
    batch: the earlier noisy BN of this suite). The noise never enters BN's own statistics, and
    is off in eval mode and inside ``training_noise_off`` (BN statistics recomputed, test
    batches normalized by their own statistics): evaluation sees the network without noise, as
    the paper evaluates it. Draws come from torch's global RNG, so a seed fixes them and the
    probes, which reset that RNG before each pass, see the step's own draw."""

    def __init__(
        self,
        num_features: int,
        step_shift: float = 0.5,
        step_scale: float = 1.5,
        max_shift: float = 0.5,
        max_scale: float = 1.5,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.step_shift, self.step_scale = step_shift, step_scale
        self.max_shift, self.max_scale = max_shift, max_scale
        self.noise_on = True  # training_noise_off clears it for passes that are not training

    def draw_noise(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, shift) of one step, each of shape (n, C): the step's per-channel centres
        times (plus) each sample's own draw (see the class doc)."""

        def uniform(shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
            return torch.empty(shape, device=like.device, dtype=like.dtype).uniform_(lo, hi)

        c = self.num_features
        step_shift = uniform((c,), -self.step_shift, self.step_shift)
        step_scale = uniform((c,), 1.0, self.step_scale)
        scale = uniform((n, c), 1.0, self.max_scale).mul_(step_scale)
        shift = uniform((n, c), -self.max_shift, self.max_shift).add_(step_shift)
        return scale, shift

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not self.noise_on:
            return super().forward(x)
        y = F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            True,
            self.momentum,
            self.eps,
        )
        self.num_batches_tracked.add_(1)
        scale, shift = self.draw_noise(x.shape[0], x)
        view = (*x.shape[:2], *([1] * (x.dim() - 2)))
        # (gamma*x_hat + beta)*s + m, in place on the native kernel's output (its backward
        # needs only the input); s and m are constants, so the backward is one multiply.
        return y.mul_(scale.view(view)).add_(shift.view(view))


@contextmanager
def training_noise_off(model: nn.Module) -> Iterator[None]:
    """Every noisy BN in ``model`` without its noise while inside (a training-mode pass that is
    not a training step: precise BN's statistics, the test set by batch statistics)."""
    noisy = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    saved = [m.noise_on for m in noisy]
    for m in noisy:
        m.noise_on = False
    try:
        yield
    finally:
        for m, on in zip(noisy, saved, strict=True):
            m.noise_on = on


@register_norm(
    "mean_only_batch",
    params={"eps": EPS, "momentum": MOMENTUM},
    color="#7b4173",
    uses_batch_stats=True,
    pooled_over=ACROSS_SAMPLES,
)
class MeanOnlyBatchNorm(BatchNorm):
    """Subtract the batch mean per channel and add β, no division (Salimans & Kingma 2016 pair it
    with weight normalization, which fixes the scale)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        del self.weight  # no scale: weight norm's g plays that role
        self.register_parameter("weight", None)

    def forward(self, x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]
        if self.training:
            mean = x.mean(dim=dims)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.num_batches_tracked.add_(1)
        else:
            mean = self.running_mean
        return x - _channel_view(mean, x) + _channel_view(self.bias, x)
