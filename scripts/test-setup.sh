#!/usr/bin/env bash
# Install what the browser and container tests need, where this machine allows it.
# Without root (or without a package manager) the tests that need them skip with a reason;
# under CI (CI set) they fail instead, so CI must be able to run this.
set -uo pipefail
cd "$(dirname "$0")/.."

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

if ! command -v chromium >/dev/null 2>&1; then
  if can_install; then
    echo "test-setup: installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test-setup: chromium missing and cannot be installed here; the browser test will skip"
  fi
fi

# The network-namespace pool test builds its own "hosts" with ip and partitions one with
# iptables inside its namespace.
if ! command -v ip >/dev/null 2>&1 || ! command -v iptables >/dev/null 2>&1; then
  if can_install; then
    echo "test-setup: installing iproute2 and iptables for the network-namespace test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null
  else
    echo "test-setup: ip/iptables missing and cannot be installed here; the namespace test will skip"
  fi
fi

if [ -z "${DOCKER_HOST:-}" ] && [ -S /var/tmp/container-engine/podman.sock ]; then
  export DOCKER_HOST=unix:///var/tmp/container-engine/podman.sock  # engine-up's socket
fi
if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
  exit 0
fi
if [ -x ../shared/container/engine-up ] && can_install; then
  echo "test-setup: starting a container engine for the docker test (engine-up)"
  ../shared/container/engine-up >/dev/null || echo "test-setup: engine-up failed; the docker test will skip"
else
  echo "test-setup: no container engine here; the docker test will skip"
fi
exit 0
