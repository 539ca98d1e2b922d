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

Speed (the loop over time steps is inherently sequential): the input projection W_x x_t of all
T steps is one matmul before the loop. Each step is then one matmul h_{t-1} W_h^T (oneDNN, with
W_h packed once per window, on the CPU) and one call of a fused C kernel that does the rest of
the step, norms included (``normexp.models.lstm_kernel``), writing into (T, B, ·) buffers
allocated once per window; no autograd graph is built inside the loop. A hand-written backward
runs the loop in reverse the same way (one kernel call and one matmul per step; γ, β gradients
accumulated by the kernel) and forms the gradient of W_h for all steps in one matmul after the
loop. Where the kernel does not apply (no C compiler, float64, CUDA) the same steps run as
PyTorch ops (``_forward_loop`` / ``_FastRecurrence.backward``, with PyTorch's fused norm
kernels). ``_eager_recurrence`` is the computation written plainly with autograd: the
specification both paths are tested against, and the fallback for the rare case that needs
gradients through population statistics.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.models import lstm_kernel
from normexp.norms.recurrent import BN_GAMMA_INIT
from normexp.norms.registry import cell_norm, norm_spec, norms_for

# The cells and what each normalizes are registered in normexp.norms.recurrent; these names are
# read from there (and kept for the modules that import them from here).
CELLS = tuple(norms_for("recurrent"))
BATCH_CELLS = tuple(c for c in CELLS if cell_norm(c).site == "batch")
__all__ = ["BATCH_CELLS", "BN_GAMMA_INIT", "CELLS", "NormLSTM", "NormLSTMLayer"]

_aten = torch.ops.aten


# --- the per-step matmul ----------------------------------------------------------------------


def _linear_fn(weight: Tensor, batch: int):  # noqa: ANN202
    """``x -> x @ weight.T`` for many small x of ``batch`` rows.

    On the CPU in float32 the weight is prepacked once for oneDNN's matmul, which is what makes
    the fused ``nn.LSTM`` fast there (about twice MKL's ``mm`` at these shapes); elsewhere, and
    if that op is missing from the build, it is a plain ``mm``.
    """
    if _onednn(weight):
        try:
            packed = _ONEDNN_PACK(weight, batch)
        except RuntimeError:
            pass
        else:
            return lambda x: _ONEDNN_LINEAR(x, packed, None, "none", [], "")
    w_t = weight.t()
    return lambda x: torch.mm(x, w_t)


def _weight_grad(da: Tensor, h_prev: Tensor) -> Tensor:
    """da^T @ h_prev for (N, G) and (N, H): the gradient of W_h over all steps at once; on the
    CPU in float32 by oneDNN (twice MKL's speed at these shapes, transposes included)."""
    if _onednn(da):
        return _ONEDNN_LINEAR(da.t().contiguous(), h_prev.t().contiguous(), None, "none", [], "")
    return torch.mm(da.t(), h_prev)


