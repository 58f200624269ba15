"""What a real client waits (issue 15): wall time of Azure's Python SDK
`begin_create(...).result()`, `begin_stop(...).result()` (the file stored)
and `begin_delete(...).result()`, over BENCH_CAPTURES captures on a real agent,
one after another; and, as the reference in the same run, how long the work
itself takes: PUT sent → the capture Running, read by polling its
`Azure-AsyncOperation` monitor every millisecond over plain HTTPS (what
create_latency.rs measures), or the 201 itself when it is final.

Prints p50/p90/p99/max per operation and the SDK's create time over the
work's. Asserts nothing. scripts/bench-lro.sh runs it against `netwatch up`.

Environment: NETWATCH_URL, NETWATCH_TOKEN, NETWATCH_CA (what `netwatch up`
writes), BENCH_VM (the VM id of up's own agent), BENCH_CAPTURES (100),
BENCH_SAMPLES (a file for every sample, JSON).
"""

import json
import os
import statistics
import time

import requests
from azure.core.credentials import AccessToken
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import PacketCapture

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP = "NetworkWatcherRG"
WATCHER = "NetworkWatcher_westus"
API = "2024-05-01"
STORAGE = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/netwatch/providers/"
    "Microsoft.Storage/storageAccounts/netwatchlocal"
)


class NetwatchToken:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(os.environ["NETWATCH_TOKEN"], int(time.time()) + 3600)


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def line(name, values):
    return (
        f"| {name} | {len(values)} | {percentile(values, 50):.1f} | {percentile(values, 90):.1f} "
        f"| {percentile(values, 99):.1f} | {max(values):.1f} |"
    )


def body(vm, name):
    return {
        "properties": {
            "target": vm,
            "storageLocation": {"storageId": STORAGE},
            "timeLimitInSeconds": 60,
            "filters": [{"protocol": "UDP", "localPort": "9"}],
        }
    }


def work_create(session, url, vm, name):
    """PUT → Running, by the monitor polled every millisecond (or the final 201)."""
    target = f"{url}/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Network/networkWatchers/{WATCHER}/packetCaptures/{name}?api-version={API}"
    sent = time.perf_counter()
    answer = session.put(target, json=body(vm, name), timeout=30)
    answer.raise_for_status()
    monitor = answer.headers.get("Azure-AsyncOperation")
    while monitor:
        status = session.get(monitor, timeout=30).json()["status"]
        if status == "Succeeded":
            break
        if status != "InProgress":
            raise SystemExit(f"create {name}: {status}")
        time.sleep(0.001)
    running = (time.perf_counter() - sent) * 1000
    stop = session.post(target.replace("?api-version", "/stop?api-version"), timeout=30)
    location = stop.headers.get("Location")
    while stop.status_code == 202 and location:
        stop = session.get(location, timeout=30)
        time.sleep(0.001)
    session.delete(target, timeout=30).raise_for_status()
    return running


def main():
    url = os.environ["NETWATCH_URL"]
    vm = os.environ["BENCH_VM"]
    count = int(os.environ.get("BENCH_CAPTURES", "100"))
    client = NetworkManagementClient(
        NetwatchToken(),
        SUBSCRIPTION,
        base_url=url,
        credential_scopes=[url + "/.default"],
        connection_verify=os.environ["NETWATCH_CA"],
    ).packet_captures
    session = requests.Session()
    session.verify = os.environ["NETWATCH_CA"]
    session.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify
    session.headers["Authorization"] = "Bearer " + os.environ["NETWATCH_TOKEN"]

    create, stop, delete, work = [], [], [], []
    warmup = 3
    for i in range(count + warmup):
        name = f"lro{i:04d}"
        started = time.perf_counter()
        client.begin_create(GROUP, WATCHER, name, PacketCapture(body(vm, name))).result()
        created = time.perf_counter()
        client.begin_stop(GROUP, WATCHER, name).result()
        stopped = time.perf_counter()
        client.begin_delete(GROUP, WATCHER, name).result()
        deleted = time.perf_counter()
        if i >= warmup:
            create.append((created - started) * 1000)
            stop.append((stopped - created) * 1000)
            delete.append((deleted - stopped) * 1000)
        # The reference: the same work timed without the SDK.
        reference = work_create(session, url, vm, f"ref{i:04d}")
        if i >= warmup:
            work.append(reference)
    print("| operation (Azure's Python SDK, `.result()`) | captures | p50 ms | p90 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(line("begin_create (until Running)", create))
    print(line("begin_stop (until the file is stored)", stop))
    print(line("begin_delete", delete))
    print(line("reference: PUT → Running, monitor polled every 1 ms", work))
    print(
        f"SDK create over the work itself: p50 {statistics.median(create) / statistics.median(work):.2f}x, "
        f"p99 {percentile(create, 99) / percentile(work, 99):.2f}x"
    )
    samples = os.environ.get("BENCH_SAMPLES")
    if samples:
        with open(samples, "w") as file:
            json.dump({"create": create, "stop": stop, "delete": delete, "work": work}, file)


if __name__ == "__main__":
    main()
