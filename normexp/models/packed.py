"""Packed replicas: K runs of one cell (same model and norm config; their own seeds, data and LR
multipliers) computed as one model whose every layer holds the K runs' layers side by side.

Replica k owns block k of every layer's channels: a conv becomes ``Conv2d(K·Cin, K·Cout,
groups=K·groups)``, a linear layer a block-diagonal one (``PackedLinear``, one matrix product per
replica), a per-channel norm (BN and its variants) spans the K·C channels, GN with G groups
becomes GN with K·G groups (LN, GN with one group, thus K groups; IN stays one group per
channel), RMSNorm pools per replica (``PackedRMSNorm``), and option A's zero-padding shortcut
pads each replica's block (``PackedPadShortcut``). Weight norm and weight standardization are
per output channel, so they apply to the packed weight as they are. Replica k's inputs are block
k of the input channels (``pack_inputs``); the output is (K, B, classes).

Every packed parameter and buffer keeps its separate model's name (the module tree is the
separate model's, only its leaves are replaced) and is the concatenation of the K replicas'
tensors along dim 0, so replica k's tensor is block k of dim 0 (``replica_state_dict``,
``replica_tensor``); the one exception is BN's step counter ``num_batches_tracked``, a scalar
that every replica shares (the members of a group train in step). Each replica's loss is its own
mean over its batch and the packed loss their sum (``replica_losses``), so the gradient of
replica k's block is exactly its separate run's gradient, and nothing couples the blocks: a NaN
in one replica stays in its block (tests/unit/test_packed.py proves both, norm by norm).

What packs and what does not is declared here (``PACKED_NORMS``, ``REFUSED_NORMS``,
``pack_refusal``); a norm added to the registry must be added to one of them (the tests enforce
it)."""

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normexp.models.cnn import GlobalAvgPool, QuadrantAvgPool
from normexp.models.resnet import PadShortcut
from normexp.norms.batch_variants import BatchRenorm, GhostBatchNorm, MeanOnlyBatchNorm
from normexp.norms.layers import BatchNorm, InstanceNorm, RMSNorm

# Models whose runs pack; the others train separately.
PACKED_MODELS = ("cnn", "resnet", "mlp")
REFUSED_MODELS = {
    "lstm": "the LSTM language model trains separately (its cells' fused kernels are not packed)",
    "generator": "the image-to-image generator trains separately (not packed)",
}
# Norms whose packed form is exact, and why (how each spans the K blocks).
PACKED_NORMS = {
    "none": "nothing to pool",
    "batch": "statistics per channel: BN over the K·C channels",
    "ghost_batch": "per channel and per group of samples: the same groups in every replica",
    "batch_renorm": "r, d per channel; the relaxation follows the shared step counter",
    "mean_only_batch": "mean per channel",
    "group": "G groups per replica: K·G groups",
    "layer": "one group per replica: K groups",
    "instance": "one group per channel, as before",
    "rms": "mean square over each replica's block (PackedRMSNorm)",
}
REFUSED_NORMS = {
    "noisy_batch": "noisy_batch draws its noise from the global RNG: its replicas would not see "
    "their separate runs' noise",
    "batch_per_step": "a norm of LSTM cells only, and LSTM runs train separately",
    "batch_shared": "a norm of LSTM cells only, and LSTM runs train separately",
}


def pack_refusal(model_cfg: Mapping, norm_cfg: Mapping) -> str | None:
    """None when runs of this model and norm train packed exactly; else one line saying why not
    (e.g. 'noisy_batch draws its noise from the global RNG: its replicas would not see their
    separate runs' noise')."""
    model = model_cfg.get("name")
    if model in REFUSED_MODELS:
        return REFUSED_MODELS[model]
    if model not in PACKED_MODELS:
        return f"model {model!r} has no packed form: it trains separately"
    norm = norm_cfg.get("name")
    if norm in REFUSED_NORMS:
        return REFUSED_NORMS[norm]
    if norm not in PACKED_NORMS:
        return f"norm {norm!r} has not declared whether it packs (normexp/models/packed.py)"
    return None


