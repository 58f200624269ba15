#!/bin/bash
# Flight recorder benchmark (issue 16): what the always-on recorder costs an agent,
# and what an alert gets from it. Prints figures; asserts nothing. Needs root.
#
# A controller (`netwatch up --no-agent`) and an agent (`-i vB`, pinned to CAPTURE_CPU,
# its data directory on /var/tmp: a real disk) run in nwB of ../shared/bench's
# namespace pair; trafgen floods vA→vB with 100-byte UDP frames at RATE for FLOOD
# seconds in each phase:
#   idle      the agent with nothing to do: the reference
#   capture   a plain capture of the same UDP (Azure's filters) running
#   recorder  the flight recorder on (WINDOW seconds, its default 1 GiB bound)
# For each: the agent's CPU (whole process and the capturing thread, nw-capture or
# nw-recorder) as a share of one CPU, and its peak resident memory.
# Then the alert: the recorder runs while trafgen sends at RATE for WINDOW + 15 s; an
# Azure Monitor alert (fired now, secondsBefore WINDOW, secondsAfter AFTER) is posted
# to a trigger's webhook; printed: from the post to the capture Running (the window
# held), to its file stored, how many seconds before the alert the file starts, and its
# packets against those sent in the window.
#
#   scripts/bench-recorder.sh                       # RATE=100000 FLOOD=20 WINDOW=60
#   RATE=50000 FLOOD=10 WINDOW=20 scripts/bench-recorder.sh   # a quicker look
set -euo pipefail
RATE=${RATE:-100000}; FLOOD=${FLOOD:-20}; WINDOW=${WINDOW:-60}; AFTER=${AFTER:-5}
BENCH=recorder
. "$(dirname "$0")/bench-agent-lib.sh"
phase() { # LABEL THREAD: flood FLOOD seconds, print CPU and peak RSS
  local p0 t0 start peak=0 rss sampler
  p0=$(ticks "$AGENT"); t0=$(ticks "$AGENT" "$2"); start=$(date +%s.%N)
  ( while :; do awk '/VmRSS/ {print $2}' "/proc/$AGENT/status"; sleep 0.2; done ) >"$dir/rss" &
  sampler=$!
  flood "$FLOOD"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  peak=$(sort -n "$dir/rss" | tail -1)
  local secs; secs=$(python3 -c "import time; print(time.time() - $start)")
  python3 - "$1" "$2" "$(( $(ticks "$AGENT") - p0 ))" "$(( $(ticks "$AGENT" "$2") - t0 ))" "$secs" "$HZ" "$peak" \
    "$((RATE * FLOOD))" <<'PY'
import sys
label, thread, proc, thr, secs, hz, peak, sent = sys.argv[1:]
secs, hz = float(secs), int(hz)
print(f"| {label} | {int(sent) / secs:,.0f} | {float(proc) / hz / secs:.3f} | {thread}: {float(thr) / hz / secs:.3f} | "
      f"{int(peak) / 1024:.1f} MiB |")
PY
}

echo "## netwatch $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -r): flight recorder at ${RATE} frames/s of 100 bytes, ${FLOOD} s per phase, agent on CPU $CAPTURE_CPU"
echo
echo "| phase | frames/s sent | agent CPU (share of one CPU) | capturing thread | peak RSS |"
echo "| --- | --- | --- | --- | --- |"
phase idle nw-capture
arm PUT "$WATCHER/packetCaptures/bench?$API" "{\"properties\":{\"target\":\"$VM\",\"storageLocation\":{\"storageId\":\"$ACCOUNT\"},\"filters\":[{\"protocol\":\"UDP\"}],\"timeLimitInSeconds\":3600,\"totalBytesPerSession\":0}}" >/dev/null
sleep 1
phase capture nw-capture
arm POST "$WATCHER/packetCaptures/bench/stop?$API" >/dev/null
arm PUT "$WATCHER/netwatchFlightRecorders/bench?$API" "{\"properties\":{\"target\":\"$VM\",\"filters\":[{\"protocol\":\"UDP\"}],\"seconds\":$WINDOW}}" >/dev/null
for _ in $(seq 100); do
  [ "$(arm GET "$WATCHER/netwatchFlightRecorders/bench?$API" | json 'd["properties"]["hosts"][0]["state"]')" = Recording ] && break
  sleep 0.2
