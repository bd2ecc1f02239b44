#!/usr/bin/env bash
# install-deps.sh - installs the Debian packages cfm needs to build, test and
# run. Idempotent: quiet and quick when everything is present; runs apt-get
# (through sudo when not root) only for what is missing.
set -euo pipefail

packages=(
    build-essential cmake pkg-config
    libmosquitto-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev
    liblua5.4-dev libuv1-dev libssl-dev libcmocka-dev
    mosquitto mosquitto-clients sqlite3 curl procps
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
