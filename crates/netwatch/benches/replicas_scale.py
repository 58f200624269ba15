"""Create -> Running across controller replicas with many simulated agents
(scripts/bench-replicas.sh runs it; it asserts nothing).

BENCH_URLS (the replicas, comma-separated), NETWATCH_TOKEN, NETWATCH_CA,
BENCH_VMS (the simulated VMs' name prefix), BENCH_AGENTS, BENCH_CAPTURES.
Each capture: a PUT through replica i % n on simulated VM (7919 * i) % agents,
timed until its answer, which the controller gives once the agent runs it
(201, final) or, past 3 s, with a monitor then polled every millisecond; then
DELETE. Simulated agents answer a start at once, so this is the controller's
own path: the start pushed to whichever replica holds the agent, its Running
carried back to the replica that took the PUT.
"""

import json
import os
import statistics
import time

import requests

SUB = "00000000-0000-0000-0000-000000000000"
WATCHER = (
    "/subscriptions/%s/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/"
    "networkWatchers/NetworkWatcher_westus" % SUB
)
API = "?api-version=2024-05-01"


def main():
    urls = os.environ["BENCH_URLS"].split(",")
    agents = int(os.environ["BENCH_AGENTS"])
    count = int(os.environ.get("BENCH_CAPTURES", "200"))
    prefix = os.environ["BENCH_VMS"]
    sessions = []
    for _ in urls:
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + os.environ["NETWATCH_TOKEN"]
        # Per session, not from REQUESTS_CA_BUNDLE: requests lets the environment win
        # over Session.verify.
        session.trust_env = False
        session.verify = os.environ["NETWATCH_CA"]
        sessions.append(session)
    times, monitored = [], 0
    for i in range(count):
        replica = i % len(urls)
        vm = "%s-%04d" % (prefix, (7919 * i) % agents)
        body = {"properties": {
            "target": "/subscriptions/%s/resourceGroups/bench/providers/Microsoft.Compute/virtualMachines/%s" % (SUB, vm),
            "storageLocation": {"storageId": "/subscriptions/%s/resourceGroups/netwatch/providers/"
                                              "Microsoft.Storage/storageAccounts/netwatchlocal" % SUB},
            "timeLimitInSeconds": 60,
        }}
        path = "%s/packetCaptures/scale-%d" % (WATCHER, i)
        session, url = sessions[replica], urls[replica]
        started = time.perf_counter()
        answer = session.put(url + path + API, json=body, timeout=30)
        if not answer.ok:
            raise SystemExit("PUT %s: %d %s" % (path, answer.status_code, answer.text))
        monitor = answer.headers.get("Azure-AsyncOperation")
        if monitor:
            monitored += 1
            while session.get(monitor, timeout=30).json().get("status") == "InProgress":
                time.sleep(0.001)
        elapsed = (time.perf_counter() - started) * 1000
        state = session.get(url + path + API, timeout=30).json()["properties"]["provisioningState"]
        if state != "Succeeded":
            raise SystemExit("capture %s on %s: %s" % (path, vm, state))
        times.append(elapsed)
        session.delete(url + path + API, timeout=30).raise_for_status()
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    print("| create -> Running through %d replicas, %d simulated agents | %d | %.1f | %.1f | %.1f | %.1f | %d |" % (
        len(urls), agents, count, statistics.median(times), q(0.9), q(0.99), times[-1], monitored))


if __name__ == "__main__":
    main()
