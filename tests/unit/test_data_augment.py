"""Normalisation, batched crop/flip augmentation and ImageBatches."""

import pytest
import torch
import torch.nn.functional as F

from normexp.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ImageBatches,
    normalize,
    random_crop_flip,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen(seed))


def test_normalize_matches_the_formula():
    x = images(4)
    out = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(normalize(x[0], mean, std), out[0])  # one image, tensor stats


def test_crop_flip_shape_and_padding_zero_is_identity_up_to_flips():
    x = torch.randn(64, 3, 8, 8)
    out = random_crop_flip(x, 0, gen(0))
    assert out.shape == x.shape
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same | flipped)
    assert same.any() and flipped.any()


def candidates(sample: torch.Tensor, padding: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    _, h, w = sample.shape
    padded = F.pad(sample, (padding,) * 4)
    out = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out += [(dy, dx, False, crop), (dy, dx, True, crop.flip(-1))]
    return out


def test_every_output_is_a_shifted_flipped_crop_of_its_input():
    x = torch.randn(48, 3, 6, 7)
    out = random_crop_flip(x, 2, gen(1))
    seen = set()
    for i in range(x.shape[0]):
        matches = [c[:3] for c in candidates(x[i], 2) if torch.equal(c[3], out[i])]
        assert len(matches) == 1, f"sample {i} is no crop of its input"
        seen.add(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in seen}
    assert len(offsets) > 10 and {f for _, _, f in seen} == {False, True}


def test_fill_sets_the_padding_value():
    x = torch.ones(32, 3, 4, 4)
    out = random_crop_flip(x, 4, gen(2), fill=torch.tensor([-1.0, -2.0, -3.0]))
    for c, v in enumerate([-1.0, -2.0, -3.0]):
        assert set(out[:, c].unique().tolist()) <= {1.0, v}
    assert (out[:, 0] == -1.0).any()


def test_crop_flip_is_deterministic_in_the_generator():
    x = torch.randn(16, 3, 8, 8)
    a = random_crop_flip(x, 2, gen(5))
    assert torch.equal(a, random_crop_flip(x, 2, gen(5)))
    assert not torch.equal(a, random_crop_flip(x, 2, gen(6)))


def test_batches_cover_the_set_once_per_epoch_in_a_new_order():
    n = 300
    labels = torch.arange(n)  # labels double as sample ids
    batches = ImageBatches(
        images(n), labels, 64, shuffle=True, augment=True, drop_last=False, generator=gen(0)
    )
    assert len(batches) == 5
    epoch1 = [(x, y) for x, y in batches]
    assert [y.numel() for _, y in epoch1] == [64, 64, 64, 64, 44]
    assert all(x.shape == (y.numel(), 3, 32, 32) and x.dtype == torch.float32 for x, y in epoch1)
    order1 = torch.cat([y for _, y in epoch1])
    order2 = torch.cat([y for _, y in batches])
    assert torch.equal(order1.sort().values, labels) and torch.equal(order2.sort().values, labels)
    assert not torch.equal(order1, order2)  # reshuffled per epoch
    again = ImageBatches(
        images(n), labels, 64, shuffle=True, augment=True, drop_last=False, generator=gen(0)
    )
    x_again, y_again = next(iter(again))
    assert torch.equal(y_again, epoch1[0][1]) and torch.equal(x_again, epoch1[0][0])


def test_batches_without_shuffle_or_augment_are_normalised_in_order():
    x = images(10)
    batches = ImageBatches(
        x, torch.arange(10), 4, shuffle=False, augment=False, drop_last=True, generator=None
    )
    assert len(batches) == 2
    got = list(batches)
    assert [y.tolist() for _, y in got] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    torch.testing.assert_close(got[1][0], normalize(x[4:8], CIFAR10_MEAN, CIFAR10_STD))


def test_augmented_padding_is_black():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    batches = ImageBatches(
        x, torch.zeros(64), 64, shuffle=False, augment=True, drop_last=False, generator=gen(3)
    )
    out, _ = next(iter(batches))
    black = normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), CIFAR10_MEAN, CIFAR10_STD)
    inside = normalize(x[:1, :, :1, :1], CIFAR10_MEAN, CIFAR10_STD)
    for c in range(3):
        values = out[:, c].unique()
        assert values.numel() == 2
        torch.testing.assert_close(
            values.sort().values, torch.stack([black, inside])[:, 0, c, 0, 0]
        )


def test_batches_reject_float_images():
    with pytest.raises(ValueError, match="uint8"):
        ImageBatches(
            torch.zeros(4, 3, 8, 8),
            torch.zeros(4),
            2,
            shuffle=False,
            augment=False,
            drop_last=False,
        )


def test_batches_equal_normalising_first_then_cropping_with_normalised_black():
    # Cropping the uint8 images then normalising the batch is the same, bit for bit, as
    # normalising the whole set first and padding with the normalised value of black.
    n, raw, labels = 96, images(96, seed=3), torch.arange(96)
    batches = ImageBatches(
        raw, labels, 32, shuffle=True, augment=True, drop_last=False, generator=gen(5)
    )
    g = gen(5)
    whole = normalize(raw, CIFAR10_MEAN, CIFAR10_STD)
    black = -torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD)
    order = torch.randperm(n, generator=g)
    for b, (x, y) in enumerate(batches):
        idx = order[32 * b : 32 * (b + 1)]
        expected = random_crop_flip(whole[idx], 4, g, fill=black)
        assert torch.equal(y, idx) and torch.equal(x, expected)
