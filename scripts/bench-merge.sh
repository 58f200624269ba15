#!/bin/bash
# Merge benchmark (issue 13, "Files"): the merged download's code against mergecap on the
# same FILES classic pcap files, one per host, nanosecond Ethernet with interleaved
# timestamps (crates/controller/examples/gen_pcap.rs). netwatch's side is
# crates/controller/examples/merge_files.rs: merge.rs over tokio file streams read in
# 64 KiB chunks as local storage reads blobs, one source per file, its output written to a
# file as mergecap's is (`mergecap -w`, pcapng). Each tool runs ROUNDS times, the two
# alternating, under /usr/bin/time (elapsed seconds, peak RSS); the table shows medians,
# MB/s counts input bytes (10^6). Before every run, untimed: the previous output is
# deleted and `sync`ed away, so neither tool pays for the other's writeback, and the
# inputs are read once (cat > /dev/null), so both read them from the page cache. Runs at
# each total of SIZES_MIB (1 and 2 GiB by default) show whether memory grows with size.
# Prints figures; it asserts only that both outputs hold as many packets as the inputs.
#
#   scripts/bench-merge.sh                                          # 10 files, 1 then 2 GiB
#   BENCH_DIR=/dev/shm SIZES_MIB=256 ROUNDS=1 scripts/bench-merge.sh   # a quick look
#
# Settings (environment): BENCH_DIR (/var/tmp: inputs and outputs, about 2 × the largest
# size; removed at the end), FILES (10), SIZES_MIB ("1024 2048"), ROUNDS (3),
# CARGO_TARGET_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp}
FILES=${FILES:-10}
SIZES_MIB=${SIZES_MIB:-1024 2048}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
for tool in mergecap capinfos; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y --no-install-recommends tshark" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "missing /usr/bin/time: apt-get install -y --no-install-recommends time" >&2; exit 2; }

(cd "$ROOT" && cargo build --release --locked -q -p netwatch-controller --example merge_files --example gen_pcap)
GEN=$TARGET/release/examples/gen_pcap
MERGE=$TARGET/release/examples/merge_files
# gen_pcap's hosts send from this MAC: netwatch works out every frame's direction.
HOST_MAC=02:00:00:00:00:01

WORK=$(mktemp -d "$BENCH_DIR/netwatch-bench-merge.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "## netwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r), $(nproc) CPUs, $(mergecap --version | head -1)"
echo "## $FILES files in $WORK ($(df -T "$WORK" | awk 'NR==2 {print $2}')), read from the page cache; $ROUNDS rounds"

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
packets_in() { capinfos -c -M "$1" | awk '/^Number of packets/ {print $NF}'; }

for mib in $SIZES_MIB; do
  rm -rf "$WORK/in" "$WORK/out.pcapng"
  mkdir "$WORK/in"
  "$GEN" "$WORK/in" "$FILES" "$mib"
  inputs=("$WORK"/in/*.pcap)
  bytes=$(du -cb "${inputs[@]}" | awk 'END {print $1}')
  packets=0
  for f in "${inputs[@]}"; do packets=$((packets + $(packets_in "$f"))); done
  : >"$WORK/runs"
  for round in $(seq "$ROUNDS"); do
    for tool in mergecap netwatch; do
      rm -f "$WORK/out.pcapng"
      sync
      cat "${inputs[@]}" >/dev/null
      case $tool in
        mergecap) cmd=(mergecap -w "$WORK/out.pcapng" "${inputs[@]}") ;;
        netwatch) cmd=("$MERGE" --local-mac "$HOST_MAC" "$WORK/out.pcapng" "${inputs[@]}") ;;
      esac
      /usr/bin/time -f '%e %M' -o "$WORK/time" "${cmd[@]}"
      echo "$tool $(cat "$WORK/time")" >>"$WORK/runs"
      if [ "$round" = 1 ]; then
        got=$(packets_in "$WORK/out.pcapng")
        [ "$got" = "$packets" ] || { echo "$tool wrote $got packets, the inputs hold $packets" >&2; exit 1; }
      fi
    done
  done
  echo
  echo "### $FILES files, $((bytes / 1048576)) MiB, $packets packets"
  echo "| tool | seconds (median) | MB/s | peak RSS MiB (median) |"
  echo "| --- | ---: | ---: | ---: |"
  for tool in mergecap netwatch; do
    secs=$(awk -v t="$tool" '$1 == t {print $2}' "$WORK/runs" | median)
    rss=$(awk -v t="$tool" '$1 == t {print $3}' "$WORK/runs" | median)
    awk -v t="$tool" -v s="$secs" -v r="$rss" -v b="$bytes" \
      'BEGIN {printf "| %s | %.2f | %.0f | %.1f |\n", t, s, b / 1e6 / s, r / 1024}'
    eval "secs_$tool=$secs"
  done
  awk -v n="$secs_netwatch" -v m="$secs_mergecap" \
    'BEGIN {printf "netwatch/mergecap time: %.2f (netwatch %.2fx mergecap throughput)\n", n / m, m / n}'
  echo "all runs (tool, seconds, peak RSS KiB): $(tr '\n' ';' <"$WORK/runs")"
done
