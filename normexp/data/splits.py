"""Class-stratified subsets and train/validation splits."""

import torch

from normexp.errors import ConfigError


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of `n` samples, as class-balanced as the class sizes allow, sorted ascending.

    Each class is shuffled (seeded); samples are taken round-robin over the classes (in a seeded
    class order), so class counts differ by at most one until a class runs out. Subsets for the
    same seed are nested: the subset of n is contained in the subset of n + 1.
    """
    labels = labels.detach().cpu().reshape(-1)
    total = labels.numel()
    if not 0 <= n <= total:
        raise ValueError(f"n must lie in 0..{total}, got {n}")
    g = torch.Generator().manual_seed(seed)
    _, cls = torch.unique(labels, return_inverse=True)
    num_classes = int(cls.max()) + 1 if total else 0
    # A random permutation, then a stable sort by class, shuffles within each class.
    perm = torch.randperm(total, generator=g)
    order = perm[torch.sort(cls[perm], stable=True).indices]
    counts = torch.bincount(cls, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    sorted_cls = cls[order]
    rank = torch.arange(total) - starts[sorted_cls]  # position within its class
    class_order = torch.randperm(num_classes, generator=g)  # who gets the remainder
    key = rank * num_classes + class_order[sorted_cls]
    chosen = order[torch.argsort(key)[:n]]
    return torch.sort(chosen).values


def train_val_split(
    labels: torch.Tensor, n_train: int | None, n_val: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (train, val) index tensors, both stratified and sorted.

    The validation set (n_val) is drawn first from all of `labels`, then the training subset
    (n_train, or None for all the rest) from what remains.
    """
    total = labels.numel()
    if isinstance(n_val, bool) or not isinstance(n_val, int) or not 1 <= n_val <= total - 1:
        raise ConfigError(
            "data.n_val",
            f"must be an integer from 1 to {total - 1} (the training set has "
            f"{total} samples and at least one must stay for training), got {n_val!r}",
        )
    room = total - n_val
    if n_train is not None and (
        isinstance(n_train, bool) or not isinstance(n_train, int) or not 1 <= n_train <= room
    ):
        raise ConfigError(
            "data.n_train",
            f"must be null (all the rest) or an integer from 1 to {room} "
            f"({total} samples minus data.n_val={n_val}), got {n_train!r}",
        )
    labels = labels.detach().cpu().reshape(-1)
    val = stratified_subset(labels, n_val, seed)
    keep = torch.ones(total, dtype=torch.bool)
    keep[val] = False
    rest = torch.nonzero(keep).reshape(-1)
    if n_train is None:
        return rest, val
    # A derived seed keeps the training draw independent of the validation one.
    train = rest[stratified_subset(labels[rest], n_train, seed + 1_000_003)]
    return train, val
