#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a
# fresh Debian machine, then runs the whole suite. Fails when any test
# fails.
#
# The integration tests drive the real binary, run examples/quickstart.sh
# (curl, openssl, python3; h2load for the TLS tests), mint external-issuer JWTs with PyJWT, decode OTLP span exports with
# opentelemetry-proto (tests/tracing.rs), validate
# the management API's OpenAPI description with openapi-spec-validator (and
# the answers against it with jsonschema), and load
# a page in headless Chromium for the CORS test. A throwaway PostgreSQL
# server (initdb in a temporary directory, run as an unprivileged user,
# trust auth on 127.0.0.1 only, stopped on exit) backs the cluster-store
# tests (APIGW_TEST_PG_URL) and a second run of the management suite on
# the PostgreSQL store (APIGW_TEST_STORE=postgres). The cluster test
# (APIGW_TEST_CLUSTER=1) starts examples/cluster/: its own PostgreSQL,
# Redis, three nodes and haproxy, all on loopback. Nothing here is needed on
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
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
[ -n "$(pg_bin)" ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing ${missing[*]}; run as root or: apt-get install ${missing[*]} ca-certificates fonts-liberation" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}" ca-certificates fonts-liberation
fi
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install --quiet prometheus_client 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages prometheus_client
fi
# The cluster test (tests/cluster.rs, examples/cluster/) also needs Redis
# and haproxy: installed without starting their system services (a
# policy-rc.d that refuses, removed again), the test runs its own.
cluster_missing=()
command -v redis-server >/dev/null || cluster_missing+=(redis-server)
command -v redis-cli >/dev/null || cluster_missing+=(redis-tools)
command -v haproxy >/dev/null || cluster_missing+=(haproxy)
if [ ${#cluster_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/run.sh: missing ${cluster_missing[*]}; run as root or: apt-get install ${cluster_missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# written by apigw tests/run.sh during its install\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_rc=/usr/sbin/policy-rc.d
  fi
  apt-get update
  apt-get install -y --no-install-recommends "${cluster_missing[@]}" || { [ -n "$policy_rc" ] && rm -f "$policy_rc"; exit 1; }
  [ -n "$policy_rc" ] && rm -f "$policy_rc"
fi
export APIGW_TEST_CLUSTER=1
if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
  python3 -m pip install --quiet pyjwt cryptography 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pyjwt cryptography
fi
# The OTLP receiver of tests/tracing.rs decodes protobuf exports with it.
if ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  python3 -m pip install --quiet opentelemetry-proto 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages opentelemetry-proto
fi
# Validates the management API's own OpenAPI description (tests/openapi.rs)
# and every answer against it (tests/openapi_responses.rs, with jsonschema).
if ! python3 -c 'import openapi_spec_validator, jsonschema' 2>/dev/null; then
  python3 -m pip install --quiet openapi-spec-validator jsonschema 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages openapi-spec-validator jsonschema
fi

# --- PostgreSQL ---------------------------------------------------------
pg="$(pg_bin)"
pg_dir="$(mktemp -d /tmp/apigw-pg.XXXXXX)"
pg_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  # initdb refuses to run as root.
  pg_user=postgres
  id -u "$pg_user" >/dev/null 2>&1 || pg_user=nobody
  chown "$pg_user" "$pg_dir"
  as_pg=(runuser -u "$pg_user" --)
fi
stop_pg() {
  "${as_pg[@]}" "$pg/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap stop_pg EXIT
"${as_pg[@]}" "$pg/initdb" -D "$pg_dir/data" -U apigw --auth=trust -E UTF8 --no-locale >"$pg_dir/initdb.log" \
  || { cat "$pg_dir/initdb.log" >&2; exit 1; }
# Throwaway data: no fsync. Loopback only; the socket in the temp dir.
"${as_pg[@]}" "$pg/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -s \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start \
  || { cat "$pg_dir/server.log" >&2; exit 1; }
export APIGW_TEST_PG_URL="postgres://apigw@127.0.0.1:$pg_port/postgres"

status=0
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --no-fail-fast "$@" || status=$?
  # The management suite again, on the PostgreSQL store.
  APIGW_TEST_STORE=postgres cargo nextest run --no-fail-fast --test management "$@" || status=$?
else
  cargo test --no-fail-fast "$@" || status=$?
  APIGW_TEST_STORE=postgres cargo test --no-fail-fast --test management "$@" || status=$?
fi
exit "$status"
