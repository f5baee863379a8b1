#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a
# fresh Debian machine, then runs the whole suite. Fails when any test
# fails.
#
# The integration tests drive the real binary, run examples/quickstart.sh
# (curl, openssl, python3; h2load for the TLS test), mint external-issuer JWTs with PyJWT, and load
# a page in headless Chromium for the CORS test. Nothing here is needed on
# a machine that already has them; as root it installs them with apt-get
# and pip, otherwise it says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing ${missing[*]}; run as root or: apt-get install ${missing[*]} ca-certificates fonts-liberation" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}" ca-certificates fonts-liberation
fi
if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
  python3 -m pip install --quiet pyjwt cryptography 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pyjwt cryptography
fi

if command -v cargo-nextest >/dev/null; then
  exec cargo nextest run --no-fail-fast "$@"
else
  exec cargo test --no-fail-fast "$@"
fi
