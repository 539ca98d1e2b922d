"""LSTM layers whose gate pre-activations and cell state are normalized, fast on the CPU.

One layer computes, for t = 0..T-1 (gate order i, f, o, g: the three sigmoid gates side by side)::

    z_t = N_x(W_x x_t) + N_h(W_h h_{t-1}) + b
    i, f, o = sigmoid(z_t[:3H]);  g = tanh(z_t[3H:])
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(N_c(c_t))

and the cell decides what N_x, N_h, N_c are (each has its own gain γ; N_c also a shift β):

- ``none``: identity (a plain LSTM; the language model uses PyTorch's fused ``nn.LSTM`` for it,
  this layer serves the parity tests and the benchmark).
- ``layer`` (Ba et al. 2016, LN-LSTM): layer norm over the 4H pre-activations of one sample at
  one step for N_x and N_h separately, and over the H cell units for N_c. γ starts at 1.
- ``rms``: the same sets as ``layer``, RMSNorm (no centring, no shift; N_c has no β either).
- ``batch_per_step`` (Cooijmans et al. 2016, BN-LSTM): batch norm over the samples of the batch,
  per unit, with statistics kept per time step t < ``max_steps`` (the training window length);
  evaluation at t >= ``max_steps`` reuses the last step's population statistics, as the paper
  does. γ starts at 0.1 (the paper's choice: it keeps tanh/sigmoid out of saturation).
- ``batch_shared``: batch norm with one set of population statistics for all time steps. In
  training each step is normalized with the statistics of its own batch, exactly as in
  ``batch_per_step`` (the recurrent term of step t only exists once step t-1 has run, so no
  pooling over time is possible for it); the population statistics are then the average over
  steps, and evaluation uses that one set at every step. γ starts at 0.1.

Instance norm is undefined here: for one sample at one step each unit is a single value, so its
set S is one neuron and x - μ is always 0. Group norm over hidden units would mean normalizing
groups of units of one sample at one step; ``layer`` is its one-group case, and no other group
count is offered.

Speed: the input projection W_x x and N_x run for all T steps in one vectorized call before the
loop, and the bias is folded into N_x. The loop then does one matmul and a handful of in-place
element-wise ops per step into preallocated (T, B, ·) buffers, without building an autograd
graph; a hand-written backward runs the loop in reverse with PyTorch's own fused norm backward
kernels, and forms the weight gradient of W_h (and the norms' γ, β gradients) after the loop in
one matmul / reduction over all steps. ``_eager_recurrence`` is the same computation written
plainly with autograd: the specification the fast path is tested against, and the fallback for
the rare case that needs gradients through population statistics.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CELLS = ("none", "layer", "batch_per_step", "batch_shared", "rms")
BATCH_CELLS = ("batch_per_step", "batch_shared")
BN_GAMMA_INIT = 0.1  # Cooijmans et al. 2016, section 4

_aten = torch.ops.aten


# --- one normalization site (N_h or N_c) inside the recurrence ---------------------------------


@dataclass
class _Site:
    """How one site inside the loop is normalized, and what its forward left for the backward.

    kind: none | layer | rms | batch (batch statistics of each step) | population (fixed
    per-step affine map from population statistics: evaluation of the batch cells).
    """

    kind: str
    gamma: Tensor | None = None
    beta: Tensor | None = None
    eps: float = 1e-5
    scale: Tensor | None = None  # population: (steps, F), gamma / sqrt(var + eps)
    shift: Tensor | None = None  # population: (steps, F), beta - mean * scale
    saved: list = field(default_factory=list)  # per step: (mean, rstd) or (rstd,)

    def forward(self, a: Tensor, t: int) -> Tensor:
        if self.kind == "layer":
            n, mean, rstd = _aten.native_layer_norm(
                a, [a.shape[1]], self.gamma, self.beta, self.eps
            )
            self.saved.append((mean, rstd))
        elif self.kind == "rms":
            n, rstd = _aten._fused_rms_norm(a, [a.shape[1]], self.gamma, self.eps)
            if self.beta is not None:
                n.add_(self.beta)
            self.saved.append((rstd,))
        elif self.kind == "batch":
            n, mean, invstd = _aten.native_batch_norm(
                a, self.gamma, self.beta, None, None, True, 0.0, self.eps
            )
            self.saved.append((mean, invstd))
        elif self.kind == "population":
            s = min(t, self.scale.shape[0] - 1)  # beyond the trained length: the last step's
            n = torch.addcmul(self.shift[s], a, self.scale[s])
        else:
            raise AssertionError(self.kind)
        return n

    def backward(self, dn: Tensor, a: Tensor, t: int) -> Tensor:
        """Gradient w.r.t. the site's input ``a`` (γ, β gradients are formed after the loop)."""
        if self.kind == "layer":
            mean, rstd = self.saved[t]
            return _aten.native_layer_norm_backward(
                dn, a, [a.shape[1]], mean, rstd, self.gamma, None, [True, False, False]
            )[0]
        if self.kind == "rms":  # PyTorch has no CPU kernel for it (2.x): written out
            rstd = self.saved[t][0]
            g = dn * self.gamma
            x_hat = a * rstd
            proj = (g * x_hat).mean(1, keepdim=True)
            return g.sub_(x_hat.mul_(proj)).mul_(rstd)
        if self.kind == "batch":
            mean, invstd = self.saved[t]
            return _aten.native_batch_norm_backward(
                dn, a, self.gamma, None, None, mean, invstd, True, self.eps, [True, False, False]
            )[0]
        raise AssertionError(self.kind)  # population statistics take the eager path

    def normalized(self, a: Tensor) -> Tensor:
        """x̂ for all steps at once, (T, B, F): what γ multiplied in the forward pass."""
        if self.kind == "layer":
            mean = torch.stack([m for m, _ in self.saved])
            rstd = torch.stack([r for _, r in self.saved])
            return (a - mean) * rstd
        if self.kind == "rms":
            return a * torch.stack([r for (r,) in self.saved])
        if self.kind == "batch":
            mean = torch.stack([m for m, _ in self.saved]).unsqueeze(1)
            invstd = torch.stack([s for _, s in self.saved]).unsqueeze(1)
            return (a - mean) * invstd
        raise AssertionError(self.kind)

    def batch_stats(self, batch: int) -> tuple[Tensor, Tensor]:
        """Per-step (mean, unbiased variance), each (T, F), of the batches seen (kind batch)."""
        mean = torch.stack([m for m, _ in self.saved])
        invstd = torch.stack([s for _, s in self.saved])
        var = (invstd.pow(-2) - self.eps).clamp_min(0.0)
        return mean, var * (batch / max(batch - 1, 1))


