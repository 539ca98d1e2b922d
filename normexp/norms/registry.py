"""Registry of normalization layers: every fact about a norm lives in its entry.

``make_norm(name, num_features, **kwargs)`` builds the layer for inputs of shape (N, C) or
(N, C, H, W). Where a norm is registered it declares which input kinds it is defined for (dense,
image, and recurrent: inside an LSTM cell), whether it has a shift (so the layer before it needs
no bias), whether it pools statistics over samples, its own validity rules, and its defaults (the
keyword defaults of its build function; for LSTM cells, ``CellNorm.defaults``). Models receive a
``NormFactory`` built once from the ``norm`` config node.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from torch import nn

from normexp.errors import ConfigError
from normexp.rules import Num  # a rule of a norm parameter (normexp.schema reads this registry)

INPUT_KINDS = ("dense", "image", "recurrent")
POSITIONS = ("pre", "post")  # pre: layer -> norm -> act; post: layer -> act -> norm


@dataclass(frozen=True)
class NormContext:
    """What a norm's own checks see of the model it is placed in."""

    input_kind: str
    channels: Sequence[int]  # the width of every normalized layer
    values_per_statistic: int  # values one statistic pools in training if pooled over the batch
    batch_size: int
    kwargs: Mapping[str, object]


@dataclass(frozen=True)
class CellNorm:
    """How an LSTM cell applies a norm to its gate pre-activations and cell state
    (``normexp.models.lstm_cells``): what its kernel computes at each site, and the config
    parameters with their defaults."""

    site: str  # none | layer | rms | batch
    defaults: Mapping[str, float] = field(default_factory=dict)
    per_step: bool = False  # batch statistics: one population set per time step, else shared


def _no_check(ctx: NormContext) -> None:
    return None


def _pooled_as_given(ctx: NormContext) -> int:
    return ctx.values_per_statistic


def _never(kwargs: Mapping, channels: int) -> bool:
    return False


@dataclass(frozen=True)
class NormSpec:
    """What the rest of the suite needs to know about a norm without building it."""

    name: str
    build: Callable[..., nn.Module] | None  # None: defined inside LSTM cells only
    input_kinds: frozenset[str]
    has_shift: bool  # a learned β follows the normalization: the preceding layer needs no bias
    uses_batch_stats: bool  # statistics pooled over samples: needs >1 value per statistic
    check: Callable[[NormContext], None] = _no_check  # the norm's own rules; raise ConfigError
    # Values one statistic pools in training, where the norm pools fewer than the whole batch.
    pooled_values: Callable[[NormContext], int] = _pooled_as_given
    # True where S is one channel of one sample (given kwargs and the layer's channels).
    per_channel: Callable[[Mapping, int], bool] = _never
    undefined_because: Mapping[str, str] = field(default_factory=dict)  # input kind -> why
    cell: CellNorm | None = None  # how an LSTM cell applies it (input kind "recurrent")
    color: str = "#333333"  # its colour in every figure and notebook
    label: str = ""  # its short name in figures and tables; empty: the registry name
    # What it pools its statistics over, by definition, in C1's words; empty: not stated.
    pooled_over: str = ""
    # The rule of each keyword argument it takes (its config's norm.<name>; normexp.schema).
    params: Mapping[str, object] = field(default_factory=dict)


# The rules of the parameters most norms share (NormSpec.params).
EPS = Num(0, lo_open=True)
MOMENTUM = Num(0, 1, lo_open=True)
# The two sets most norms pool over (NormSpec.pooled_over).
ACROSS_SAMPLES = "all samples, one channel, all positions"
ACROSS_CHANNELS = "one sample, all channels, all positions"

NORMS: dict[str, NormSpec] = {}
CELL_ORDER: list[str] = []  # the LSTM cells' norms, in the order experiments list them
# The weight-side arms' colours (model.weight_side's methods, and optim's L1 / L2 penalties: the
# blog's weight-side "normalizations"): the same palette as the norms' (``palette``).
WEIGHT_SIDE_COLORS = {
    "weight_norm": "#bcbd22",
    "weight_std": "#637939",
    "l1": "#8c6d31",
    "l2": "#843c39",
}


