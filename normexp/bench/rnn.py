"""Training throughput (tokens/s, forward + backward) of each LSTM cell of ``normexp.models``,
against PyTorch's fused ``nn.LSTM`` (oneDNN's LSTM on the CPU) and against a plain eager cell,
measured side by side, one thread.

The plain eager reference is how one would first write these cells: a Python loop over time
steps in which each step projects x_t and h_{t-1} with ``nn.Linear``-style calls, normalizes
with the functional norms (BN with per-step running buffers updated by ``F.batch_norm``) and
lets autograd record every op; the outputs are stacked at the end.

Where the fused C step kernel is built, each cell also runs with the kernel compiled the way it
was before its numerics were made portable (``-ffast-math -march=native``, same source with
libm's expf): the row's ratio is the throughput of the portable build over that one, the speed
cost of results that do not depend on the CPU.
"""

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.bench.timing import interleaved_median
from normexp.models import lstm_cells, lstm_kernel
from normexp.models.lstm_cells import CELLS, NormLSTMLayer

# The targets: the LN cell at >= 0.4x fused nn.LSTM; every custom cell >= 2x eager.
TARGET_VS_FUSED = {"layer": 0.4}
TARGET_VS_EAGER = 2.0


def eager_reference(layer: NormLSTMLayer, x: Tensor) -> Tensor:
    """The plain per-step autograd implementation of ``layer`` (training mode), (T, B, H)."""
    T, B, _ = x.shape
    H = layer.hidden_size
    h = c = x.new_zeros(B, H)
    cell, eps = layer.cell, layer.eps
    outs = []
    for t in range(T):
        a_x = F.linear(x[t], layer.weight_ih)
        a_h = F.linear(h, layer.weight_hh)
        if cell == "none":
            z = a_x + a_h + layer.bias
        elif cell == "layer":
            z = (
                F.layer_norm(a_x, (4 * H,), layer.gamma_ih, None, eps)
                + F.layer_norm(a_h, (4 * H,), layer.gamma_hh, None, eps)
                + layer.bias
            )
        elif cell == "rms":
            z = (
                F.rms_norm(a_x, (4 * H,), layer.gamma_ih, eps)
                + F.rms_norm(a_h, (4 * H,), layer.gamma_hh, eps)
                + layer.bias
            )
        else:
            s = min(t, layer.max_steps - 1)
            z = (
                _bn(layer, "ih", s, a_x, layer.gamma_ih, None)
                + _bn(layer, "hh", s, a_h, layer.gamma_hh, None)
                + layer.bias
            )
        i, f, g, o = z.chunk(4, 1)  # the eager cell keeps nn.LSTM's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if cell == "none":
            m = c
        elif cell == "layer":
            m = F.layer_norm(c, (H,), layer.gamma_c, layer.beta_c, eps)
        elif cell == "rms":
            m = F.rms_norm(c, (H,), layer.gamma_c, eps)
        else:
            m = _bn(layer, "c", min(t, layer.max_steps - 1), c, layer.gamma_c, layer.beta_c)
        h = torch.sigmoid(o) * torch.tanh(m)
        outs.append(h)
    return torch.stack(outs)


def _bn(layer: NormLSTMLayer, site: str, s: int, a: Tensor, gamma: Tensor, beta) -> Tensor:
    return F.batch_norm(
        a,
        getattr(layer, f"running_mean_{site}")[s],
        getattr(layer, f"running_var_{site}")[s],
        gamma,
        beta,
        training=True,
        momentum=layer.bn_momentum,
        eps=layer.eps,
    )


def _with_kernel(kernel, forward):  # noqa: ANN001, ANN202
    """``forward`` with the LSTM steps run by ``kernel``; the autograd Function keeps the
    kernel for its backward."""

    def run(x: Tensor) -> Tensor:
        saved = lstm_cells._kernel_for
        lstm_cells._kernel_for = lambda ax: kernel
        try:
            return forward(x)
        finally:
            lstm_cells._kernel_for = saved

    return run


def _train_step(forward, params: list[Tensor], x: Tensor):  # noqa: ANN001, ANN202
    def step() -> None:
        for p in params:
            p.grad = None
        forward(x).sum().backward()

    return step


# (hidden, emb, batch, window): the quick profile's character-level LSTM, and a larger one.
SIZES = ((128, 64, 32, 50), (256, 64, 64, 100))


def bench_rnn(
    sizes: tuple[tuple[int, int, int, int], ...] = SIZES,
    repeats: int = 9,
    cells: tuple[str, ...] = CELLS,
) -> list[dict]:
    """Rows of training tokens/s of each cell vs fused nn.LSTM, vs the plain eager cell and,
    where a compiler is, vs the fast-math build of the step kernel."""
    torch.manual_seed(0)
    rows = []
    fast_math = lstm_kernel.build(lstm_kernel.FAST_MATH_FLAGS) if lstm_kernel.load() else None
    refs = {"fused": "nn.LSTM (fused)", "eager": "eager cell", "fast_math": "-ffast-math build"}
    for hidden, emb, batch, steps in sizes:
        x = torch.randn(steps, batch, emb)
        fused = nn.LSTM(emb, hidden)
        tokens = batch * steps
        size = f"H={hidden} B={batch} T={steps}"
        for cell in cells:
            layer = NormLSTMLayer(emb, hidden, cell, max_steps=steps).train()
            params = list(layer.parameters())
            fns = {
                "ours": _train_step(lambda v, m=layer: m(v)[0], params, x),
                "fused": _train_step(lambda v, f=fused: f(v)[0], list(fused.parameters()), x),
                "eager": _train_step(lambda v, m=layer: eager_reference(m, v), params, x),
            }
            if fast_math is not None:
                forward = _with_kernel(fast_math, lambda v, m=layer: m(v)[0])
                fns["fast_math"] = _train_step(forward, params, x)
            t = interleaved_median(fns, repeats, warmup=2, clock=time.process_time)
            for ref in [name for name in fns if name != "ours"]:
                target = {"fused": TARGET_VS_FUSED.get(cell), "eager": TARGET_VS_EAGER}.get(ref)
                if ref == "eager" and cell == "none":
                    target = None  # the model runs nn.LSTM for it; ours serves the parity tests
                ratio = t[ref] / t["ours"]  # throughput ratio, ours / reference
                rows.append(
                    {
                        "bench": "lstm tokens/s",
                        "name": f"{cell} {size}",
                        "reference": refs[ref],
                        "ours": f"{tokens / t['ours']:,.0f} tok/s",
                        "reference_value": f"{tokens / t[ref]:,.0f} tok/s",
                        "ours_tokens_per_s": tokens / t["ours"],
                        "reference_tokens_per_s": tokens / t[ref],
                        "ratio": ratio,
                        "target": "-" if target is None else f">= {target}",
                        "meets_target": True if target is None else ratio >= target,
                        "fused_kernel": lstm_kernel.load() is not None,
                    }
                )
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    for r in bench_rnn():
        print(
            f"{r['name']:<32} vs {r['reference']:<16} {r['ours']:>14} {r['reference_value']:>14} "
            f"ratio {r['ratio']:.2f} {r['target']}"
        )
