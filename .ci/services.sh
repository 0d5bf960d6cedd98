#!/usr/bin/env bash
# What the tests need besides Python packages (idempotent; run as root, before pytest):
#   PostgreSQL's server binaries (tests/test_servers.py starts a throwaway cluster of its own);
#   Debian's full Fashion-MNIST (/usr/share/datasets/fashion-mnist: the slow full-size data test);
#   Chromium (tests/test_mlflow_ui.py loads the MLflow UI in it, headless);
#   Charliecloud (tests/test_slurm.py's jobs in containers);
#   Slurm 22.05, munge, MariaDB and slurmdbd (tests/test_slurm.py starts and stops a cluster of its own
#   with tests/slurm/slurm-up.sh, which lives in the repository so that a fresh clone has it);
#   podman & co. for tests/test_docker.py and tests/test_compose.py are set up by docker/ci-setup.sh,
#   which those tests call (tests/images.py).
set -euo pipefail

missing=()
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)
# Charliecloud (tests/test_slurm.py runs SLURM jobs in its directory images, converted from podman's).
command -v ch-convert >/dev/null || missing+=(charliecloud-runtime charliecloud-builders)
for binary in slurmctld slurmd slurmdbd sbatch munged mariadbd; do
    if ! [ -x "/usr/sbin/$binary" ] && ! command -v "$binary" >/dev/null; then
        # The packages of tests/slurm/slurm-up.sh (INSTALL=1 installs the same).
        missing+=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
        break
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
