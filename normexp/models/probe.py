"""Check a model's config by building it: the network is built on PyTorch's ``meta`` device (no
memory, no arithmetic) with a probe in place of each norm, one batch of the training batch size
runs through it, and each probe records what its norm would be given. The norm's checks then
see the layers the model actually has, in the order a batch meets them; no second copy of the
constructors' shape arithmetic exists to drift from them."""

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.norms.registry import NormFactory
from normexp.norms.validity import check_norm, refuse_per_channel_post


@dataclass(frozen=True)
class NormSite:
    """One normalized layer as a batch meets it."""

    channels: int  # its width (C)
    values: int  # values per channel in one training batch (N·H·W; N for a dense layer)


class _Probe(nn.Module):
    """A norm's stand-in: records the layer a batch gives it (channels first, as every norm of
    the registry takes its input) and checks it is the width the model built the norm for."""

    def __init__(self, num_features: int, sites: list[NormSite]) -> None:
        super().__init__()
        self.num_features, self.sites = num_features, sites

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.num_features:  # the model's bug, not the config's: not caught
            raise ValueError(f"a norm built for {self.num_features} channels got {x.shape[1]}")
        self.sites.append(NormSite(x.shape[1], x.numel() // x.shape[1]))
        return x


@dataclass(frozen=True)
class ProbeFactory(NormFactory):
    """The factory of a norm config whose layers are probes (``sites`` fills as a batch runs)."""

    sites: list[NormSite] = field(default_factory=list, compare=False)

    def __call__(self, num_features: int) -> nn.Module:
        return _Probe(num_features, self.sites)


def norm_sites(
    build: Callable[[Mapping, NormFactory], nn.Module],
    model: Mapping,
    factory: NormFactory,
    input_shape: tuple[int, ...],
    field_name: str,
) -> tuple[NormSite, ...]:
    """Every normalized layer of ``build(model, factory)`` as a batch of ``input_shape`` meets
    it; a network that cannot run such a batch (its maps shrink too far) is refused naming
    ``field_name``. The layers' shapes depend on the norm's position, not on which norm it is
    (a builder must not branch on the norm's name or arguments): a sweep's jobs share one build
    per model, position and batch size."""
    plain = OmegaConf.to_container(model, resolve=True) if isinstance(model, DictConfig) else model
    key = (json.dumps(plain, sort_keys=True), factory.position, input_shape)
    return _sites(build, key, field_name)


@functools.lru_cache(maxsize=256)
def _sites(build: Callable, key: tuple[str, str, tuple[int, ...]], field_name: str) -> tuple:
    model_json, position, input_shape = key
    probe = ProbeFactory("none", position, {})
    with torch.device("meta"):
        network = build(json.loads(model_json), probe)
        try:
            network(torch.empty(input_shape))
        except NotImplementedError:  # an op the meta device lacks: the model's, not the config's
            raise
        except RuntimeError as exc:
            side = input_shape[-1]
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                field_name, f"the network cannot run on {side}x{side} images ({reason})"
            ) from None
    return tuple(probe.sites)


def check_sites(
    factory: NormFactory, input_kind: str, sites: Sequence[NormSite], batch_size: int
) -> None:
    """The norm's checks (normexp.norms.validity.check_norm) on the layers it is given: every
    width, and the fewest values one statistic pools in training."""
    channels = [s.channels for s in sites]
    values = min((s.values for s in sites), default=batch_size)
    check_norm(factory.name, input_kind, channels, values, factory.kwargs, batch_size)


def check_global_pool_head(
    factory: NormFactory, sites: Sequence[NormSite], batch_size: int, network: str
) -> None:
    """A network whose last block ends with the norm in ``post``, global average pooling after
    it: a norm over one channel of one sample would fix each pooled feature at β (refused);
    then the norm's checks on every layer."""
    refuse_per_channel_post(
        factory,
        sites[-1].channels,
        "global average pooling makes every channel's mean equal β, so the "
        f"{network} would ignore its input",
    )
    check_sites(factory, "image", sites, batch_size)
