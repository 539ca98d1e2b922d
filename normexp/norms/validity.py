"""Which norm is defined where: every rule in one place, checked before anything runs.

Each violation raises ConfigError naming the field and what is allowed.
"""

from collections.abc import Mapping, Sequence

from normexp.errors import ConfigError
from normexp.norms.registry import NORMS, norm_parameters, norm_spec

POSITIONS = ("pre", "post")  # pre: layer -> norm -> act; post: layer -> act -> norm

# Why a norm is undefined for an input kind, for the error line.
_UNDEFINED_BECAUSE = {
    "instance": "its set S would be a single neuron, so x-mu is always 0",
}


def check_norm(
    name: str,
    input_kind: str,
    channels: Sequence[int],
    values_per_channel_in_training: int,
    kwargs: Mapping[str, object] | None = None,
    batch_size: int = 1,
) -> None:
    """Refuse a norm that is undefined for this model.

    ``channels`` lists the width of every normalized layer; ``values_per_channel_in_training``
    is how many values one statistic pools in training when statistics are pooled over the batch
    (batch size x the smallest feature map's H*W).
    """
    spec = norm_spec(name)
    if input_kind not in spec.input_kinds:
        allowed = sorted(n for n, s in NORMS.items() if input_kind in s.input_kinds)
        why = _UNDEFINED_BECAUSE.get(name, "it is not defined there")
        raise ConfigError(
            "norm.name",
            f"{name!r} is undefined for {input_kind} inputs ({why}); allowed: {', '.join(allowed)}",
        )
    kwargs = dict(kwargs or {})
    allowed_kwargs = norm_parameters(name)
    for key in kwargs:
        if key not in allowed_kwargs:
            raise ConfigError(
                f"norm.{key}",
                f"not a parameter of norm {name!r}; allowed: {', '.join(allowed_kwargs) or 'none'}",
            )
    if name == "group":
        from normexp.norms.layers import resolve_num_groups

        for c in channels:
            resolve_num_groups(c, kwargs.get("num_groups"), kwargs.get("channels_per_group"))
    if name == "ghost_batch":
        group_size = kwargs.get("group_size", 8)
        if not isinstance(group_size, int) or group_size < 1 or batch_size % group_size:
            raise ConfigError(
                "norm.group_size",
                f"{group_size!r} must be a positive divisor of train.batch_size={batch_size}",
            )
        values_per_channel_in_training = values_per_channel_in_training // batch_size * group_size
    if spec.uses_batch_stats and values_per_channel_in_training < 2:
        raise ConfigError(
            "train.batch_size",
            f"{name!r} norm would pool {values_per_channel_in_training} value per statistic in "
            "training (variance undefined); use batch_size >= 2 or a per-sample norm",
        )


def check_position(position: str) -> None:
    if position not in POSITIONS:
        raise ConfigError("norm.position", f"unknown {position!r}; allowed: {', '.join(POSITIONS)}")
