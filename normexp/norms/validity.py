"""Which norm is defined where, checked before anything runs.

The rules common to every norm are here; a norm's own rules (GN's groups must divide the
channels, ghost BN's groups must divide the batch, ...) are registered with it
(``NormSpec.check``, ``NormSpec.pooled_values``). Each violation raises ConfigError naming the
field and what is allowed.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from normexp.errors import ConfigError
from normexp.norms.registry import (
    NORMS,
    POSITIONS,
    NormContext,
    NormFactory,
    check_kwargs,
    check_position,
    norm_parameters,
    norm_spec,
    norms_for,
)
from normexp.validate_fields import check_number

__all__ = ["POSITIONS", "check_norm", "check_position", "refuse_per_channel_post"]


@dataclass(frozen=True)
class _Wording:
    """How the error lines speak of one input kind."""

    place: str  # where the norm would be used
    norm: str  # how a norm used there is named ({name})
    one_value: str  # the line when one statistic would pool a single value ({name}, {values})
    otherwise_undefined: str  # why a norm whose entry gives no reason is undefined there
    unregistered_is_undefined: bool = False  # else an unknown name is refused as unknown


_LAYER_WORDING = {
    "place": "{kind} inputs",
    "norm": "norm {name!r}",
    "one_value": "{name!r} norm would pool {values} value per statistic in training (variance "
    "undefined); use batch_size >= 2 or a per-sample norm",
    "otherwise_undefined": "it is not defined there",
}
_WORDING = {
    "dense": _Wording(**_LAYER_WORDING),
    "image": _Wording(**_LAYER_WORDING),
    "recurrent": _Wording(
        place="recurrent layers",
        norm="the {name!r} LSTM cell",
        one_value="{name!r} pools each statistic over the batch: {values} value per statistic "
        "leaves the variance undefined; use batch_size >= 2 or a per-sample cell",
        otherwise_undefined="not an LSTM cell",
        unregistered_is_undefined=True,
    ),
}


def _check_values(kwargs: Mapping) -> None:
    """The parameters several norms share: eps and the gain's start strictly positive numbers,
    a running-average momentum in (0, 1]."""
    for key in ("eps", "momentum", "gamma_init"):
        if key in kwargs:
            check_number(f"norm.{key}", kwargs[key], strict=True)
    if "momentum" in kwargs and kwargs["momentum"] > 1:
        raise ConfigError("norm.momentum", f"{kwargs['momentum']} must be in (0, 1]")


def refuse_undefined(name: str, input_kind: str) -> None:
    """ConfigError if the norm ``name`` is undefined for inputs of ``input_kind`` (the one
    sentence the config check and the layers themselves say)."""
    words = _WORDING[input_kind]
    spec = NORMS.get(name)
    if spec is None and not words.unregistered_is_undefined:
        norm_spec(name)  # raises: unknown norm
    if spec is None or input_kind not in spec.input_kinds:
        why = words.otherwise_undefined
        if spec is not None:
            why = spec.undefined_because.get(input_kind, why)
        place = words.place.format(kind=input_kind)
        allowed = ", ".join(norms_for(input_kind))
        raise ConfigError(
            "norm.name", f"{name!r} is undefined for {place} ({why}); allowed: {allowed}"
        )


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
    (batch size x the smallest feature map's H*W; for recurrent layers, the batch size).
    """
    words = _WORDING[input_kind]
    refuse_undefined(name, input_kind)
    spec = NORMS[name]
    kwargs = dict(kwargs or {})
    check_kwargs(name, kwargs, norm_parameters(name, input_kind), words.norm.format(name=name))
    _check_values(kwargs)
    values = values_per_channel_in_training
    ctx = NormContext(input_kind, list(channels), values, batch_size, kwargs)
    spec.check(ctx)
    values = spec.pooled_values(ctx)
    if spec.uses_batch_stats and values < 2:
        raise ConfigError("train.batch_size", words.one_value.format(name=name, values=values))


def refuse_per_channel_post(norm: NormFactory, channels: int, consequence: str) -> None:
    """In ``post`` a model's last block ends with the norm. If what follows averages each channel
    (pooling, or the mean colour a linear conv gives), a norm whose set S is one channel of one
    sample (IN, GN with one channel per group) fixes that mean at β: refused, naming what would
    follow (``consequence``)."""
    if norm.position == "post" and norm.per_channel(channels):
        raise ConfigError(
            "norm.position",
            f"'post' {norm.name} norm right before {consequence}; allowed for it: pre",
        )
