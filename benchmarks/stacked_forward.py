"""One training step of a population's stacked network, members vectorised with `torch.func.vmap` against
called one after another (trainlab.population.stacked: a convolutional network on a CPU takes the second
way). Milliseconds per step (forward, cross-entropy, backward) on batches of 100 MNIST-shaped images.

    python benchmarks/stacked_forward.py                  # the simple CNN × 5, the MLPs of exercises 1-4
    python benchmarks/stacked_forward.py --device cuda    # on a GPU (gpu.sh)
"""

from __future__ import annotations

import argparse
import time

import torch

# (name, model config, members): the study's networks at the sizes its populations have.
NETWORKS = [
    ("simple_cnn × 5", {"name": "simple_cnn"}, 5),
    ("MLP 784-100×6-10 × 25 (overfitting)", {"name": "mlp", "hidden": [100] * 6, "activation": "relu"}, 25),
    ("MLP 784-40-20-10 × 15 (vanishing gradient)", {"name": "mlp", "hidden": [40, 20]}, 15),
]


def networks(model: dict, members: int) -> list[torch.nn.Module]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from trainlab.cli.session import CONF
    from trainlab.population.module import build_member_networks

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", [f"model={model['name']}", "paths.output_dir=unused"])
    configs = []
    for seed in range(members):
        config = OmegaConf.to_container(cfg, resolve=True) | {"seed": seed}
        config["model"] |= {k: v for k, v in model.items() if k != "name"}
        configs.append(config)
    return build_member_networks(configs, (1, 28, 28), 10)


def step_ms(stacked: torch.nn.Module, members: int, device: str, steps: int = 20) -> float:
    images = torch.randn(members, 100, 1, 28, 28, device=device)
    labels = torch.randint(0, 10, (members, 100), device=device)

    def step() -> None:
        logits = stacked(images, per_member=True)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    from trainlab.population.stacked import StackedNetwork

    print("| network | vmap (ms/step) | one after another (ms/step) | trainlab takes |\n|---|---|---|---|")
    for name, model, members in NETWORKS:
        stacked = StackedNetwork(networks(model, members)).to(options.device)
        chosen = "one after another" if stacked.convolutional and options.device == "cpu" else "vmap"
        stacked.convolutional = False  # what forward() reads to choose (on a CPU)
        vectorised = step_ms(stacked, members, options.device)
        stacked.convolutional = True
        on_cpu = options.device == "cpu"
        loop = f"{step_ms(stacked, members, options.device):.1f}" if on_cpu else "– (CPU only)"
        print(f"| {name} | {vectorised:.1f} | {loop} | {chosen} |")


if __name__ == "__main__":
    main()
