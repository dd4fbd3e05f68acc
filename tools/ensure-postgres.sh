#!/usr/bin/env bash
# Installs Debian's `postgresql` package when no PostgreSQL server binaries are found.
# The store tests start a throwaway cluster of their own from them (initdb, postgres)
# on a free loopback port when no server answers at the configured URL; the packaged
# service itself is never used, so the package is kept from starting it.
# Quiet on success; on failure the installer's output is shown.
set -euo pipefail
PG_LIB="${PG_LIB:-/usr/lib/postgresql}"  # where Debian puts each version's binaries
if compgen -G "$PG_LIB/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: PostgreSQL is not installed and apt-get is not available;" \
         "install a PostgreSQL server (initdb, postgres) or set CANARY_TEST_DATABASE_URL" >&2
    exit 1
fi
source "$(dirname "$0")/quietly.sh"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "installing Debian's postgresql package (the store tests run a throwaway server)" >&2
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
quietly $SUDO apt-get install -y -qq --no-install-recommends postgresql || status=$?
if [ "$created_policy" = "1" ]; then $SUDO rm -f "$policy"; fi
exit "$status"