class PackedLinear(nn.Module):
    """K linear layers on the K blocks of the features, (B, K·in) -> (B, K·out), as one batched
    matrix product. ``weight`` is the K weights stacked, (K·out, in), and ``bias`` (K·out): the
    separate layer's dims, so weight decay (by ndim) and weight norm (per row) treat them alike."""

    def __init__(self, k: int, in_features: int, out_features: int, weight: Tensor,
                 bias: Tensor | None) -> None:  # fmt: skip
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        xs = x.reshape(b, self.k, self.in_features).transpose(0, 1)  # (K, B, in)
        w = self.weight.view(self.k, self.out_features, self.in_features).transpose(1, 2)
        if self.bias is None:
            out = torch.bmm(xs, w)
        else:
            out = torch.baddbmm(self.bias.view(self.k, 1, self.out_features), xs, w)
        return out.transpose(0, 1).reshape(b, self.k * self.out_features)

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.in_features}, out_features={self.out_features}"


class PackedRMSNorm(nn.Module):
    """RMSNorm over each replica's block of channels (and positions) of one sample."""

    def __init__(self, k: int, weight: Tensor, eps: float) -> None:
        super().__init__()
        self.k, self.eps = k, eps
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[0], x.shape[1] // self.k
        ms = x.pow(2).reshape(b, self.k, -1).mean(-1)  # (B, K)
        tail = [1] * (x.dim() - 2)
        scale = ms.add(self.eps).rsqrt().repeat_interleave(c, dim=1).view(b, -1, *tail)
        return x * (scale * self.weight.view(1, -1, *tail))


class PackedPadShortcut(nn.Module):
    """Option A per replica: each block subsampled and padded with its own new zero channels."""

    def __init__(self, k: int, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.k, self.extra_channels, self.stride = k, extra_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        b, _, h, w = x.shape
        x = F.pad(x.reshape(b, self.k, -1, h, w), (0, 0, 0, 0, 0, self.extra_channels))
        return x.reshape(b, -1, h, w)


class PackedModel(nn.Module):
    """K models as one: the separate model's module tree (so the same parameter names) with
    packed leaves, run by the separate model's own forward; (B, K·3, H, W) -> (K, B, classes)."""

    def __init__(self, body: nn.Module, k: int) -> None:
        super().__init__()
        self.k = k
        self.body_type = type(body)  # whose forward runs the children (VGGNet, ResNet, MLP)
        for name, child in body.named_children():
            self.add_module(name, child)

    def forward(self, x: Tensor) -> Tensor:
        out = self.body_type.forward(self, x)  # (B, K·classes)
        return out.view(out.shape[0], self.k, -1).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"k={self.k}, packs={self.body_type.__name__}"


# The norm layers whose statistics are per channel (BN) or per group of channels (GN), so that
# K·C channels (K·G groups) compute the K replicas' norms exactly. Exact types: a new subclass
# (noisy BN is one) must be judged before it packs.
PER_CHANNEL = (BatchNorm, GhostBatchNorm, BatchRenorm, MeanOnlyBatchNorm)
PER_GROUP = (nn.GroupNorm, InstanceNorm)

# Leaves without parameters that act on each channel (or each element) alone: the same module
# computes every replica's block.
CHANNELWISE = (
    nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.MaxPool2d, nn.Flatten,
    GlobalAvgPool, QuadrantAvgPool,
)  # fmt: skip


def _stacked(tensors: Sequence[Tensor]) -> Tensor:
    # A 0-dim tensor (BN's step counter) is shared; the rest are concatenated on dim 0.
    if tensors[0].dim() == 0:
        return tensors[0].detach().clone()
    return torch.cat([t.detach() for t in tensors])


def _fill(target: nn.Module, leaves: Sequence[nn.Module]) -> nn.Module:
    """Give ``target`` (a packed leaf built from leaves[0]) the leaves' tensors, block after block,
    under the same names (parametrized weights: their originals)."""
    owners = dict(target.named_modules())
    for name, value in [*leaves[0].named_parameters(), *leaves[0].named_buffers()]:
        prefix, _, attr = name.rpartition(".")
        tensor = _stacked([leaf.get_parameter(name) if isinstance(value, nn.Parameter)
                           else leaf.get_buffer(name) for leaf in leaves])  # fmt: skip
        owner = owners[prefix]
        if isinstance(value, nn.Parameter):
            owner._parameters[attr] = nn.Parameter(tensor, requires_grad=value.requires_grad)
        else:
            owner._buffers[attr] = tensor
    return target


def _reparametrize(target: nn.Module, source: nn.Module) -> None:
    """Register on ``target`` copies of ``source``'s parametrizations (weight norm, WS)."""
    if not parametrize.is_parametrized(source):
        return
    for tensor_name, chain in source.parametrizations.items():
        for p in chain:
            parametrize.register_parametrization(target, tensor_name, copy.deepcopy(p))


def _plain_type(module: nn.Module) -> type:
    # A parametrized layer's class is a generated subclass of the layer's own.
    return type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)


