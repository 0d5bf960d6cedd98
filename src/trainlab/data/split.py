"""Held-out splits for data that comes without them (image folders, npz arrays), and the folds of a
K-fold cross-validation: stratified by class and seeded by `data.split_seed`, so every run of a sweep (and
every repeat of a fold) sees the same validation and test images."""

from __future__ import annotations

import torch

from trainlab.errors import fail

# The share of the training images held out for validation when `data.val_size` is null (and no folds).
VAL_SHARE = 0.1


def val_share(value: float | None) -> float:
    """`data.val_size`, or VAL_SHARE for null."""
    return VAL_SHARE if value is None else value


def stratified_split(labels: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """A boolean mask of `size` of `labels` (a fraction if < 1, else a count) drawn class by class, so each
    class keeps its share: class c gets ⌊k·n_c/n⌋ of the k images, the rest go to the largest remainders."""
    n = len(labels)
    total = round(size * n) if size < 1 else int(size)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * total / n
    quota = exact.floor().long()
    quota[torch.argsort(exact - quota, descending=True, stable=True)[: total - int(quota.sum())]] += 1
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, dtype=torch.bool)
    for c, k in zip(classes, quota, strict=True):
        members = (labels == c).nonzero().squeeze(1)
        mask[members[torch.randperm(len(members), generator=generator)[:k]]] = True
    return mask


def held_out(key: str, size: float, images: int) -> int:
    """How many of `images` the config key `key` holds out (`size`: a fraction if < 1, else a count); one
    that leaves no image on either side is the key's error."""
    count = round(size * images) if size < 1 else int(size)
    if not 0 < count < images:
        raise fail(key, size, f"a share or count of the {images} images, not 0 or all")
    return count


def hold_out(key: str, size: float, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """`stratified_split` for the config key `key` (`held_out` checks its size)."""
    held_out(key, size, len(labels))
    return stratified_split(labels, size, seed)


def shuffled(index: torch.Tensor, seed: int) -> torch.Tensor:
    """`index` in a seeded order, so that `data.train_size` takes a class-balanced prefix of sorted data."""
    return index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))]


def stratified_folds(
    labels: torch.Tensor, folds: int, seed: int, names: list[str] | None = None
) -> torch.Tensor:
    """Each image's fold (0…folds−1), class by class: a class's images in a seeded order are dealt to the
    folds in turn, continuing where the previous class stopped, so every fold holds each class's share.
    The last n mod K images dealt get −1 (in no fold): every fold, and every fold's training set, has the
    same size, so the K runs of a cross-validation take the same steps and can train as one population.
    More folds than the smallest class has images is `data.folds`'s error (a fold would miss that class)."""
    classes, counts = labels.unique(return_counts=True)
    smallest = int(counts.argmin())
    if folds > counts[smallest]:
        name = names[int(classes[smallest])] if names else str(int(classes[smallest]))
        most = int(counts[smallest])
        raise fail("data.folds", folds, f"at most {most}: class {name!r} has {most} training images")
    generator = torch.Generator().manual_seed(seed)
    dealt = torch.empty(len(labels), dtype=torch.long)  # each image's place in the dealing order
    start = 0
    for c, n in zip(classes, counts, strict=True):
        members = (labels == c).nonzero().squeeze(1)
        dealt[members[torch.randperm(int(n), generator=generator)]] = start + torch.arange(int(n))
        start += int(n)
    return torch.where(dealt < len(labels) // folds * folds, dealt % folds, -1)
