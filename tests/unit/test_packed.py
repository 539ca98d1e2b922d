"""Packed replicas (normexp.models.packed, normexp.train.packed_optim): K runs trained as one
packed model equal the K separate runs, norm by norm and model by model; per-replica seeds and
LRs are honoured; a replica driven to NaN leaves the others untouched; every norm of the registry
either packs or says why not."""

import itertools
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.bench.harness import SGD
from normexp.models import build_model, check_model
from normexp.models.packed import (
    PACKED_MODELS,
    PACKED_NORMS,
    REFUSED_MODELS,
    REFUSED_NORMS,
    PackedModel,
    load_replica_state,
    pack_inputs,
    pack_models,
    pack_refusal,
    replica_losses,
    replica_state_dict,
    replica_tensor,
)
from normexp.norms import NORMS
from normexp.norms.precise_bn import recompute_bn_stats
from normexp.train.optim import build_optimizer, build_scheduler, parameter_groups, peak_lr
from normexp.train.packed_optim import PackedSGD, packed_optim_refusal, packed_optimizer
from tests.helpers import CONFIG_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")

K, BATCH, STEPS = 3, 4, 10
SEEDS = (11, 22, 33)  # each replica's own initialization
LR_MULTS = (0.5, 1.0, 2.0)  # and its own LR multiplier
# configs/optim/sgd.yaml's method (momentum, Nesterov, decay on weights only, one-cycle schedule
# with warm-up) at 2.5x its LR, so that ten steps of batch 4 move the weights by 0.05-1.5 (the
# worst case then ends at 3e-14). Not more: at 5x and 20x, ten steps amplify the packed and the
# separate runs' last-bit differences (other summation orders) to 1e-11 and 1e-10 where a norm
# divides by the statistics of a few values (ghost BN's groups of 2, post-ReLU BN in the MLP,
# IN), and at 20x the no-norm ResNet diverges.
OPTIM = {**SGD, "lr_per_128": 0.5}
# The smoke scale (configs/config.yaml scale.smoke): CNN widths [4, 8, 8], ResNet-8, on 8 px
# images (the MLP takes CIFAR's 32 px; the CNN's flatten head too).
CNN = {"name": "cnn", "widths": [4, 8, 8], "convs_per_stage": 1, "activation": "relu"}
RESNET_A = {"name": "resnet", "depth": 8, "width_mult": 1, "shortcut": "A", "activation": "relu"}
RESNET_B = {**RESNET_A, "shortcut": "B"}
MLP = {"name": "mlp", "hidden": 16, "depth": 2, "activation": "relu"}
MODELS = {"cnn": CNN, "resnetA": RESNET_A, "resnetB": RESNET_B, "mlp": MLP}
# Norm parameters that make the tests see the norm at work within ten steps of batch 4.
NORM_KWARGS = {
    "ghost_batch": {"group_size": 2},
    "batch_renorm": {"relax_start": 0, "relax_end": 3, "rmax": 1.5, "dmax": 0.5},
}


def norm_cfg(name: str, position: str = "pre") -> dict:
    return {"name": name, "position": position, **NORM_KWARGS.get(name, {})}


def image_size(model: dict) -> int:
    return 32 if model["name"] == "mlp" or model.get("head") == "flatten" else 8


