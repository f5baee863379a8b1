#!/usr/bin/env bash
# Start a local apigw cluster on loopback: PostgreSQL (the shared store),
# Redis (the shared quota counters), three apigw nodes and haproxy in
# front (round robin, health checks). Debian's binaries; every server has
# its own data directory under DIR and a free loopback port.
#
#   examples/cluster/start.sh [DIR]      (DIR: a new temporary directory)
#
# Environment: APIGW_ACCESS_KEY, APIGW_SECRET_KEY, APIGW_ACCOUNT_ID (the
# management credential; default the dev one of config/apigw.toml), APIGW_BIN (the apigw binary; default target/release/apigw,
# then target/debug/apigw), QUOTA_POLICY (open|closed, default open).
# Writes DIR/cluster.env (ports, URLs, credentials) and DIR/run-*.sh (one
# per server, to start it again alone); each server's PID is in
# DIR/<name>.pid. examples/cluster/stop.sh DIR stops exactly these.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
DIR="${1:-$(mktemp -d /tmp/apigw-cluster.XXXXXX)}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
BIN="${APIGW_BIN:-}"
if [ -z "$BIN" ]; then
  for b in "$root/target/release/apigw" "$root/target/debug/apigw"; do
    [ -x "$b" ] && { BIN="$b"; break; }
  done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "start.sh: no apigw binary (set APIGW_BIN or cargo build)" >&2; exit 1; }
