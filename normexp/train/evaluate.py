"""Evaluation: without autograd, in eval mode, or with BN's batch statistics on request."""

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.norms.batch_variants import training_noise_off


def iterate(x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


@torch.no_grad()
def accuracy_and_loss(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in its current mode."""
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for xb, yb in iterate(x, y, batch_size):
        out = model(xb)
        loss += F.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(1) == yb).sum()
    return correct.item() / len(y), loss.item() / len(y)


def has_batch_stats(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, float]:
    """Inference as deployed: eval mode, BN uses its running averages."""
    model.eval()
    try:
        return accuracy_and_loss(model, x, y, batch_size)
    finally:
        model.train()


def evaluate_with_batch_stats(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int
) -> tuple[float, float]:
    """BN normalizes each test batch by its own statistics, as in training (batches of the
    training size), without noisy BN's noise (evaluation sees the network without it). The
    running averages are restored afterwards and the random state too: evaluation never changes
    training, whenever it runs."""
    buffers = {
        k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k
    }
    model.train()
    n = len(x) - len(x) % batch_size if len(x) % batch_size == 1 else len(x)  # no batch of one
    accelerator = [x.device] if x.device.type != "cpu" else []
    try:
        with torch.random.fork_rng(accelerator, device_type=x.device.type), training_noise_off(
            model
        ):
            return accuracy_and_loss(model, x[:n], y[:n], batch_size)
    finally:
        model.load_state_dict(buffers, strict=False)
