"""Probes of the optimization problem at the current weights, on one batch (Santurkar et al. 2018,
"How Does Batch Normalization Help Optimization?"): internal covariate shift as a change of
gradient (C9) and the loss landscape along the gradient (C10).

Every probe is a pure measurement: weights, BN running statistics (all buffers) and the random
number generators are exactly as before when it returns, so a run with probes trains exactly like
one without. Every forward pass of a probe runs in training mode (batch statistics, as the step
being probed) and sees the same random noise (noisy BN draws new noise per forward otherwise), so
the probes compare weights, not noise draws. The loss is ``loss_fn(model(x), y)`` (the data loss:
cross-entropy in training, without weight decay or L1).
"""

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


class _ProbeState:
    """Snapshot of parameters, buffers and RNG states; ``reset()`` puts buffers and RNG back
    before each forward pass, ``restore()`` puts everything back at the end."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.params = [p.detach().clone() for p in model.parameters()]
        self.buffers = [b.detach().clone() for b in model.buffers()]
        self.cuda = device.type == "cuda"
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state(device) if self.cuda else None
        self.device = device

    def reset(self) -> None:
        with torch.no_grad():
            for b, saved in zip(self.model.buffers(), self.buffers, strict=True):
                b.copy_(saved)
        torch.set_rng_state(self.cpu_rng)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_rng, self.device)

    def restore(self) -> None:
        self.reset()
        with torch.no_grad():
            for p, saved in zip(self.model.parameters(), self.params, strict=True):
                p.copy_(saved)


@contextmanager
def _probing(model: nn.Module, x: Tensor) -> Iterator[_ProbeState]:
    state = _ProbeState(model, x.device)
    was_training = model.training
    model.train()
    try:
        yield state
    finally:
        state.restore()
        model.train(was_training)


def _grads(loss: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Gradients of ``loss`` w.r.t. ``params``; zeros for parameters it does not use."""
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _largest(values: Sequence[float]) -> float:
    """max, or inf when any value is not finite (a step that blew the loss up is the worst)."""
    return max(values) if all(math.isfinite(v) for v in values) else math.inf


def probed_layers(
    model: nn.Module, layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d,)
) -> list[tuple[str, nn.Module]]:
    """The layers whose gradient the ICS probe follows: conv layers (linear layers for a model
    without any), in the order of ``model.modules()``, which is the forward order of the
    sequential models here."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, layer_types)]
    if not layers:
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return layers


def ics_per_layer(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    lr: float,
    loss_fn: LossFn = F.cross_entropy,
    layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d,),
) -> dict[str, list]:
    """Internal covariate shift of each probed layer i (Santurkar et al. 2018, Sec. 2.2):
    G = ∇_{W_i} L(W_1, …, W_k) at the current weights and G' = ∇_{W_i} L(W'_1, …, W'_{i−1}, W_i,
    …, W_k) after every earlier parameter took the plain gradient step W' = W − lr·∇L on the same
    batch. Returns ``{"layers": names, "l2": ‖G − G'‖₂, "rel": ‖G − G'‖₂ / ‖G‖₂, "cos": cos(G,
    G')}`` for layers 2…k (the first layer has no earlier layers: its G' is G). ``rel`` is the
    ℓ2 change relative to the gradient's size, comparable across norms whose gradients differ
    in scale (NaN where G is 0).

    "Earlier" is every parameter registered before the layer's first one (the norms and biases of
    earlier blocks included), which is forward order for the sequential models of this suite."""
    layers = probed_layers(model, layer_types)
    with _probing(model, x) as state:
        params = list(model.parameters())
        position = {id(p): j for j, p in enumerate(params)}
        state.reset()
        grads = _grads(loss_fn(model(x), y), params)
        names, l2, rel, cos = [], [], [], []
        updated = 0  # params[:updated] hold W' = W − lr·G
        for name, layer in layers[1:]:
            own = list(layer.parameters())
            first = min(position[id(p)] for p in own)
            with torch.no_grad():
                for p, g in zip(params[updated:first], grads[updated:first], strict=True):
                    p.sub_(lr * g)
            updated = max(updated, first)
            state.reset()
            shifted = _flat(_grads(loss_fn(model(x), y), own))
            before = _flat([grads[position[id(p)]] for p in own])
            names.append(name)
            change, size = (float(torch.linalg.vector_norm(v)) for v in (before - shifted, before))
            l2.append(change)
            rel.append(change / size if size > 0 else math.nan)
            cos.append(float(F.cosine_similarity(before, shifted, dim=0, eps=1e-30)))
    return {"layers": names, "l2": l2, "rel": rel, "cos": cos}


def landscape_along_gradient(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    step_sizes: Sequence[float],
    loss_fn: LossFn = F.cross_entropy,
) -> dict[str, float]:
    """The loss and its gradient at w − η·g for each step size η, with g = ∇L(w) on this batch
    (Santurkar et al. 2018, Fig. 4):

    - ``loss_range``: max − min of L over {w} ∪ {w − η·g}, how much the loss varies along the step;
    - ``grad_predictiveness``: max_η ‖∇L(w) − ∇L(w − η·g)‖₂ (lower: the gradient predicts the
      gradient further along better);
    - ``beta_smoothness``: max_η ‖∇L(w) − ∇L(w − η·g)‖₂ / ‖η·g‖₂, the "effective" β of the
      gradient's Lipschitz constant along the step;
    - ``loss`` and ``grad_norm``: L(w) and ‖g‖₂.

    All parameters move (norm gains and shifts too)."""
    if not step_sizes or any(eta <= 0 for eta in step_sizes):
        raise ValueError(f"step sizes must be positive, got {list(step_sizes)}")
    with _probing(model, x) as state:
        params = list(model.parameters())
        state.reset()
        loss0 = loss_fn(model(x), y)
        g0 = _grads(loss0, params)
        g0_flat = _flat(g0)
        g_norm = float(torch.linalg.vector_norm(g0_flat))
        losses, changes, betas = [loss0.item()], [], []
        for eta in step_sizes:
            with torch.no_grad():
                for p, w, g in zip(params, state.params, g0, strict=True):
                    torch.add(w, g, alpha=-eta, out=p)
            state.reset()
            loss = loss_fn(model(x), y)
            change = float(torch.linalg.vector_norm(_flat(_grads(loss, params)) - g0_flat))
            losses.append(loss.item())
            changes.append(change)
            betas.append(change / (eta * g_norm) if g_norm > 0 else math.nan)
    return {
        "loss": losses[0],
        "grad_norm": g_norm,
        "loss_range": _largest(losses) - min(losses) if _largest(losses) < math.inf else math.inf,
        "grad_predictiveness": _largest(changes),
        "beta_smoothness": _largest(betas) if g_norm > 0 else math.nan,  # no step: undefined
    }
