#!/bin/bash
# Many agents over several controller replicas (issue 15): BENCH_REPLICAS (3) `netwatch
# server` processes sharing a throwaway PostgreSQL, BENCH_AGENTS (10000) simulated agents
# (`netwatch agent --simulate`, each given every replica's URL, spread over them), all on
# 127.0.0.1. Prints: the time for all agents to connect; each replica's memory per
# connected agent (VmRSS with its agents less VmRSS before any); create → Running
# p50/p90/p99 over BENCH_CAPTURES captures on simulated targets, each created through
# the next replica (crates/netwatch/benches/replicas_scale.py); and, after `kill -9` of
# one replica, the time until every agent is connected again to the others. Asserts
# nothing. Needs root (test-postgres.sh runs PostgreSQL as its user) and the test
# virtualenv (requests): scripts/test.sh makes target/test-venv.
#
#   scripts/bench-replicas.sh                          # 10,000 agents, 3 replicas
#   BENCH_AGENTS=2000 BENCH_CAPTURES=50 scripts/bench-replicas.sh   # a quicker look
#
# Everything it starts is killed when it ends; its data directory is removed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root: PostgreSQL runs as its own user" >&2; exit 2; }
PYTHON=${NETWATCH_TEST_PYTHON:-$ROOT/target/test-venv/bin/python}
[ -x "$PYTHON" ] || { echo "no Python with requests at $PYTHON: run scripts/test.sh once, or set NETWATCH_TEST_PYTHON" >&2; exit 2; }
AGENTS=${BENCH_AGENTS:-10000}
REPLICAS=${BENCH_REPLICAS:-3}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${NETWATCH_BIN:-$TARGET/release/netwatch}
cd "$ROOT"
[ -n "${NETWATCH_BIN:-}" ] || cargo build --release --locked -q -p netwatch
# The simulator holds a socket per agent (each replica a share of them).
want=$((AGENTS + 4096))
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$want" -le "$hard" ] || { echo "ulimit -Hn is $hard: fewer than $want files per process; ask for fewer BENCH_AGENTS" >&2; exit 2; }
ulimit -n "$want"

dir=$(mktemp -d)
pids=()
pg=""
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  [ -z "$pg" ] || scripts/test-postgres.sh stop "$pg"
  rm -rf "$dir"
}
trap cleanup EXIT

eval "$(scripts/test-postgres.sh start)"
pg=$PG_TEST_DIR
su postgres -c "psql -h 127.0.0.1 -p ${NETWATCH_TEST_POSTGRES##*:} -U postgres -qc 'CREATE DATABASE netwatch'"
# CA, certificate, tokens, signing key: as `netwatch up` makes them; then PostgreSQL.
XDG_CONFIG_HOME="$dir/config" "$BIN" up --no-agent --listen 127.0.0.1:0 --data-dir "$dir/up" >"$dir/up.out" 2>"$dir/up.log" &
up=$!
for _ in $(seq 300); do [ -f "$dir/up/env" ] && break; sleep 0.1; done
kill "$up"; wait "$up" 2>/dev/null || true
sed -i "1a database = \"$NETWATCH_TEST_POSTGRES/netwatch\"" "$dir/up/config.toml"
# shellcheck disable=SC1091
. "$dir/up/env"
agent_token=$(sed -n 's/^agent_token = "\(.*\)"$/\1/p' "$dir/up/credentials.toml")

rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
connected() { curl -fsS --cacert "$NETWATCH_CA" "$1/netwatch/v1/health" 2>/dev/null | sed -n 's/.*"agentsConnected":\([0-9]*\).*/\1/p'; }
total() { local sum=0 n; for url in "$@"; do n=$(connected "$url"); sum=$((sum + ${n:-0})); done; echo "$sum"; }

urls=()
servers=()
for i in $(seq 0 $((REPLICAS - 1))); do
  "$BIN" server --config "$dir/up/config.toml" --listen 127.0.0.1:0 2>"$dir/replica-$i.log" &
  servers+=($!); pids+=($!)
  for _ in $(seq 200); do grep -q "listening on" "$dir/replica-$i.log" 2>/dev/null && break; sleep 0.1; done
  url=$(sed -n 's/.*netwatch controller listening on \(.*\)$/\1/p' "$dir/replica-$i.log")
  [ -n "$url" ] || { echo "replica $i did not start:" >&2; cat "$dir/replica-$i.log" >&2; exit 1; }
  for _ in $(seq 100); do [ -n "$(connected "$url")" ] && break; sleep 0.1; done
  urls+=("$url")
done
before=()
for pid in "${servers[@]}"; do before+=("$(rss "$pid")"); done

echo "## netwatch $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r), $(nproc) CPUs: $AGENTS simulated agents over $REPLICAS replicas on one PostgreSQL"
started=$(date +%s.%N)
"$BIN" agent --simulate "$AGENTS" --server "$(IFS=,; echo "${urls[*]}")" --enroll-token "$agent_token" \
  --ca "$NETWATCH_CA" --vm-name sim -g bench -l westus 2>"$dir/simulated.log" &
pids+=($!)
for _ in $(seq 6000); do [ "$(total "${urls[@]}")" -ge "$AGENTS" ] && break; sleep 0.1; done
now=$(total "${urls[@]}")
echo "- all connected: $now of $AGENTS agents in $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $started}") s"
sleep 5
for i in "${!servers[@]}"; do
  n=$(connected "${urls[$i]}"); after=$(rss "${servers[$i]}")
  echo "- replica $i: ${n:-0} agents, VmRSS ${before[$i]} → $after KiB: $(( (after - before[$i]) / (n > 0 ? n : 1) )) KiB per agent"
done
echo "| what | captures | p50 ms | p90 ms | p99 ms | max ms | answered with a monitor |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
BENCH_URLS=$(IFS=,; echo "${urls[*]}") BENCH_AGENTS=$AGENTS BENCH_VMS=sim BENCH_CAPTURES=${BENCH_CAPTURES:-200} \
  timeout 1200 "$PYTHON" crates/netwatch/benches/replicas_scale.py
# One replica killed: its agents move to the others.
killed=${servers[0]}
kill -9 "$killed"; wait "$killed" 2>/dev/null || true
started=$(date +%s.%N)
for _ in $(seq 6000); do [ "$(total "${urls[@]:1}")" -ge "$AGENTS" ] && break; sleep 0.1; done
echo "- replica 0 killed (-9): $(total "${urls[@]:1}") of $AGENTS agents connected to the others $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $started}") s later"
