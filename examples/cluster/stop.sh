#!/usr/bin/env bash
# Stop what examples/cluster/start.sh DIR started (and only that): the
# processes of DIR/*.pid, and the PostgreSQL server of DIR/pg. Leaves
# DIR in place; `--clean` removes it too.
set -uo pipefail
DIR="${1:?usage: stop.sh DIR [--clean]}"
[ -d "$DIR" ] || exit 0
for f in "$DIR"/haproxy.pid "$DIR"/node*.pid "$DIR"/redis.pid; do
  [ -f "$f" ] || continue
  pid="$(cat "$f")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
done
[ -x "$DIR/stop-pg.sh" ] && [ -f "$DIR/pg/data/postmaster.pid" ] && "$DIR/stop-pg.sh" fast
[ "${2:-}" = "--clean" ] && rm -rf "$DIR"
exit 0
