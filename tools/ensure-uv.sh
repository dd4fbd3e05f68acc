#!/usr/bin/env bash
# Prints the command that runs uv, installing uv from PyPI first when it is missing.
# A fresh Debian machine may have a Python without pip, or one that refuses --user
# installs (PEP 668), so each fallback is tried in turn.
set -euo pipefail
UV_VERSION="0.13.9"
PY="${PYTHON:-python3}"

if command -v uv >/dev/null 2>&1; then echo "uv"; exit 0; fi
if "$PY" -m uv --version >/dev/null 2>&1; then echo "$PY -m uv"; exit 0; fi

echo "installing uv ${UV_VERSION} from PyPI" >&2
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        source "$(dirname "$0")/quietly.sh"
        quietly apt-get update -qq && quietly apt-get install -y -qq python3-pip
    else
        echo "error: neither uv nor pip is available for $PY; install uv first" >&2
        exit 1
    fi
fi
"$PY" -m pip install --quiet --user "uv==${UV_VERSION}" >&2 \
    || "$PY" -m pip install --quiet --user --break-system-packages "uv==${UV_VERSION}" >&2
echo "$PY -m uv"
