#!/usr/bin/env bash
# Load benchmark of live updates: two taskapi instances, A and B, on one
# throwaway PostgreSQL; bench/events (a Go program of its own) opens event
# streams on B and writes through A, and prints
#   - B's RSS with STREAMS streams open (default 10,000), per stream;
#   - create throughput on A with those streams open on B against none;
#   - the time from a create's 201 on A to its event on a stream on B, at
#     RATE creates a second (default 500) with 1,000 streams open.
#
#   bench/events.sh
#   STREAMS=2000 RATE=200 bench/events.sh
#   EVENTS_FLAGS="-rounds 7" bench/events.sh   # more of bench/events' flags (go run ./bench/events -h)
#   SPLIT=1 bench/events.sh
#       puts PostgreSQL and A on the first CPU, B and bench/events on the
#       second (taskset), as a deployment puts A and B on machines of their
#       own: what streams on B cost A's writes is then what B's reads cost
#       the database, not B's CPU taken from A. Needs two CPUs and taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS=${STREAMS:-10000}
RATE=${RATE:-500}
SPLIT=${SPLIT:-0}
on_a=() on_b=()
if [ "$SPLIT" = 1 ]; then on_a=(taskset -c 0) on_b=(taskset -c 1); fi
say() { printf '%s\n' "$*" >&2; }

pgbin=""
for dir in $(command -v initdb >/dev/null && dirname "$(readlink -f "$(command -v initdb)")") \
           $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /opt/homebrew/opt/postgresql*/bin 2>/dev/null | sort -rV); do
  if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then pgbin=$dir; break; fi
done
[ -n "$pgbin" ] || { say "bench/events.sh needs the PostgreSQL server binaries"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" # a connection a stream, on both ends

work=$(mktemp -d /tmp/taskapi-events.XXXXXX)
chmod 0755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then # PostgreSQL refuses to run as root
  chown postgres "$work"
  as_pg=(runuser -u postgres --)
fi
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "starting PostgreSQL ($pgbin)"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U taskapi --auth=trust --no-locale -E UTF8 >/dev/null
"${on_a[@]}" "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-k $work -c listen_addresses= -c max_connections=300 -c shared_buffers=256MB" start >/dev/null
db="postgres:///postgres?host=$work&user=taskapi&sslmode=disable"

say "building taskapi and bench/events"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/taskapi" .
(cd bench/events && go build -o "$work/events" .)
secret=$(openssl rand -hex 32)
start() { # start NAME PORT [COMMAND PREFIX...]: an instance, ready
  PORT=$2 HOST=127.0.0.1 DATABASE_URL=$db BETTER_AUTH_SECRET=$secret RATE_LIMIT=0 SHUTDOWN_DRAIN=0 \
    EVENTS_MAX_STREAMS=$((STREAMS + 1000)) HTTP_MAX_CONNS=$((STREAMS * 4 / 3 + 2000)) TASK_QUOTA=1000000 \
    "${@:3}" "$work/taskapi" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return; sleep 0.1; done
  say "taskapi $1 did not start:"; cat "$work/$1.log" >&2; exit 1
}
port_a=$(free_port); start a "$port_a" "${on_a[@]}"
port_b=$(free_port); start b "$port_b" "${on_b[@]}"; pid_b=${pids[-1]}

say "measuring ($STREAMS streams, $RATE creates a second); this takes a few minutes"
"${on_b[@]}" "$work/events" -a "http://127.0.0.1:$port_a" -b "http://127.0.0.1:$port_b" -secret "$secret" -pid-b "$pid_b" \
  -streams "$STREAMS" -rate "$RATE" ${EVENTS_FLAGS:-}
echo "machine: $(nproc) cores$([ "$SPLIT" = 1 ] && echo ' (split: PostgreSQL and A on one, B and bench/events on the other)'), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(go version | cut -d' ' -f3)"