@dataclass
class Runs:
    """K separate runs and the packed one, trained side by side on the same batches."""

    model: dict
    norm: dict
    dtype: torch.dtype = torch.float64
    lr_mults: tuple[float, ...] = LR_MULTS
    channels_last: bool = False
    separate: list = field(default_factory=list)
    optimizers: list = field(default_factory=list)
    schedulers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        for seed, mult in zip(SEEDS, self.lr_mults, strict=True):
            torch.manual_seed(seed)
            model = build_model(self.model, self.norm).to(self.dtype).train()
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer = build_optimizer(model, {**OPTIM, "lr_mult": mult}, BATCH)
            self.separate.append(model)
            self.optimizers.append(optimizer)
            self.schedulers.append(build_scheduler(optimizer, OPTIM, STEPS))
        self.packed = pack_models(self.separate)
        peaks = [peak_lr({**OPTIM, "lr_mult": m}, BATCH) for m in self.lr_mults]
        self.optimizer = packed_optimizer(self.packed, OPTIM, peaks)
        self.scheduler = build_scheduler(self.optimizer, OPTIM, STEPS)
        self.generators = [torch.Generator().manual_seed(100 + k) for k in range(K)]

    def batches(self) -> tuple[list[Tensor], list[Tensor]]:
        """Each replica's own batch, from its own generator."""
        side = image_size(self.model)
        xs = [torch.randn(BATCH, 3, side, side, generator=g, dtype=self.dtype)
              for g in self.generators]  # fmt: skip
        ys = [torch.randint(10, (BATCH,), generator=g) for g in self.generators]
        if self.channels_last:
            xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
        return xs, ys

    def step(self, poison: int | None = None) -> None:
        """One step of every run; ``poison``: that replica's input is inf (its separate run is
        not stepped: it has no finite counterpart)."""
        xs, ys = self.batches()
        if poison is not None:
            xs[poison] = torch.full_like(xs[poison], float("inf"))
        for k, (model, opt, sched) in enumerate(
            zip(self.separate, self.optimizers, self.schedulers, strict=True)
        ):
            if k == poison:
                continue
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xs[k]), ys[k]).backward()
            opt.step()
            sched.step()
        self.optimizer.zero_grad(set_to_none=True)
        replica_losses(self.packed(pack_inputs(xs)), torch.stack(ys)).sum().backward()
        self.optimizer.step()
        self.scheduler.step()

    def worst(self, k: int) -> float:
        """Largest |packed - separate| over replica k's parameters and buffers, relative to
        the tensor's scale (at least 1)."""
        mine, theirs = replica_state_dict(self.packed, k), self.separate[k].state_dict()
        assert list(mine) == list(theirs)
        worst = 0.0
        for name, ref in theirs.items():
            assert mine[name].shape == ref.shape, name
            diff = (mine[name].double() - ref.double()).abs().max().item()
            worst = max(worst, diff / max(1.0, ref.double().abs().max().item()))
        return worst


def equality_cases():
    for (model_id, model), name, position in itertools.product(
        MODELS.items(), sorted(PACKED_NORMS), ("pre", "post")
    ):
        if model_id == "mlp" and name == "instance":
            continue  # undefined on dense layers
        if model_id == "resnetB" and position == "post" and name not in ("batch", "layer"):
            continue  # B's post shortcut is a plain conv: its norms are resnetA-post's
        yield pytest.param(model, norm_cfg(name, position), id=f"{model_id}-{name}-{position}")
    # The weight side (per output channel: exact), the CNN's other heads, another activation.
    extra = [
        ("cnn-wn-batch", {**CNN, "weight_side": "weight_norm"}, "batch"),
        ("resnetB-wn-mean_only", {**RESNET_B, "weight_side": "weight_norm"}, "mean_only_batch"),
        ("mlp-wn-layer", {**MLP, "weight_side": "weight_norm"}, "layer"),
        ("cnn-ws-group", {**CNN, "weight_side": "weight_std"}, "group"),
        ("resnetA-ws-group", {**RESNET_A, "weight_side": "weight_std"}, "group"),
        ("cnn-gap-rms", {**CNN, "head": "gap"}, "rms"),
        ("cnn-flatten-instance", {**CNN, "head": "flatten"}, "instance"),
        ("cnn-nofinal-batch", {**CNN, "final_norm": False}, "batch"),
        ("resnetA-tanh-layer", {**RESNET_A, "activation": "tanh"}, "layer"),
    ]
    for case_id, model, name in extra:
        yield pytest.param(model, norm_cfg(name), id=case_id)


EQUALITY_CASES = list(equality_cases())


def checked(model: dict, norm: dict) -> None:
    """Skip a combination the suite itself refuses (it never trains)."""
    try:
        check_model(model, norm, BATCH, image_size(model))
    except Exception as exc:  # noqa: BLE001 - ConfigError, named in the skip
        pytest.skip(f"refused by check_model: {exc}")


