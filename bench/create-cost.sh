#!/usr/bin/env bash
# What the history costs a write, in the database alone: pgbench runs the
# create statement taskapi ships (bench/create.sql: the task, its change
# record and the user's next position) and the same statement without its
# change record (bench/create-nohistory.sql), taking turns, on a throwaway
# PostgreSQL with its default durability (fsync and synchronous_commit
# on), and prints each run's tps and the ratio of the medians.
#
#   bench/create-cost.sh
#   ROUNDS=5 CLIENTS=64 DURATION=10 bench/create-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-32}
DURATION=${DURATION:-6}
say() { printf '%s\n' "$*" >&2; }

pgbin=""
for dir in $(command -v initdb >/dev/null && dirname "$(readlink -f "$(command -v initdb)")") \
           $(ls -d /usr/lib/postgresql/*/bin /usr/pgsql-*/bin /opt/homebrew/opt/postgresql*/bin 2>/dev/null | sort -rV); do
  if [ -x "$dir/initdb" ] && [ -x "$dir/pgbench" ] && [ -x "$dir/psql" ]; then pgbin=$dir; break; fi
done
[ -n "$pgbin" ] || { say "bench/create-cost.sh needs the PostgreSQL server binaries and pgbench"; exit 1; }

work=$(mktemp -d /tmp/taskapi-create-cost.XXXXXX)
chmod 0755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then # PostgreSQL refuses to run as root
  chown postgres "$work"
  as_pg=(runuser -u postgres --)
fi
cleanup() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U taskapi --auth=trust --no-locale -E UTF8 >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-k $work -c listen_addresses= -c max_connections=300 -c shared_buffers=256MB" start >/dev/null
PGOPTIONS="-c client_min_messages=warning" "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -U taskapi -f schema.sql postgres

declare -A runs=()
for round in $(seq "$ROUNDS"); do
  for script in create create-nohistory; do
    tps=$("$pgbin/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -h "$work" -U taskapi -f "bench/$script.sql" postgres 2>/dev/null |
      awk '/^tps/ {printf "%.0f", $3}')
    runs[$script]="${runs[$script]:-} $tps"
    say "round $round, $script: $tps tps"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
shipped=$(echo "${runs[create]}" | median)
bare=$(echo "${runs[create-nohistory]}" | median)
echo "pgbench -M prepared -c $CLIENTS -j 2 -T $DURATION, $ROUNDS rounds taking turns:"
echo "  bench/create.sql (shipped):           ${runs[create]# } tps, median $shipped"
echo "  bench/create-nohistory.sql:           ${runs[create-nohistory]# } tps, median $bare"
echo "  shipped / without the change record:  $(awk -v a="$shipped" -v b="$bare" 'BEGIN {printf "%.2f", a / b}')"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')"
