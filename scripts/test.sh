#!/usr/bin/env bash
# Install esl-bridge with its test dependencies and run the whole test suite.
# On Debian as root it also installs what the browser and script tests need.
# Extra arguments go to pytest (e.g. scripts/test.sh -k config).
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(chromium chromium-driver firefox-esr shellcheck iproute2 util-linux libopus0 redis-server systemd)
# Node and npm for the JWT test, unless a Node with its own npm is there (Debian's npm
# conflicts with such a Node).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  debian_packages+=(nodejs npm)
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing Debian packages: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

python3 -m pip install --quiet --disable-pip-version-check '.[test]'
# Node's jsonwebtoken for the JWT test, and TypeScript in npm's cache for the sdk.d.ts
# check, installed here (the registry is reached by the install steps only; the tests
# themselves stay on loopback).
if command -v npm >/dev/null 2>&1; then
  npm install --prefix .test-deps/node --no-audit --no-fund --silent jsonwebtoken@9
  npx -y -p typescript tsc --version >/dev/null
fi

set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
