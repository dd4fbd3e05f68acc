#!/usr/bin/env bash
# Sourced by the ensure-*.sh scripts: install one Debian package whose service the
# tests never use, quietly (its output is shown only on failure) and without letting
# the package start that service during the install.
# Usage: install_debian_package PACKAGE "why it is needed" "what to do without apt-get"
source "$(dirname "${BASH_SOURCE[0]}")/quietly.sh"

install_debian_package() {
    local package="$1" why="$2" otherwise="$3"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $package is not installed and apt-get is not available; $otherwise" >&2
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    echo "installing Debian's $package package ($why)" >&2
    export DEBIAN_FRONTEND=noninteractive
    quietly $sudo apt-get update -qq
    # policy-rc.d keeps the package from starting its own service during the install.
    local policy="${POLICY_RC_D:-/usr/sbin/policy-rc.d}"  # a test points it elsewhere
    local created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        created_policy=1
    fi
    local status=0
    quietly $sudo apt-get install -y -qq --no-install-recommends "$package" || status=$?
    if [ "$created_policy" = "1" ]; then $sudo rm -f "$policy"; fi
    return "$status"
}
