"""Activation-side normalization layers.

All compute γ·(x−μ)/σ+β and differ only in the set S of values pooled for μ and σ:
BN over (N, H, W) per channel; LN over (C, H, W) of one sample; IN over (H, W) of one channel of
one sample; GN over a group of channels (and H, W) of one sample. Where PyTorch has a native
kernel for that set it is used as is.
"""

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.norms.registry import (
    ACROSS_CHANNELS,
    ACROSS_SAMPLES,
    EPS,
    MOMENTUM,
    NormContext,
    register_norm,
)
from normexp.norms.validity import refuse_undefined
from normexp.rules import Choice, Int


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm for (N, C) and (N, C, H, W) inputs alike, so one name fits MLP and CNN."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"BatchNorm expects (N,C), (N,C,L) or (N,C,H,W); got {tuple(x.shape)}")


GN_GROUPS = 32  # the GN paper's default group count (Wu & He 2018)
GN_CHANNELS_PER_GROUP = 16  # its fallback where 32 groups do not fit
# GN's grouping rules (norm.grouping), each one rule for the whole network:
#   width:  every group of every layer holds norm.channels_per_group channels (a constant width);
#   count:  every layer has norm.num_groups groups (a constant count, so the width grows with C);
#   legacy: the per-layer rule this suite used first (default_num_groups): on ResNet-20's
#           16/32/64 channels it gives groups of 8, 16, then 2 channels, so it is kept only as
#           the reported arm of experiments/gn_grouping.yaml.
# null (the default of configs/norm/group.yaml): the rule the numbers set imply: count with
# num_groups, width with channels_per_group, legacy with neither (the keys of stored runs).
GROUPINGS = ("width", "count", "legacy")


