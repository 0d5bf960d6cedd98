"""Augmentation of training batches on the device: random crop with zero padding, horizontal flip, random
erasing (cutout). `conf/augment/` holds presets of one `Augmentation`'s numbers.

Batched: one gather and one mask over the whole batch, whatever the data set, no per-image PIL. The draws
(a few numbers per image, made on the CPU and copied over in one transfer) are a function of (seed,
epoch, batch in the epoch) alone: a resumed run augments exactly as an uninterrupted one did, a CPU and a
GPU draw the same, and the members of a population train on the same augmented batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from trainlab.errors import check_choice, fail
from trainlab.rules import arguments, check_arguments, is_int, is_number

# The presets in conf/augment/: each sets every number of `Augmentation`.
AUGMENTS = ("none", "crop", "flip_crop", "erase")


@dataclass(frozen=True)
class Augmentation:
    """`padding`: shift by up to ±padding pixels (zero padding, then a crop of the original size);
    `flip`: probability of a horizontal flip; `erase`: probability of blanking (to 0) a square of side
    `erase_size`·(H, W) centred at a uniform pixel, clipped at the border (cutout, DeVries & Taylor 2017)."""

    padding: int = 0
    flip: float = 0.0
    erase: float = 0.0
    erase_size: float = 0.5

    @property
    def active(self) -> bool:
        return bool(self.padding or self.flip or self.erase)

    def __call__(self, images: torch.Tensor, seed: int, epoch: int, step: int) -> torch.Tensor:
        """The batch `images` (N, C, H, W) augmented with the draws of (seed, epoch, step)."""
        if not self.active:
            return images
        n, _, h, w = images.shape
        # One draw per image and number: shift y, shift x, flip, erase, erase centre y, centre x.
        generator = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + step) % 2**63)
        uniform = torch.rand(n, 6, generator=generator)
        draws = torch.cat(
            [
                (uniform[:, :2] * (2 * self.padding + 1)).long(),
                (uniform[:, 2:3] < self.flip).long(),
                (uniform[:, 3:4] < self.erase).long(),
                (uniform[:, 4:] * torch.tensor([h, w])).long(),
            ],
            1,
        ).to(images.device, non_blocking=True)
        if self.padding or self.flip:
            images = self._shift_and_flip(images, draws[:, 0:1], draws[:, 1:2], draws[:, 2:3].bool())
        if self.erase:
            images = self._erase(images, draws[:, 3].bool(), draws[:, 4:5], draws[:, 5:6])
        return images

    def _shift_and_flip(
        self, images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor
    ) -> torch.Tensor:
        """out[n, :, i, j] = padded[n, :, i + dy, j' + dx] with j' = W−1−j if flipped else j: one gather."""
        n, c, h, w = images.shape
        p = self.padding
        padded = F.pad(images, (p, p, p, p)) if p else images
        columns = torch.arange(w, device=images.device)
        rows = dy + torch.arange(h, device=images.device)  # (N, H) rows of the padded image
        columns = torch.where(flip, w - 1 - columns, columns) + dx  # (N, W)
        index = rows[:, :, None] * (w + 2 * p) + columns[:, None, :]
        gathered = padded.flatten(2).gather(2, index.view(n, 1, h * w).expand(n, c, h * w))
        return gathered.view(n, c, h, w)

    def _erase(
        self, images: torch.Tensor, erase: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor
    ) -> torch.Tensor:
        """Blank the square of side erase_size·(H, W) centred at (cy, cx) in each image with `erase`."""
        _, _, h, w = images.shape
        sh, sw = max(1, round(self.erase_size * h)), max(1, round(self.erase_size * w))
        ys, xs = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
        top, left = cy - sh // 2, cx - sw // 2
        inside_y = ((ys >= top) & (ys < top + sh) & erase[:, None]).to(images.dtype)  # (N, H)
        inside_x = ((xs >= left) & (xs < left + sw)).to(images.dtype)  # (N, W)
        # A product of 0/1 factors, not masked_fill: a third of its time on a CPU.
        return images * (1 - inside_y[:, :, None] * inside_x[:, None, :])[:, None]


def check_augment(cfg: DictConfig) -> None:
    """A known preset, keys that are `Augmentation`'s, and numbers in their ranges."""
    check_choice("augment.name", cfg.name, AUGMENTS)
    check_arguments("augment", cfg, Augmentation)
    given = arguments(cfg)
    ranges = {
        "padding": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (pixels)"),
        "flip": (lambda v: is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
        "erase": (lambda v: is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
        "erase_size": (lambda v: is_number(v) and 0 < v <= 1, "a fraction of the image side in (0, 1]"),
    }
    for key, (check, allowed) in ranges.items():
        if key in given and not check(given[key]):
            raise fail(f"augment.{key}", given[key], allowed)


def build_augmentation(cfg: DictConfig | None) -> Augmentation:
    """The `augment` group's Augmentation (none where a config has no such group)."""
    return Augmentation(**arguments(cfg)) if cfg is not None else Augmentation()
