#!/bin/bash
# What `kill -9` costs a running capture: a steady, light stream of numbered UDP
# datagrams (one per millisecond) on a namespace's lo, `netwatch capture` killed
# with SIGKILL in the middle, and how many datagrams sent before the kill are not
# in the file: those in the ring block the kernel had not yet handed over, which
# the block retire timeout bounds. Prints figures for each retire timeout (the
# default and the former 100 ms); asserts nothing. Needs root and python3.
#
#   scripts/bench-kill.sh                  # ROUNDS=10, RETIRES="100 20" (ms)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark makes a network namespace and captures" >&2; exit 2; }
ROUNDS=${ROUNDS:-10}; RETIRES=${RETIRES:-100 20}
(cd "$ROOT" && cargo build --release --locked -q)
NW=$ROOT/target/release/netwatch
NS=nwkill$$; TMP=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT; trap 'exit 130' INT TERM
ip netns add "$NS"; ip -n "$NS" link set lo up

# Sends datagram n (its number, 8 bytes) every millisecond for 3 s, then writes
# "n send_time_ns" for each to the file given.
SENDER='
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); start = time.monotonic(); log = []
for n in range(3000):
    s.sendto(struct.pack("!Q", n), ("127.0.0.1", 9001)); log.append((n, time.time_ns()))
    time.sleep(max(0, start + (n + 1) / 1000 - time.monotonic()))
open(sys.argv[1], "w").write("".join(f"{n} {t}\n" for n, t in log))
'
# Sent before the kill, and of those, how many the pcap file lacks.
COUNT='
import struct, sys
path, log, kill_ns = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = {int(n) for n, t in (l.split() for l in open(log)) if int(t) < kill_ns}
data, off, seen = open(path, "rb").read(), 24, set()
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    rec = data[off + 16: off + 16 + incl]
    if len(rec) < incl: break
    seen.add(struct.unpack("!Q", rec[-8:])[0]); off += 16 + incl
print(len(before), len(before - seen))
'
echo "## netwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'): kill -9 after ~1.5 s of one datagram per ms on lo, $ROUNDS rounds"
printf 'retire_ms\tround\tsent_before_kill\tlost\n'
results=$TMP/results
for round in $(seq "$ROUNDS"); do
  for retire in $RETIRES; do
    out=$TMP/r$retire.pcap; rm -f "$out"
    ip netns exec "$NS" "$NW" capture -i lo -w "$out" --filters '[{"protocol":"UDP","localPort":"9001"}]' \
      --ring-retire-ms "$retire" 2>/dev/null &
    cap=$!
    for i in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done; sleep 0.3
    ip netns exec "$NS" python3 -c "$SENDER" "$TMP/sent" &
    snd=$!
    sleep "1.$((RANDOM % 10))$((RANDOM % 10))"
    kill -KILL "$cap"; kill_ns=$(date +%s%N)
    wait "$cap" 2>/dev/null || true
    wait "$snd"
    read -r before lost < <(python3 -c "$COUNT" "$out" "$TMP/sent" "$kill_ns")
    printf '%s\t%s\t%s\t%s\n' "$retire" "$round" "$before" "$lost" | tee -a "$results"
  done
done
echo
echo "## datagrams lost (= ms of traffic), by retire timeout: median [min..max]"
python3 - "$results" <<'PY'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    retire, _, _, lost = line.split()
    by.setdefault(int(retire), []).append(int(lost))
for retire, lost in sorted(by.items(), reverse=True):
    lost.sort()
    print(f"retire {retire} ms: lost {statistics.median(lost)} [{lost[0]}..{lost[-1]}]")
PY
