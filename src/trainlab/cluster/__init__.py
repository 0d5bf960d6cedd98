"""Where runs go besides this machine: SLURM (what a job asks for, requeue on preemption) and the
services of the compose stack."""