# --- the recurrence: forward loop, hand-written backward ---------------------------------------


def _forward_loop(xin: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, hh: _Site, cc: _Site):
    """Run the recurrence; return (out, acts, cs, tms, a_hh), all (T, B, ·) buffers.

    ``xin`` already holds N_x(W_x x_t) + b. ``acts`` holds i, f, o, g after their nonlinearity,
    ``cs`` the cell states, ``tms`` tanh(N_c(c_t)), ``a_hh`` the recurrent term W_h h_{t-1}
    (None when N_h is the identity).
    """
    T, B, G = xin.shape
    H = G // 4
    w_t = w_hh.t()
    out = xin.new_empty(T, B, H)
    cs = xin.new_empty(T, B, H)
    tms = xin.new_empty(T, B, H)
    acts = xin.new_empty(T, B, G)
    a_hh = None if hh.kind == "none" else xin.new_empty(T, B, G)
    h, c = h0, c0
    for t in range(T):
        z = acts[t]
        if a_hh is None:
            torch.addmm(xin[t], h, w_t, out=z)
        else:
            torch.mm(h, w_t, out=a_hh[t])
            torch.add(xin[t], hh.forward(a_hh[t], t), out=z)
        z[:, : 3 * H].sigmoid_()
        z[:, 3 * H :].tanh_()
        c_t = cs[t]
        torch.mul(z[:, H : 2 * H], c, out=c_t)
        c_t.addcmul_(z[:, :H], z[:, 3 * H :])
        m = c_t if cc.kind == "none" else cc.forward(c_t, t)
        torch.tanh(m, out=tms[t])
        torch.mul(z[:, 2 * H : 3 * H], tms[t], out=out[t])
        h, c = out[t], c_t
    return out, acts, cs, tms, a_hh