def _pack_leaf(leaves: Sequence[nn.Module]) -> nn.Module:
    first, k = leaves[0], len(leaves)
    kind = _plain_type(first)
    if kind is nn.Conv2d:
        # A deep copy keeps the conv's settings and parametrizations; only the channels grow.
        conv = copy.deepcopy(first)
        conv.in_channels, conv.out_channels = k * first.in_channels, k * first.out_channels
        conv.groups = k * first.groups
        return _fill(conv, leaves)
    if kind is nn.Linear:
        bias = None if first.bias is None else first.bias.detach()
        weight = first.weight.detach()
        linear = PackedLinear(k, first.in_features, first.out_features, weight.repeat(k, 1),
                              None if bias is None else bias.repeat(k))  # fmt: skip
        _reparametrize(linear, first)
        return _fill(linear, leaves)
    if kind in PER_CHANNEL:
        bn = copy.deepcopy(first)  # keeps a variant's class and settings (group size, r_max...)
        bn.num_features = k * first.num_features
        return _fill(bn, leaves)
    if kind in PER_GROUP:  # GN, LN (1 group), IN (a subclass: a group per channel)
        gn = copy.deepcopy(first)
        gn.num_groups, gn.num_channels = k * first.num_groups, k * first.num_channels
        return _fill(gn, leaves)
    if kind is RMSNorm:
        return _fill(PackedRMSNorm(k, first.weight.detach().repeat(k), first.eps), leaves)
    if kind is PadShortcut:
        return PackedPadShortcut(k, first.extra_channels, first.stride)
    if kind in CHANNELWISE:
        return copy.deepcopy(first)
    raise TypeError(f"no packed form of {kind.__name__}")


def _is_leaf(module: nn.Module) -> bool:
    # A parametrized layer has children (its parametrizations) but is packed as one leaf.
    return not any(True for _ in module.children()) or isinstance(module, nn.Conv2d | nn.Linear)


def _pack_tree(modules: Sequence[nn.Module]) -> nn.Module:
    first = modules[0]
    if _is_leaf(first):
        return _pack_leaf(modules)
    own = [*first.named_parameters(recurse=False), *first.named_buffers(recurse=False)]
    if own:
        raise TypeError(f"{type(first).__name__} holds tensors of its own: no packed form")
    packed = copy.copy(first)  # the container's class and settings, with new children
    # Its own dicts (hooks, parameters), not the separate model's.
    packed.__dict__ = {
        k: copy.copy(v) if isinstance(v, dict) else v for k, v in vars(first).items()
    }
    packed._modules = {
        name: _pack_tree([m.get_submodule(name) for m in modules])
        for name in first._modules
    }  # fmt: skip
    return packed


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    def shape(m: nn.Module) -> list:
        return [(n, type(s).__name__) for n, s in m.named_modules()] + [
            (n, tuple(t.shape), t.dtype) for n, t in m.state_dict().items()
        ]

    first = shape(models[0])
    for i, m in enumerate(models[1:], 1):
        if shape(m) != first:
            raise ValueError(f"model {i} differs in architecture from model 0: cannot pack them")


