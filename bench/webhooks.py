"""Benchmark of the webhook path through the local stack: Intuit -> POST /webhooks -> SQS ->
processor -> EventBridge.

What it answers: how fast does Intuit get its 200 (it allows 3 s), and how many
``quickbooks.entity_changed`` events per second come out the other end? It starts the local
stack (``python -m devstack`` in a subprocess, on free ports), stores ``--realms`` connections,
warms both functions up, then sends ``--deliveries`` signed deliveries (half legacy, half
CloudEvents, ``--changes`` entity changes each) from ``--concurrency`` threads. Interleaved with
them, every fifth delivery is also sent unsigned: that 401 goes through the same gateway and
handler but stops before the secret and SQS, so the ratio of the two medians is what
verification and enqueueing cost on top of the bare HTTP path, measured under the same load.
Events are counted from the stack's events queue (an EventBridge rule copies every
``qbo-connect`` event there); events/s runs from the first send to the last event seen.

``--parser-import`` instead compares, in fresh interpreters, the cold cost of this project's
payload module (dataclasses and hand-written checks) with equivalent pydantic models behind a
discriminated union (needs pydantic importable by ``--python``).

    python bench/webhooks.py [--deliveries 1000] [--changes 2] [--concurrency 8]
    python bench/webhooks.py --parser-import --python /path/to/venv-with-pydantic/bin/python

Absolute numbers are a 2-core machine running moto, the gateway and the processor in one
process; the ratios are the point. Results go to bench/results/.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write nothing outside bench/results/

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
for _path in (REPO_ROOT / "layers" / "core", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import requests  # noqa: E402

from devstack.intuit_sim.webhooks import cloudevents_body, legacy_body, sign  # noqa: E402
from devstack.process import seed_connection, start_devstack  # noqa: E402
from qbo_connect.webhooks.settings import DETAIL_TYPE  # noqa: E402


def say(line: str) -> None:
    print(line, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class EventCounter(threading.Thread):
    """Drains the events queue, recording when each entity event was seen."""

    def __init__(self, stack: Any) -> None:
        super().__init__(name="event-counter", daemon=True)
        self.sqs = stack.boto3_client("sqs")
        self.url = stack.endpoints["events_queue"]
        self.seen: dict[str, float] = {}
        self.duplicates = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            now = time.monotonic()
            for message in messages:
                event = json.loads(message["Body"])
                if event.get("detail-type") != DETAIL_TYPE:
                    continue
                event_id = event["detail"]["event_id"]
                if event_id in self.seen:
                    self.duplicates += 1
                else:
                    self.seen[event_id] = now
            if messages:
                self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )


def build_deliveries(realms: list[str], count: int, changes: int) -> list[bytes]:
    """Distinct changes (a legacy change's id is a hash of its fields: never repeat them)."""
    batch = uuid.uuid4().hex[:8]
    # Now, not a fixed date: the gateway drops changes older than its freshness bound.
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    bodies = []
    for i in range(count):
        items = [
            {
                "realm_id": realms[(i * changes + j) % len(realms)],
                "name": "Invoice" if j % 2 else "Customer",
                "id": f"{batch}-{i}-{j}",
                "operation": "Update",
                "lastUpdated": now,
                "event_id": str(uuid.uuid4()),
            }
            for j in range(changes)
        ]
        bodies.append(
            legacy_body(items) if i % 2 == 0 else cloudevents_body(items, source="intuit.bench")
        )
    return bodies


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp,
        start_devstack(
            tmp,
            env={"POWERTOOLS_LOG_LEVEL": "WARNING", "INTUIT_WEBHOOK_VERIFIER_TOKEN": None},
            extra_args=("--no-schedule", "--no-connect-link"),
        ) as stack,
    ):
        token = stack.endpoints["webhook_verifier_token"]
        url = f"{stack.api}/webhooks"
        say(f"local stack up; storing {args.realms} connections")
        realms = [f"55{i:012d}" for i in range(args.realms)]
        for index, realm in enumerate(realms):
            seed_connection(stack, realm, f"tenant-{index % 10}")
        counter = EventCounter(stack)
        counter.start()
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=args.concurrency * 2)
        session.mount("http://", adapter)

        def post(body: bytes, signed: bool) -> tuple[int, float]:
            headers = {"content-type": "application/json"}
            if signed:
                headers["intuit-signature"] = sign(body, token)
            started = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=30)
            return response.status_code, time.perf_counter() - started

        # Cold starts and warm-up: first calls of both functions, not part of the figures.
        warm = build_deliveries(realms, 5, args.changes)
        cold_status, cold_seconds = post(warm[0], True)
        for body in warm[1:]:
            post(body, True)
            post(body, False)
        while len(counter.seen) < 5 * args.changes:
            time.sleep(0.1)
        say(f"warm (first delivery, cold start included: {cold_seconds * 1000:.0f} ms)")
        warm_ids = set(counter.seen)

        bodies = build_deliveries(realms, args.deliveries, args.changes)
        expected = args.deliveries * args.changes
        accepted: list[float] = []
        refused: list[float] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def one(index: int) -> None:
            status, seconds = post(bodies[index], True)
            baseline = post(bodies[index], False) if index % 5 == 0 else None
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    accepted.append(seconds)
                if baseline is not None and baseline[0] == 401:
                    refused.append(baseline[1])

        say(
            f"sending {args.deliveries} deliveries x {args.changes} changes"
            f" from {args.concurrency} threads"
        )
        started = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.deliveries)))
        sent = time.monotonic()
        deadline = sent + args.timeout
        while len(set(counter.seen) - warm_ids) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # room for a duplicate to show up
        counter.stop_event.set()
        counter.join(timeout=5)
        published = {k: v for k, v in counter.seen.items() if k not in warm_ids}
        last = max(published.values()) if published else sent
        health = stack.health()["functions"]
        return {
            "deliveries": args.deliveries,
            "changes_per_delivery": args.changes,
            "concurrency": args.concurrency,
            "realms": args.realms,
            "statuses": statuses,
            "cold_first_delivery_ms": round(cold_seconds * 1000, 1),
            "cold_first_status": cold_status,
            "p50_ms_200": round(statistics.median(accepted) * 1000, 1),
            "p99_ms_200": round(percentile(accepted, 0.99) * 1000, 1),
            "max_ms_200": round(max(accepted) * 1000, 1),
            "p50_ms_401": round(statistics.median(refused) * 1000, 1),
            "p99_ms_401": round(percentile(refused, 0.99) * 1000, 1),
            "ratio_p50_200_over_401": round(
                statistics.median(accepted) / statistics.median(refused), 2
            ),
            "send_seconds": round(sent - started, 2),
            "deliveries_per_second": round(args.deliveries / (sent - started), 1),
            "events_expected": expected,
            "events_published": len(published),
            "duplicate_events": counter.duplicates,
            "events_per_second": round(len(published) / (last - started), 1),
            "processor_invocations": health["WebhookProcessorFunction"]["invocations"],
            "processor_errors": health["WebhookProcessorFunction"]["errors"],
        }


