#!/usr/bin/env bash
# Set up a development checkout: system packages the tests use (when run as root), then .venv with
# provision installed in editable mode plus its test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(git openssh-server openssh-client docker.io debootstrap python3-venv sudo)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "not root: skipping system packages (${SYSTEM_PACKAGES[*]}); SSH and Docker tests need them"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# An editable install ships no bytecode, and with PYTHONDONTWRITEBYTECODE set none is ever written:
# every command would then compile the whole package first (~50 ms).
.venv/bin/python -m compileall -q provisioner >/dev/null
echo "ready: .venv/bin/provision --help"