def pack_models(models: Sequence[nn.Module]) -> nn.Module:
    """One module computing the K models (same architecture, as normexp.models.build_model
    builds them, each with its own weights) side by side. forward(x) takes pack_inputs(...) and
    returns logits of shape (K, B, classes)."""
    if not models:
        raise ValueError("nothing to pack")
    _check_same_architecture(models)
    body = _pack_tree(models)
    packed = PackedModel(body, len(models))
    return packed.train(models[0].training)


def pack_inputs(xs: Sequence[Tensor]) -> Tensor:
    """K batches of the same size stacked along channels: (B, K·3, H, W) for the CNN, the ResNet
    and the MLP alike (the MLP's Flatten then gives each replica its contiguous block)."""
    if len({tuple(x.shape) for x in xs}) != 1:
        raise ValueError(f"replica batches differ in shape: {[tuple(x.shape) for x in xs]}")
    return torch.cat(list(xs), dim=1)


def replica_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Each replica's mean cross-entropy over its own batch, (K,): logits (K, B, classes),
    targets (K, B). Their sum is the packed loss: its gradient in replica k's block is replica
    k's own, and a non-finite loss stays in its replica (the sum's gradient is 1 for each)."""
    k, b = targets.shape
    per_sample = F.cross_entropy(logits.reshape(k * b, -1), targets.reshape(-1), reduction="none")
    return per_sample.view(k, b).mean(1)


def _k(packed: nn.Module) -> int:
    if not isinstance(packed, PackedModel):
        raise TypeError(f"not a packed model: {type(packed).__name__}")
    return packed.k


def _block(tensor: Tensor, k: int, replicas: int) -> Tensor:
    if tensor.dim() == 0:  # the shared step counter
        return tensor
    if not 0 <= k < replicas:
        raise IndexError(f"replica {k} of {replicas}")
    return tensor.unflatten(0, (replicas, -1))[k]


def replica_state_dict(packed: nn.Module, k: int) -> dict[str, Tensor]:
    """Replica k's parameters and buffers with exactly the keys and shapes of the separate model's
    state_dict() (so it loads into build_model(...) with strict=True)."""
    replicas = _k(packed)
    return {
        name: _block(t, k, replicas).detach().clone()
        for name, t in packed.state_dict().items()
    }  # fmt: skip


@torch.no_grad()
def load_replica_state(packed: nn.Module, k: int, state: Mapping[str, Tensor]) -> None:
    """Write a separate model's state_dict into block k (resume). The shared step counter takes
    the state's value: the members of a group resume from the same step."""
    replicas = _k(packed)
    own = packed.state_dict(keep_vars=True)
    if set(own) != set(state):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise KeyError(f"state does not match the packed model: missing {missing}, extra {extra}")
    for name, t in own.items():
        target = _block(t, k, replicas)
        if target.shape != state[name].shape:
            raise ValueError(
                f"{name}: shape {tuple(state[name].shape)}, block {tuple(target.shape)}"
            )
        target.copy_(state[name])


def replica_tensor(packed: nn.Module, name: str, tensor: Tensor, k: int) -> Tensor:
    """Block k of a tensor laid out like the packed parameter ``name`` (e.g. an optimizer's
    momentum buffer), reshaped to the separate model's parameter shape."""
    replicas = _k(packed)
    reference = packed.state_dict(keep_vars=True)[name]
    if tensor.shape != reference.shape:
        raise ValueError(f"{name}: tensor {tuple(tensor.shape)}, packed {tuple(reference.shape)}")
    return _block(tensor, k, replicas)