def default_num_groups(num_features: int) -> int:
    """The legacy grouping, per layer, never IN or LN in disguise: 32 groups where that leaves
    at least 2 channels per group (C divisible by 32 and C >= 64); else groups of the width
    nearest 16 channels (ties: the narrower) that divides C and leaves at least 2 groups (C = 32:
    2 x 16, 16: 2 x 8, 8: 2 x 4, 4: 2 x 2, 48: 3 x 16). Only C = 2, 3 or a prime has no such
    grouping: refused, asking for an explicit one."""
    if num_features % GN_GROUPS == 0 and num_features // GN_GROUPS >= 2:
        return GN_GROUPS
    widths = [w for w in range(2, num_features // 2 + 1) if num_features % w == 0]
    if not widths:
        raise ConfigError(
            "norm.num_groups",
            f"{num_features} channels have no grouping into >= 2 groups of >= 2 channels (GN "
            "would be IN or LN); set norm.num_groups or norm.channels_per_group",
        )
    width = min(widths, key=lambda w: (abs(w - GN_CHANNELS_PER_GROUP), w))
    return num_features // width


def grouping_rule(
    num_groups: int | None = None,
    channels_per_group: int | None = None,
    grouping: str | None = None,
) -> str:
    """The network-wide rule (``GROUPINGS``) a GN config asks for; a named rule must come with
    its own number and without the other's."""
    if num_groups is not None and channels_per_group is not None:
        raise ConfigError("norm.num_groups", "set at most one of num_groups, channels_per_group")
    if num_groups is not None:
        implied = "count"
    elif channels_per_group is not None:
        implied = "width"
    else:
        implied = "legacy"
    if grouping is None or grouping == implied:
        return implied
    if grouping not in GROUPINGS:
        raise ConfigError("norm.grouping", f"unknown {grouping!r}; allowed: {', '.join(GROUPINGS)}")
    field = {"width": "norm.channels_per_group", "count": "norm.num_groups"}
    if grouping == "legacy" or implied != "legacy":  # a number the named rule does not take
        raise ConfigError(field[implied], f"must be null with norm.grouping={grouping}")
    what = "the channels of every group" if grouping == "width" else "the groups of every layer"
    raise ConfigError(
        field[grouping],
        f"must be set with norm.grouping={grouping}: {what}, an integer >= 1 that divides every "
        "normalized layer's channels",
    )


def resolve_num_groups(
    num_features: int,
    num_groups: int | None = None,
    channels_per_group: int | None = None,
    grouping: str | None = None,
) -> int:
    """Groups for GroupNorm in a layer of ``num_features`` channels, by the rule
    ``grouping_rule`` gives: a constant width or count must divide the channels."""
    rule = grouping_rule(num_groups, channels_per_group, grouping)
    if rule == "width":
        if channels_per_group <= 0 or num_features % channels_per_group:
            raise ConfigError(
                "norm.channels_per_group",
                f"{channels_per_group} does not divide {num_features} channels",
            )
        return num_features // channels_per_group
    if rule == "legacy":
        return default_num_groups(num_features)
    if num_groups <= 0 or num_features % num_groups:
        raise ConfigError(
            "norm.num_groups", f"{num_groups} does not divide {num_features} channels"
        )
    return num_groups


def groups_in(num_features: int, kwargs: Mapping) -> int:
    """``resolve_num_groups`` for a GN config's keyword arguments."""
    return resolve_num_groups(
        num_features,
        kwargs.get("num_groups"),
        kwargs.get("channels_per_group"),
        kwargs.get("grouping"),
    )


@register_norm("none", color="#7f7f7f", label="no norm", has_shift=False)
def build_none(num_features: int) -> nn.Module:
    return nn.Identity()


@register_norm(
    "batch",
    params={"eps": EPS, "momentum": MOMENTUM},
    pooled_over=ACROSS_SAMPLES,
    color="#1f77b4",
    label="BN",
    uses_batch_stats=True,
    undefined_because={
        "recurrent": "a recurrent layer needs to say which statistics it keeps over time: use "
        "batch_per_step (Cooijmans et al.) or batch_shared"
    },
)
def build_batch(num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> nn.Module:
    return BatchNorm(num_features, eps=eps, momentum=momentum)


@register_norm(
    "layer", params={"eps": EPS}, color="#ff7f0e", label="LN", pooled_over=ACROSS_CHANNELS
)
def build_layer(num_features: int, eps: float = 1e-5) -> nn.Module:
    # LN as in the GN paper: statistics over all of (C, H, W), affine per channel. That is
    # GroupNorm with one group, which also covers dense (N, C) inputs.
    return nn.GroupNorm(1, num_features, eps=eps)


def _always(kwargs: Mapping, channels: int) -> bool:
    return True


@register_norm(
    "instance",
    params={"eps": EPS},
    pooled_over="one sample, one channel, all positions",
    color="#d62728",
    label="IN",
    input_kinds=("image",),
    per_channel=_always,
    undefined_because={
        "dense": "its set S would be a single neuron, so x-mu is always 0",
        "recurrent": "its set S would be one neuron (one value per unit, sample and step), so "
        "x - mu is always 0",
    },
)
def build_instance(num_features: int, eps: float = 1e-5) -> nn.Module:
    return InstanceNorm(num_features, num_features, eps=eps)


class InstanceNorm(nn.GroupNorm):
    """IN with affine γ, β like the other norms (InstanceNorm2d defaults to none), no running
    statistics: GroupNorm with one channel per group is exactly that, on a native kernel. On a
    dense (N, C) input its set S is one value, so it refuses it as the config check does."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3:
            refuse_undefined("instance", "dense")
        return super().forward(x)


def _check_groups(ctx: NormContext) -> None:
    # One rule for the whole network: a constant width must divide every normalized layer (the
    # line names them all, and the widths that would); a count or the legacy rule, each layer.
    width = ctx.kwargs.get("channels_per_group")
    rule = grouping_rule(ctx.kwargs.get("num_groups"), width, ctx.kwargs.get("grouping"))
    if rule == "width" and any(width <= 0 or c % width for c in ctx.channels):
        common = math.gcd(*ctx.channels)
        fits = ", ".join(str(w) for w in range(1, common + 1) if common % w == 0)
        layers = ", ".join(map(str, ctx.channels))
        raise ConfigError(
            "norm.channels_per_group",
            f"{width} does not divide every normalized layer's channels ({layers}); "
            f"allowed: {fits}",
        )
    for c in ctx.channels:
        groups_in(c, ctx.kwargs)


def _one_channel_per_group(kwargs: Mapping, channels: int) -> bool:
    try:
        groups = groups_in(channels, kwargs)
    except ConfigError:
        return False  # an invalid grouping is refused by _check_groups
    return groups == channels


@register_norm(
    "group",
    params={
        "grouping": Choice(GROUPINGS, null=True),
        "num_groups": Int(1, null=True),
        "channels_per_group": Int(1, null=True),
        "eps": EPS,
    },
    pooled_over="one sample, the channels of one group, all positions",
    color="#2ca02c",
    label="GN",
    check=_check_groups,
    per_channel=_one_channel_per_group,
    undefined_because={
        "recurrent": "group norm over hidden units is not offered; layer is its one-group case"
    },
)
def build_group(
    num_features: int,
    grouping: str | None = None,
    num_groups: int | None = None,
    channels_per_group: int | None = None,
    eps: float = 1e-5,
) -> nn.Module:
    groups = resolve_num_groups(num_features, num_groups, channels_per_group, grouping)
    return nn.GroupNorm(groups, num_features, eps=eps)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): x / rms(x) · γ over all units of one sample, no mean
    subtraction and no shift; γ per channel so one layer fits (N, C) and (N, C, H, W)."""

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        # One (N, C) scale then one multiply over x: fewer passes than F.rms_norm's composite
        # followed by a per-channel multiply.
        dims = tuple(range(1, x.dim()))
        ms = x.pow(2).mean(dim=dims, keepdim=True)
        scale = ms.add(self.eps).rsqrt() * self.weight.view(1, -1, *([1] * (x.dim() - 2)))
        return x * scale


@register_norm(
    "rms", params={"eps": EPS}, color="#8c564b", has_shift=False, pooled_over=ACROSS_CHANNELS
)
def build_rms(num_features: int, eps: float = 1e-6) -> nn.Module:
    return RMSNorm(num_features, eps=eps)