def _onednn(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN_LINEAR is not None


def _project(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """W_x x_t (+ b) for all T steps of a (T, B, E) input in one matmul (oneDNN on the CPU)."""
    if not _onednn(x):
        return F.linear(x, weight, bias)
    T, B, E = x.shape
    out = _ONEDNN_LINEAR(x.reshape(T * B, E), weight.contiguous(), None, "none", [], "")
    out = out.view(T, B, -1)
    return out if bias is None else out + bias


def _projection_grads(x, weight, d_ax, need):  # noqa: ANN001, ANN202
    """Gradients of x, W_x and the bias of ``_project`` from the gradient of its output."""
    T, B, E = x.shape
    x2, d2 = x.reshape(T * B, E), d_ax.reshape(T * B, -1)
    dx = dw = db = None
    if need[0]:
        if _onednn(x):
            dx = _ONEDNN_LINEAR(d2.contiguous(), weight.t().contiguous(), None, "none", [], "")
        else:
            dx = torch.mm(d2, weight)
        dx = dx.view(T, B, E)
    if need[1]:
        dw = _weight_grad(d2, x2)
    if need[2]:
        db = d2.sum(0)
    return dx, dw, db


def _onednn_ops():  # noqa: ANN202
    try:
        if torch.backends.mkldnn.is_available():
            return (
                torch.ops.mkldnn._linear_pointwise.default,
                torch.ops.mkldnn._reorder_linear_weight.default,
            )
    except (AttributeError, RuntimeError):
        pass
    return None, None


_ONEDNN_LINEAR, _ONEDNN_PACK = _onednn_ops()


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
    kernel_stats: Tensor | None = None  # the C kernel's (T, ·) statistics, instead of saved

    def pointers(self, t: int) -> tuple:
        """(kind code, γ, β, scale, shift) as the C kernel takes them at step t."""
        scale = shift = None
        if self.kind == "population":
            s = min(t, self.scale.shape[0] - 1)
            scale, shift = self.scale[s].data_ptr(), self.shift[s].data_ptr()
        return (
            lstm_kernel.KINDS[self.kind],
            _ptr(self.gamma),
            _ptr(self.beta),
            scale,
            shift,
        )

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

    def backward(
        self, dn: Tensor, a: Tensor, t: int, grads: tuple[bool, bool]
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Gradients w.r.t. the site's input ``a`` and, where ``grads`` asks, its γ and β."""
        mask = [True, *grads]
        if self.kind == "layer":
            mean, rstd = self.saved[t]
            return _aten.native_layer_norm_backward(
                dn, a, [a.shape[1]], mean, rstd, self.gamma, self.beta, mask
            )
        if self.kind == "batch":
            mean, invstd = self.saved[t]
            return _aten.native_batch_norm_backward(
                dn, a, self.gamma, None, None, mean, invstd, True, self.eps, mask
            )
        if self.kind == "rms":  # PyTorch has no CPU kernel for its backward (2.x): written out
            rstd = self.saved[t][0]
            x_hat = a * rstd
            d_gamma = (dn * x_hat).sum(0) if grads[0] else None
            d_beta = dn.sum(0) if grads[1] else None
            g = dn * self.gamma
            proj = (g * x_hat).mean(1, keepdim=True)
            return g.sub_(x_hat.mul_(proj)).mul_(rstd), d_gamma, d_beta
        raise AssertionError(self.kind)  # population statistics take the eager path

    def batch_stats(self, batch: int, width: int) -> tuple[Tensor, Tensor]:
        """Per-step (mean, unbiased variance), each (T, width), of the batches seen (kind
        batch)."""
        if self.kernel_stats is not None:
            mean, invstd = self.kernel_stats[:, :width], self.kernel_stats[:, width : 2 * width]
        else:
            mean = torch.stack([m for m, _ in self.saved])
            invstd = torch.stack([s for _, s in self.saved])
        var = (invstd.pow(-2) - self.eps).clamp_min(0.0)
        return mean, var * (batch / max(batch - 1, 1))


# --- the recurrence: forward loop, hand-written backward ---------------------------------------


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _kernel_for(ax: Tensor):  # noqa: ANN202
    """The fused C step kernel when it applies here (float32 on the CPU), else None."""
    if ax.dtype != torch.float32 or ax.device.type != "cpu":
        return None
    return lstm_kernel.load()


def _forward_loop(ax: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, sites: tuple):
    """Run the recurrence; return (out, acts, cs, tms, a_hh).

    ``ax`` holds W_x x_t for every step, or N_x(W_x x_t) + b already when the input site is the
    identity. The (T, B, ·) buffers: ``acts`` holds i, f, o, g after their nonlinearity, ``cs``
    the cell states, ``tms`` tanh(N_c(c_t)); ``a_hh`` is the list of the recurrent terms
    W_h h_{t-1} (None when N_h is the identity).
    """
    kernel = _kernel_for(ax)
    if kernel is not None:
        return _forward_loop_kernel(kernel, ax, h0, c0, w_hh, sites)
    xs, hh, cc = sites
    T, B, G = ax.shape
    H = G // 4
    recurrent = _linear_fn(w_hh, B)
    out = ax.new_empty(T, B, H)
    cs = ax.new_empty(T, B, H)
    tms = ax.new_empty(T, B, H)
    acts = ax.new_empty(T, B, G)
    a_hh = None if hh.kind == "none" else []
    h, c = h0, c0
    for t in range(T):
        z = acts[t]
        x_term = ax[t] if xs.kind == "none" else xs.forward(ax[t], t)
        if a_hh is None:
            torch.add(x_term, recurrent(h), out=z)
        else:
            a = recurrent(h)
            a_hh.append(a)
            torch.add(x_term, hh.forward(a, t), out=z)
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


def _steps(x: Tensor) -> tuple[int, int]:
    """(address of step 0, bytes per step) of a contiguous (T, ...) tensor."""
    return x.data_ptr(), x[0].numel() * x.element_size()


def _forward_loop_kernel(kernel, ax, h0, c0, w_hh, sites):  # noqa: ANN001, ANN202
    """``_forward_loop`` with each step's element-wise work in one call of the C kernel;
    ``a_hh`` is then the list of every step's recurrent term, and each site's statistics are in
    its ``kernel_stats``. Addresses are computed, not looked up, to keep the loop thin."""
    T, B, G = ax.shape
    H = G // 4
    ax, h, c0 = ax.contiguous(), h0.contiguous(), c0.contiguous()
    recurrent = _linear_fn(w_hh, B)
    out, cs, tms = (ax.new_empty(T, B, H) for _ in range(3))
    acts = ax.new_empty(T, B, G)
    for site, width in zip(sites, (G, G, H), strict=True):
        site.kernel_stats = ax.new_empty(T, 2 * max(width, B))
    xs, hh, cc = sites
    (ax0, ax_s), (z0, z_s), (c_0, c_s), (tm0, tm_s), (h_0, h_s) = map(
        _steps, (ax, acts, cs, tms, out)
    )
    stats = [_steps(site.kernel_stats) for site in sites]
    px, ph, pc = (site.pointers(0) for site in sites)
    population = any(site.kind == "population" for site in sites)
    outs = out.unbind(0)
    c_prev, a_hh = c0.data_ptr(), []
    for t in range(T):
        a = recurrent(h)
        a_hh.append(a)
        if population and t:  # per-step statistics, the last kept step's beyond it
            px, ph, pc = xs.pointers(t), hh.pointers(t), cc.pointers(t)
        kernel.lstm_fwd_step(
            B, H, ax0 + t * ax_s, a.data_ptr(), c_prev,
            *px, stats[0][0] + t * stats[0][1],
            ph[0], ph[1], ph[3], ph[4], stats[1][0] + t * stats[1][1],
            *pc, stats[2][0] + t * stats[2][1],
            xs.eps, z0 + t * z_s, c_0 + t * c_s, tm0 + t * tm_s, h_0 + t * h_s,
        )  # fmt: skip
        h, c_prev = outs[t], c_0 + t * c_s
    return out, acts, cs, tms, a_hh


def _backward_kernel(ctx, kernel, need, d_out, d_hT, d_cT):  # noqa: ANN001, ANN202
    """The backward loop with each step's element-wise work in one call of the C kernel.
    Returns the gradients of (ax, h0, c0, W_h, γ_x, β_x, γ_h, γ_c, β_c); ``need`` is
    ``needs_input_grad`` from ax's slot on."""
    xs, hh, cc = ctx.sites
    ax, h0, c0, w_hh, out, acts, cs, tms = ctx.saved_tensors[2:]
    ax, a_hh = ax.contiguous(), ctx.a_hh
    T, B, G = acts.shape
    H = G // 4
    d_out = d_out.contiguous()
    d_ax, da_all = acts.new_empty(T, B, G), acts.new_empty(T, B, G)
    dz, dm, scratch = acts.new_empty(B, G), acts.new_empty(B, H), acts.new_empty(2 * G)
    names = ("g_x", "b_x", "g_hh", "g_c", "b_c")
    grad = {
        k: acts.new_zeros(H if k in ("g_c", "b_c") else G) if need[i] else None
        for i, k in zip(range(4, 9), names, strict=True)
    }
    site_x = (lstm_kernel.KINDS[xs.kind], _ptr(xs.gamma))
    site_h = (lstm_kernel.KINDS[hh.kind], _ptr(hh.gamma))
    site_c = (lstm_kernel.KINDS[cc.kind], _ptr(cc.gamma))
    g_x, b_x, g_hh, g_c, b_c = (_ptr(grad[k]) for k in names)
    (ax0, ax_s), (z0, z_s), (c_0, c_s), (tm0, tm_s), (dout0, dout_s) = map(
        _steps, (ax, acts, cs, tms, d_out)
    )
    (dax0, dax_s), (da0, da_s) = _steps(d_ax), _steps(da_all)
    stats = [_steps(site.kernel_stats) for site in (xs, hh, cc)]
    fixed = (dm.data_ptr(), dz.data_ptr(), scratch.data_ptr())
    da_steps = da_all.unbind(0)
    dh = d_hT.contiguous()
    dc_carry = d_cT.clone().contiguous()
    c0 = c0.contiguous()
    back = _linear_fn(w_hh.t().contiguous(), B)  # dh_{t-1} = da_t @ W_h
    for t in range(T - 1, -1, -1):
        kernel.lstm_bwd_step(
            B, H, dh.data_ptr(), dout0 + t * dout_s, dc_carry.data_ptr(), z0 + t * z_s,
            c_0 + t * c_s, c_0 + (t - 1) * c_s if t else c0.data_ptr(), tm0 + t * tm_s,
            ax0 + t * ax_s, a_hh[t].data_ptr(),
            *site_x, stats[0][0] + t * stats[0][1], g_x, b_x,
            *site_h, stats[1][0] + t * stats[1][1], g_hh,
            *site_c, stats[2][0] + t * stats[2][1], g_c, b_c,
            *fixed, dax0 + t * dax_s, da0 + t * da_s,
        )  # fmt: skip
        dh = back(da_steps[t])
    d_w_hh = None
    if need[3]:
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])
        d_w_hh = _weight_grad(da_all.view(-1, G), h_prev.view(-1, H))
    return d_ax, dh, dc_carry, d_w_hh, *(grad[k] for k in names)


def _sum_steps(grads: list) -> Tensor | None:
    return None if not grads or grads[0] is None else torch.stack(grads).sum(0)


def _gates_backward(dz: Tensor, z: Tensor, dc: Tensor, c_prev: Tensor, dc_carry: Tensor) -> None:
    """One step of ``_FastRecurrence._backward_ops``, in place: fill dz's i, f and g slots from
    dc (its o slot is already filled), take all four through their nonlinearity, and set
    ``dc_carry`` to dc * f, the gradient reaching c_{t-1}."""
    H = z.shape[1] // 4
    i, f, g = z[:, :H], z[:, H : 2 * H], z[:, 3 * H :]
    torch.mul(dc, g, out=dz[:, :H])
    torch.mul(dc, c_prev, out=dz[:, H : 2 * H])
    torch.mul(dc, i, out=dz[:, 3 * H :])
    torch.mul(dc, f, out=dc_carry)
    _aten.sigmoid_backward.grad_input(dz[:, : 3 * H], z[:, : 3 * H], grad_input=dz[:, : 3 * H])
    _aten.tanh_backward.grad_input(dz[:, 3 * H :], g, grad_input=dz[:, 3 * H :])


class _FastRecurrence(torch.autograd.Function):
    """The loop with a hand-written backward (sites of kind none/layer/rms/batch)."""

    @staticmethod
    def forward(ctx, x, w_ih, b_in, h0, c0, w_hh, g_x, b_x, g_hh, g_c, b_c, sites):
        ax = _project(x, w_ih, b_in)
        out, acts, cs, tms, a_hh = _forward_loop(ax, h0, c0, w_hh, sites)
        ctx.sites, ctx.a_hh, ctx.kernel = sites, a_hh, _kernel_for(ax)
        ctx.save_for_backward(x, w_ih, ax, h0, c0, w_hh, out, acts, cs, tms)
        # Copies: the final state is carried into the next window, the buffers stay saved.
        return out, out[-1].clone(), cs[-1].clone()

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT):  # noqa: ANN001, ANN205
        need = ctx.needs_input_grad[2:]  # from b_in on: the slots of (ax, h0, c0, W_h, ...)
        if ctx.kernel is not None:
            grads = _backward_kernel(ctx, ctx.kernel, need, d_out, d_hT, d_cT)
        else:
            grads = _FastRecurrence._backward_ops(ctx, need, d_out, d_hT, d_cT)
        x, w_ih = ctx.saved_tensors[:2]
        d_x, d_w_ih, d_b_in = _projection_grads(x, w_ih, grads[0], ctx.needs_input_grad[:3])
        return (d_x, d_w_ih, d_b_in, *grads[1:], None)

    @staticmethod
    def _backward_ops(ctx, need, d_out, d_hT, d_cT):  # noqa: ANN001, ANN205
        """The backward loop as PyTorch ops: gradients of (ax, h0, c0, W_h, γ_x, β_x, γ_h, γ_c,
        β_c)."""
        xs, hh, cc = ctx.sites
        ax, h0, c0, w_hh, out, acts, cs, tms = ctx.saved_tensors[2:]
        a_hh = ctx.a_hh
        T, B, G = acts.shape
        H = G // 4
        dz_all = acts.new_empty(T, B, G)
        # Per-step gradients w.r.t. the sites' inputs and parameters, combined after the loop.
        dax_steps: list[Tensor] = []
        da_steps: list[Tensor] = []
        d_params: dict[str, list] = {k: [] for k in ("g_x", "b_x", "g_hh", "g_c", "b_c")}
        dh = d_out[-1].clone()
        dh += d_hT
        dc_carry = d_cT.clone()
        back = _linear_fn(w_hh.t().contiguous(), B)  # dh_{t-1} = da_t @ W_h
        for t in range(T - 1, -1, -1):
            z, dz = acts[t], dz_all[t]
            o = z[:, 2 * H : 3 * H]
            torch.mul(dh, tms[t], out=dz[:, 2 * H : 3 * H])
            dm = _aten.tanh_backward(dh * o, tms[t])
            if cc.kind == "none":
                dc = dm
            else:
                dc, d_g, d_b = cc.backward(dm, cs[t], t, (need[7], need[8]))
                d_params["g_c"].append(d_g)
                d_params["b_c"].append(d_b)
            dc += dc_carry
            _gates_backward(dz, z, dc, cs[t - 1] if t else c0, dc_carry)
            if xs.kind != "none":
                dax, d_g, d_b = xs.backward(dz, ax[t], t, (need[4], need[5]))
                dax_steps.append(dax)
                d_params["g_x"].append(d_g)
                d_params["b_x"].append(d_b)
            if a_hh is None:
                da = dz
            else:
                da, d_g, _ = hh.backward(dz, a_hh[t], t, (need[6], False))
                da_steps.append(da)
                d_params["g_hh"].append(d_g)
            dh = back(da)
            if t:
                dh += d_out[t - 1]
        d_ax = dz_all if xs.kind == "none" else torch.stack(dax_steps[::-1])
        # The weight gradient of W_h for all steps at once, in one matmul.
        da_all = dz_all if a_hh is None else torch.stack(da_steps[::-1])
        d_w_hh = None
        if need[3]:
            d_w_hh = torch.mm(da_all[0].t(), h0)
            if T > 1:
                d_w_hh.addmm_(da_all[1:].view(-1, G).t(), out[:-1].view(-1, H))
        sums = {k: _sum_steps(v) for k, v in d_params.items()}
        return (
            d_ax, dh, dc_carry, d_w_hh,
            sums["g_x"], sums["b_x"], sums["g_hh"], sums["g_c"], sums["b_c"],
        )  # fmt: skip


