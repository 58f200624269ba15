"""Drives netwatch with Azure's own Python SDK (azure-mgmt-network), one
operation per run, printing the result as JSON on standard output.

The end-to-end test (tests/sdk.rs) runs it step by step between its own
checks and traffic. Settings come from the environment `netwatch up` writes:
NETWATCH_URL, NETWATCH_TOKEN, NETWATCH_CA.

    azure_sdk.py create NAME BODY_JSON   begin_create(...).result()
    azure_sdk.py get NAME | list | status NAME | stop NAME | delete NAME
    azure_sdk.py download URL FILE       GET a storagePath with the token
    azure_sdk.py rest METHOD PATH [BODY] any other request, with the token
    azure_sdk.py churn SECONDS NAME BODY_JSON
        for SECONDS, round the URLs in NETWATCH_URLS (comma-separated: the
        replicas): get NAME, its queryStatus, the list, and a capture made
        with BODY_JSON and deleted again; prints every request that failed
        (after the SDK's own retries)
"""

import json
import os
import sys
import time

import requests
from azure.core.credentials import AccessToken
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import PacketCapture

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
GROUP = "NetworkWatcherRG"
WATCHER = "NetworkWatcher_westus"


class NetwatchToken:
    """A netwatch client token where the SDK expects an Azure AD credential."""

    def get_token(self, *scopes, **kwargs):
        return AccessToken(os.environ["NETWATCH_TOKEN"], int(time.time()) + 3600)


def client(url=None):
    url = url or os.environ["NETWATCH_URL"]
    return NetworkManagementClient(
        NetwatchToken(),
        SUBSCRIPTION,
        base_url=url,
        credential_scopes=[url + "/.default"],
        connection_verify=os.environ["NETWATCH_CA"],
        polling_interval=0.1,
    )


def main(argv):
    command, args = argv[1], argv[2:]
    captures = client().packet_captures if command not in ("download", "rest") else None
    auth = {"Authorization": "Bearer " + os.environ["NETWATCH_TOKEN"]}
    if command == "create":
        name, body = args
        # The model class, not a dict: the SDK sends a dict verbatim (clients.md §4).
        parameters = PacketCapture(json.loads(body))
        result = captures.begin_create(GROUP, WATCHER, name, parameters).result()
        out = result.as_dict()
    elif command == "get":
        out = captures.get(GROUP, WATCHER, args[0]).as_dict()
    elif command == "list":
        out = [capture.as_dict() for capture in captures.list(GROUP, WATCHER)]
    elif command == "status":
        out = captures.begin_get_status(GROUP, WATCHER, args[0]).result().as_dict()
    elif command == "stop":
        out = captures.begin_stop(GROUP, WATCHER, args[0]).result()
    elif command == "delete":
        out = captures.begin_delete(GROUP, WATCHER, args[0]).result()
    elif command == "download":
        url, path = args
        answer = requests.get(
            url,
            headers=auth,
            verify=os.environ["NETWATCH_CA"],
            timeout=30,
        )
        answer.raise_for_status()
        with open(path, "wb") as file:
            file.write(answer.content)
        out = {"bytes": len(answer.content)}
    elif command == "churn":
        out = churn(float(args[0]), args[1], json.loads(args[2]))
    elif command == "rest":
        method, path, *body = args
        answer = requests.request(
            method,
            os.environ["NETWATCH_URL"] + path,
            headers=auth,
            json=json.loads(body[0]) if body else None,
            verify=os.environ["NETWATCH_CA"],
            timeout=30,
        )
        out = {
            "status": answer.status_code,
            "headers": {name.lower(): value for name, value in answer.headers.items()},
            "body": answer.json() if answer.content else None,
        }
    else:
        raise SystemExit(f"unknown command {command}")
    json.dump(out, sys.stdout, default=str)
    print()


def churn(seconds, name, body):
    urls = os.environ["NETWATCH_URLS"].split(",")
    clients = [client(url).packet_captures for url in urls]
    done, failures, made = 0, [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        url, captures = urls[done % len(urls)], clients[done % len(clients)]
        steps = [
            ("get", lambda: captures.get(GROUP, WATCHER, name)),
            ("status", lambda: captures.begin_get_status(GROUP, WATCHER, name).result()),
            ("list", lambda: list(captures.list(GROUP, WATCHER))),
        ]
        if done % 4 == 0:
            made += 1
            churned = "churn-%d" % made
            steps.append(
                ("create", lambda: captures.begin_create(GROUP, WATCHER, churned, PacketCapture(body)).result())
            )
            steps.append(("delete", lambda: captures.begin_delete(GROUP, WATCHER, churned).result()))
        for step, call in steps:
            started = time.monotonic()
            try:
                call()
            except Exception as error:  # every failure is the test's finding
                failures.append({"url": url, "step": step, "error": repr(error)[:500],
                                 "seconds": round(time.monotonic() - started, 3)})
        done += 1
    return {"rounds": done, "created": made, "failures": failures}


if __name__ == "__main__":
    main(sys.argv)