done
phase recorder nw-recorder
sleep $((10 + 1)) # the agent says how its recorder is every 10 s
arm GET "$WATCHER/netwatchFlightRecorders/bench?$API" >"$dir/recorder.json"
echo
python3 - "$dir/recorder.json" <<'PY'
import json, sys
host = json.load(open(sys.argv[1]))["properties"]["hosts"][0]
print(f"Recorder after the phase: {host['bytes'] / 2**20:.1f} MiB in {host['files']} files, window "
      f"{host.get('windowSeconds')} s, {host['packets']} packets, kernel drops {host['kernelDrops']}")
PY

# The alert.
made=$(arm PUT "$WATCHER/netwatchTriggers/bench?$API" "{\"properties\":{\"source\":\"AzureMonitor\",\"capture\":{\"filters\":[{\"protocol\":\"UDP\"}],\"secondsBefore\":$WINDOW,\"secondsAfter\":$AFTER,\"totalBytesPerSession\":0},\"storageLocation\":{\"storageId\":\"$ACCOUNT\"}}}")
HOOK=$(echo "$made" | json 'd["properties"]["webhookUrl"]')
# What the recorder has counted and vB has received before the flood (the agent
# says every 10 s: quiet for 11 s, its count is the last).
sleep 11
recorded() { arm GET "$WATCHER/netwatchFlightRecorders/bench?$API" | json 'd["properties"]["hosts"][0]["packets"]'; }
rec0=$(recorded); rx0=$(inb cat /sys/class/net/vB/statistics/rx_packets)
# The reference: tcpdump records the same flood (UDP headers only) beside the agent.
# (Started without a shell function in between: $! is tcpdump, which SIGTERM stops
# with its file flushed.)
ip netns exec nwB tcpdump -i vB -w "$dir/reference.pcap" -s 64 -B 262144 -n -q udp 2>"$dir/tcpdump.log" &
reference=$!
pids+=($reference)
for _ in $(seq 100); do [ -s "$dir/reference.pcap" ] && break; sleep 0.1; done
flood_start=$(python3 -c 'import time; print(time.time())')
flood $((WINDOW + 15)) &
sender=$!
sleep $((WINDOW + 5))
fired=$(python3 -c 'import time; print(time.time())')
stamp=$(python3 -c "import datetime; print(datetime.datetime.fromtimestamp($fired, datetime.timezone.utc).isoformat())")
alert="{\"schemaId\":\"azureMonitorCommonAlertSchema\",\"data\":{\"essentials\":{\"alertId\":\"/subscriptions/$SUB/providers/Microsoft.AlertsManagement/alerts/bench\",\"alertRule\":\"bench\",\"severity\":\"Sev3\",\"monitorCondition\":\"Fired\",\"alertTargetIDs\":[\"$VM\"],\"firedDateTime\":\"$stamp\"}}}"
t0=$(python3 -c 'import time; print(time.time())')
answer=$(inb curl -sS --cacert "$CA" -H 'Content-Type: application/json' --data-binary "$alert" "$HOOK")
capture=$(echo "$answer" | json 'd["alerts"][0]["hosts"][0]["capture"].rsplit("/", 1)[1]')
t_answer=$(python3 -c 'import time; print(time.time())')
running=""; stored=""
for _ in $(seq 3000); do
  status=$(arm POST "$WATCHER/packetCaptures/$capture/queryStatus?$API")
  now=$(python3 -c 'import time; print(time.time())')
  state=$(echo "$status" | json 'd["packetCaptureStatus"]')
  if [ -z "$running" ] && { [ "$state" = Running ] || [ "$state" = Stopped ]; }; then running=$now; fi
  if [ "$state" = Stopped ] && [ "$(echo "$status" | json 'd["netwatch"].get("uploadState")')" = Succeeded ]; then stored=$now; break; fi
  sleep 0.05
