"""A grid of augmented training images, to see what an `augment` preset does to the data before training
on it: `python src/report.py augmented data=cifar10 augment=flip_crop`.

The first row holds the first training images as they are; each further row the same images as the
training batch of that step draws them (epoch 0, steps 0, 1, …).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from trainlab.atomic import write_figure
from trainlab.errors import UserError


def draw_augmented(cfg: DictConfig, columns: int = 8, rows: int = 4) -> Any:
    """A matplotlib Figure: `columns` training images, as they are and as `rows` − 1 steps augment them."""
    import matplotlib.pyplot as plt

    from trainlab.augment import build_augmentation
    from trainlab.data import build_datamodule

    if cfg.data.name == "custom":
        raise UserError(
            "data=custom: the grid shows trainlab's in-memory data; use a built-in, folder or npz"
        )
    datamodule = build_datamodule(cfg.data, cfg.seed or 0)
    images = datamodule.train.images[:columns].float() / 255
    augmentation = build_augmentation(cfg.augment)
    grid = [images] + [augmentation(images, cfg.seed or 0, 0, step) for step in range(rows - 1)]
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.2), squeeze=False)
    names = datamodule.class_names
    for row, batch in enumerate(grid):
        for column, image in enumerate(batch):
            axis = axes[row][column]
            axis.imshow(image.permute(1, 2, 0).squeeze(-1).clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0 and names:
                axis.set_title(names[int(datamodule.train.labels[column])], fontsize=7)
        axes[row][0].set_ylabel("as is" if row == 0 else f"step {row - 1}", fontsize=7)
    figure.suptitle(f"augment={cfg.augment.name} on data={cfg.data.name}", fontsize=9)
    figure.tight_layout()
    return figure


def compose_checked(overrides: list[str]) -> DictConfig:
    """The run config `src/train.py` would compose from `overrides`, its data and augment groups checked."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from trainlab.augment import check_augment
    from trainlab.data import check_data

    conf = Path(__file__).resolve().parents[3] / "conf"  # src/trainlab/figures/ → the repository
    try:
        with initialize_config_dir(str(conf), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
    except HydraException as err:
        raise UserError(f"{' '.join(overrides)}: {str(err).splitlines()[0]}") from None
    check_data(cfg.data)
    check_augment(cfg.augment)
    return cfg


def save_augmented(overrides: list[str]) -> Path:
    """Draw the grid for the run config of `overrides` and save it as
    `<paths.root_dir>/outputs/reports/augmented_<data>_<augment>.png`; return its path."""
    cfg = compose_checked(overrides)
    folder = Path(cfg.paths.root_dir) / "outputs" / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"augmented_{cfg.data.name}_{cfg.augment.name}.png"
    write_figure(draw_augmented(cfg), png, dpi=110)
    return png


def main(overrides: list[str]) -> int:
    """`augmented [key=value ...]`: the grid's path on stdout, or a mistake as one line and exit status 2."""
    import os
    import sys

    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        print(f"augmented samples: {save_augmented(overrides)}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
