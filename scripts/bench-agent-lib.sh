# The setup the agent benchmarks share (bench-recorder.sh, bench-live.sh), sourced with
# BENCH (a name for the temporary directory) and RATE set: ../shared/bench's namespace
# pair, `netwatch up --no-agent` and an agent (`-i vB`, pinned to CAPTURE_CPU, its data on
# /var/tmp) in nwB, registered; then `arm METHOD PATH [BODY]` (the API with the admin
# token; the status in $dir/status), `json EXPR`, `flood SECONDS` (trafgen, vA→vB, 100-byte
# UDP frames at RATE) and `ticks PID [THREAD]` (CPU ticks). Cleans up on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PAIR=${PAIR:-$ROOT/../shared/bench/netns-pair.sh}
[ -f "$PAIR" ] || { echo "namespace script not found at $PAIR (../shared beside the repository)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark makes network namespaces" >&2; exit 2; }
for tool in trafgen capinfos taskset curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y --no-install-recommends netsniff-ng tshark util-linux curl" >&2; exit 2; }
done
CAPTURE_CPU=${CAPTURE_CPU:-1}
BIN=${NETWATCH_BIN:-$ROOT/target/release/netwatch}
[ -n "${NETWATCH_BIN:-}" ] || (cd "$ROOT" && cargo build --release --locked -q -p netwatch)
HZ=$(getconf CLK_TCK)

# One benchmark at a time: a second `netns-pair.sh up` would tear this one's pair down.
exec 9>/run/netwatch-bench-pair.lock
flock -n 9 || { echo "another benchmark is using the namespace pair (nwA/nwB): wait for it" >&2; exit 2; }
dir=$(mktemp -d -p /var/tmp nw-bench-$BENCH.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  bash "$PAIR" down >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
bash "$PAIR" up >/dev/null
inb() { ip netns exec nwB "$@"; }

XDG_CONFIG_HOME="$dir/config" ip netns exec nwB "$BIN" up --no-agent --listen 10.203.0.2:0 --data-dir "$dir/up" >"$dir/up.out" 2>"$dir/up.log" &
pids+=($!)
for _ in $(seq 600); do grep -q "https://" "$dir/up.out" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'https://[0-9.:]*' "$dir/up.out" | head -1)
[ -n "$URL" ] || { echo "netwatch up did not start:" >&2; cat "$dir/up.log" >&2; exit 1; }
credential() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$dir/up/credentials.toml"; }
TOKEN=$(credential admin_token)
CA=$dir/up/ca.pem
SUB=00000000-0000-0000-0000-000000000000
VM=/subscriptions/$SUB/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/bench
WATCHER=/subscriptions/$SUB/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus
ACCOUNT=/subscriptions/$SUB/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal
API=api-version=2024-05-01
# Started without a shell function in between: $! is the agent itself.
ip netns exec nwB taskset -c "$CAPTURE_CPU" "$BIN" agent --server "$URL" --enroll-token "$(credential agent_token)" --ca "$CA" \
  --vm-name bench -g rg1 -l westus -i vB --data-dir "$dir/agent" >/dev/null 2>"$dir/agent.log" &
pids+=($!)
AGENT=$!
# arm METHOD PATH [BODY]: the answer's body; the status in $dir/status.
arm() {
  local body=()
  [ $# -lt 3 ] || body=(-H 'Content-Type: application/json' --data-binary "$3")
  inb curl -sS --max-time 30 --cacert "$CA" -H "Authorization: Bearer $TOKEN" -X "$1" "${body[@]}" \
    -o "$dir/answer" -w '%{http_code}' "$URL$2" >"$dir/status" || true
  cat "$dir/answer"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
for _ in $(seq 100); do arm GET "$VM?api-version=2024-07-01" >/dev/null; [ "$(cat "$dir/status")" = 200 ] && break; sleep 0.2; done
[ "$(cat "$dir/status")" = 200 ] || { echo "the agent did not register:" >&2; tail "$dir/agent.log" >&2; exit 1; }

cat >"$dir/flood.cfg" <<CFG
{ eth(da=$(inb cat /sys/class/net/vB/address), sa=$(ip netns exec nwA cat /sys/class/net/vA/address)),
  ipv4(saddr=10.203.0.1, daddr=10.203.0.2, ttl=64),
  udp(sport=dinc(1000,2000), dport=5000), fill(0x41, 58) }
CFG
flood() { # SECONDS: RATE frames a second, bounded in count
  ip netns exec nwA trafgen --dev vA --conf "$dir/flood.cfg" -n $((RATE * $1)) -b "${RATE}pps" -P 1 --no-sock-mem -Q -C \
    >/dev/null 2>"$dir/trafgen.log"
}
ticks() { # PID [THREAD]: CPU ticks of the process, or of its thread named THREAD
  local t total=0
  if [ $# = 1 ]; then awk '{print $14 + $15}' "/proc/$1/stat"; return; fi
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] && total=$((total + $(awk '{print $14 + $15}' "$t/stat")))
  done
  echo "$total"
}
