"""LSTM cells and the language model: parity with nn.LSTM, the norms as written in the papers,
the hand-written backward against autograd, per-step BN statistics, config refusals."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normexp.errors import ConfigError
from normexp.models import lstm_cells, lstm_kernel
from normexp.models.lstm import LSTMLanguageModel, build_language_model, check_lstm
from normexp.models.lstm_cells import (
    BATCH_CELLS,
    CELLS,
    NormLSTM,
    NormLSTMLayer,
    _eager_recurrence,
    _FastRecurrence,
    _linear_fn,
)

T, B, E, H = 7, 5, 3, 4


@pytest.fixture(params=["kernel", "torch ops"])
def step_path(request, monkeypatch) -> str:
    """Run the float32 CPU steps with the fused C kernel, or with PyTorch ops."""
    if request.param == "kernel" and lstm_kernel.load() is None:
        pytest.skip("no C compiler: the LSTM kernel is not built here")
    if request.param == "torch ops":
        monkeypatch.setattr(lstm_cells, "_kernel_for", lambda ax: None)
    return request.param


def perturbed(layer: nn.Module, scale: float = 0.3, seed: int = 1) -> nn.Module:
    """Every parameter moved off its initial value, so γ ≠ 1, β ≠ 0 are exercised too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


# --- parity with nn.LSTM (benchmarks/fastrnns style) ---------------------------------------


@pytest.mark.parametrize("layers", [1, 2])
def test_unnormalized_cell_matches_nn_lstm_given_the_same_weights(layers):
    torch.manual_seed(0)
    ref = nn.LSTM(E, H, layers)
    ours = NormLSTM(E, H, layers, "none")
    for k, layer in enumerate(ours.layers):
        layer.load_nn_lstm(ref, k)
    x = torch.randn(T, B, E, requires_grad=True)
    state = (torch.randn(layers, B, H), torch.randn(layers, B, H))
    out_ref, (h_ref, c_ref) = ref(x, state)
    out, (h, c) = ours(x, state)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-5, rtol=0)
    (g_ref,) = torch.autograd.grad((out_ref * out_ref).sum() + h_ref.sum(), x)
    (g,) = torch.autograd.grad((out * out).sum() + h.sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=0)


def test_unnormalized_weight_gradients_match_nn_lstm():
    torch.manual_seed(0)
    ref = nn.LSTM(E, H)
    ours = NormLSTMLayer(E, H, "none")
    ours.load_nn_lstm(ref)
    x = torch.randn(T, B, E)
    ref(x)[0].pow(2).sum().backward()
    ours(x)[0].pow(2).sum().backward()

    def reorder(w: torch.Tensor) -> torch.Tensor:  # nn.LSTM's i, f, g, o -> ours i, f, o, g
        i, f, g, o = w.chunk(4, 0)
        return torch.cat([i, f, o, g])

    torch.testing.assert_close(
        ours.weight_hh.grad, reorder(ref.weight_hh_l0.grad), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        ours.weight_ih.grad, reorder(ref.weight_ih_l0.grad), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(ours.bias.grad, reorder(ref.bias_hh_l0.grad), atol=1e-5, rtol=0)


# --- the LN cell as written out (Ba et al. 2016) --------------------------------------------


def layer_norm_lstm_reference(layer: NormLSTMLayer, x, h, c):  # noqa: ANN001, ANN201
    """LN-LSTM by hand: statistics over the 4H pre-activations of W_x x and of W_h h separately,
    and over the H cell units; gates i, f, o, g."""

    def ln(a, gamma, beta):  # noqa: ANN001, ANN202
        mu = a.mean(1, keepdim=True)
        var = ((a - mu) ** 2).mean(1, keepdim=True)
        out = (a - mu) / torch.sqrt(var + layer.eps) * gamma
        return out if beta is None else out + beta

    outs = []
    for t in range(x.shape[0]):
        z = (
            ln(x[t] @ layer.weight_ih.T, layer.gamma_ih, None)
            + ln(h @ layer.weight_hh.T, layer.gamma_hh, None)
            + layer.bias
        )
        i, f, o, g = z.split(layer.hidden_size, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(ln(c, layer.gamma_c, layer.beta_c))
        outs.append(h)
    return torch.stack(outs), h, c


@pytest.mark.parametrize("training", [True, False])
def test_layer_norm_cell_equals_the_written_out_reference(training):
    torch.manual_seed(0)
    layer = perturbed(NormLSTMLayer(E, H, "layer").double()).train(training)
    x = torch.randn(T, B, E, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.double)
    c0 = torch.randn(B, H, dtype=torch.double)
    out, (h, c) = layer(x, (h0, c0))
    out_ref, h_ref, c_ref = layer_norm_lstm_reference(layer, x, h0, c0)
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-12, rtol=0)
    params = [x, *layer.parameters()]
    grads = torch.autograd.grad((out * out.detach().sin()).sum() + c.sum(), params)
    grads_ref = torch.autograd.grad((out_ref * out_ref.detach().sin()).sum() + c_ref.sum(), params)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=0)