def register_norm(
    name: str,
    *,
    input_kinds: tuple[str, ...] = ("dense", "image"),
    has_shift: bool = True,
    uses_batch_stats: bool = False,
    **facts: object,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers ``build(num_features, **kwargs) -> nn.Module`` under ``name``;
    ``facts`` are the other ``NormSpec`` fields (check, pooled_values, per_channel, ...)."""

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in NORMS:
            raise ValueError(f"norm {name!r} registered twice")
        if "recurrent" in input_kinds:
            raise ValueError(f"{name!r}: declare how LSTM cells use it with register_cell")
        kinds = frozenset(input_kinds)
        NORMS[name] = NormSpec(name, build, kinds, has_shift, uses_batch_stats, **facts)
        return build

    return wrap


def register_cell(name: str, cell: CellNorm, **facts: object) -> None:
    """Declare how LSTM cells apply norm ``name`` (registering it if it is a cell-only norm);
    the calls' order is the order in which cells are listed."""
    if name in CELL_ORDER:
        raise ValueError(f"LSTM cell norm {name!r} registered twice")
    if name in NORMS:
        spec = NORMS[name]
        NORMS[name] = replace(spec, input_kinds=spec.input_kinds | {"recurrent"}, cell=cell)
    else:
        facts.setdefault("has_shift", True)
        facts.setdefault("uses_batch_stats", cell.site == "batch")
        NORMS[name] = NormSpec(name, None, frozenset({"recurrent"}), cell=cell, **facts)
    CELL_ORDER.append(name)


def _load() -> None:
    # Importing the layer modules fills the registry; done here so callers need one import.
    from normexp.norms import batch_variants, layers, recurrent  # noqa: F401


def palette() -> dict[str, str]:
    """{name: colour} of every registered norm and weight-side arm: the one palette that every
    figure and the notebook draw with."""
    _load()
    return {**{n: spec.color for n, spec in NORMS.items()}, **WEIGHT_SIDE_COLORS}


def norm_spec(name: str, field: str = "norm.name") -> NormSpec:
    """The spec of a registered norm; an unknown name raises ConfigError listing the valid ones."""
    _load()
    if name not in NORMS:
        raise ConfigError(field, f"unknown norm {name!r}; allowed: {', '.join(sorted(NORMS))}")
    return NORMS[name]


def param_rules() -> dict[str, object]:
    """Every norm parameter's rule, from the norms that take it (one rule per name)."""
    _load()
    rules: dict[str, object] = {}
    for spec in NORMS.values():
        for name, rule in spec.params.items():
            if rules.setdefault(name, rule) != rule:
                raise ValueError(f"norm parameter {name!r} has two rules")
    return rules


def pooled_sets() -> dict[str, str]:
    """Every norm that states what it pools over (C1's wording), by name."""
    _load()
    return {name: spec.pooled_over for name, spec in NORMS.items() if spec.pooled_over}


def norms_for(input_kind: str) -> list[str]:
    """The norms defined for ``input_kind``: LSTM cells in their listing order, the others
    alphabetically."""
    _load()
    if input_kind == "recurrent":
        return list(CELL_ORDER)
    return sorted(n for n, s in NORMS.items() if input_kind in s.input_kinds)


def cell_norm(name: str) -> CellNorm:
    """How LSTM cells apply norm ``name``; ValueError if they do not."""
    _load()
    spec = NORMS.get(name)
    if spec is None or spec.cell is None:
        raise ValueError(f"unknown cell {name!r}; allowed: {', '.join(CELL_ORDER)}")
    return spec.cell


def norm_parameters(name: str, input_kind: str = "image") -> list[str]:
    """The keyword arguments that norm ``name`` accepts besides ``num_features``, where it
    normalizes inputs of ``input_kind``."""
    spec = norm_spec(name)
    if input_kind == "recurrent":
        return list(spec.cell.defaults) if spec.cell else []
    if spec.build is None:
        return []
    params = inspect.signature(spec.build).parameters
    return [p for p in params if p != "num_features"]


def check_kwargs(name: str, kwargs: Mapping, allowed: Sequence[str], what: str) -> None:
    """Refuse a keyword that is not in ``allowed``; ``what`` names the norm in the error line."""
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(
                f"norm.{key}", f"not a parameter of {what}; allowed: {', '.join(allowed) or 'none'}"
            )


def make_norm(name: str, num_features: int, **kwargs: object) -> nn.Module:
    """Build the norm ``name`` for ``num_features`` channels (dense or image inputs)."""
    spec = norm_spec(name)
    if spec.build is None:
        raise ConfigError(
            "norm.name", f"{name!r} is a norm of LSTM cells only; it has no layer for images"
        )
    check_kwargs(name, kwargs, norm_parameters(name), f"norm {name!r}")
    return spec.build(num_features, **kwargs)


def check_position(position: str) -> None:
    if position not in POSITIONS:
        raise ConfigError("norm.position", f"unknown {position!r}; allowed: {', '.join(POSITIONS)}")


def split_norm_config(norm: Mapping) -> tuple[str, str, dict]:
    """(name, position, constructor kwargs) from a ``norm`` config node."""
    kwargs = {k: v for k, v in norm.items() if k not in ("name", "position")}
    return norm["name"], norm["position"], kwargs


@dataclass(frozen=True)
class NormFactory:
    """The norm of one config, for models: ``factory(C)`` builds it for C channels; ``position``
    is where it goes relative to the activation (as timm's ``create_norm`` / mmcv's
    ``build_norm_layer``, with the position the suite varies)."""

    name: str
    position: str
    kwargs: Mapping[str, object]

    def __call__(self, num_features: int) -> nn.Module:
        return make_norm(self.name, num_features, **self.kwargs)

    @property
    def spec(self) -> NormSpec:
        return norm_spec(self.name)

    @property
    def layer_bias(self) -> bool:
        """A layer directly followed by a norm with a shift gets no bias (β makes it redundant)."""
        return not (self.position == "pre" and self.spec.has_shift)

    def per_channel(self, channels: int) -> bool:
        """Whether its set S is one channel of one sample in a layer of ``channels``."""
        return self.spec.per_channel(self.kwargs, channels)


def make_norm_factory(norm: Mapping) -> NormFactory:
    """The factory of a ``norm`` config node (name, position and the norm's parameters)."""
    name, position, kwargs = split_norm_config(norm)
    check_position(position)
    return NormFactory(name, position, kwargs)
