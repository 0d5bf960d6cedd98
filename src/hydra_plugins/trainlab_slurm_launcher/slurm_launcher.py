"""The Hydra launcher of conf/launcher/slurm.yaml: Hydra's submitit SLURM launcher, asking for no GPU rather
than for 0 GPUs."""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    """For 0 GPUs submitit writes `--gpus-per-node=0`, which SLURM files as a GPU request
    (`TresPerNode=gres:gpu:0`) for any site policy that routes or refuses GPU jobs: leave it out."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if not self.params.get("gpus_per_node"):
            self.params["gpus_per_node"] = None
