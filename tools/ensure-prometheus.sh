#!/usr/bin/env bash
# Installs Debian's `prometheus` package when no prometheus binary is on PATH.
# The metrics integration tests start their own server from it on a free loopback
# port; the packaged service itself is never used, so the package is kept from starting it.
# Quiet on success; on failure the installer's output is shown.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
source "$(dirname "$0")/debian-package.sh"
install_debian_package prometheus "used by the metrics tests" \
    "install Prometheus 2.x and put it on PATH"
command -v prometheus >/dev/null 2>&1
