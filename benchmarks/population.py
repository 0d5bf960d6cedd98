"""Populations against one trial at a time (docs/sweeps.md, "Populations"; docs/performance.md).

    python benchmarks/population.py --work /tmp/pop-bench                 # every figure (~6 min, 2 cores)
    python benchmarks/population.py --work /tmp/pop-bench --only members --sizes 1,8,32
    python benchmarks/population.py --work /tmp/pop-bench --only members --sizes 1,64 --device cuda  # gpu.sh

- `sweep8`: 8 trials × 3 epochs of the MLP 784-100×4-10 with Adam on 60,000 real images (Debian's
  Fashion-MNIST, /usr/share/datasets/fashion-mnist, else a synthetic MNIST of the same size): the whole
  `-m hparams_search=lr` command with `hydra.sweeper.population=8` against today's one trial per job.
- `elastic20`: the 20-trial `hparams_search=elastic_net` on the bundled 5,000-image MNIST subset, 1 epoch
  each: `population=20`, and the Optuna sweeper's default (4 trials a job), against one trial per job.
- `members`: one training epoch of a population of K members (K from `--sizes`) on the 60,000 images,
  in a process of its own: seconds per epoch, per member, and peak memory, next to K = 1 trained as a
  standalone `Classifier` (what each trial of a sweep runs).
- `bound`: what stacking can gain at best on this machine, without trainlab: one epoch's 540 steps of the
  same MLP (random batches in memory, Adam) as a plain torch loop, against K of them stacked into batched
  matrix products (`baddbmm`), per member.
Wall times come from the clock around each command; both sides of a ratio run back to back.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

from hydra_plugins.trainlab_optuna_sweeper.settings import DEFAULT_POPULATION  # noqa: E402

TRAIN = REPO / "src" / "train.py"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
MLP = ["optimizer=adam", "model.hidden=[100,100,100,100]", "data.batch_size=100"]
QUIET = ["hydra.job_logging.root.level=WARNING", "callbacks.progress_bar.refresh_rate=0"]


def full_size_data(root: Path) -> list[str]:
    """Overrides selecting 60,000 + 10,000 images in torchvision's layout under `root`: Debian's real
    Fashion-MNIST where installed (unzipped once), else the synthetic MNIST of benchmarks/synthetic.py."""
    raw = root / "FashionMNIST" / "raw"
    if DEBIAN_FASHION.is_dir():
        raw.mkdir(parents=True, exist_ok=True)
        for packed in DEBIAN_FASHION.glob("*-ubyte.gz"):
            target = raw / packed.name.removesuffix(".gz")
            if not target.exists():
                with gzip.open(packed) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
        return ["data=fashion_mnist", f"data.root={root}"]
    sys.path.insert(0, str(HERE))
    import synthetic

    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        synthetic.write_mnist(root, 60_000, 10_000)
    return ["data=mnist", f"data.root={root}"]


def timed_cli(root: Path, *args: str) -> float:
    """Seconds for `python src/train.py args` with everything under `root` (a fresh project folder)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TRAINLAB_ROOT")}
    flags = [a for a in args if a.startswith("-")]
    cmd = [sys.executable, str(TRAIN), *flags, f"paths.root_dir={root}", *QUIET]
    cmd += [a for a in args if not a.startswith("-")]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return seconds


def compare(work: Path, name: str, args: list[str], sizes: list[int]) -> list[dict]:
    """The command one trial per job, then with `population=K` for each K of `sizes`: one row per K, all
    against the same one-trial-per-job time."""
    alone = timed_cli(work / f"{name}-one", *args, "hydra.sweeper.population=1")
    rows = []
    for size in sizes:
        together = timed_cli(work / f"{name}-{size}", *args, f"hydra.sweeper.population={size}")
        rows.append(
            {
                "figure": name,
                "population": size,
                "one_trial_per_job_s": round(alone, 1),
                "population_s": round(together, 1),
                "speed_up": round(alone / together, 2),
            }
        )
    return rows


