"""SGD for packed replicas (normexp.models.packed): torch.optim.SGD's update, element for element,
with each replica's block of every parameter stepped at that replica's own learning rate.

The group's learning rate is the schedule's factor alone (base lr 1.0, so the LambdaLR of
``train.optim.build_scheduler`` sets it to f(t)), and ``lr_scale[k]`` is replica k's peak LR:
replica k steps at f(t)·peak_k, the product its separate run's scheduler forms as peak_k·f(t)
(the same double; in float32 both are rounded once to the parameter's dtype). Weight decay,
momentum and Nesterov act per element, so no replica's gradient, buffer or NaN reaches another's
block. Adam and gradient clipping are refused: clipping by the global norm couples the replicas
(the LM optimizers clip; classification's do not), and classification trains with SGD."""

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.models.packed import PackedModel
from normexp.train.optim import parameter_groups


class PackedSGD(torch.optim.Optimizer):
    """torch.optim.SGD's math (momentum, dampening 0, nesterov, weight decay per param group) with
    each param's step scaled per replica block: lr_eff = group['lr'] * scale, where scale[k] is
    replica k's peak LR. Every parameter is K blocks along dim 0 (the packed layout)."""

    def __init__(
        self,
        params: Iterable,
        lr_scale: Sequence[float],
        lr: float = 1.0,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs a momentum > 0")
        defaults = {
            "lr": lr,
            "lr_scale": tuple(float(s) for s in lr_scale),
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _step_sizes(group: Mapping) -> Callable[[Tensor], Tensor]:
        """lr·scale[k] per replica, formed once per step and group: the products in float64, as
        the separate runs' float LRs, then rounded once to each parameter's dtype."""
        lrs = torch.tensor(group["lr_scale"], dtype=torch.float64) * group["lr"]
        cache: dict[tuple[torch.dtype, torch.device], Tensor] = {}

        def sizes(p: Tensor) -> Tensor:
            key = (p.dtype, p.device)
            if key not in cache:
                cache[key] = lrs.to(device=p.device, dtype=p.dtype)
            return cache[key].view(-1, *([1] * p.dim()))

        return sizes

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, momentum = group["weight_decay"], group["momentum"]
            k, sizes = len(group["lr_scale"]), self._step_sizes(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if wd != 0:
                    grad = grad.add(p, alpha=wd)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = grad.detach().clone()
                    else:
                        buf.mul_(momentum).add_(grad)  # dampening 0
                    grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                if p.dim() == 0 or p.shape[0] % k:
                    raise ValueError(f"a parameter of shape {tuple(p.shape)} has no {k} blocks")
                # Block k of dim 0 at its own step size: splitting dim 0 is a view in any memory
                # format (channels-last filters too), so p is updated in place.
                blocks = p.unflatten(0, (k, -1))
                blocks.addcmul_(grad.unflatten(0, (k, -1)), sizes(p), value=-1)
        return loss


def packed_optim_refusal(optim_cfg: Mapping) -> str | None:
    """None when runs with this optimizer config train packed exactly; else why not."""
    if optim_cfg.get("name") != "sgd":
        return f"optimizer {optim_cfg.get('name')!r} is not packed (SGD only): it trains separately"
    if optim_cfg.get("clip_grad_norm") is not None:
        return "gradient clipping by the global norm would couple the replicas"
    return None


def packed_optimizer(packed: nn.Module, optim_cfg: Mapping, peak_lrs: Sequence[float]) -> PackedSGD:
    """The packed model's optimizer: the separate runs' parameter groups (weight decay on the
    same parameters, by name and ndim), base lr 1.0 for the schedule's factor, and replica k's
    peak LR (``train.optim.peak_lr`` of its config) as its block's scale."""
    reason = packed_optim_refusal(optim_cfg)
    if reason:
        raise ConfigError("optim.name", reason)
    if not isinstance(packed, PackedModel):
        raise TypeError(f"not a packed model: {type(packed).__name__}")
    if len(peak_lrs) != packed.k:
        raise ValueError(f"{len(peak_lrs)} peak LRs for a packed model of {packed.k} replicas")
    groups = parameter_groups(packed, optim_cfg["weight_decay"], optim_cfg["decay_norm_and_bias"])
    return PackedSGD(
        groups,
        lr_scale=peak_lrs,
        lr=1.0,
        momentum=optim_cfg["momentum"],
        nesterov=optim_cfg["nesterov"],
        weight_decay=0.0,  # each group carries its own (parameter_groups)
    )
