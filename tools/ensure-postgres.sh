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
source "$(dirname "$0")/debian-package.sh"
install_debian_package postgresql "the store tests run a throwaway server" \
    "install a PostgreSQL server (initdb, postgres) or set CANARY_TEST_DATABASE_URL"
