#!/usr/bin/env bash
# Property-based fuzzing of the management API from its own OpenAPI
# description (not part of CI): starts the gateway on a throwaway SQLite
# store, runs schemathesis (PyPI) for a while with requests signed by
# tests/schemathesis/scp_sign.py, and fails on any 5xx or response that
# does not match the description. Usage: tests/schemathesis.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-180}"
python3 -c 'import schemathesis' 2>/dev/null \
  || python3 -m pip install --quiet schemathesis 2>/dev/null \
  || python3 -m pip install --quiet --break-system-packages schemathesis
# ST_GATEWAY_BIN: an already built binary (else cargo build).
bin="${ST_GATEWAY_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --quiet
  bin="${CARGO_TARGET_DIR:-target}/debug/apigw"
fi
dir="$(mktemp -d /tmp/apigw-st.XXXXXX)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$dir/apigw.toml" <<TOML
store_url = "sqlite://$dir/apigw.db"
admin_listen = "127.0.0.1:$port"
data_listen = "127.0.0.1:0"
[[credentials]]
access_key = "st-access-key"
secret_key = "st-secret-key"
account_id = "staccount"
TOML
"$bin" serve --config "$dir/apigw.toml" >"$dir/gateway.log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v1/openapi.json" >/dev/null && break; sleep 0.2; done
ST_BASE_URL="http://127.0.0.1:$port" PYTHONPATH=tests/schemathesis SCHEMATHESIS_HOOKS=scp_sign timeout "$secs" \
  schemathesis run "http://127.0.0.1:$port/v1/openapi.json" \
  --url "http://127.0.0.1:$port" --checks not_a_server_error,response_schema_conformance,status_code_conformance \
  --max-examples 30 --phases examples,fuzzing "${@:2}"
