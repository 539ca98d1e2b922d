"""Training throughput (tokens/s, forward + backward) of each LSTM cell of ``normexp.models``,
against PyTorch's fused ``nn.LSTM`` and against a plain eager cell, measured side by side.

The plain eager reference is how one would first write these cells: a Python loop over time
steps in which each step projects x_t and h_{t-1} with ``nn.Linear``-style calls, normalizes
with the functional norms (BN with per-step running buffers updated by ``F.batch_norm``) and
lets autograd record every op; the outputs are stacked at the end.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.bench.timing import interleaved_median
from normexp.models.lstm_cells import BATCH_CELLS, CELLS, NormLSTMLayer

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


def _bn(layer: NormLSTMLayer, site: str, s: int, a: Tensor, gamma: Tensor, beta) -> Tensor:  # noqa: ANN001
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


def _train_step(forward, params: list[Tensor], x: Tensor):  # noqa: ANN001, ANN202
    def step() -> None:
        for p in params:
            p.grad = None
        forward(x).sum().backward()

    return step


def bench_rnn(
    hidden: int = 256,
    emb: int = 64,
    batch: int = 32,
    steps: int = 100,
    repeats: int = 7,
    cells: tuple[str, ...] = CELLS,
) -> list[dict]:
    """Rows of tokens/s of each cell vs fused nn.LSTM and vs the plain eager cell."""
    torch.manual_seed(0)
    x = torch.randn(steps, batch, emb)
    fused = nn.LSTM(emb, hidden)
    tokens = batch * steps
    rows = []
    for cell in cells:
        layer = NormLSTMLayer(emb, hidden, cell, max_steps=steps).train()
        params = list(layer.parameters())
        fns = {
            "ours": _train_step(lambda v, m=layer: m(v)[0], params, x),
            "fused": _train_step(lambda v: fused(v)[0], list(fused.parameters()), x),
            "eager": _train_step(lambda v, m=layer: eager_reference(m, v), params, x),
        }
        t = interleaved_median(fns, repeats=repeats, warmup=1)
        size = f"H={hidden} B={batch} T={steps}"
        for ref, target in (("fused", TARGET_VS_FUSED.get(cell)), ("eager", TARGET_VS_EAGER)):
            if ref == "eager" and cell == "none":
                target = None  # the plain cell is nn.LSTM's job; ours exists for parity tests
            ratio = t[ref] / t["ours"]  # throughput ratio, ours / reference
            rows.append(
                {
                    "bench": "lstm fwd+bwd",
                    "name": cell,
                    "reference": "nn.LSTM (fused)" if ref == "fused" else "eager cell",
                    "size": size,
                    "ours_ms": 1e3 * t["ours"],
                    "reference_ms": 1e3 * t[ref],
                    "ours_tokens_per_s": tokens / t["ours"],
                    "reference_tokens_per_s": tokens / t[ref],
                    "ratio": ratio,
                    "target": "-" if target is None else f">= {target}",
                    "meets_target": True if target is None else ratio >= target,
                }
            )
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    for r in bench_rnn():
        print(
            f"{r['name']:<15} vs {r['reference']:<16} ours {r['ours_tokens_per_s']:>8.0f} tok/s "
            f"ref {r['reference_tokens_per_s']:>8.0f} tok/s ratio {r['ratio']:.2f} {r['target']}"
        )


__all__ = ["BATCH_CELLS", "bench_rnn", "eager_reference"]
