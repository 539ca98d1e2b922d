"""Prototype (bench only, not wired into training): K runs of the quick VGG as one wider model.

Replica k's channels are the k-th block of every layer: convolutions become grouped
(groups = K), per-channel norms (BN) simply span the K·C channels, since their statistics are per
channel anyway; GN with G groups becomes GN with K·G groups (LN, GN with one group, becomes GN
with K groups); the classifier is one matrix per replica (a batched matmul). Each replica gets its
own batch, stacked along channels, and the loss is the sum of the replicas' mean losses, so each
replica's gradient is the one its standalone run would get. The bench measures whether this is
faster than K sequential steps at the small batches where one step is overhead-bound."""

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.bench.harness import MODEL, NORM
from normexp.bench.timing import interleaved_median
from normexp.models import build_model

CL = torch.channels_last  # as the suite runs (runtime.channels_last)


class BlockLinear(nn.Module):
    """K independent linear layers on the K blocks of the features: (B, K·in) -> (K, B, out)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x: Tensor) -> Tensor:
        k, _, n_in = self.weight.shape
        x = x.reshape(x.shape[0], k, n_in).transpose(0, 1)  # (K, B, in)
        return torch.baddbmm(self.bias[:, None], x, self.weight.transpose(1, 2))


def _copy_into(target: nn.Module, replicas: Sequence[nn.Module]) -> nn.Module:
    """Fill ``target``'s weights and buffers with the replicas' ones, block after block."""
    for name, value in [*target.named_parameters(), *target.named_buffers()]:
        parts = [getattr(m, name).detach() for m in replicas]
        # A step counter (num_batches_tracked) is a scalar, the same in every replica.
        value.data.copy_(parts[0] if parts[0].dim() == 0 else torch.cat(parts))
    return target


def stack_modules(replicas: Sequence[nn.Module]) -> nn.Module:
    """One module computing ``replicas`` side by side on channel blocks, with their weights."""
    first, k = replicas[0], len(replicas)
    if isinstance(first, nn.Sequential):
        return nn.Sequential(*(stack_modules([m[i] for m in replicas]) for i in range(len(first))))
    if isinstance(first, nn.Conv2d):
        conv = nn.Conv2d(
            k * first.in_channels,
            k * first.out_channels,
            first.kernel_size,
            first.stride,
            first.padding,
            first.dilation,
            groups=k * first.groups,
            bias=first.bias is not None,
        )
        return _copy_into(conv, replicas)
    if isinstance(first, nn.modules.batchnorm._BatchNorm):
        bn = nn.BatchNorm2d(
            k * first.num_features,
            first.eps,
            first.momentum,
            first.affine,
            first.track_running_stats,
        )
        return _copy_into(bn, replicas)
    if isinstance(first, nn.GroupNorm):
        gn = nn.GroupNorm(k * first.num_groups, k * first.num_channels, first.eps, first.affine)
        return _copy_into(gn, replicas)
    if isinstance(first, nn.Linear):
        return BlockLinear(replicas)
    if not any(True for _ in first.parameters()) and not any(True for _ in first.buffers()):
        return copy.deepcopy(first)  # activations, pooling: the same op on every channel
    raise TypeError(f"no stacked form of {type(first).__name__}")


class StackedReplicas(nn.Module):
    """K VGGNets as one: input (K, B, C, H, W), output (K, B, classes)."""

    def __init__(self, replicas: Sequence[nn.Module]) -> None:
        super().__init__()
        self.k = len(replicas)
        self.features = stack_modules([m.features for m in replicas])
        self.head = stack_modules([m.head for m in replicas])

    def forward(self, x: Tensor) -> Tensor:
        k, b = x.shape[:2]
        return self.head(self.features(x.transpose(0, 1).reshape(b, -1, *x.shape[3:])))


def stacked_loss(out: Tensor, y: Tensor) -> Tensor:
    """Sum over replicas of each replica's mean cross-entropy: replica k's gradient is its own."""
    k, b = y.shape
    per_sample = F.cross_entropy(out.reshape(k * b, -1), y.reshape(-1), reduction="none")
    return per_sample.view(k, b).mean(1).sum()


def replicas(k: int, norm: dict = NORM, model: dict = MODEL) -> list[nn.Module]:
    """K standalone models with different initial weights (seeds 0..K-1), in training mode."""
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_model(model, norm).train())
    return out


def equivalence_error(
    k: int, batch_size: int, norm: dict = NORM, dtype: torch.dtype = torch.float64
) -> float:
    """Largest |stacked - standalone| over every replica's outputs and weight gradients after one
    forward + backward, relative to the largest magnitude of each compared tensor.

    In float64 this checks the math. In float32, outputs agree to float rounding (~1e-6) but a
    gradient can differ more: where two inputs of a max-pool window differ by less than the
    rounding, the stacked and standalone models may route the gradient to different ones."""
    models = [m.to(dtype) for m in replicas(k, norm)]
    stacked = StackedReplicas(models).to(dtype).train()  # weights drawn in fp32: exact
    g = torch.Generator().manual_seed(1)
    x = torch.randn(k, batch_size, 3, 32, 32, generator=g, dtype=dtype)
    y = torch.randint(10, (k, batch_size), generator=g)
    out = stacked(x)
    stacked_loss(out, y).backward()
    worst = 0.0
    stacked_params = dict(stacked.named_parameters())
    for i, m in enumerate(models):
        ref = m(x[i])
        F.cross_entropy(ref, y[i]).backward()
        pairs = [(out[i], ref)]
        for name, p in m.named_parameters():
            grad = stacked_params[name].grad
            per = grad.shape[0] // k if "head" not in name else 1
            mine = grad[i] if "head" in name else grad[i * per : (i + 1) * per]
            pairs.append((mine, p.grad))
        for a, b in pairs:
            worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item())
    return worst


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)


def _train_fn(models: list[nn.Module], x: Tensor, y: Tensor, steps: int, stacked: bool):
    if stacked:
        model = StackedReplicas(models).to(memory_format=CL)
        opts, step_models = [_sgd(model.parameters())], [model]
    else:
        step_models = [m.to(memory_format=CL) for m in models]
        opts = [_sgd(m.parameters()) for m in step_models]

    def run() -> None:
        for _ in range(steps):
            for i, (model, opt) in enumerate(zip(step_models, opts, strict=True)):
                if stacked:
                    loss = stacked_loss(model(x), y)
                else:  # replica i as its own run: its batch, its step
                    loss = F.cross_entropy(model(x[i].contiguous(memory_format=CL)), y[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    return run


def bench_replicas(
    ks: Sequence[int] = (4, 8), batch_sizes: Sequence[int] = (2, 8), repeats: int = 9
) -> list[dict]:
    """Rows of (K, batch): K sequential training steps vs one step of the stacked model."""
    rows = []
    for batch_size in batch_sizes:
        for k in ks:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(k, batch_size, 3, 32, 32, generator=g)
            y = torch.randint(10, (k, batch_size), generator=g)
            steps = max(2, 32 // (k * batch_size))
            fns = {
                "separate": _train_fn(replicas(k), x, y, steps, stacked=False),
                "stacked": _train_fn(replicas(k), x, y, steps, stacked=True),
            }
            t = interleaved_median(fns, repeats=repeats, warmup=2)
            ratio = t["separate"] / t["stacked"]
            rows.append(
                {
                    "bench": "replicas",
                    "name": f"K={k} VGG quick, b={batch_size}",
                    "reference": f"{k} separate steps",
                    "ours": f"{k * steps / t['stacked']:.0f} run-step/s",
                    "reference_value": f"{k * steps / t['separate']:.0f} run-step/s",
                    "ratio": ratio,
                    "target": "> 1 speed-up",
                    "meets_target": ratio > 1,
                    "mark": f"rel. err {equivalence_error(k, batch_size):.0e} (fp64)",
                }
            )
    return rows
