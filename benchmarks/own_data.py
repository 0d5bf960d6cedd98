"""The figures of issue 24 (your own data), through the real `src/train.py` CLI in a subprocess:

- augment: an epoch of the CIFAR CNN with `augment=flip_crop` against `augment=none` (target ≤ 1.10),
  on CIFAR-10 under `--data-root` (synthetic files written there if absent);
- augment_step: the same as training steps timed in one process, interleaved, for a machine whose speed
  drifts between runs (a shared CPU);
- folder: a folder of 10,000 32×32 PNGs (`data=image_folder`): start to first step of the first run
  (which decodes the folder into its cache) and of a cached run, next to a synthetic MNIST run's; and an
  epoch of the cached folder against an epoch of as many CIFAR-10 images of the same shape.

    python benchmarks/own_data.py --data-root /tmp/bench-data [--device cuda] [--only augment,folder]

Epoch times are medians over `--repeats` epochs after a warm-up epoch (`time/epoch_s`), each ratio the
median over `--rounds` back-to-back pairs. Everything goes under `--work` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402
from run import Bench, Row, table  # noqa: E402

FOLDER_IMAGES = 10_000  # 10 classes of 1,000


def paired_ratio(bench: Bench, name: str, base: list[str], other: list[str], train_size: list[str]) -> Row:
    """Median over rounds of (epoch with `other`) ÷ (epoch with `base`), each pair run back to back, the
    order swapped every round (a machine that drifts then favours neither)."""
    ratios, firsts, seconds = [], [], []
    for round_ in range(bench.rounds):
        pair = {}
        for label, overrides in (("base", base), ("other", other))[:: 1 if round_ % 2 == 0 else -1]:
            epochs = bench.platform_epochs(f"{name}-{label}", [*overrides, *train_size])
            pair[label] = statistics.median(epochs)
        firsts.append(pair["base"])
        seconds.append(pair["other"])
        ratios.append(seconds[-1] / firsts[-1])
    ratio = statistics.median(ratios)
    first, second = statistics.median(firsts), statistics.median(seconds)
    return Row(name, f"{first:.3f} s", f"{second:.3f} s", ratio, "≤ 1.10", ratio <= 1.10)


def augment(bench: Bench, train_size: list[str]) -> list[Row]:
    cifar = ["data=cifar10", "model=cifar_cnn", "optimizer=adam", "data.download=false"]
    if bench.device == "cuda":
        cifar.append("model.channels_last=true")
    name = "CIFAR CNN epoch, augment=flip_crop ÷ augment=none"
    return [paired_ratio(bench, name, [*cifar, "augment=none"], [*cifar, "augment=flip_crop"], train_size)]


def augment_step(bench: Bench, train_size: list[str]) -> list[Row]:
    """In one process, interleaved (robust to a machine whose speed drifts): the time `augment=flip_crop`
    takes on a batch of 256 CIFAR images, and a CIFAR CNN training step (forward, backward, Adam) on it;
    the ratio is (step + augmentation) ÷ step."""
    import torch
    from omegaconf import OmegaConf

    from trainlab.augment import Augmentation
    from trainlab.models import CifarCNN

    device = torch.device(bench.device)
    network = CifarCNN((3, 32, 32), 10, OmegaConf.create({"name": "none"})).to(device)
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    images, labels = torch.rand(256, 3, 32, 32, device=device), torch.randint(0, 10, (256,), device=device)
    flip_crop = Augmentation(padding=4, flip=0.5)

    def timed(work) -> float:
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def step() -> None:
        torch.nn.functional.cross_entropy(network(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad()

    steps, augmentations = [], []
    for index in range(5 + 10 * bench.repeats):
        steps.append(timed(step))
        augmentations.append(timed(lambda i=index: flip_crop(images, 0, 0, i)))
    plain = statistics.median(steps[5:])
    augmented = plain + statistics.median(augmentations[5:])
    name = "CIFAR CNN step (batch 256) + flip_crop ÷ the step alone, in one process"
    ratio = augmented / plain
    return [Row(name, f"{plain * 1000:.1f} ms", f"{augmented * 1000:.1f} ms", ratio, "≤ 1.10", ratio <= 1.10)]


def folder(bench: Bench, train_size: list[str]) -> list[Row]:
    images = bench.work / "folder10k"
    start = time.perf_counter()
    if not (images / "class9").is_dir():
        synthetic.write_image_folder(images, FOLDER_IMAGES // 10, size=32)
    written = time.perf_counter() - start
    rows = decode_and_read(images, bench.work / "cache")
    first_step = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    root = bench._root()  # one project folder: the first run decodes into its cache, the others read it
    folder_run = ["data=image_folder", f"data.root={images}", *bench.trainer(), *first_step]
    decode = bench.cli(*folder_run, root=root)[0]["first_step_s"]
    cached = statistics.median(
        bench.cli(*folder_run, root=root)[0]["first_step_s"] for _ in range(bench.repeats)
    )
    mnist_root = bench._root()
    bench.cli(*bench.trainer(), *first_step, root=mnist_root)  # makes the MLflow store, as the folder's first
    mnist_runs = [bench.cli(*bench.trainer(), *first_step, root=mnist_root)[0] for _ in range(bench.repeats)]
    mnist = statistics.median(run["first_step_s"] for run in mnist_runs)
    first = f"10,000 32×32 PNGs: start to first step, first run (decodes; {written:.0f} s to write them)"
    rows.append(Row(first, "", f"{decode:.2f} s", None, "", True))
    cached_name = "10,000 32×32 PNGs: start to first step, cached run (baseline: synthetic MNIST run)"
    ratio = cached / mnist
    rows.append(Row(cached_name, f"{mnist:.2f} s", f"{cached:.2f} s", ratio, "≤ 1.10", ratio <= 1.10))
    # 7,200 training images after the held-out 20 % + 10 %: compare with as many CIFAR-10 images.
    model = ["model=cifar_cnn", "optimizer=adam", "data.batch_size=256"]
    same = train_size or [f"data.train_size={int(FOLDER_IMAGES * 0.8 * 0.9)}"]
    name = "epoch of the cached folder ÷ epoch of as many CIFAR-10 images"
    cifar = ["data=cifar10", "data.download=false", *model]
    rows.append(paired_ratio(bench, name, cifar, ["data=image_folder", f"data.root={images}", *model], same))
    return rows


def decode_and_read(images: Path, cache: Path) -> list[Row]:
    """In one process: decoding the folder into a fresh cache, then reading the cache back."""
    from omegaconf import OmegaConf

    from trainlab.data.folder import cached_images, list_images

    cfg = OmegaConf.create({"root": str(images), "image_size": None, "channels": 3, "cache": str(cache)})
    listing = list_images(cfg.root)
    seconds = []
    for _ in range(2):  # the first decodes and writes, the second reads the cache
        start = time.perf_counter()
        cached_images(listing, cfg)
        seconds.append(time.perf_counter() - start)
    decode, read = (f"{s:.2f} s" for s in seconds)
    return [
        Row("10,000 32×32 PNGs: decode and write the cache (in one process)", "", decode, None, "", True),
        Row("10,000 32×32 PNGs: check and read the cache (in one process)", "", read, None, "", True),
    ]


FIGURES = {"augment": augment, "augment_step": augment_step, "folder": folder}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", type=Path, required=True, help="MNIST and CIFAR-10 (synthetic if absent)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="epochs (after a warm-up one) or runs per figure"
    )
    parser.add_argument("--rounds", type=int, default=1, help="back-to-back pairs per ratio")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--train-size", type=int, default=None, help="train on this many images (CPU: 5000)")
    parser.add_argument("--only", default=",".join(FIGURES), help=f"comma-separated of {', '.join(FIGURES)}")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    if not synthetic.has_mnist(args.data_root):
        synthetic.write_mnist(args.data_root)
    if not synthetic.has_cifar10(args.data_root):
        synthetic.write_cifar10(args.data_root)
    work = args.work or Path(tempfile.mkdtemp(prefix="trainlab-own-data-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.data_root.resolve(), work, args.repeats, args.device, args.rounds)
    train_size = [f"data.train_size={args.train_size}"] if args.train_size else []
    rows = []
    for name in args.only.split(","):
        rows += FIGURES[name](bench, train_size)
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
