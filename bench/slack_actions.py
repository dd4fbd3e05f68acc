"""How fast `POST /slack/actions` answers Slack, with the store fast and with it stalled.

    python -m bench.slack_actions                 # 200 presses per case
    python -m bench.slack_actions --presses 50 --json

Slack shows an error, and retries, when an interactivity request is not
answered within 3 s. The endpoint answers after checking the signature and the
payload only; the store and Slack are used after the answer, on a small pool
of threads. This posts signed button presses, one after another, over real
HTTP on 127.0.0.1 to the real endpoint, and measures each answer's wall time,
in two cases: a store that answers at once, and one whose every read takes
`--stall` seconds (a database in trouble). Slack itself is a closed local port,
so every call the background makes fails at once and is only logged.

Prints one line per case (median, 95th percentile and worst answer time, the
statuses) and, with `--json`, one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import statistics
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from controller.api import ApiServer, Readiness
from controller.api.slack_actions import SlackActions
from controller.api.slack_buttons import ActionId, ButtonRef
from controller.app import ManualCommands
from controller.notify.slack import web_client
from controller.store.memory import MemoryStore
from controller.store.records import StoredRollout

SECRET = "bench-signing-secret"
CLOSED = "http://127.0.0.1:9/"  # the discard port: nothing listens, connections are refused


class StalledStore(MemoryStore):
    """A store whose reads take `stall` seconds, as a database in trouble would."""

    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall = stall

    def get(self, key: str) -> StoredRollout | None:
        time.sleep(self.stall)
        return super().get(key)


def press(i: int) -> bytes:
    value = ButtonRef(rollout="llm/bot-v2", shown=f"llm/bot-v2#bench#{i}#1#started").encode()
    payload = {
        "type": "block_actions",
        "user": {"id": "U024BE7LH", "username": "jane", "team_id": "T0CAG"},
        "trigger_id": f"{i}.1.bench",
        "response_url": f"{CLOSED}actions/T0CAG/{i}/x",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0BOT0001"},
        "actions": [{"action_id": ActionId.PAUSE.value, "value": value, "type": "button"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }


def measure(stall: float, presses: int) -> dict[str, Any]:
    store = StalledStore(stall)
    actions = SlackActions(
        signing_secret=SECRET,
        client=web_client(SecretStr("xoxb-bench"), base_url=CLOSED + "api/", timeout=1),
        store=store,
        submit=ManualCommands(store),
        response_url_prefix=CLOSED,
    )
    server = ApiServer(
        CollectorRegistry(),
        Readiness({"up": lambda: True}),
        port=0,
        health=False,
        metrics=False,
        slack=actions,
    )
    seconds: list[float] = []
    statuses: Counter[int] = Counter()
    with server:
        url = f"{server.url}/slack/actions"
        for i in range(presses):
            body = press(i)
            request = urllib.request.Request(url, data=body, headers=signed(body), method="POST")
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    answer.read()
                    statuses[answer.status] += 1
            except urllib.error.HTTPError as exc:
                with exc:
                    statuses[exc.code] += 1
            seconds.append(time.perf_counter() - began)
        began = time.perf_counter()
        actions.close(timeout=presses * stall + 30)
        drained = time.perf_counter() - began
    ordered = sorted(seconds)
    return {
        "stallSeconds": stall,
        "presses": presses,
        "medianMs": round(statistics.median(ordered) * 1000, 2),
        "p95Ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "worstMs": round(ordered[-1] * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "backgroundDrainSeconds": round(drained, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--stall", type=float, default=5.0, help="seconds per store read")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the background's failures are expected here
    cases = [measure(0.0, args.presses), measure(args.stall, min(args.presses, 60))]
    for case in cases:
        print(
            f"store read {case['stallSeconds']:g} s: {case['presses']} presses, answered in "
            f"median {case['medianMs']} ms, p95 {case['p95Ms']} ms, worst {case['worstMs']} ms; "
            f"statuses {case['statuses']}; background drained in "
            f"{case['backgroundDrainSeconds']} s"
        )
    if args.json:
        print(json.dumps({"at": datetime.now(UTC).isoformat(), "cases": cases}))


if __name__ == "__main__":
    main()
