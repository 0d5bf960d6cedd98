#!/usr/bin/env bash
# What the tests need besides Python packages (idempotent; run as root, before pytest):
#   PostgreSQL's server binaries (tests/test_servers.py starts a throwaway cluster of its own);
#   Debian's full Fashion-MNIST (/usr/share/datasets/fashion-mnist: the slow full-size data test);
#   Chromium (tests/test_mlflow_ui.py loads the MLflow UI in it, headless);
#   podman & co. for tests/test_docker.py are set up by docker/ci-setup.sh, which that test calls.
set -euo pipefail

missing=()
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
