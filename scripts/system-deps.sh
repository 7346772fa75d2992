#!/usr/bin/env bash
# Install the Debian packages listed in requirements-apt.txt that are not installed yet.
# Idempotent: no apt-get call at all when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t wanted < <(grep -vE '^\s*(#|$)' requirements-apt.txt | awk '{print $1}')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# slapd's package starts a system instance; the tests run their own on a private port.
if command -v service >/dev/null && pgrep -x slapd >/dev/null; then $SUDO service slapd stop >/dev/null 2>&1 || true; fi
