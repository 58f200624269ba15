#!/bin/bash
# Large datagrams on loopback into a file: netwatch against tcpdump with its
# default 2 MiB buffer and with 32 MiB (netwatch's ring), with the files on a real
# disk and in memory. This is where a capture that waits for the disk loses
# packets: 65,000-byte UDP datagrams at 100 and 300 MB/s for a few seconds make
# gigabytes of dirty pages for the kernel to write back.
# Prints figures; it asserts nothing. Needs root, tcpdump, capinfos (tshark), python3.
#
#   scripts/bench-capture-lo.sh                    # REPEAT=3, 100 and 300 MB/s, 6 s, disk and memory
#   RATES=300 PLACES=/var/tmp REPEAT=1 scripts/bench-capture-lo.sh
#   BEFORE=/path/to/older/netwatch scripts/bench-capture-lo.sh   # adds that binary as "netwatch-before"
#
# Each run happens in a network namespace of its own (traffic on its lo only):
# a receiver and a paced sender (python3, pinned to CPU 0; the loopback receive
# path runs there too), the capture pinned to CAPTURE_CPU (1). Before each run the
# disk is synced, so runs do not pay for each other's writeback. lost = datagrams
# sent - packets in the file (capinfos); cpu = the capture's user+sys seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark makes a network namespace and captures" >&2; exit 2; }
for tool in tcpdump capinfos python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y --no-install-recommends tcpdump tshark python3 util-linux time" >&2; exit 2; }
done
REPEAT=${REPEAT:-3}; RATES=${RATES:-100 300}; DURATION=${DURATION:-6}; SIZE=${SIZE:-65000}
PLACES=${PLACES:-/var/tmp /dev/shm}; CAPTURE_CPU=${CAPTURE_CPU:-1}; DRAIN=${DRAIN:-2.5}
(cd "$ROOT" && cargo build --release --locked -q)
NW=$ROOT/target/release/netwatch
NS=nwlo$$
TMP=$(mktemp -d)
declare -A DIRS=()   # place -> a folder of ours in it, for the capture files
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP" "${DIRS[@]}"; }
trap cleanup EXIT; trap 'exit 130' INT TERM
ip netns add "$NS"; ip -n "$NS" link set lo up

declare -A TOOLS=(
  [tcpdump]='tcpdump -i lo -w $OUT -s 0 udp'
  [tcpdump-B32MiB]='tcpdump -i lo -w $OUT -s 0 -B 32768 udp'
  [netwatch]="$NW"' capture -i lo -w $OUT --filters '"'"'[{"protocol":"UDP"}]'"'"' --capture-limit 0'
)
ORDER=(tcpdump tcpdump-B32MiB netwatch)
if [ -n "${BEFORE:-}" ]; then
  TOOLS[netwatch-before]="$BEFORE"' capture -i lo -w $OUT --filters '"'"'[{"protocol":"UDP"}]'"'"' --capture-limit 0'
  ORDER+=(netwatch-before)
fi

# Receives and discards; sends COUNT datagrams of SIZE bytes paced to RATE MB/s
# (bounded in count and in time), then prints how many it sent.
SENDER='
import socket, sys, threading, time
rate, size, seconds = float(sys.argv[1]) * 1e6, int(sys.argv[2]), float(sys.argv[3])
count = int(rate * seconds / size)
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 25)
rx.bind(("127.0.0.1", 9000)); rx.settimeout(2)
def drain():
    try:
        while True: rx.recv(65536)
    except OSError: pass
threading.Thread(target=drain, daemon=True).start()
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 25)
payload = b"\x41" * size; sent = 0; start = time.monotonic()
while sent < count and time.monotonic() - start < seconds + 5:
    due = min(count, int((time.monotonic() - start) * rate / size) + 1)
    while sent < due:
        try: tx.sendto(payload, ("127.0.0.1", 9000)); sent += 1
        except OSError: time.sleep(0.0005)
    time.sleep(0.0005)
print(sent, "%.2f" % (time.monotonic() - start))
'

run_one() { # tool place rate -> one line
  local tool=$1 place=$2 rate=$3 out pid i sent secs packets cpu
  out=${DIRS[$place]}/$tool.pcap
  sync
  ip netns exec "$NS" taskset -c "$CAPTURE_CPU" /usr/bin/time -o "$TMP/time" -f '%U %S %M' \
    env --default-signal=INT OUT="$out" bash -c "exec ${TOOLS[$tool]}" >"$TMP/cap.log" 2>&1 </dev/null &
  pid=$!
  for i in $(seq 100); do [ -e "$out" ] && break; sleep 0.1; done
  sleep 0.5
  read -r sent secs < <(ip netns exec "$NS" taskset -c 0 python3 -c "$SENDER" "$rate" "$SIZE" "$DURATION")
  sleep "$DRAIN"
  pkill -INT -P "$pid" 2>/dev/null || true
  for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { pkill -KILL -P "$pid" || true; echo "# $tool did not stop within 30 s" >&2; }
  wait "$pid" || true
  packets=$(capinfos -T -r -c "$out" 2>/dev/null | awk -F'\t' 'NR==1 {print $2}')
  packets=${packets:-0}
  cpu=$(awk '{printf "%.2f", $1 + $2}' "$TMP/time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\t%s\n' "$place" "$rate" "$tool" "$sent" "$packets" "$((sent - packets))" \
    "$(awk -v l=$((sent - packets)) -v s="$sent" 'BEGIN {print s ? 100 * l / s : 0}')" "$cpu" "$(awk '{print int($3 / 1024)}' "$TMP/time")"
  rm -f "$out"
}

echo "## netwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r), $(tcpdump --version 2>&1 | head -1)"
echo "## ${SIZE}-byte UDP datagrams on lo, ${DURATION} s per run, REPEAT=$REPEAT"
results=$TMP/results
for place in $PLACES; do DIRS[$place]=$(mktemp -d -p "$place" caplo.XXXXXX); done
printf 'place\tMB/s\ttool\tsent\tcaptured\tlost\tlost%%\tcpu_s\trss_mib\n'
for round in $(seq "$REPEAT"); do
  for place in $PLACES; do
    for rate in $RATES; do
      for tool in "${ORDER[@]}"; do
        run_one "$tool" "$place" "$rate" | tee -a "$results"
      done
    done
  done
done
echo
echo "## median lost % [min..max] and capture CPU s, by place, rate and tool"
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    place, rate, tool, sent, captured, lost, share, cpu, rss = line.rstrip("\n").split("\t")
    rows.setdefault((place, int(rate), tool), []).append((float(share), float(cpu)))
for (place, rate, tool), runs in sorted(rows.items()):
    lost = sorted(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"{place}\t{rate} MB/s\t{tool:<16} lost {statistics.median(lost):5.1f}% [{lost[0]:.1f}..{lost[-1]:.1f}]\tcpu {cpu:.2f} s")
PY