class _FastRecurrence(torch.autograd.Function):
    """The loop with a hand-written backward (sites of kind none/layer/rms/batch)."""

    @staticmethod
    def forward(ctx, xin, h0, c0, w_hh, g_hh, g_c, b_c, sites):  # noqa: ANN001, ANN205
        hh, cc = sites
        out, acts, cs, tms, a_hh = _forward_loop(xin, h0, c0, w_hh, hh, cc)
        ctx.sites = sites
        ctx.save_for_backward(h0, c0, w_hh, out, acts, cs, tms, a_hh)
        # Copies: the final state is carried into the next window, the buffers stay saved.
        return out, out[-1].clone(), cs[-1].clone()

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT):  # noqa: ANN001, ANN205
        hh, cc = ctx.sites
        h0, c0, w_hh, out, acts, cs, tms, a_hh = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 4
        dz_all = acts.new_empty(T, B, G)
        da_all = dz_all if a_hh is None else acts.new_empty(T, B, G)
        dm_all = None if cc.kind == "none" else acts.new_empty(T, B, H)
        dh = d_out[-1].clone() if d_out is not None else h0.new_zeros(B, H)
        if d_hT is not None:
            dh += d_hT
        dc_carry = d_cT.clone() if d_cT is not None else c0.new_zeros(B, H)
        for t in range(T - 1, -1, -1):
            z, dz = acts[t], dz_all[t]
            i, f, o, g = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
            torch.mul(dh, tms[t], out=dz[:, 2 * H : 3 * H])
            dm = _aten.tanh_backward(dh * o, tms[t])
            if dm_all is not None:
                dm_all[t] = dm
                dc = cc.backward(dm, cs[t], t)
            else:
                dc = dm
            dc += dc_carry
            torch.mul(dc, g, out=dz[:, :H])
            torch.mul(dc, cs[t - 1] if t else c0, out=dz[:, H : 2 * H])
            torch.mul(dc, i, out=dz[:, 3 * H :])
            torch.mul(dc, f, out=dc_carry)
            _aten.sigmoid_backward.grad_input(
                dz[:, : 3 * H], z[:, : 3 * H], grad_input=dz[:, : 3 * H]
            )
            _aten.tanh_backward.grad_input(dz[:, 3 * H :], g, grad_input=dz[:, 3 * H :])
            da = dz if a_hh is None else hh.backward(dz, a_hh[t], t)
            if a_hh is not None:
                da_all[t] = da
            dh = torch.mm(da, w_hh)
            if t and d_out is not None:
                dh += d_out[t - 1]
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])
        d_w_hh = torch.mm(da_all.view(T * B, G).t(), h_prev.view(T * B, H))
        d_g_hh = d_g_c = d_b_c = None
        if ctx.needs_input_grad[4]:
            d_g_hh = (dz_all * hh.normalized(a_hh)).sum((0, 1))
        if ctx.needs_input_grad[5]:
            d_g_c = (dm_all * cc.normalized(cs)).sum((0, 1))
        if ctx.needs_input_grad[6]:
            d_b_c = dm_all.sum((0, 1))
        return dz_all, dh, dc_carry, d_w_hh, d_g_hh, d_g_c, d_b_c, None


def _eager_recurrence(xin, h0, c0, w_hh, hh: _Site, cc: _Site):  # noqa: ANN001, ANN201
    """The recurrence written plainly with autograd: the specification of the fast path."""

    def norm(site: _Site, a: Tensor, t: int) -> Tensor:
        if site.kind == "none":
            return a
        if site.kind == "layer":
            return F.layer_norm(a, a.shape[1:], site.gamma, site.beta, site.eps)
        if site.kind == "rms":
            n = F.rms_norm(a, a.shape[1:], site.gamma, site.eps)
            return n if site.beta is None else n + site.beta
        if site.kind == "batch":
            mean = a.mean(0)
            var = a.var(0, unbiased=False)
            site.saved.append((mean.detach(), torch.rsqrt(var.detach() + site.eps)))
            n = (a - mean) * torch.rsqrt(var + site.eps) * site.gamma
            return n if site.beta is None else n + site.beta
        s = min(t, site.scale.shape[0] - 1)
        return a * site.scale[s] + site.shift[s]

    H = h0.shape[1]
    h, c, outs = h0, c0, []
    for t in range(xin.shape[0]):
        z = xin[t] + norm(hh, h @ w_hh.t(), t)
        i, f, o = torch.sigmoid(z[:, : 3 * H]).chunk(3, 1)
        g = torch.tanh(z[:, 3 * H :])
        c = f * c + i * g
        h = o * torch.tanh(norm(cc, c, t))
        outs.append(h)
    return torch.stack(outs), h, c


