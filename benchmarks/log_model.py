"""What logging a run's network as an MLflow model (`logger.log_model`, on for single runs) adds to a run,
in wall seconds.

    python benchmarks/log_model.py                      # the default MLP, a local SQLite store in /tmp
    python benchmarks/log_model.py model=alexnet data=cifar10 --repeats 3

The first model logged in a process also pays MLflow's one-off scan of the installed packages (it checks
the model's pip requirements against them); a training run logs one model, so its cost is the first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="train.yaml overrides (model=..., data=...)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from hydra import compose, initialize_config_dir
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from trainlab.data import DATASETS
    from trainlab.module import Classifier, network_from_checkpoint
    from trainlab.tracking.model import log_network, network_label

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*args.overrides, "paths.root_dir=/tmp"])
    data = DATASETS[cfg.data.name]
    config = OmegaConf.to_container(cfg.model, resolve=True)
    module = Classifier(
        {
            k: OmegaConf.to_container(cfg[k], resolve=True)
            for k in ("model", "norm", "init", "optimizer", "regularizer")
        },
        data.image_shape,
        data.num_classes,
    )
    state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    network = network_from_checkpoint(state)
    examples = torch.rand(2, *data.image_shape).numpy()
    label = network_label(config, data.image_shape, data.num_classes)
    size = sum(p.numel() * p.element_size() for p in network.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        client = MlflowClient(uri)
        experiment = client.create_experiment("bench", artifact_location=Path(folder, "artifacts").as_uri())
        for repeat in range(args.repeats):
            run = client.create_run(experiment).info.run_id
            start = time.perf_counter()
            log_network(uri, run, network, examples, None, label)
            print(
                f"{label}, {size:.1f} MB of weights: "
                f"log_model #{repeat + 1} {time.perf_counter() - start:.2f} s"
            )


if __name__ == "__main__":
    main()