PARSER_SNIPPETS = {
    "dataclasses (qbo_connect.webhooks.payload)": """
import time
t = time.perf_counter()
from qbo_connect.webhooks.payload import parse
parse(BODY)
print(time.perf_counter() - t)
""",
    "pydantic discriminated union": """
import time
t = time.perf_counter()
from typing import Annotated, Literal, Union
from pydantic import BaseModel, Field, TypeAdapter

class Entity(BaseModel):
    name: str
    id: str
    operation: Literal["Create", "Update", "Delete", "Merge", "Void", "Emailed"]
    lastUpdated: str
    deletedId: str | None = None

class DataChangeEvent(BaseModel):
    entities: list[Entity]

class Notification(BaseModel):
    realmId: str
    dataChangeEvent: DataChangeEvent

class Legacy(BaseModel):
    shape: Literal["legacy"] = "legacy"
    eventNotifications: list[Notification]

class CloudEvent(BaseModel):
    specversion: str
    id: str
    type: str
    time: str
    intuitaccountid: str
    intuitentityid: str
    data: dict = {}

class CloudEvents(BaseModel):
    shape: Literal["cloudevents"] = "cloudevents"
    events: list[CloudEvent]

Payload = TypeAdapter(Annotated[Union[Legacy, CloudEvents], Field(discriminator="shape")])
import json
doc = json.loads(BODY)
Payload.validate_python({"shape": "legacy", **doc})
print(time.perf_counter() - t)
""",
}


def parser_import(args: argparse.Namespace) -> dict[str, Any]:
    body = legacy_body(
        [
            {
                "realm_id": "1",
                "name": "Customer",
                "id": "1",
                "operation": "Create",
                "lastUpdated": "2026-12-01T10:00:00.000Z",
            }
        ]
    )
    env = dict(
        os.environ, PYTHONPATH=str(REPO_ROOT / "layers" / "core"), PYTHONDONTWRITEBYTECODE="1"
    )
    result: dict[str, Any] = {"python": args.python, "runs": args.runs}
    for name, snippet in PARSER_SNIPPETS.items():
        code = f"BODY = {body!r}\n" + snippet
        times = []
        for _ in range(args.runs):
            out = subprocess.run(
                [args.python, "-c", code], env=env, capture_output=True, text=True, check=False
            )
            if out.returncode != 0:
                raise SystemExit(f"{name}: {out.stderr.strip().splitlines()[-1]}")
            times.append(float(out.stdout.strip()))
        result[name] = round(statistics.median(times) * 1000, 1)
    names = list(PARSER_SNIPPETS)
    result["ratio_pydantic_over_dataclasses"] = round(result[names[1]] / result[names[0]], 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=2, help="entity changes per delivery")
    parser.add_argument("--realms", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for events")
    parser.add_argument("--parser-import", action="store_true")
    parser.add_argument("--python", default=sys.executable, help="interpreter for --parser-import")
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per snippet")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    result = parser_import(args) if args.parser_import else run(args)
    result["machine"] = (
        f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"
    )
    result["at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "parser-import" if args.parser_import else "webhooks"
    target = args.out / f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    width = max(len(k) for k in result)
    for key, value in result.items():
        say(f"{key:<{width}}  {value}")
    say(f"wrote {target}")
    if not args.parser_import and (
        result["events_published"] != result["events_expected"] or result["duplicate_events"]
    ):
        say("FAILED: events published differ from the changes sent")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
