#!/bin/bash
# Live view benchmark (issue 18): what watching a capture costs the capture. Prints
# figures; asserts nothing. Needs root.
#
# A controller (`netwatch up --no-agent`) and an agent (`-i vB`, pinned to CAPTURE_CPU,
# its data directory on /var/tmp: a real disk) run in nwB of ../shared/bench's
# namespace pair; trafgen floods vA→vB with 100-byte UDP frames at RATE for FLOOD
# seconds in each phase, each a new capture of that UDP into the local account:
#   alone     nobody watching: the reference
#   viewer    one `packet-capture stream -w /dev/null` watching
#   slow      one viewer whose reader takes nothing (a paused pipe) while it runs
# For each: the agent's CPU (whole process, and its capture thread nw-capture) as a
# share of one CPU, the capture's packets and kernel drops against the frames sent,
# and what the viewer said it showed and missed.
#
#   scripts/bench-live.sh                     # RATE=100000 FLOOD=20
#   RATE=300000 FLOOD=10 scripts/bench-live.sh
set -euo pipefail
RATE=${RATE:-100000}; FLOOD=${FLOOD:-20}
BENCH=live
. "$(dirname "$0")/bench-agent-lib.sh"

echo "## netwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r): live views at ${RATE} frames/s of 100 bytes, ${FLOOD} s per phase, agent on CPU $CAPTURE_CPU"
echo
echo "| phase | frames sent | agent CPU | nw-capture | packets in the file | kernel drops | the viewer said |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
n=0
phase() { # LABEL VIEWER: a capture flooded FLOOD seconds, watched as VIEWER says (none, null, paused)
  n=$((n + 1))
  local name="bench$n" p0 t0 start viewer=""
  arm PUT "$WATCHER/packetCaptures/$name?$API" "{\"properties\":{\"target\":\"$VM\",\"storageLocation\":{\"storageId\":\"$ACCOUNT\"},\"filters\":[{\"protocol\":\"UDP\"}],\"timeLimitInSeconds\":3600,\"totalBytesPerSession\":0}}" >/dev/null
  sleep 1
  case $2 in
    null) NETWATCH_URL=$URL NETWATCH_TOKEN=$TOKEN NETWATCH_CA=$CA ip netns exec nwB "$BIN" network watcher packet-capture stream \
            --name "$name" -l westus -w /dev/null 2>"$dir/viewer-$n.err" &
          viewer=$! ;;
    paused) NETWATCH_URL=$URL NETWATCH_TOKEN=$TOKEN NETWATCH_CA=$CA ip netns exec nwB bash -c \
            "'$BIN' network watcher packet-capture stream --name '$name' -l westus -w - 2>'$dir/viewer-$n.err' | (sleep $((FLOOD + 5)); cat >/dev/null)" &
          viewer=$! ;;
  esac
  [ -z "$viewer" ] || { pids+=($viewer); sleep 2; }
  p0=$(ticks "$AGENT"); t0=$(ticks "$AGENT" nw-capture); start=$(date +%s.%N)
  flood "$FLOOD"
  local proc=$(( $(ticks "$AGENT") - p0 )) thr=$(( $(ticks "$AGENT" nw-capture) - t0 ))
  local secs; secs=$(python3 -c "import time; print(time.time() - $start)")
  sleep 1
  arm POST "$WATCHER/packetCaptures/$name/stop?$API" >/dev/null
  [ -z "$viewer" ] || { for _ in $(seq 300); do kill -0 "$viewer" 2>/dev/null || break; sleep 0.1; done; }
  arm POST "$WATCHER/packetCaptures/$name/queryStatus?$API" >"$dir/status-$n.json"
  local said="-"
  [ -z "$viewer" ] || said=$(tr '\n' ' ' <"$dir/viewer-$n.err" | sed 's/netwatch: live view of [^:]*: //')
  python3 - "$1" "$proc" "$thr" "$secs" "$HZ" "$((RATE * FLOOD))" "$dir/status-$n.json" "$said" <<'PY'
import json, sys
label, proc, thr, secs, hz, sent, status, said = sys.argv[1:]
secs, hz = float(secs), int(hz)
n = json.load(open(status)).get("netwatch", {})
print(f"| {label} | {int(sent):,} | {float(proc) / hz / secs:.3f} | {float(thr) / hz / secs:.3f} | "
      f"{n.get('packetsCaptured', 0):,} | {n.get('kernelDrops', 0):,} | {said} |")
PY
}
phase alone none
phase viewer null
phase slow paused