def member_epoch(size: int, data: list[str], device: str) -> dict:
    """One training epoch of K members (K = 0: one standalone Classifier), timed in this process."""
    import lightning as L
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainlab.data import build_datamodule
    from trainlab.module import Classifier
    from trainlab.population.module import PopulationClassifier

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*MLP, *data])
    cfg.paths.output_dir = "unused"
    config = OmegaConf.to_container(cfg, resolve=True)
    datamodule = build_datamodule(cfg.data, 0)
    shape, classes = datamodule.image_shape, datamodule.num_classes
    if size == 0:
        module = Classifier(config, shape, classes)
    else:
        configs = [
            {**config, "seed": k, "optimizer": {**config["optimizer"], "lr": 1e-3 * (1 + k % 4)}}
            for k in range(size)
        ]
        module = PopulationClassifier(configs, shape, classes)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "members": size or 1,
        "standalone": size == 0,
        "epoch_s": round(seconds, 2),
        "epoch_s_per_member": round(seconds / max(size, 1), 3),
        "peak_rss_mib": round(peak),
    }
    if device == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return result


def stacking_bound(sizes: list[int], device: str, steps: int = 540) -> list[dict]:
    import torch

    widths = [784, 100, 100, 100, 100, 10]
    images = torch.randn(steps, 100, widths[0], device=device)
    labels = torch.randint(0, widths[-1], (steps, 100), device=device)

    def epoch(forward, parameters) -> float:
        optimizer = torch.optim.Adam(parameters, 1e-3)
        start = time.perf_counter()
        for x, y in zip(images, labels, strict=True):
            logits = forward(x)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, widths[-1]), y.repeat(len(logits) // len(y))
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    layers = [torch.nn.Linear(a, b, device=device) for a, b in itertools.pairwise(widths)]
    single = torch.nn.Sequential(*[m for layer in layers for m in (layer, torch.nn.ReLU())][:-1])
    single_s = epoch(single, single.parameters())
    rows = []
    for k in sizes:
        weights = [
            torch.randn(k, a, b, device=device, requires_grad=True) for a, b in itertools.pairwise(widths)
        ]
        biases = [torch.zeros(k, 1, b, device=device, requires_grad=True) for b in widths[1:]]

        def stacked(x, weights=weights, biases=biases, k=k):
            h = x.expand(k, *x.shape)
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                h = torch.baddbmm(b, h, w)
                h = h.relu() if i < len(weights) - 1 else h
            return h.reshape(k * len(x), -1)

        per_member = epoch(stacked, weights + biases) / k
        rows.append(
            {
                "figure": "bound",
                "members": k,
                "single_epoch_s": round(single_s, 3),
                "stacked_epoch_s_per_member": round(per_member, 3),
                "speed_up_per_member": round(single_s / per_member, 2),
            }
        )
    return rows


def members(work: Path, sizes: list[int], device: str) -> list[dict]:
    rows = []
    for size in [0, *sizes]:  # 0: the standalone Classifier a sweep's trial trains
        cmd = [sys.executable, __file__, "--work", str(work), "--member-epoch", str(size), "--device", device]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
        if result.returncode:
            raise SystemExit(result.stderr[-3000:])
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (data, stores, outputs)")
    parser.add_argument("--only", default="sweep8,elastic20,members,bound")
    parser.add_argument("--sizes", default="1,8,32", help="population sizes for `members` and `bound`")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--member-epoch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = full_size_data(args.work / "data")
    if args.member_epoch is not None:
        print(json.dumps(member_epoch(args.member_epoch, data, args.device)))
        return 0
    only = args.only.split(",")
    trainer = ["trainer=gpu"] if args.device == "cuda" else ["trainer.accelerator=cpu"]
    results = []
    if "sweep8" in only:
        sweep = [
            "-m",
            "hparams_search=lr",
            *MLP,
            *data,
            *trainer,
            "trainer.max_epochs=3",
            "hydra.sweeper.n_trials=8",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=0",
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
        ]
        results += [{**row, "target": ">= 3"} for row in compare(args.work, "sweep8", sweep, [8])]
    if "elastic20" in only:
        empty = args.work / "no-mnist"  # no MNIST files: the bundled 5,000-image subset
        empty.mkdir(exist_ok=True)
        sweep = [
            "-m",
            "hparams_search=elastic_net",
            f"data.root={empty}",
            *trainer,
            "trainer.max_epochs=1",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.sampler.seed=0",
        ]
        # population=20 (the target's), and the Optuna sweeper's default, against one shared baseline.
        for row in compare(args.work, "elastic20", sweep, [20, DEFAULT_POPULATION]):
            results.append({**row, "target": ">= 5" if row["population"] == 20 else "(the default)"})
    if "members" in only:
        results += members(args.work, [int(s) for s in args.sizes.split(",")], args.device)
    if "bound" in only:
        results += stacking_bound([int(s) for s in args.sizes.split(",")], args.device)
    for row in results:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
