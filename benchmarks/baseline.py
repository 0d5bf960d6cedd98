"""The hand-written PyTorch loop the platform is measured against: the fewest moving parts.

The same work as `python src/train.py <overrides>`: the config is composed by Hydra from `conf/`, the
training split comes from trainlab's own data loading (so the same images, uint8 until scaled x/255 on
the device), and the model, its init and the optimizer come from trainlab's builders. Then only
tensors, `randperm`, forward, cross-entropy, backward, step.

    python benchmarks/baseline.py data.root=/tmp/bench-data optimizer=adam --epochs 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def compose(overrides: list[str]):
    """The run config exactly as `src/train.py` composes it (Hydra runtime values are not needed)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def _training_split(images, labels, cfg):
    """The images the platform trains on: `data.val_size` held out of the end, `data.train_size` first."""
    n = len(labels)
    val_size = 0.1 if cfg.val_size is None else cfg.val_size  # trainlab.data.split.VAL_SHARE for null
    n_train = n - (round(val_size * n) if val_size < 1 else int(val_size))
    n_train = min(cfg.train_size or n_train, n_train)
    return images[:n_train], labels[:n_train]


def epoch_times(overrides: list[str], epochs: int, device: str = "cpu") -> list[float]:
    """Wall seconds of each of `epochs` training epochs (no validation) of the configured run.

    On a GPU it does what the config asks of the platform: bf16 autocast for `trainer.precision=bf16-mixed`,
    `cudnn.benchmark` for `trainer.benchmark`, NHWC weights for `model.channels_last`.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    from trainlab.data import DATASETS
    from trainlab.init import initialize
    from trainlab.models import build_model
    from trainlab.optim import build_optimizer

    cfg = compose(overrides)
    torch.manual_seed(cfg.seed)
    splits = DATASETS[cfg.data.name].load(cfg.data)  # trainlab's parsing, without its Lightning data module
    images, labels = _training_split(splits.train_images, splits.train_labels, cfg.data)
    images, labels = images.to(device), labels.to(device)
    model = build_model(cfg.model, cfg.norm, tuple(images.shape[1:]), splits.num_classes).to(device)
    initialize(model, cfg.init)
    if cfg.model.get("channels_last", False):
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    batch_size = cfg.data.batch_size
    torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)
    bf16 = device == "cuda" and cfg.trainer.precision == "bf16-mixed"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    for _ in range(epochs):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for index in torch.randperm(len(labels), device=device).split(batch_size):
            with autocast:
                loss = F.cross_entropy(model(images[index].float().div_(255.0)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(" ".join(f"{t:.3f}" for t in epoch_times(args.overrides, args.epochs, args.device)))