# --- the layer ---------------------------------------------------------------------------------


class NormLSTMLayer(nn.Module):
    """One LSTM layer, time-major: (T, B, E) -> (T, B, H), with ``cell`` normalization."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        cell: str = "layer",
        max_steps: int = 100,
        eps: float = 1e-5,
        bn_momentum: float = 0.1,
        bn_gamma_init: float = BN_GAMMA_INIT,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; allowed: {', '.join(CELLS)}")
        self.input_size, self.hidden_size, self.cell = input_size, hidden_size, cell
        self.eps, self.bn_momentum, self.bn_gamma_init = eps, bn_momentum, bn_gamma_init
        G = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        self.bias = nn.Parameter(torch.empty(G))
        if cell == "none":
            for name in ("gamma_ih", "gamma_hh", "gamma_c", "beta_c"):
                self.register_parameter(name, None)
        else:
            self.gamma_ih = nn.Parameter(torch.empty(G))
            self.gamma_hh = nn.Parameter(torch.empty(G))
            self.gamma_c = nn.Parameter(torch.empty(hidden_size))
            self.beta_c = None if cell == "rms" else nn.Parameter(torch.empty(hidden_size))
        if cell in BATCH_CELLS:
            self.max_steps = max_steps if cell == "batch_per_step" else 1
            for site, width in (("ih", G), ("hh", G), ("c", hidden_size)):
                self.register_buffer(f"running_mean_{site}", torch.zeros(self.max_steps, width))
                self.register_buffer(f"running_var_{site}", torch.ones(self.max_steps, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.LSTM's initialization for the weights and biases, so every cell starts alike.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(p, -bound, bound)
        if self.cell != "none":
            gain = self.bn_gamma_init if self.cell in BATCH_CELLS else 1.0
            for p in (self.gamma_ih, self.gamma_hh, self.gamma_c):
                nn.init.constant_(p, gain)
            if self.beta_c is not None:
                nn.init.zeros_(self.beta_c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, cell={self.cell}"

    @torch.no_grad()
    def load_nn_lstm(self, lstm: nn.LSTM, layer: int = 0) -> None:
        """Copy the weights of one layer of ``nn.LSTM`` (gate order i, f, g, o; two biases)."""

        def reorder(w: Tensor) -> Tensor:
            i, f, g, o = w.chunk(4, 0)
            return torch.cat([i, f, o, g])

        self.weight_ih.copy_(reorder(getattr(lstm, f"weight_ih_l{layer}")))
        self.weight_hh.copy_(reorder(getattr(lstm, f"weight_hh_l{layer}")))
        self.bias.copy_(
            reorder(getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
        )

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        T, B, _ = x.shape
        if state is None:
            h0 = c0 = x.new_zeros(B, self.hidden_size)
        else:
            h0, c0 = state
        batch_stats = self.cell in BATCH_CELLS and self.training
        if batch_stats and self.max_steps < T and self.cell == "batch_per_step":
            raise ValueError(
                f"a training window of {T} steps exceeds max_steps={self.max_steps}, the number "
                "of per-step statistics this layer keeps"
            )
        xin = self._input_term(x, T)
        hh, cc = self._sites(T)
        params = (self.weight_hh, self.gamma_hh, self.gamma_c, self.beta_c)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (xin, h0, c0, *params)
        )
        if not needs_grad:
            out, _, cs, _, _ = _forward_loop(xin, h0, c0, self.weight_hh, hh, cc)
            h_t, c_t = out[-1], cs[-1]
        elif hh.kind == "population":  # gradients through population statistics: rare
            out, h_t, c_t = _eager_recurrence(xin, h0, c0, self.weight_hh, hh, cc)
        else:
            out, h_t, c_t = _FastRecurrence.apply(xin, h0, c0, *params, (hh, cc))
        if batch_stats:
            self._update_running(hh, "hh", B)
            self._update_running(cc, "c", B)
        return out, (h_t, c_t)

    def _gamma(self, name: str) -> Tensor | None:
        return None if self.cell == "none" else getattr(self, name)

    def _input_term(self, x: Tensor, T: int) -> Tensor:
        """N_x(W_x x_t) + b for all steps at once, (T, B, 4H)."""
        G = 4 * self.hidden_size
        if self.cell == "none":
            return F.linear(x, self.weight_ih, self.bias)
        a = F.linear(x, self.weight_ih)
        if self.cell == "layer":
            return F.layer_norm(a, (G,), self.gamma_ih, self.bias, self.eps)
        if self.cell == "rms":
            return F.rms_norm(a, (G,), self.gamma_ih, self.eps) + self.bias
        if self.training:  # batch statistics of each step: over the B samples, per unit
            mean = a.mean(1, keepdim=True)
            var = a.var(1, unbiased=False, keepdim=True)
            with torch.no_grad():
                self._blend(
                    "ih", mean.squeeze(1), var.squeeze(1) * (a.shape[1] / max(a.shape[1] - 1, 1))
                )
            return (a - mean) * torch.rsqrt(var + self.eps) * self.gamma_ih + self.bias
        mean, var = self._population("ih", T)
        return (a - mean.unsqueeze(1)) * torch.rsqrt(
            var.unsqueeze(1) + self.eps
        ) * self.gamma_ih + self.bias

    def _population(self, site: str, T: int) -> tuple[Tensor, Tensor]:
        """Population (mean, var) for steps 0..T-1, (T, F): the last kept step beyond max_steps."""
        mean, var = getattr(self, f"running_mean_{site}"), getattr(self, f"running_var_{site}")
        steps = torch.arange(T, device=mean.device).clamp_max(self.max_steps - 1)
        return mean[steps], var[steps]

    def _sites(self, T: int) -> tuple[_Site, _Site]:
        if self.cell == "none":
            return _Site("none"), _Site("none")
        if self.cell in ("layer", "rms"):
            return (
                _Site(self.cell, self.gamma_hh, None, self.eps),
                _Site(self.cell, self.gamma_c, self.beta_c, self.eps),
            )
        if self.training:
            return (
                _Site("batch", self.gamma_hh, None, self.eps),
                _Site("batch", self.gamma_c, self.beta_c, self.eps),
            )
        sites = []
        for name, gamma, beta in (("hh", self.gamma_hh, None), ("c", self.gamma_c, self.beta_c)):
            mean = getattr(self, f"running_mean_{name}")
            scale = gamma * torch.rsqrt(getattr(self, f"running_var_{name}") + self.eps)
            shift = -mean * scale if beta is None else beta - mean * scale
            sites.append(_Site("population", gamma, beta, self.eps, scale, shift))
        return sites[0], sites[1]

    @torch.no_grad()
    def _update_running(self, site: _Site, name: str, batch: int) -> None:
        mean, var = site.batch_stats(batch)
        self._blend(name, mean, var)

    @torch.no_grad()
    def _blend(self, name: str, mean: Tensor, var: Tensor) -> None:
        """Move the population statistics toward this window's per-step (mean, var), (T, F)."""
        running_mean = getattr(self, f"running_mean_{name}")
        running_var = getattr(self, f"running_var_{name}")
        m = self.bn_momentum
        if self.cell == "batch_per_step":
            n = mean.shape[0]
            running_mean[:n].lerp_(mean, m)
            running_var[:n].lerp_(var, m)
        else:  # one set for all steps: the window's average over steps
            running_mean.lerp_(mean.mean(0, keepdim=True), m)
            running_var.lerp_(var.mean(0, keepdim=True), m)


class NormLSTM(nn.Module):
    """A stack of ``NormLSTMLayer`` with dropout between layers; state as ``nn.LSTM``'s:
    (h, c), each (num_layers, B, H)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        cell: str,
        dropout: float = 0.0,
        **layer_kwargs: object,
    ) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.layers = nn.ModuleList(
            NormLSTMLayer(input_size if k == 0 else hidden_size, hidden_size, cell, **layer_kwargs)
            for k in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        hs, cs = [], []
        for k, layer in enumerate(self.layers):
            if k:
                x = self.dropout(x)
            x, (h, c) = layer(x, None if state is None else (state[0][k], state[1][k]))
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))