PG="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$PG" ] || { echo "start.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "start.sh: apt-get install redis-server" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "start.sh: apt-get install haproxy" >&2; exit 1; }

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r PG_PORT REDIS_PORT LB_PORT LB_STATS D1 D2 D3 A1 A2 A3 M1 M2 M3 <<<"$(free_ports 13)"

ACCESS_KEY="${APIGW_ACCESS_KEY:-apigw-dev-access-key}"
SECRET_KEY="${APIGW_SECRET_KEY:-apigw-dev-secret-key}"
ACCOUNT_ID="${APIGW_ACCOUNT_ID:-devaccount0000000000000000000001}"
POLICY="${QUOTA_POLICY:-open}"

# --- PostgreSQL: initdb refuses root, so it runs as `postgres` then.
as_pg=""
if [ "$(id -u)" -eq 0 ]; then
  pg_user=postgres; id -u "$pg_user" >/dev/null 2>&1 || pg_user=nobody
  as_pg="runuser -u $pg_user --"
  mkdir -p "$DIR/pg"; chown "$pg_user" "$DIR/pg"
fi
$as_pg "$PG/initdb" -D "$DIR/pg/data" -U apigw --auth=trust -E UTF8 --no-locale >"$DIR/pg-initdb.log" 2>&1 \
  || { cat "$DIR/pg-initdb.log" >&2; exit 1; }
cat >"$DIR/run-pg.sh" <<SH
#!/usr/bin/env bash
exec $as_pg "$PG/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/server.log" -w -s \\
  -o "-p $PG_PORT -k $DIR/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start
SH
cat >"$DIR/stop-pg.sh" <<SH
#!/usr/bin/env bash
exec $as_pg "$PG/pg_ctl" -D "$DIR/pg/data" -m \${1:-fast} -w -s stop
SH

# --- Redis: append-only file, fsync every second; a restart keeps counts.
mkdir -p "$DIR/redis"
cat >"$DIR/redis/redis.conf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
dir $DIR/redis
appendonly yes
appendfsync everysec
save ""
daemonize no
protected-mode yes
logfile $DIR/redis/redis.log
CONF
cat >"$DIR/run-redis.sh" <<SH
#!/usr/bin/env bash
redis-server "$DIR/redis/redis.conf" >/dev/null 2>&1 &
echo \$! >"$DIR/redis.pid"
for _ in \$(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT) 2>/dev/null && exit 0
  sleep 0.05
done
echo "redis did not start" >&2; exit 1
SH

# --- apigw nodes: one shared store, one Redis; own local file and ports.
for i in 1 2 3; do
  eval "dport=\$D$i; aport=\$A$i; mport=\$M$i"
  mkdir -p "$DIR/node$i"
  cat >"$DIR/node$i/apigw.toml" <<TOML
log = "warn"
[data]
listen = "127.0.0.1:$dport"
invoke_domain = "apigw.localhost"
[admin]
listen = "127.0.0.1:$aport"
public_base_url = ""
[telemetry]
metrics_listen = "127.0.0.1:$mport"
[store]
url = "postgres://apigw@127.0.0.1:$PG_PORT/postgres"
local_path = "$DIR/node$i/local.db"
node_id = "node$i"
[quota]
redis_url = "redis://127.0.0.1:$REDIS_PORT/"
redis_unavailable = "$POLICY"
nodes = 3
flush_interval_ms = 200
[[signature.credentials]]
access_key = "$ACCESS_KEY"
secret_key = "$SECRET_KEY"
account_id = "$ACCOUNT_ID"
TOML
  cat >"$DIR/run-node$i.sh" <<SH
#!/usr/bin/env bash
cd "$DIR/node$i"
# APIGW_* variables are settings of apigw: the config file alone counts.
for v in \$(compgen -e | grep '^APIGW_'); do unset "\$v"; done
"$BIN" serve --config "$DIR/node$i/apigw.toml" >>"$DIR/node$i/apigw.log" 2>&1 &
echo \$! >"$DIR/node$i.pid"
for _ in \$(seq 200); do
  (exec 3<>/dev/tcp/127.0.0.1/$aport) 2>/dev/null && exit 0
  kill -0 \$(cat "$DIR/node$i.pid") 2>/dev/null || { tail -n 20 "$DIR/node$i/apigw.log" >&2; exit 1; }
  sleep 0.05
done
echo "node$i did not start" >&2; exit 1
SH
done

# --- haproxy: round robin over the nodes' data ports. A failed connect
# or a connection closed before an answer is retried on another node
# (retries + redispatch), so clients do not see a node dying.
# Health: `GET /readyz` on each node's metrics port, so a node that is
# not ready yet or draining leaves the rotation before it stops accepting.
mkdir -p "$DIR/haproxy"
cat >"$DIR/haproxy/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend fe
  bind 127.0.0.1:$LB_PORT
  default_backend nodes
frontend stats
  bind 127.0.0.1:$LB_STATS
  http-request return status 200 content-type text/plain string "ok"
backend nodes
  balance roundrobin
  option httpchk GET /readyz
  default-server check inter 200ms fall 2 rise 2
  server node1 127.0.0.1:$D1 port $M1
  server node2 127.0.0.1:$D2 port $M2
  server node3 127.0.0.1:$D3 port $M3
CFG
cat >"$DIR/run-haproxy.sh" <<SH
#!/usr/bin/env bash
haproxy -f "$DIR/haproxy/haproxy.cfg" -db >"$DIR/haproxy/haproxy.log" 2>&1 &
echo \$! >"$DIR/haproxy.pid"
for _ in \$(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$LB_PORT) 2>/dev/null && exit 0
  sleep 0.05
done
echo "haproxy did not start" >&2; exit 1
SH
chmod +x "$DIR"/run-*.sh "$DIR/stop-pg.sh"

cat >"$DIR/cluster.env" <<ENV
DIR=$DIR
PG_URL=postgres://apigw@127.0.0.1:$PG_PORT/postgres
REDIS_PORT=$REDIS_PORT
LB=127.0.0.1:$LB_PORT
NODE1_DATA=127.0.0.1:$D1
NODE2_DATA=127.0.0.1:$D2
NODE3_DATA=127.0.0.1:$D3
NODE1_ADMIN=127.0.0.1:$A1
NODE2_ADMIN=127.0.0.1:$A2
NODE3_ADMIN=127.0.0.1:$A3
ACCESS_KEY=$ACCESS_KEY
SECRET_KEY=$SECRET_KEY
ACCOUNT_ID=$ACCOUNT_ID
ENV

fail() { echo "start.sh: $1 failed; stopping what started" >&2; "$here/stop.sh" "$DIR" >/dev/null 2>&1 || true; exit 1; }
"$DIR/run-pg.sh" || fail PostgreSQL
"$DIR/run-redis.sh" || fail Redis
# The first node migrates the schema; the others then start together.
"$DIR/run-node1.sh" || fail node1
"$DIR/run-node2.sh" || fail node2
"$DIR/run-node3.sh" || fail node3
"$DIR/run-haproxy.sh" || fail haproxy
echo "cluster started in $DIR: haproxy on 127.0.0.1:$LB_PORT (see $DIR/cluster.env)"