def _eager_recurrence(ax, h0, c0, w_hh, sites: tuple):  # noqa: ANN001, ANN201
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

    xs, hh, cc = sites
    H = h0.shape[1]
    h, c, outs = h0, c0, []
    for t in range(ax.shape[0]):
        z = norm(xs, ax[t], t) + norm(hh, h @ w_hh.t(), t)
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
        **norm_kwargs: float,
    ) -> None:
        """``norm_kwargs``: the cell norm's parameters (eps; momentum and gamma_init for the
        batch cells), their defaults from the registry (``normexp.norms.recurrent``)."""
        super().__init__()
        norm = cell_norm(cell)  # ValueError for a name that is not a cell
        unknown = set(norm_kwargs) - set(norm.defaults)
        if unknown:
            raise ValueError(f"not parameters of the {cell!r} cell: {', '.join(sorted(unknown))}")
        params = {**norm.defaults, **norm_kwargs}
        self.input_size, self.hidden_size, self.cell = input_size, hidden_size, cell
        self.site, self.per_step = norm.site, norm.per_step
        self.eps = params.get("eps")
        self.momentum, self.gamma_init = params.get("momentum"), params.get("gamma_init")
        G = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        self.bias = nn.Parameter(torch.empty(G))
        if self.site == "none":
            for name in ("gamma_ih", "gamma_hh", "gamma_c", "beta_c"):
                self.register_parameter(name, None)
        else:
            self.gamma_ih = nn.Parameter(torch.empty(G))
            self.gamma_hh = nn.Parameter(torch.empty(G))
            self.gamma_c = nn.Parameter(torch.empty(hidden_size))
            shift = norm_spec(cell).has_shift  # N_c's β
            self.beta_c = nn.Parameter(torch.empty(hidden_size)) if shift else None
        self.max_steps = max_steps if self.per_step else 1
        if self.site == "batch":
            for site, width in (("ih", G), ("hh", G), ("c", hidden_size)):
                self.register_buffer(f"running_mean_{site}", torch.zeros(self.max_steps, width))
                self.register_buffer(f"running_var_{site}", torch.ones(self.max_steps, width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.LSTM's initialization for the weights and biases, so every cell starts alike.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(p, -bound, bound)
        if self.site != "none":
            gain = self.gamma_init if self.site == "batch" else 1.0
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
        batch_stats = self.site == "batch" and self.training
        if batch_stats and self.max_steps < T and self.per_step:
            raise ValueError(
                f"a training window of {T} steps exceeds max_steps={self.max_steps}, the number "
                "of per-step statistics this layer keeps"
            )
        # W_x x_t for all steps in one matmul; with no input norm, the bias comes with it.
        b_in = self.bias if self.site == "none" else None  # else the bias is N_x's shift
        sites = self._sites()
        params = (
            self.weight_hh, self.gamma_ih, None if self.site == "none" else self.bias,
            self.gamma_hh, self.gamma_c, self.beta_c,
        )  # fmt: skip
        inputs = (x, self.weight_ih, b_in, h0, c0, *params)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in inputs
        )
        if not needs_grad:
            ax = _project(x, self.weight_ih, b_in)
            out, _, cs, _, _ = _forward_loop(ax, h0, c0, self.weight_hh, sites)
            h_t, c_t = out[-1], cs[-1]
        elif sites[1].kind == "population":  # gradients through population statistics: rare
            ax = F.linear(x, self.weight_ih, b_in)
            out, h_t, c_t = _eager_recurrence(ax, h0, c0, self.weight_hh, sites)
        else:
            out, h_t, c_t = _FastRecurrence.apply(*inputs, sites)
        if batch_stats:
            for site, name in zip(sites, ("ih", "hh", "c"), strict=True):
                self._update_running(site, name, B)
        return out, (h_t, c_t)

    def _sites(self) -> tuple[_Site, _Site, _Site]:
        """The input, recurrent and cell-state sites; the gate bias is the input site's β."""
        if self.site == "none":
            return _Site("none"), _Site("none"), _Site("none")
        specs = (
            ("ih", self.gamma_ih, self.bias),
            ("hh", self.gamma_hh, None),
            ("c", self.gamma_c, self.beta_c),
        )
        if self.site != "batch":  # layer, rms: per-sample statistics
            return tuple(_Site(self.site, g, b, self.eps) for _, g, b in specs)
        if self.training:
            return tuple(_Site("batch", g, b, self.eps) for _, g, b in specs)
        sites = []
        for name, gamma, beta in specs:
            mean = getattr(self, f"running_mean_{name}")
            scale = gamma * torch.rsqrt(getattr(self, f"running_var_{name}") + self.eps)
            shift = -mean * scale if beta is None else beta - mean * scale
            sites.append(_Site("population", gamma, beta, self.eps, scale, shift))
        return tuple(sites)

    @torch.no_grad()
    def _update_running(self, site: _Site, name: str, batch: int) -> None:
        """Move the population statistics toward this window's per-step batch statistics."""
        width = getattr(self, f"running_mean_{name}").shape[1]
        mean, var = site.batch_stats(batch, width)
        running_mean = getattr(self, f"running_mean_{name}")
        running_var = getattr(self, f"running_var_{name}")
        m = self.momentum
        if self.per_step:
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
