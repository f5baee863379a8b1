#!/usr/bin/env bash
# apigw quick start, end to end, with nothing but bash, curl, openssl and python3:
#
#   1. starts a tiny backend (python3 -m http.server) on a free local port,
#   2. creates an API with one resource /hello and a GET method to that backend,
#   3. deploys it to a new stage `dev`,
#   4. creates an access control allowing 127.0.0.1 and connects it to `dev`
#      (a new stage sits on the API's `Default` access control, which allows nothing),
#   5. calls the invoke URL with curl and prints the answer.
#
# Every management call is signed as the SCP OpenAPI expects:
#   Scp-Signature = base64(HMAC-SHA256(secret, METHOD + URL + timestamp + access key + account id + "Openapi"))
#
# Start the gateway first (apigw serve --config config/apigw.toml), then run this.
# Settings (environment):
#   APIGW_ADMIN       management API base URL       [http://127.0.0.1:9080]
#   APIGW_DATA        data plane host:port           [127.0.0.1:8080]
#   APIGW_ACCESS_KEY  / APIGW_SECRET_KEY / APIGW_ACCOUNT_ID   [the dev credential of config/apigw.toml]
#   APIGW_INVOKE_DOMAIN  invoke host suffix          [apigw.localhost]
# Exits non-zero on any failure.
set -euo pipefail

ADMIN="${APIGW_ADMIN:-http://127.0.0.1:9080}"
ADMIN="${ADMIN%/}"
DATA="${APIGW_DATA:-127.0.0.1:8080}"
ACCESS_KEY="${APIGW_ACCESS_KEY:-apigw-dev-access-key}"
SECRET_KEY="${APIGW_SECRET_KEY:-apigw-dev-secret-key}"
ACCOUNT_ID="${APIGW_ACCOUNT_ID:-devaccount0000000000000000000001}"
DOMAIN="${APIGW_INVOKE_DOMAIN:-apigw.localhost}"
DATA_HOST="${DATA%:*}"
DATA_PORT="${DATA##*:}"

for tool in curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "quickstart: $tool is required" >&2; exit 1; }
done

WORK="$(mktemp -d)"
BACKEND_PID=""
cleanup() {
  if [ -n "$BACKEND_PID" ]; then kill "$BACKEND_PID" 2>/dev/null || true; wait "$BACKEND_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- helpers -----------------------------------------------------------------

now_ms() { python3 -c 'import time; print(int(time.time() * 1000))'; }

# json FIELD-EXPRESSION < json   (e.g. json '["id"]', json '["resources"][0]["id"]')
json() { python3 -c 'import json, sys; v = json.load(sys.stdin); print(eval("v" + sys.argv[1]))' "$1"; }

# call METHOD PATH [JSON-BODY]: signed management call; sets RESP (body) and
# fails the script unless the answer is 2xx.
RESP=""
call() {
  local method="$1" path="$2" body="${3:-}"
  local url="${ADMIN}${path}"
  local ts sig code
  ts="$(now_ms)"
  sig="$(printf '%s' "${method}${url}${ts}${ACCESS_KEY}${ACCOUNT_ID}Openapi" \
        | openssl dgst -sha256 -hmac "$SECRET_KEY" -binary | openssl base64 -A)"
  local args=(-sS -X "$method" -o "$WORK/resp" -w '%{http_code}'
    -H "Scp-AccessKey: $ACCESS_KEY"
    -H "Scp-Timestamp: $ts"
    -H "Scp-ClientType: Openapi"
    -H "Scp-AccountId: $ACCOUNT_ID"
    -H "Scp-Signature: $sig"
    -H "Scp-Api-Version: apigateway 1.2")
  if [ -n "$body" ]; then
    args+=(-H "Content-Type: application/json" --data "$body")
  fi
  code="$(curl "${args[@]}" "$url")" || { echo "quickstart: $method $url: curl failed" >&2; exit 1; }
  RESP="$(cat "$WORK/resp")"
  case "$code" in
    2??) ;;
    *) echo "quickstart: $method $path -> HTTP $code: $RESP" >&2; exit 1 ;;
  esac
}

# --- 1. a local backend --------------------------------------------------------

BACKEND_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
mkdir -p "$WORK/site"
printf '{"message": "hello from the backend"}\n' > "$WORK/site/hello.json"
python3 -m http.server "$BACKEND_PORT" --bind 127.0.0.1 --directory "$WORK/site" >"$WORK/backend.log" 2>&1 &
BACKEND_PID=$!
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$BACKEND_PORT/hello.json" && break
  sleep 0.1
done
curl -sS -f -o /dev/null "http://127.0.0.1:$BACKEND_PORT/hello.json"
echo "backend:        http://127.0.0.1:$BACKEND_PORT/hello.json"

# --- 2. API, resource, method ---------------------------------------------------

NAME="quickstart-$(date +%s)-$RANDOM"
call POST /v1/apis "{\"name\": \"$NAME\", \"description\": \"quick start\", \"endpoint_type\": \"REGION\"}"
API_ID="$(json '["id"]' <<<"$RESP")"
echo "api:            $NAME ($API_ID)"

call GET "/v1/apis/$API_ID/resources"
ROOT_ID="$(python3 -c 'import json, sys; print([r["id"] for r in json.load(sys.stdin)["resources"] if r["path"] == "/"][0])' <<<"$RESP")"

call POST "/v1/apis/$API_ID/resources/$ROOT_ID" '{"path_part": "hello"}'
RES_ID="$(json '["id"]' <<<"$RESP")"
echo "resource:       /hello ($RES_ID)"

call POST "/v1/apis/$API_ID/resources/$RES_ID/methods" \
  "{\"method_type\": \"GET\", \"integration_type\": \"HTTP\", \"endpoint_url\": \"http://127.0.0.1:$BACKEND_PORT/hello.json\", \"api_key_required\": false}"
echo "method:         GET /hello -> http://127.0.0.1:$BACKEND_PORT/hello.json"

# --- 3. deploy to a new stage `dev` ---------------------------------------------------

call POST "/v1/apis/$API_ID/deployments" '{"stage_type": "new", "stage_name": "dev", "description": "first deployment"}'
DEPLOYMENT_ID="$(json '["deployment_id"]' <<<"$RESP")"
echo "deployment:     $DEPLOYMENT_ID (stage dev)"

# --- 4. allow 127.0.0.1 on `dev` ------------------------------------------------------

call POST "/v1/apis/$API_ID/access-controls" \
  '{"name": "allow-local", "allowed_ip_addr": ["127.0.0.1/32"], "connected_stages": ["dev"], "description": "local calls"}'
echo "access control: allow-local (127.0.0.1/32) -> dev"

# --- 5. call the invoke URL ------------------------------------------------------------

INVOKE_HOST="$API_ID.$DOMAIN"
INVOKE_URL="http://$INVOKE_HOST:$DATA_PORT/dev/hello"
echo "invoke URL:     $INVOKE_URL"
# curl resolves *.localhost to loopback by itself on recent versions; --resolve
# makes it work everywhere.
CODE=""
for _ in $(seq 1 20); do
  CODE="$(curl -sS --resolve "$INVOKE_HOST:$DATA_PORT:$DATA_HOST" -o "$WORK/answer" -w '%{http_code}' "$INVOKE_URL" || true)"
  [ "$CODE" = "200" ] && break
  sleep 0.1
done
if [ "$CODE" != "200" ]; then
  echo "quickstart: GET $INVOKE_URL -> HTTP $CODE: $(cat "$WORK/answer" 2>/dev/null)" >&2
  exit 1
fi
echo "answer (HTTP $CODE):"
cat "$WORK/answer"
