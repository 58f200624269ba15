#!/bin/bash
# Capture benchmark: netwatch against tcpdump (and, with PEERS=1, dumpcap, netsniff-ng
# and tshark) on the same UDP flood between two network namespaces, using the shared
# harness ../shared/bench/capture-vs-tcpdump.sh (read its README for the columns).
# Prints figures; it asserts nothing. Needs root.
#
#   scripts/bench-capture.sh            # REPEAT=3: 100-byte frames at snaplen 0 and 96,
#                                       # then 1514-byte frames from 2 senders (~480 MB/s),
#                                       # files in memory (/dev/shm), then on disk (/var/tmp)
#   REPEAT=1 PACKETS=500000 PLACES=/var/tmp scripts/bench-capture.sh   # a quicker look
#
# Large datagrams on loopback, where waiting for the disk costs the most, are
# scripts/bench-capture-lo.sh; what kill -9 loses, scripts/bench-kill.sh.
#
# netwatch runs with its default settings (ring, block timeout). `--capture-limit 0`
# only lifts the 1 GiB stop (Azure's totalBytesPerSession default) that the 1.5 GB of
# the 1514-byte run would otherwise reach; it changes nothing in how packets are captured.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${HARNESS:-$ROOT/../shared/bench/capture-vs-tcpdump.sh}
[ -x "$HARNESS" ] || [ -f "$HARNESS" ] || { echo "benchmark harness not found at $HARNESS (../shared beside the repository)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark makes network namespaces" >&2; exit 2; }
for tool in trafgen tcpdump capinfos taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y --no-install-recommends netsniff-ng tcpdump tshark util-linux time" >&2; exit 2; }
done
export REPEAT=${REPEAT:-3}
PACKETS=${PACKETS:-2000000}
BIG_PACKETS=${BIG_PACKETS:-1000000}
(cd "$ROOT" && cargo build --release --locked -q)
NW="$ROOT/target/release/netwatch capture -i vB -w \$OUT --filters '[{\"protocol\":\"UDP\"}]' --capture-size \$SNAP --capture-limit 0"
PEER_CMDS=()
if [ "${PEERS:-0}" = 1 ]; then
  PEER_CMDS=('dumpcap -i vB -w $OUT -f udp -s $SNAP -q -P' 'netsniff-ng --in vB --out $OUT -f udp -s -A -Q -S 2MiB')
fi
echo "## netwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r), $(tcpdump --version 2>&1 | head -1)"
for place in ${PLACES:-/dev/shm /var/tmp}; do
  export OUTDIR=$place
  for snap in 0 96; do
    echo; echo "### files in $place: 100-byte frames, snaplen $snap, one sender"
    bash "$HARNESS" "$NW" "$PACKETS" "$snap" "${PEER_CMDS[@]}"
  done
  echo; echo "### files in $place: 1514-byte frames, snaplen 0, two senders (SENDERS=2 PAYLOAD=1472)"
  SENDERS=2 PAYLOAD=1472 BASELINE=0 bash "$HARNESS" "$NW" "$BIG_PACKETS" 0
done
