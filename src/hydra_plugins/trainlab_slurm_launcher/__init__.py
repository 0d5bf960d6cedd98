"""trainlab's SLURM launcher: `launcher=slurm` (conf/launcher/slurm.yaml), on Hydra's submitit launcher."""
