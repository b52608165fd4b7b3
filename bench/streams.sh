#!/usr/bin/env bash
# What event streams may cost one taskapi instance (issue-style figures for
# the README's bounds): one instance on a throwaway PostgreSQL, with
# GOMEMLIMIT as fly.toml sets it, and bench/streamload (a Go program of its
# own) opening streams that replay long histories:
#   1. 15 users with 500 changes of 1 KB each, 10 streams each from since=0,
#      whose clients read 2 KB a second;
#   2. 50 such users, 10 streams each, whose clients never read.
# Each prints the instance's peak RSS and another user's list latency,
# quiet and under the streams.
#
#   bench/streams.sh
#   DURATION=60s bench/streams.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30s}
say() { printf '%s\n' "$*" >&2; }

pgbin=""
for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
  if [ -x "$dir/initdb" ]; then pgbin=$dir; break; fi
done
[ -n "$pgbin" ] || { say "bench/streams.sh needs the PostgreSQL server binaries"; exit 1; }
work=$(mktemp -d /tmp/taskapi-streams.XXXXXX)
chmod 0755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres "$work"; as_pg=(runuser -u postgres --); fi
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U taskapi --auth=trust --no-locale -E UTF8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w -o "-k $work -c listen_addresses=" start >/dev/null
db="postgres:///postgres?host=$work&user=taskapi&sslmode=disable"
CGO_ENABLED=0 go build -trimpath -o "$work/taskapi" .
(cd bench/streamload && go build -o "$work/streamload" .)
secret=$(openssl rand -hex 32)

start() {
  GOMEMLIMIT=200MiB PORT=$port HOST=127.0.0.1 DATABASE_URL=$db BETTER_AUTH_SECRET=$secret RATE_LIMIT=0 SHUTDOWN_DRAIN=0 \
    "$work/taskapi" >"$work/taskapi.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return; sleep 0.1; done
  say "taskapi did not start:"; cat "$work/taskapi.log" >&2; exit 1
}
stop() { kill -INT "$pid"; wait "$pid" || true; pid=""; }

start
say "seeding 50 users with 500 changes of 1 KB each, and a bystander with 50 tasks"
psql -q "$db" <<'SQL'
INSERT INTO task_changes (user_id, event, id, title, description, completed, priority, tags, created_at, updated_at, version)
SELECT 'hist' || lpad(u::text, 2, '0'), 'task.created', gen_random_uuid(), 'task ' || g, repeat('x', 1000), false, 'medium', '{}', now(), now(), 1
  FROM generate_series(1, 50) AS u, generate_series(1, 500) AS g;
INSERT INTO users (id) VALUES ('bystander');
INSERT INTO tasks (user_id, title, description) SELECT 'bystander', 'task ' || g, repeat('y', 200) FROM generate_series(1, 50) AS g;
SQL
users() { seq -f 'hist%02g' 1 "$1" | paste -sd, -; }

say "1. 15 users x 10 streams from since=0, reading 2 KB/s, for $DURATION"
"$work/streamload" -url "http://127.0.0.1:$port" -secret "$secret" -pid "$pid" -users "$(users 15)" -rate 2048 -duration "$DURATION"
stop; start
say "2. 50 users x 10 streams from since=0, never reading, for $DURATION"
"$work/streamload" -url "http://127.0.0.1:$port" -secret "$secret" -pid "$pid" -users "$(users 50)" -rate 0 -duration "$DURATION"
stop
