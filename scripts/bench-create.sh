#!/bin/bash
# Create → Running latency benchmark (DESIGN §9: under 100 ms p99 on loopback with
# 1,000 agents connected): `netwatch up --no-agent`, one real agent capturing on lo and
# 999 simulated ones (`netwatch agent --simulate`), all on 127.0.0.1; creates captures
# through the REST API and times PUT → monitor `Succeeded`. Prints figures; asserts
# nothing. Needs root (the real agent opens a packet socket). crates/netwatch/benches/
# create_latency.rs says what is measured and how.
#
#   scripts/bench-create.sh                           # 200 captures per scenario, 1,000 agents
#   BENCH_CAPTURES=50 BENCH_AGENTS=200 scripts/bench-create.sh   # a quicker look
#
# Settings (environment): BENCH_CAPTURES (200), BENCH_AGENTS (1000, real one included),
# BENCH_SIM_PROCESSES (1), BENCH_POLL_US (1000), BENCH_DEADLINE_S (600: the benchmark's
# own bound), BENCH_SCENARIOS (one-real,many-real,many-sim), BENCH_SAMPLES=FILE (append
# every sample as CSV: name, unix time sent, PUT ms, Running ms), BENCH_KEEP=1 (keep the
# data directory and the processes' logs, which time each step), CARGO_TARGET_DIR.
# Everything it starts runs in its own process group, killed when the script ends.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# BENCH_TARGET: the bench binary (scripts/bench-fleet.sh runs fleet_create, no real agent).
BENCH_TARGET=${BENCH_TARGET:-create_latency}
[ "$BENCH_TARGET" != create_latency ] || [ "$(id -u)" = 0 ] ||
  { echo "run as root: the real agent opens a packet socket" >&2; exit 2; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
export NETWATCH_BIN=${NETWATCH_BIN:-$TARGET/release/netwatch}
export BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-600}

cd "$ROOT"
cargo build --release --locked -q -p netwatch
cargo bench --locked -q -p netwatch --bench "$BENCH_TARGET" --no-run

echo "## netwatch $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r), $(nproc) CPUs"
# The benchmark in a process group of its own (job control: its group id is its pid), so
# whatever it started goes with it, even when it is killed. `timeout` bounds the whole run
# a minute past the benchmark's own deadline.
set -m
timeout --kill-after=10 $((BENCH_DEADLINE_S + 60)) \
  cargo bench --locked -q -p netwatch --bench "$BENCH_TARGET" &
BENCH=$!
set +m
cleanup() {
  kill -TERM -- "-$BENCH" 2>/dev/null || true
  sleep 1
  kill -KILL -- "-$BENCH" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
wait "$BENCH"
