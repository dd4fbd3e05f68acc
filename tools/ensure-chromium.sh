#!/usr/bin/env bash
# Installs Debian's `chromium` package when no chromium binary is on PATH.
# The dashboard's browser test drives it headless (screenshots and the rendered DOM
# of the pages, on a loopback port); it has no service, and the package is still
# kept from starting any during the install.
# Quiet on success; on failure the installer's output is shown.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
source "$(dirname "$0")/debian-package.sh"
install_debian_package chromium "used by the dashboard's browser test" \
    "install Chromium and put it on PATH as chromium"
command -v chromium >/dev/null 2>&1
