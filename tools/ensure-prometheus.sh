#!/usr/bin/env bash
# Installs Debian's `prometheus` package when no prometheus binary is on PATH.
# The metrics integration tests start their own server from it on a free loopback
# port; the packaged service itself is never used, so it is stopped if apt started it.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: prometheus is not installed and apt-get is not available;" \
         "install Prometheus 2.x and put it on PATH" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "installing Debian's prometheus package (used by the metrics tests)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# policy-rc.d keeps the package from starting its own service during the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
fi
$SUDO apt-get install -y -qq --no-install-recommends prometheus >&2
if [ "$created_policy" = "1" ]; then $SUDO rm -f "$policy"; fi
command -v prometheus >/dev/null 2>&1