done
wait "$sender" || true
flood_end=$(python3 -c 'import time; print(time.time())')
sleep 1; kill -TERM "$reference"; wait "$reference" 2>/dev/null || true
sleep 11
rec1=$(recorded); rx1=$(inb cat /sys/class/net/vB/statistics/rx_packets)
[ -n "$stored" ] || { echo "the alert's capture was not stored: $status" >&2; tail -20 "$dir/agent.log" >&2; exit 1; }
file=$(echo "$status" | json 'd["netwatch"]["files"][0]["storagePath"]')
inb curl -sS -f --cacert "$CA" -H "Authorization: Bearer $TOKEN" -o "$dir/alert.cap" "$file"
first=$(capinfos -a -S "$dir/alert.cap" | awk '/First packet time/ {print $NF}')
packets=$(capinfos -c -M "$dir/alert.cap" | awk '/Number of packets/ {print $NF}')
# The file against tcpdump's record of the same window: packets, first and
# last, and the widest pause between two packets (where, from the alert).
compare=$(python3 - "$dir/alert.cap" "$dir/reference.pcap" "$fired" "$WINDOW" "$AFTER" <<'PY'
import struct, sys
def times(path):
    data = open(path, "rb").read()
    scale = 1e-9 if struct.unpack_from("=I", data, 0)[0] == 0xa1b23c4d else 1e-6
    pos, out = 24, []
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from("=IIII", data, pos)
        out.append(sec + frac * scale)
        pos += 16 + incl
    return out
# The window as the agent takes it: from the alert's time in whole ms.
fired, window, after = int(float(sys.argv[3]) * 1000) / 1000, int(sys.argv[4]), int(sys.argv[5])
ours = times(sys.argv[1])
ref = [t for t in times(sys.argv[2]) if fired - window <= t < fired + after + 0.001]
widest, at = max(((b - a, a - fired) for a, b in zip(ref, ref[1:])), default=(0.0, 0.0))
print(f"{len(ours)} {len(ref)} {ours[0] - fired:+.3f} {ref[0] - fired:+.3f} {ours[-1] - fired:+.3f} {ref[-1] - fired:+.3f} "
      f"{widest * 1000:.1f}ms@{at:+.2f}s")
PY
)
python3 - "$t0" "$t_answer" "$running" "$stored" "$fired" "$first" "$packets" "$RATE" "$WINDOW" "$AFTER" \
  "$(echo "$status" | json 'd["netwatch"]["alert"]["secondsBeforeCovered"]')" "$flood_start" "$flood_end" "$compare" \
  "$(echo "$status" | json 'd["netwatch"]["kernelDrops"]')" "$((rec1 - rec0))" "$((rx1 - rx0))" \
  "$(grep -h 'dropped by kernel' "$dir/tcpdump.log" | tr -s ' ' | paste -sd ' ')" <<'PY'
import sys
t0, answer, running, stored, fired, first, packets, rate, window, after, covered, start, end, compare, drops, rec, rx, tcpdump = sys.argv[1:]
ours, ref, ours_first, ref_first, ours_last, ref_last, gap = compare.split()
t0, answer, running, stored, fired, first = map(float, (t0, answer, running, stored, fired, first))
# trafgen's rate is approximate: what it sent over the whole flood, spread evenly.
rate = int(rate) * (int(window) + 15) / (float(end) - float(start))
expected = int(rate * (int(window) + int(after)))
print()
print(f"Alert → capture ({window} s before, {after} s after, {rate:,.0f} frames/s sent):")
print(f"- webhook answered in {(answer - t0) * 1000:.0f} ms; capture Running (window held) {(running - t0) * 1000:.0f} ms after the post")
print(f"- file stored {stored - t0:.1f} s after the post ({after} s after the alert are part of it)")
print(f"- the file starts {fired - first:.2f} s before the alert (secondsBeforeCovered {covered}); {packets} packets, about {expected} sent in the window ({int(packets) / expected:.3f})")
print(f"- against tcpdump's record of the same window: {ours} packets / {ref}; first {ours_first} s / {ref_first} s, last "
      f"{ours_last} s / {ref_last} s from the alert; the widest pause between packets sent in it {gap}; tcpdump: {tcpdump}")
print(f"- over the whole flood, vB received {int(rx):,} frames and the recorder recorded {int(rec):,}")
PY
