#!/usr/bin/env bash
# What the tests need besides Python packages (idempotent; run as root, before pytest):
#   PostgreSQL's server binaries (tests/test_servers.py starts a throwaway cluster of its own);
#   podman & co. for tests/test_docker.py are set up by docker/ci-setup.sh, which that test calls.
set -euo pipefail

if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
