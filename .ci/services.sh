#!/usr/bin/env bash
# What the tests need besides Python packages (idempotent; run as root, before pytest):
#   PostgreSQL's server binaries (tests/test_servers.py starts a throwaway cluster of its own);
#   Slurm 22.05, munge, MariaDB and slurmdbd (tests/test_slurm.py starts and stops a cluster of its own
#   with tests/slurm/slurm-up.sh, which lives in the repository so that a fresh clone has it);
#   podman & co. for tests/test_docker.py are set up by docker/ci-setup.sh, which that test calls.
set -euo pipefail

missing=()
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
for binary in slurmctld slurmd slurmdbd sbatch munged mariadbd; do
    [ -x "/usr/sbin/$binary" ] || command -v "$binary" >/dev/null || missing+=("$binary")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # The packages of tests/slurm/slurm-up.sh (INSTALL=1 installs the same).
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        postgresql slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
fi