@pytest.mark.parametrize(("model", "norm"), EQUALITY_CASES)
def test_packed_steps_equal_the_separate_runs_in_float64(model, norm):
    checked(model, norm)
    assert pack_refusal(model, norm) is None
    runs = Runs(model, norm)
    for step in range(STEPS):
        runs.step()
        if step in (0, STEPS - 1):  # one step and ten
            for k in range(K):
                assert runs.worst(k) < 1e-12, (step, k)
    with torch.no_grad():  # and the evaluation forward, on running statistics
        runs.packed.eval()
        xs, _ = runs.batches()
        out = runs.packed(pack_inputs(xs))
        for k, model_k in enumerate(runs.separate):
            # Logits, not weights: six layers of products amplify the weights' 1e-16 differences
            # (seen up to 1e-11 relative where a BN divides by a small running variance).
            torch.testing.assert_close(out[k], model_k.eval()(xs[k]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("model", "norm"),
    [
        pytest.param(RESNET_B, norm_cfg("batch"), id="resnetB-batch"),
        pytest.param(RESNET_A, norm_cfg("rms", "post"), id="resnetA-rms-post"),
        pytest.param(CNN, norm_cfg("group"), id="cnn-group"),
        pytest.param({**MLP, "weight_side": "weight_norm"}, norm_cfg("layer"), id="mlp-wn-layer"),
        pytest.param(CNN, norm_cfg("ghost_batch", "post"), id="cnn-ghost_batch-post"),
    ],
)
def test_packed_steps_equal_the_separate_runs_in_float32_channels_last(model, norm):
    runs = Runs(model, norm, dtype=torch.float32, channels_last=model["name"] != "mlp")
    for _ in range(STEPS):
        runs.step()
    # The same math with other summation orders (a grouped conv or a batched matmul against a
    # separate one, channels-last reductions): one step differs by float32 rounding (measured
    # 1e-9 to 3e-8 relative), and the steps then amplify it as they amplify float64's last bits
    # (there: 2e-16 to at most 3e-14 after ten steps, x150, where ghost BN divides by the
    # statistics of 2 samples). Measured after ten steps: 3e-8 to 2.5e-7, and 2e-5 for ghost BN
    # (post, groups of 2). 1e-4 bounds that with margin and is still far below a real
    # difference (another replica's LR or seed changes the weights by >1e-2: see
    # test_per_replica_seeds_and_lrs_are_honoured).
    for k in range(K):
        assert runs.worst(k) < 1e-4


def test_a_channels_last_packed_model_equals_the_separate_runs_in_float64():
    runs = Runs(RESNET_A, norm_cfg("rms", "post"), channels_last=True)
    for _ in range(3):
        runs.step()
    for k in range(K):
        assert runs.worst(k) < 1e-12


def test_per_replica_seeds_and_lrs_are_honoured():
    runs = Runs(CNN, norm_cfg("batch"))
    for _ in range(3):
        runs.step()
    # Replica k is run k, and no other run: the runs differ, so a swap would fail.
    for k, j in itertools.permutations(range(K), 2):
        mine = replica_state_dict(runs.packed, k)
        other = runs.separate[j].state_dict()
        assert max((mine[n] - other[n]).abs().max().item() for n in mine) > 1e-2
        assert runs.worst(k) < 1e-12
    # The same seeds with the LRs in another order: replica 0 is no longer run 0.
    swapped = Runs(CNN, norm_cfg("batch"), lr_mults=LR_MULTS[::-1])
    for _ in range(3):
        swapped.step()
    ref = runs.separate[0].state_dict()
    mine = replica_state_dict(swapped.packed, 0)
    assert max((mine[n] - ref[n]).abs().max().item() for n in mine) > 1e-3


def test_packed_sgd_steps_each_block_at_its_own_lr():
    p = nn.Parameter(torch.zeros(6, 2, dtype=torch.float64))
    opt = PackedSGD([p], lr_scale=[1.0, 2.0, 3.0], lr=0.5)
    p.grad = torch.ones_like(p)
    opt.step()
    expected = -0.5 * torch.tensor([1.0, 1, 2, 2, 3, 3], dtype=torch.float64)[:, None].expand(6, 2)
    assert torch.equal(p.detach(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_sgd_is_sgd_to_the_bit_given_the_same_gradients(dtype):
    # Each block's step size is f(t)·peak_k formed in float64 and rounded once to the dtype, as
    # torch.optim.SGD rounds its float lr: the same bits, channels-last filters included.
    w = torch.randn(3 * 8, 4, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    grads = [torch.randn_like(w) for _ in range(3)]
    peaks, factor = [0.0123, 0.0456, 0.0789], 0.37
    packed = nn.Parameter(w.clone())
    opt = PackedSGD([packed], peaks, lr=factor, momentum=0.9, nesterov=True, weight_decay=5e-4)
    separate = [nn.Parameter(block.clone()) for block in w.split(8)]
    sgds = [
        torch.optim.SGD([p], lr=peak * factor, momentum=0.9, nesterov=True, weight_decay=5e-4)
        for p, peak in zip(separate, peaks, strict=True)
    ]
    for g in grads:
        packed.grad = g.clone()
        opt.step()
        for p, sgd, block in zip(separate, sgds, g.split(8), strict=True):
            p.grad = block.clone()
            sgd.step()
    assert torch.equal(packed.detach(), torch.cat([p.detach() for p in separate]))


@pytest.mark.parametrize(
    ("model", "norm"),
    [pytest.param(RESNET_A, norm_cfg(name), id=f"resnetA-{name}") for name in sorted(PACKED_NORMS)]
    + [
        pytest.param(RESNET_A, norm_cfg("batch", "post"), id="resnetA-batch-post"),
        pytest.param(CNN, norm_cfg("batch"), id="cnn-batch"),
        pytest.param(MLP, norm_cfg("rms"), id="mlp-rms"),
        pytest.param({**RESNET_B, "weight_side": "weight_norm"}, norm_cfg("layer"), id="rB-wn"),
    ],
)
def test_a_replica_driven_to_nan_leaves_the_others_unchanged(model, norm):
    runs = Runs(model, norm)
    for step in range(6):
        runs.step(poison=1 if step == 2 else None)
        for k in (0, 2):
            assert runs.worst(k) < 1e-12, (step, k)
    poisoned = replica_state_dict(runs.packed, 1)
    assert not all(torch.isfinite(t).all() for t in poisoned.values())  # the NaN did happen


def test_a_replica_with_an_overflowing_lr_leaves_the_others_unchanged():
    runs = Runs(CNN, norm_cfg("group"), lr_mults=(0.5, 1e300, 2.0))
    for _ in range(4):
        runs.step()
    assert not all(torch.isfinite(t).all() for t in replica_state_dict(runs.packed, 1).values())
    for k in (0, 2):
        assert runs.worst(k) < 1e-12


def test_every_registered_norm_packs_or_says_why_not():
    tested = {case.values[1]["name"] for case in EQUALITY_CASES}
    for name in NORMS:
        assert (name in PACKED_NORMS) != (name in REFUSED_NORMS), name
        reason = pack_refusal(CNN, {"name": name, "position": "pre"})
        if name in PACKED_NORMS:
            assert reason is None and name in tested  # covered by the equality test
        else:
            assert reason and "\n" not in reason
    assert set(PACKED_NORMS) | set(REFUSED_NORMS) == set(NORMS)
    assert "global RNG" in pack_refusal(CNN, {"name": "noisy_batch", "position": "pre"})


def test_every_model_packs_or_says_why_not():
    names = {p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")}
    assert names == set(PACKED_MODELS) | set(REFUSED_MODELS)
    assert pack_refusal({"name": "lstm"}, {"name": "layer"}) == REFUSED_MODELS["lstm"]
    assert "trains separately" in pack_refusal({"name": "generator"}, {"name": "batch"})
    assert pack_refusal({"name": "nope"}, {"name": "batch"})


def test_a_layer_without_a_packed_form_is_refused():
    torch.manual_seed(0)
    noisy = [build_model(CNN, norm_cfg("noisy_batch")) for _ in range(2)]
    with pytest.raises(TypeError, match="NoisyBatchNorm"):
        pack_models(noisy)
    with pytest.raises(TypeError, match="Dropout"):
        pack_models([nn.Sequential(nn.Linear(3, 4), nn.Dropout()) for _ in range(2)])
    with pytest.raises(ValueError, match="architecture"):
        pack_models([build_model(CNN, norm_cfg("batch")), build_model(CNN, norm_cfg("layer"))])


def test_optimizers_other_than_sgd_are_refused():
    assert packed_optim_refusal(OPTIM) is None
    assert "SGD only" in packed_optim_refusal({**OPTIM, "name": "adam"})
    assert "couple" in packed_optim_refusal({**OPTIM, "clip_grad_norm": 5.0})
    packed = pack_models([build_model(CNN, norm_cfg("batch")) for _ in range(2)])
    with pytest.raises(Exception, match="SGD only"):
        packed_optimizer(packed, {**OPTIM, "name": "adam"}, [0.1, 0.1])


def test_names_shapes_and_the_weight_decay_split_map_onto_the_separate_model():
    for model in (RESNET_B, {**MLP, "weight_side": "weight_norm"}, CNN):
        separate = build_model(model, norm_cfg("batch"))
        packed = pack_models([separate, build_model(model, norm_cfg("batch"))])
        assert isinstance(packed, PackedModel)
        sep = dict(separate.named_parameters())
        for name, p in packed.named_parameters():
            assert p.ndim == sep[name].ndim and p.shape[0] == 2 * sep[name].shape[0], name
        names = {id(p): n for n, p in packed.named_parameters()}
        sep_names = {id(p): n for n, p in separate.named_parameters()}
        ours = [[names[id(p)] for p in g["params"]] for g in parameter_groups(packed, 5e-4, False)]
        theirs = [
            [sep_names[id(p)] for p in g["params"]] for g in parameter_groups(separate, 5e-4, False)
        ]
        assert ours == theirs and all(ours)  # decayed and not decayed, by name, in order


def test_state_round_trip_and_the_momentum_buffer_of_a_replica():
    runs = Runs(RESNET_B, norm_cfg("batch_renorm"))
    for _ in range(3):
        runs.step()
    # Replica 1's state loads strictly into a separate model and back into another packed one.
    state = replica_state_dict(runs.packed, 1)
    model = build_model(RESNET_B, norm_cfg("batch_renorm")).double()
    model.load_state_dict(state, strict=True)
    fresh = pack_models([build_model(RESNET_B, norm_cfg("batch_renorm")).double() for _ in SEEDS])
    for k in range(K):
        load_replica_state(fresh, k, replica_state_dict(runs.packed, k))
    for name, t in fresh.state_dict().items():
        assert torch.equal(t, runs.packed.state_dict()[name]), name
    with pytest.raises(KeyError):
        load_replica_state(fresh, 0, {n: t for n, t in state.items() if "head" not in n})
    # The packed optimizer's momentum buffer, block by block, is each separate run's.
    params = dict(runs.packed.named_parameters())
    for k, opt in enumerate(runs.optimizers):
        sep_params = dict(runs.separate[k].named_parameters())
        for name, p in params.items():
            buf = runs.optimizer.state[p]["momentum_buffer"]
            mine = replica_tensor(runs.packed, name, buf, k)
            theirs = opt.state[sep_params[name]]["momentum_buffer"]
            assert mine.shape == theirs.shape
            torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_precise_bn_on_the_packed_model_equals_it_on_each_run():
    runs = Runs(CNN, norm_cfg("batch"))
    runs.step()
    batches = [runs.batches()[0] for _ in range(3)]
    recompute_bn_stats(runs.packed, (pack_inputs(xs) for xs in batches), 3)
    for k, model in enumerate(runs.separate):
        recompute_bn_stats(model, (xs[k] for xs in batches), 3)
        assert runs.worst(k) < 1e-12


def test_pack_inputs_stacks_equal_batches_on_channels():
    xs = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    packed = pack_inputs(xs)
    assert packed.shape == (2, 9, 8, 8) and torch.equal(packed[:, 3:6], xs[1])
    with pytest.raises(ValueError):
        pack_inputs([torch.randn(2, 3, 8, 8), torch.randn(3, 3, 8, 8)])


def test_packing_draws_nothing_from_the_global_rng():
    # The runs' data order may come from the global RNG after the models are built: packing
    # them must leave it where the separate runs would.
    models = [build_model({**MLP, "weight_side": "weight_norm"}, norm_cfg("rms")) for _ in SEEDS]
    before = torch.random.get_rng_state()
    pack_models(models)
    assert torch.equal(torch.random.get_rng_state(), before)