# --- the fast path against autograd -----------------------------------------------------------


def _inputs(layer: NormLSTMLayer, steps: int, dtype: torch.dtype, seed: int = 0):  # noqa: ANN202
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, B, E, generator=g, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, generator=g, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, generator=g, dtype=dtype, requires_grad=True)
    return x, h0, c0


def _run(layer: NormLSTMLayer, x, h0, c0, fast: bool):  # noqa: ANN001, ANN202
    """The layer's recurrence through the fast Function or the eager specification."""
    cell = layer.cell
    b_in = layer.bias if cell == "none" else None
    sites = layer._sites()
    if fast:
        params = (
            layer.weight_hh,
            layer.gamma_ih,
            None if cell == "none" else layer.bias,
            layer.gamma_hh,
            layer.gamma_c,
            layer.beta_c,
        )
        return _FastRecurrence.apply(x, layer.weight_ih, b_in, h0, c0, *params, sites)
    ax = F.linear(x, layer.weight_ih, b_in)
    return _eager_recurrence(ax, h0, c0, layer.weight_hh, sites)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hand_written_backward_equals_autograd(cell, dtype, step_path):
    torch.manual_seed(0)
    layer = perturbed(NormLSTMLayer(E, H, cell, max_steps=T).to(dtype)).train()
    x, h0, c0 = _inputs(layer, T, dtype)
    fast = _outputs_and_grads(layer, (x, h0, c0), fast=True)
    if dtype == torch.float32:
        _assert_as_accurate_as_autograd(layer, (x, h0, c0), fast)
        return
    # float64: each path rounds at ~1e-16; 1e-12 leaves the recurrence's amplification of
    # rounding (up to ~1e4x here, see _assert_as_accurate_as_autograd) room and nothing more.
    for a, b in zip(fast, _outputs_and_grads(layer, (x, h0, c0), fast=False), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_of_the_fast_recurrence(cell):
    torch.manual_seed(0)
    layer = perturbed(NormLSTMLayer(2, 2, cell, max_steps=3).double()).train()
    x = torch.randn(3, 3, 2, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(3, 2, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(3, 2, dtype=torch.double, requires_grad=True)
    params = [p.detach().requires_grad_() if p is not None else None for p in (
        layer.weight_ih, layer.bias if cell == "none" else None, layer.weight_hh,
        layer.gamma_ih, None if cell == "none" else layer.bias,
        layer.gamma_hh, layer.gamma_c, layer.beta_c,
    )]  # fmt: skip

    def fn(x, h0, c0, *ps):  # noqa: ANN001, ANN202
        it = iter(ps)
        w_ih, b_in, w_hh, g_x, b_x, g_hh, g_c, b_c = (
            next(it) if p is not None else None for p in params
        )
        sites = layer._sites()
        for site, gamma, beta in zip(sites, (g_x, g_hh, g_c), (b_x, None, b_c), strict=True):
            site.gamma, site.beta = gamma, beta
        return _FastRecurrence.apply(x, w_ih, b_in, h0, c0, w_hh, g_x, b_x, g_hh, g_c, b_c, sites)

    inputs = (x, h0, c0, *[p for p in params if p is not None])
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_no_grad_forward_equals_the_autograd_forward(step_path):
    torch.manual_seed(0)
    for cell in CELLS:
        layer = perturbed(NormLSTMLayer(E, H, cell, max_steps=T)).eval()
        x = torch.randn(T, B, E)
        with torch.no_grad():
            out_ng, (h_ng, _) = layer(x)
        out, (h, _) = layer(x.requires_grad_())
        torch.testing.assert_close(out_ng, out.detach(), atol=1e-6, rtol=0)


def test_the_kernel_is_built_where_a_compiler_is_and_can_be_switched_off(monkeypatch):
    import shutil

    monkeypatch.delenv(lstm_kernel.ENV, raising=False)  # this suite may run switched off
    lstm_kernel.load.cache_clear()
    try:
        if shutil.which("cc") or shutil.which("gcc"):
            assert lstm_kernel.load() is not None
        monkeypatch.setenv(lstm_kernel.ENV, "torch")
        lstm_kernel.load.cache_clear()
        assert lstm_kernel.load() is None
    finally:
        monkeypatch.undo()
        lstm_kernel.load.cache_clear()


def test_onednn_and_mm_paths_agree():
    torch.manual_seed(0)
    w = torch.randn(4 * H, H)
    x = torch.randn(B, H)
    torch.testing.assert_close(_linear_fn(w, B)(x), x @ w.T, atol=1e-5, rtol=1e-5)
    w64 = w.double()  # float64 takes the plain mm path
    torch.testing.assert_close(_linear_fn(w64, B)(x.double()), x.double() @ w64.T)


# --- batch norm statistics over time (Cooijmans et al. 2016) ------------------------------


def test_per_step_bn_keeps_one_statistic_set_per_step(step_path):
    torch.manual_seed(0)
    max_steps = 6
    layer = NormLSTMLayer(E, H, "batch_per_step", max_steps=max_steps, momentum=0.5).train()
    assert layer.running_mean_ih.shape == (max_steps, 4 * H)
    assert layer.running_var_c.shape == (max_steps, H)
    # Input statistics whose mean differs per step: step t has mean t.
    x = torch.randn(4, 16, E) + torch.arange(4.0).view(4, 1, 1)
    layer(x)
    a = F.linear(x, layer.weight_ih)  # W_x x_t, normalized per step over the batch
    expected_mean = 0.5 * a.mean(1)
    expected_var = 0.5 * torch.ones(4, 4 * H) + 0.5 * a.var(1, unbiased=True)
    torch.testing.assert_close(layer.running_mean_ih[:4], expected_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_var_ih[:4], expected_var, atol=1e-5, rtol=1e-4)
    # Steps the window never reached keep their initial statistics.
    assert torch.equal(layer.running_mean_ih[4:], torch.zeros(2, 4 * H))
    assert torch.equal(layer.running_var_hh[4:], torch.ones(2, 4 * H))
    assert not torch.allclose(layer.running_mean_ih[0], layer.running_mean_ih[3])
    assert not torch.allclose(layer.running_mean_c[1], layer.running_mean_c[0])


def test_shared_bn_keeps_one_statistic_set_for_all_steps(step_path):
    torch.manual_seed(0)
    layer = NormLSTMLayer(E, H, "batch_shared", momentum=0.5).train()
    assert layer.running_mean_ih.shape == (1, 4 * H)
    x = torch.randn(4, 16, E) + torch.arange(4.0).view(4, 1, 1)
    layer(x)
    a = F.linear(x, layer.weight_ih)
    torch.testing.assert_close(layer.running_mean_ih[0], 0.5 * a.mean(1).mean(0), atol=1e-5, rtol=0)


def test_bn_training_uses_the_statistics_of_each_steps_batch():
    torch.manual_seed(0)
    layer = perturbed(NormLSTMLayer(E, H, "batch_per_step", max_steps=T)).train()
    x = torch.randn(T, 8, E)
    out, _ = layer(x)
    # Shifting one sample's input at step 0 changes the other samples' outputs (pooled stats).
    x2 = x.clone()
    x2[0, 0] += 3.0
    out2, _ = layer(x2)
    assert not torch.allclose(out[:, 1:], out2[:, 1:])


def test_evaluation_beyond_the_trained_length_reuses_the_last_steps_statistics(step_path):
    torch.manual_seed(0)
    steps = 3
    layer = perturbed(NormLSTMLayer(E, H, "batch_per_step", max_steps=steps))
    with torch.no_grad():  # distinct population statistics per step
        for name, buf in layer.named_buffers():
            buf.copy_(torch.rand_like(buf) + (0.5 if "var" in name else -0.5))
    layer.eval()
    x = torch.randn(2 * steps + 1, B, E)
    with torch.no_grad():
        out, _ = layer(x)
    assert out.shape == (2 * steps + 1, B, H) and torch.isfinite(out).all()

    # By hand: population BN at step t uses the statistics of step min(t, steps - 1).
    def bn(a, site, t, gamma, beta):  # noqa: ANN001, ANN202
        s = min(t, steps - 1)
        mean = getattr(layer, f"running_mean_{site}")[s]
        var = getattr(layer, f"running_var_{site}")[s]
        out = (a - mean) / torch.sqrt(var + layer.eps) * gamma
        return out if beta is None else out + beta

    h = c = torch.zeros(B, H)
    with torch.no_grad():
        for t in range(x.shape[0]):
            z = bn(x[t] @ layer.weight_ih.T, "ih", t, layer.gamma_ih, layer.bias) + bn(
                h @ layer.weight_hh.T, "hh", t, layer.gamma_hh, None
            )
            i, f, o, g = z.split(H, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(bn(c, "c", t, layer.gamma_c, layer.beta_c))
            torch.testing.assert_close(out[t], h, atol=1e-5, rtol=0)


def test_bn_gains_start_at_a_tenth_and_ln_gains_at_one():
    bn = NormLSTMLayer(E, H, "batch_per_step")
    ln = NormLSTMLayer(E, H, "layer")
    assert torch.all(bn.gamma_hh == 0.1) and torch.all(bn.gamma_c == 0.1)
    assert torch.all(ln.gamma_hh == 1.0) and torch.all(ln.beta_c == 0.0)
    assert NormLSTMLayer(E, H, "rms").beta_c is None


def test_a_training_window_longer_than_the_kept_statistics_is_refused():
    layer = NormLSTMLayer(E, H, "batch_per_step", max_steps=4).train()
    with pytest.raises(ValueError, match="exceeds max_steps=4"):
        layer(torch.randn(5, B, E))
    layer.eval()
    layer(torch.randn(9, B, E))  # evaluation may run longer


def test_gradients_through_population_statistics_take_the_eager_path():
    layer = NormLSTMLayer(E, H, "batch_per_step", max_steps=T).eval()
    out, _ = layer(torch.randn(T, B, E))
    out.sum().backward()
    assert layer.gamma_hh.grad is not None and torch.isfinite(layer.weight_hh.grad).all()


# --- the language model -----------------------------------------------------------------------

MODEL = {"name": "lstm", "emb": 8, "hidden": 8, "layers": 2, "dropout": 0.0, "tie_weights": False}


@pytest.mark.parametrize("cell", CELLS)
def test_carrying_the_state_across_windows_equals_one_long_window(cell):
    torch.manual_seed(0)
    model = build_language_model(MODEL, {"name": cell, "position": "pre"}, 11, max_steps=12)
    with torch.no_grad():  # population statistics that differ between steps
        for name, buf in model.named_buffers():
            buf.copy_(torch.rand_like(buf) + (0.5 if "var" in name else -0.5))
    model.eval()
    tokens = torch.randint(0, 11, (12, 3))
    with torch.no_grad():
        whole, _ = model(tokens)
        first, state = model(tokens[:5])
        second, _ = model(tokens[5:], state)
    if cell == "batch_per_step":  # the second window restarts the step index: not equal
        assert not torch.allclose(torch.cat([first, second]), whole, atol=1e-4)
    else:
        torch.testing.assert_close(torch.cat([first, second]), whole, atol=1e-5, rtol=0)
    assert whole.shape == (12, 3, 11)


def test_tied_decoder_shares_the_embedding():
    model = LSTMLanguageModel(11, 8, 8, 1, "layer", tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    assert isinstance(LSTMLanguageModel(11, 8, 8, 1, "none").rnn, nn.LSTM)


def norm(name: str, **extra: object) -> dict:
    return {"name": name, "position": "pre", **extra}


@pytest.mark.parametrize(
    ("model", "norm_cfg", "batch", "field", "match"),
    [
        (MODEL, norm("instance"), 8, "norm.name", "one neuron"),
        (MODEL, norm("group", num_groups=2), 8, "norm.name", "allowed: none, layer"),
        (MODEL, norm("batch"), 8, "norm.name", "batch_per_step"),
        (MODEL, norm("bogus"), 8, "norm.name", "allowed: none, layer, batch_per_step"),
        (MODEL, norm("layer", momentum=0.1), 8, "norm.momentum", "allowed: eps"),
        (MODEL, norm("batch_per_step", momentum=2.0), 8, "norm.momentum", r"\(0, 1\]"),
        (MODEL, norm("batch_shared"), 1, "train.batch_size", "variance undefined"),
        (MODEL, norm("layer", position="middle"), 8, "norm.position", "allowed: pre, post"),
        ({**MODEL, "emb": 4, "tie_weights": True}, norm("layer"), 8, "model.tie_weights", "equals"),
        ({**MODEL, "hidden": 0}, norm("layer"), 8, "model.hidden", ">= 1"),
        ({**MODEL, "dropout": 1.0}, norm("layer"), 8, "model.dropout", "< 1"),
        ({**MODEL, "name": "cnn"}, norm("layer"), 8, "model.name", "allowed: lstm"),
    ],
)
def test_undefined_lstm_configs_are_refused_naming_the_field(model, norm_cfg, batch, field, match):
    with pytest.raises(ConfigError, match=match) as info:
        check_lstm(model, norm_cfg, batch, 20)
    assert info.value.field == field
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_is_accepted(cell):
    extra = {"momentum": 0.1, "gamma_init": 0.1} if cell in BATCH_CELLS else {}
    check_lstm(MODEL, norm(cell, **extra), 2, 20)


# --- the C kernel's numerics: the same on every CPU ---------------------------------------------


def _outputs_and_grads(layer: NormLSTMLayer, inputs: tuple, fast: bool) -> list[torch.Tensor]:
    """The recurrence's output, then the gradients of a loss on (out, h_T, c_T) with respect to
    (x, h0, c0, *layer.parameters())."""
    x, h0, c0 = inputs
    out, h, c = _run(layer, x, h0, c0, fast)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * w).sum() + (1.3 * h).sum() + (c * c).sum()
    return [out.detach(), *torch.autograd.grad(loss, [x, h0, c0, *layer.parameters()])]


def _assert_as_accurate_as_autograd(layer: NormLSTMLayer, inputs: tuple, results: list) -> None:
    """Float32 ``results`` (of _outputs_and_grads) held to the exact values, float64 autograd of
    the same float32 numbers, as closely as autograd's float32 gets.

    Not to autograd's float32 values: the RMS cell's 7-step recurrence amplifies rounding about
    1e4x on these inputs (its float32 autograd gradients are ~8e-4 off the exact ones, while
    LN's are ~2e-6), so any two float32 evaluations differ by that much, by an amount that
    depends on the CPU's vector width in torch's kernels and ours alike. The tolerance per
    tensor: 4x autograd's own float32 error (the kernel measures at most 1x for RMS; the 4x
    covers tensors where autograd's error is small by luck), plus 1e-5, some 100 float32 ulps of
    the largest gradients (|g| <= 15), where autograd's error is close to zero.
    """
    import copy

    names = ["out", "x", "h0", "c0", *(n for n, _ in layer.named_parameters())]
    exact_inputs = tuple(t.detach().double().requires_grad_() for t in inputs)
    exact = _outputs_and_grads(copy.deepcopy(layer).double(), exact_inputs, fast=False)
    autograd = _outputs_and_grads(layer, inputs, fast=False)
    for name, ours, ref, exact_value in zip(names, results, autograd, exact, strict=True):
        err = (ours.double() - exact_value).abs().max().item()
        allowed = 4 * (ref.double() - exact_value).abs().max().item() + 1e-5
        assert err <= allowed, f"{name}: float32 error {err:.2e} > {allowed:.2e}"


def _cpu_flags() -> set[str]:
    from pathlib import Path

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags = (line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags"))
    return set(next(flags, "").split())


# Builds for x86-64 levels, with the CPU flags each needs. -mfma: FMA at hand, contraction must
# still stay off; -mprefer-vector-width=512: the row sums run in 512-bit registers.
X86_BUILDS = {
    "sse2": ((), set()),
    "avx2": (("-mavx2", "-mfma"), {"avx2", "fma"}),
    "avx512": (("-mavx512f", "-mprefer-vector-width=512"), {"avx512f"}),
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("target", ["compiler default", *X86_BUILDS])
def test_kernel_builds_for_each_instruction_set_agree_bit_for_bit(cell, target, monkeypatch):
    import copy
    import platform

    native = lstm_kernel.load()
    if native is None:
        pytest.skip("the LSTM kernel is not built here (no compiler, or switched off)")
    flags = lstm_kernel.FLAGS
    if target != "compiler default":
        if platform.machine().lower() not in ("x86_64", "amd64"):
            pytest.skip(f"{target} is an x86-64 build")
        extra, needs = X86_BUILDS[target]
        if not needs <= _cpu_flags():
            pytest.skip(f"this CPU lacks {', '.join(sorted(needs - _cpu_flags()))}")
        flags += ("-march=x86-64", *extra)
    kernel = lstm_kernel.build(flags)
    assert kernel is not None
    torch.manual_seed(0)
    layer = perturbed(NormLSTMLayer(E, H, cell, max_steps=T)).train()
    inputs = _inputs(layer, T, torch.float32)
    results = {}
    for name, k in (("native", native), (target, kernel)):
        monkeypatch.setattr(lstm_cells, "_kernel_for", lambda ax, k=k: k)
        model = copy.deepcopy(layer)  # the same running statistics for both builds
        train = _outputs_and_grads(model, inputs, fast=True)
        with torch.no_grad():  # population statistics, for the BN cells
            evaluation = model.eval()(inputs[0])[0]
        results[name] = [*train, evaluation]
    monkeypatch.undo()
    for a, b in zip(results[target], results["native"], strict=True):
        assert torch.equal(a, b), f"{target} build differs from the native one"
    _assert_as_accurate_as_autograd(layer, inputs, results[target][:-1])


def test_kernel_builds_are_cached_per_flag_set():
    if lstm_kernel.load() is None:
        pytest.skip("the LSTM kernel is not built here (no compiler, or switched off)")
    default = lstm_kernel.build(lstm_kernel.FLAGS)
    assert default is not None and lstm_kernel.build(lstm_kernel.FLAGS) is default
    native = lstm_kernel.build(lstm_kernel.FLAGS + lstm_kernel.NATIVE)
    assert native is None or native is not default  # another flag set, another build


def test_loading_a_kernel_keeps_subnormal_floats():
    """A library linked with -ffast-math (GCC < 13) turns on flush-to-zero for the whole process
    when it loads, changing torch's results too; the builds link without it."""
    if lstm_kernel.load() is None:
        pytest.skip("the LSTM kernel is not built here (no compiler, or switched off)")
    assert lstm_kernel.build(lstm_kernel.FAST_MATH_FLAGS) is not None
    tiny = torch.tensor([1e-39])  # subnormal in float32
    assert (tiny * 1.0).item() > 0.0


def test_kernel_gates_saturate_like_torch_and_keep_nan(monkeypatch):
    """Pre-activations far past exp's float32 range (|z| ~ 1e3) saturate the gates as torch's
    sigmoid and tanh do, with no inf or overflow; a NaN input stays NaN where torch's does."""
    kernel = lstm_kernel.load()
    if kernel is None:
        pytest.skip("the LSTM kernel is not built here (no compiler, or switched off)")
    torch.manual_seed(0)
    layer = perturbed(NormLSTMLayer(E, H, "none"), scale=300.0).eval()
    x = torch.randn(T, B, E)
    x[3, 1, 0] = float("nan")
    outs = {}
    for name, k in (("kernel", kernel), ("torch", None)):
        monkeypatch.setattr(lstm_cells, "_kernel_for", lambda ax, k=k: k)
        with torch.no_grad():
            outs[name] = layer(x)[0]
    assert torch.equal(outs["kernel"].isnan(), outs["torch"].isnan())
    assert outs["kernel"].isnan().any() and not outs["kernel"].isinf().any()
    # Saturated gates are exactly 0 or 1 in both (or within float32 rounding of tanh near ±1).
    torch.testing.assert_close(outs["kernel"], outs["torch"], atol=1e-6, rtol=0, equal_nan=True)
