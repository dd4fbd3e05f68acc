#!/usr/bin/env bash
# Installs Debian's `prometheus` package when no prometheus binary is on PATH.
# The metrics integration tests start their own server from it on a free loopback
# port; the packaged service itself is never used, so the package is kept from starting it.
# Quiet on success; on failure the installer's output is shown.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: prometheus is not installed and apt-get is not available;" \
         "install Prometheus 2.x and put it on PATH" >&2
    exit 1
fi
source "$(dirname "$0")/quietly.sh"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "installing Debian's prometheus package (used by the metrics tests)" >&2
export DEBIAN_FRONTEND=noninteractive
quietly $SUDO apt-get update -qq
# policy-rc.d keeps the package from starting its own service during the install.
policy="${POLICY_RC_D:-/usr/sbin/policy-rc.d}"  # a test points it elsewhere
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
fi
status=0
quietly $SUDO apt-get install -y -qq --no-install-recommends prometheus || status=$?
if [ "$created_policy" = "1" ]; then $SUDO rm -f "$policy"; fi
if [ "$status" != "0" ]; then exit "$status"; fi
command -v prometheus >/dev/null 2>&1
