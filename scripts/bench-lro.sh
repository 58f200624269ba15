#!/bin/bash
# What a real client waits for a capture's create, stop and delete (issue 15): Azure's
# Python SDK `begin_create/begin_stop/begin_delete(...).result()` against `netwatch up`
# (its own agent capturing, its local storage account) on 127.0.0.1, BENCH_CAPTURES
# captures one after another, p50/p90/p99 per operation, with the work itself (PUT →
# Running, monitor polled every millisecond) timed in the same run as the reference.
# Prints figures; asserts nothing. Needs root (the agent opens a packet socket) and the
# test virtualenv with Azure's SDK (scripts/test.sh makes target/test-venv, or give
# NETWATCH_TEST_PYTHON). crates/netwatch/benches/sdk_lro.py says what is measured.
#
#   scripts/bench-lro.sh                      # 100 captures
#   BENCH_CAPTURES=20 scripts/bench-lro.sh    # a quicker look
#   BENCH_SAMPLES=FILE                        # every sample, as JSON
#   BENCH_REPLICAS=2 scripts/bench-lro.sh     # across replicas: up's controller and a second
#                                             # replica share a throwaway PostgreSQL; the SDK
#                                             # talks to the second, the agent to up's
#
# Everything it starts is killed when it ends; its data directory is removed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root: the agent opens a packet socket" >&2; exit 2; }
PYTHON=${NETWATCH_TEST_PYTHON:-$ROOT/target/test-venv/bin/python}
[ -x "$PYTHON" ] || { echo "no Python with Azure's SDK at $PYTHON: run scripts/test.sh once, or set NETWATCH_TEST_PYTHON" >&2; exit 2; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${NETWATCH_BIN:-$TARGET/release/netwatch}
cd "$ROOT"
[ -n "${NETWATCH_BIN:-}" ] || cargo build --release --locked -q -p netwatch

dir=$(mktemp -d)
up=""
replica=""
pg=""
cleanup() {
  for pid in $up $replica; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  [ -z "$pg" ] || scripts/test-postgres.sh stop "$pg"
  rm -rf "$dir"
}
trap cleanup EXIT
start_up() {
  XDG_CONFIG_HOME="$dir/config" "$BIN" up --listen "$1" --data-dir "$dir/up" >"$dir/up.out" 2>>"$dir/up.log" &
  up=$!
  for _ in $(seq 600); do
    grep -q "this machine:" "$dir/up.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "this machine:" "$dir/up.out" || { echo "netwatch up did not start:" >&2; cat "$dir/up.log" >&2; exit 1; }
}
start_up 127.0.0.1:0
if [ "${BENCH_REPLICAS:-1}" = 2 ]; then
  # up again on PostgreSQL, and a second replica on the same configuration.
  eval "$(scripts/test-postgres.sh start)"
  pg=$PG_TEST_DIR
  su postgres -c "psql -h 127.0.0.1 -p ${NETWATCH_TEST_POSTGRES##*:} -U postgres -qc 'CREATE DATABASE netwatch'"
  listen=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$dir/up/config.toml")
  kill "$up"; wait "$up" 2>/dev/null || true
  sed -i "1a database = \"$NETWATCH_TEST_POSTGRES/netwatch\"" "$dir/up/config.toml"
  start_up "$listen"
  "$BIN" server --config "$dir/up/config.toml" --listen 127.0.0.1:0 2>"$dir/replica.log" &
  replica=$!
  for _ in $(seq 200); do
    grep -q "listening on" "$dir/replica.log" 2>/dev/null && break
    sleep 0.1
  done
  second=$(sed -n 's/.*netwatch controller listening on \(.*\)$/\1/p' "$dir/replica.log")
  [ -n "$second" ] || { echo "the second replica did not start:" >&2; cat "$dir/replica.log" >&2; exit 1; }
fi
# shellcheck disable=SC1091
. "$dir/up/env"
read -r vm group < <(sed -n 's/.*this machine: VM \([^ ]*\) in resource group \([^,]*\),.*/\1 \2/p' "$dir/up.out")
export BENCH_VM="/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/$group/providers/Microsoft.Compute/virtualMachines/$vm"
# The agent registered and connected.
for _ in $(seq 300); do
  curl -fsS --cacert "$NETWATCH_CA" -H "Authorization: Bearer $NETWATCH_TOKEN" \
    "$NETWATCH_URL$BENCH_VM?api-version=2024-07-01" >/dev/null 2>&1 && break
  sleep 0.1
done
if [ -n "$replica" ]; then
  # The SDK talks to the second replica; the agent stays on up's.
  export NETWATCH_URL=$second
  for _ in $(seq 100); do
    curl -fsS --cacert "$NETWATCH_CA" "$NETWATCH_URL/netwatch/v1/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
echo "## netwatch $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r), $(nproc) CPUs, BENCH_CAPTURES=${BENCH_CAPTURES:-100}, replicas: ${BENCH_REPLICAS:-1}"
timeout 1800 "$PYTHON" crates/netwatch/benches/sdk_lro.py
