#!/usr/bin/env bash
# Installs the peers `make bench-peers` runs beside keymesh when this machine
# lacks them: Debian's etcd-server, and step-ca built from its Go module
# without cgo (the way its release binaries are built) into $(go env GOPATH)/bin.
set -euo pipefail
STEPCA_VERSION=${STEPCA_VERSION:-v0.30.2}
export PATH="$PATH:$(go env GOPATH)/bin:/usr/sbin:/sbin"

if ! command -v etcd >/dev/null 2>&1; then
  echo "bench-peers: installing Debian's etcd-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
  # The package starts a single-member etcd on 2379/2380; the benchmark runs
  # its own members on free ports, so that one only costs CPU.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop etcd >/dev/null 2>&1 || true; fi
fi
if [ -z "${STEPCA_BIN:-}" ] && ! command -v step-ca >/dev/null 2>&1; then
  echo "bench-peers: building step-ca $STEPCA_VERSION (CGO_ENABLED=0)"
  CGO_ENABLED=0 go install "github.com/smallstep/certificates/cmd/step-ca@$STEPCA_VERSION"
fi
echo "bench-peers: $(etcd --version | head -1), step-ca from ${STEPCA_BIN:-$(command -v step-ca)}"
