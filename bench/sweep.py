"""Benchmark of the refresh path: sweep -> SQS -> workers -> Intuit (simulated).

What it runs: a moto server in its own process (the AWS endpoint: table built from
template.yaml, KMS key, secret, refresh queue), the Intuit simulator in this process with a
fixed latency on the token endpoint, ``N`` connections due now (tokens the simulator issued,
sealed with the real ``TokenVault.seal`` under their own KMS data key), then the real handlers:
``functions/refresh_sweep/app.py`` (once; again at once if a run stops at its deadline with
work left, as the next scheduled run would), and ``C`` poller threads that do what Lambda's SQS
event source does with ``MaximumConcurrency = C`` (receive up to 10, invoke
``functions/refresh_worker/app.py``, delete all but the reported batch item failures).

What it prints: refreshes per second (end to end, from the sweep's start to the last refresh,
and in steady state between 10 % and 90 % done), the ideal ``C / L`` (each worker slot can do
at most one refresh per Intuit round trip), their ratio, the worker time per refresh, AWS
requests per refresh by service and operation (counted in-process on every botocore call made
after seeding, i.e. by the sweep and the workers) and DynamoDB writes per refresh, simulator
calls per refresh (1.00 means every due connection cost exactly one Intuit call), and the size of
a connection item as DynamoDB bills it, after the refresh (an idle connection's, without access
token) and as seeded (with the access token, as a connect or a read stores it); the simulator
issues access tokens of Intuit's size. Results go to bench/results/.

Usage:
    python bench/sweep.py                          # 2,000 connections, L = 50 ms, C = 5
    python bench/sweep.py --connections 10000 --latency-ms 50 --concurrency 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
sys.path[:0] = [str(REPO_ROOT / "layers" / "core"), str(REPO_ROOT)]

REGION = "us-east-1"
CLIENT_ID = "bench-client"
CLIENT_SECRET = secrets.token_urlsafe(24)


_STDOUT = sys.stdout


def say(line: str) -> None:
    _STDOUT.write(line + "\n")
    _STDOUT.flush()


# ----- infrastructure ------------------------------------------------------------------------


#: moto's WSGI app on a free port, quiet, printing the port it bound as its first line; with
#: devstack.moto_fixes (atomic DynamoDB conditional writes, a lossless and O(1) SQS), as the
#: local stack and the reliability tests run it.
_MOTO_SERVER = """
import socket
import sys

sys.path.insert(0, sys.argv[1])
from devstack.moto_fixes import moto_app
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import make_server

class Handler(MotoRequestHandler):
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, *args):
        pass

server = make_server("127.0.0.1", 0, moto_app(), threaded=True, request_handler=Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in its own process, so its CPU does not compete with the workers' for the GIL."""
    process = subprocess.Popen(
        [sys.executable, "-c", _MOTO_SERVER, str(REPO_ROOT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{line}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


#: Operations that write (billed in write units; a failed conditional write is billed too).
DYNAMODB_WRITES = frozenset(
    f"dynamodb.{op}"
    for op in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
)


class CallCounter:
    """Counts every botocore API call made in this process while enabled."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.enabled = False
        self._lock = threading.Lock()

    def install(self) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counter = self

        def counted(client: Any, operation_name: str, api_params: Any) -> Any:
            if not counter.enabled:
                return original(client, operation_name, api_params)
            name = f"{client.meta.service_model.service_name}.{operation_name}"
            started = time.perf_counter()
            try:
                return original(client, operation_name, api_params)
            finally:
                with counter._lock:
                    counter.counts[name] += 1
                    counter.seconds[name] += time.perf_counter() - started

        BaseClient._make_api_call = counted  # type: ignore[method-assign]

    def by_service(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for key, value in self.counts.items():
            out[key.split(".", 1)[0]] += value
        return dict(out)


class Context:
    """The Lambda context attributes the handlers use."""

    memory_limit_in_mb = 512
    function_version = "$LATEST"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def __init__(self, name: str, timeout_seconds: float) -> None:
        self.function_name = name
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        self.aws_request_id = secrets.token_hex(8)
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class EmfFilter:
    """Stands in for sys.stdout while the handlers run: sums the metrics in Powertools' EMF
    lines (a cross-check of the simulator's counts), counts the bytes the functions log (what
    CloudWatch Logs would ingest) and shows only warnings and errors."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.totals: Counter[str] = Counter()
        self.log_bytes = 0
        self.emf_bytes = 0
        self._buffer = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if line.startswith('{"_aws"'):
            self.emf_bytes += len(line) + 1
            doc = json.loads(line)
            for directive in doc["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = doc[metric["Name"]]
                    values = value if isinstance(value, list) else [value]
                    self.totals[metric["Name"]] += sum(values)
            return
        self.log_bytes += len(line) + 1
        if not line.startswith("{") or '"level":"INFO"' not in line:
            self.out.write(line + "\n")

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)


# ----- the run -------------------------------------------------------------------------------


def setup_aws(template: dict[str, Any]) -> dict[str, str]:
    import boto3

    from devstack.template import create_table_from_template

    session = boto3.session.Session()
    table = create_table_from_template(session.client("dynamodb"), template, "bench-connections")
    key = session.client("kms").create_key(Description="bench")["KeyMetadata"]["Arn"]
    secret = session.client("secretsmanager").create_secret(
        Name="bench-intuit",
        SecretString=json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )["ARN"]
    queue_props = template["Resources"]["RefreshQueue"]["Properties"]
    queue = session.client("sqs").create_queue(
        QueueName="bench-refresh",
        Attributes={"VisibilityTimeout": str(queue_props.get("VisibilityTimeout", 540))},
    )["QueueUrl"]
    return {"table": table["TableName"], "key": key, "secret": secret, "queue": queue}


class CollectingTable:
    """Stands in for the boto3 Table so Store.create_connection builds the item shape for us."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def put_item(self, *, Item: dict[str, Any], **_: Any) -> None:
        self.items.append(Item)


def seed(sim: Any, aws: dict[str, str], count: int) -> None:
    """``count`` connections due now, sealed with their own data keys, batch-written."""
    import boto3

    from devstack.seed import store_tokens
    from qbo_connect.config import get_settings
    from qbo_connect.intuit import TokenSet
    from qbo_connect.store.connections import ConnectionRepository
    from qbo_connect.store.fleet import FleetRepository
    from qbo_connect.vault.breaker import InvalidGrantBreaker
    from qbo_connect.vault.protocol import TokenVault
    from qbo_connect.vault.sealing import TokenCipher

    settings = get_settings()
    local = threading.local()
    done = Counter[str]()
    lock = threading.Lock()

    def vault() -> TokenVault:
        if not hasattr(local, "vault"):
            session = boto3.session.Session()
            # Its own cipher (and cache): the workers' cache must start cold, as in Lambda.
            table = CollectingTable()
            local.vault = TokenVault(
                settings=settings,
                connections=ConnectionRepository(table, due_shards=settings.due_shards),
                breaker=InvalidGrantBreaker(FleetRepository(table), settings),
                cipher=TokenCipher(session.client("kms"), aws["key"]),
                intuit=lambda: None,  # type: ignore[arg-type,return-value]
            )
            local.client = session.client("dynamodb")
        return local.vault  # type: ignore[no-any-return]

    def one(index: int) -> dict[str, Any]:
        realm_id = str(9_300_000_000_000 + index)
        body = sim.issue_tokens(client_id=CLIENT_ID, realm_id=realm_id)
        now = time.time()
        refreshed_at = now - (settings.keep_alive_hours + 1) * 3600  # keep-alive due
        tokens = TokenSet(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_in=3600,
            refresh_token_expires_in=int(body["x_refresh_token_expires_in"]),
            obtained_at=refreshed_at,
        )
        v = vault()
        store_tokens(v, realm_id, tokens, f"bench-{index % 50}")  # keep-alive: due now
        item = v.connections.table.items.pop()
        with lock:
            done["n"] += 1
            if done["n"] % 1000 == 0 or done["n"] == count:
                say(f"  sealed {done['n']}/{count}")
        return item  # type: ignore[no-any-return]

    with ThreadPoolExecutor(max_workers=4) as pool:
        items = list(pool.map(one, range(count)))
    resource = boto3.session.Session().resource("dynamodb")
    with resource.Table(aws["table"]).batch_writer() as writer:
        for item in items:
            writer.put_item(Item=item)
    say(f"  wrote {count} connections (BatchWriteItem)")


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


class Pollers:
    """What Lambda's SQS event source does with MaximumConcurrency = C: C batches at a time."""

    def __init__(self, handler: Any, queue_url: str, concurrency: int, timeout: float) -> None:
        import boto3

        self.handler = handler
        self.queue_url = queue_url
        self.queue_arn = f"arn:aws:sqs:{REGION}:123456789012:bench-refresh"
        self.concurrency = concurrency
        self.timeout = timeout
        self.stop = threading.Event()
        self.sqs = boto3.session.Session().client("sqs")
        self.lock = threading.Lock()
        self.batches = 0
        self.records = 0
        self.failures = 0
        self.busy_seconds = 0.0
        self.completions: list[float] = []  # monotonic time of each processed record
        self.threads = [
            threading.Thread(target=self._run, name=f"poller-{i}", daemon=True)
            for i in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._once()
            except Exception as exc:  # keep polling, as Lambda's pollers do; say what broke
                say(f"  poller error: {type(exc).__name__}: {exc}")
                time.sleep(0.5)

    def _once(self) -> None:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            return
        started = time.monotonic()
        result = self.handler(
            sqs_event(messages, self.queue_arn), Context("bench-worker", self.timeout)
        )
        ended = time.monotonic()
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        with self.lock:
            self.batches += 1
            self.records += len(messages)
            self.failures += len(failed)
            self.busy_seconds += ended - started
            self.completions.extend([ended] * len(done))


def attribute_size(value: dict[str, Any]) -> int:
    """An attribute value's size as DynamoDB counts it (low-level wire form)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: v}) for v in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + attribute_size(v) for k, v in inner.items())
    raise ValueError(f"unknown attribute type {kind}")


def measure_items(table: str, count: int) -> dict[str, Any]:
    """Size of the refreshed connection items, as DynamoDB bills writes (1 WRU per 1 KB)."""
    import boto3

    client = boto3.session.Session().client("dynamodb")
    sizes: list[int] = []
    by_attribute: Counter[str] = Counter()
    for index in range(count):
        key = {"pk": {"S": f"REALM#{9_300_000_000_000 + index}"}, "sk": {"S": "CONNECTION"}}
        item = client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        if not item:
            continue
        per = {name: len(name.encode()) + attribute_size(value) for name, value in item.items()}
        sizes.append(sum(per.values()))
        by_attribute.update(per)
    if not sizes:
        return {}
    median = sorted(sizes)[len(sizes) // 2]
    return {
        "items": len(sizes),
        "median_bytes": median,
        "max_bytes": max(sizes),
        "wru_per_write": -(-max(sizes) // 1024),
        "largest_attributes_bytes": {
            name: round(total / len(sizes)) for name, total in by_attribute.most_common(4)
        },
    }


def percentile_time(times: list[float], fraction: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction) - 1))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from devstack.handlers import load_handler
    from devstack.intuit_sim import IntuitSimulator
    from devstack.template import load_template, parameter_values

    template = load_template(REPO_ROOT / "template.yaml")
    parameters = parameter_values(template, {})
    concurrency = args.concurrency or int(parameters["WorkerMaxConcurrency"])
    latency = args.latency_ms / 1000.0
    worker_timeout = float(template["Resources"]["RefreshWorkerFunction"]["Properties"]["Timeout"])
    sweep_timeout = float(template["Resources"]["RefreshSweepFunction"]["Properties"]["Timeout"])

    counter = CallCounter()
    counter.install()
    with moto_server() as aws_url, IntuitSimulator(clients={CLIENT_ID: CLIENT_SECRET}) as sim:
        env = {
            "AWS_ENDPOINT_URL": aws_url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_SERVICE_NAME": "qbo-connect",
            "POWERTOOLS_METRICS_NAMESPACE": "QboConnect",
            "POWERTOOLS_LOG_LEVEL": str(parameters["LogLevel"]),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "KEEP_ALIVE_HOURS": str(parameters["KeepAliveHours"]),
            "KEEP_WARM_MINUTES": str(parameters["KeepWarmMinutes"]),
            **sim.endpoints,
        }
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)
        os.environ.update(env)
        say(f"moto server {aws_url}; Intuit simulator {sim.base_url}")
        aws = setup_aws(template)
        os.environ.update(
            {
                "TABLE_NAME": aws["table"],
                "TOKEN_KEY_ID": aws["key"],
                "INTUIT_CLIENT_SECRET_ID": aws["secret"],
                "REFRESH_QUEUE_URL": aws["queue"],
            }
        )
        say(f"seeding {args.connections} due connections ...")
        began = time.monotonic()
        seed(sim, aws, args.connections)
        seed_seconds = time.monotonic() - began
        # As stored by a connect or a read-path refresh: with its access token.
        seeded_items = measure_items(aws["table"], min(args.connections, 20))

        emf = EmfFilter(_STDOUT)
        sys.stdout = emf
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        sweep_handler = load_handler("refresh_sweep").lambda_handler
        worker_handler = load_handler("refresh_worker").lambda_handler
        sim.set_faults(latency_seconds=latency, endpoints=("token",))
        sim.reset_counters()
        counter.enabled = True

        say(
            f"running: the sweep, {concurrency} worker slots, Intuit latency "
            f"{args.latency_ms:g} ms (ideal {concurrency / latency:.1f} refreshes/s)"
        )
        pollers = Pollers(worker_handler, aws["queue"], concurrency, worker_timeout)
        pollers.start()
        t0 = time.monotonic()
        sweeps: list[dict[str, Any]] = []

        def schedule() -> None:
            # One run, and more only if a run stopped at its deadline with work left (the next
            # scheduled run would pick that up; here it starts at once).
            while len(sweeps) < 20:
                result = sweep_handler({}, Context("bench-sweep", sweep_timeout))
                sweeps.append(result)
                say(f"  sweep: {json.dumps(result)}")
                if result["complete"]:
                    return

        scheduler = threading.Thread(target=schedule, name="schedule", daemon=True)
        scheduler.start()
        limit = t0 + 120 + max(5 * args.connections * latency / concurrency, args.connections / 5)
        last_print = 0.0
        while time.monotonic() < limit:
            refreshed = sim.counters()["token.refresh_token.ok"]
            now = time.monotonic()
            if now - last_print >= 2 or refreshed >= args.connections:
                rate = refreshed / max(now - t0, 1e-9)
                say(f"  refreshed {refreshed}/{args.connections} ({rate:.1f}/s)")
                last_print = now
            if refreshed >= args.connections and pollers.records >= args.connections:
                break
            time.sleep(0.2)
        time.sleep(1.5)  # let anything left (duplicates, retries) show up in the counts
        scheduler.join(timeout=sweep_timeout)
        counter.enabled = False
        pollers.join()
        sim_counts = sim.counters()
        sys.stdout = _STDOUT
        items = measure_items(aws["table"], min(args.connections, 50))

    refreshed = sim_counts["token.refresh_token.ok"]
    completions = pollers.completions
    end = max(completions) if completions else time.monotonic()
    elapsed = end - t0
    rate = refreshed / elapsed if elapsed > 0 else 0.0
    steady = None
    if len(completions) >= 20:
        t10, t90 = percentile_time(completions, 0.1), percentile_time(completions, 0.9)
        if t90 > t10:
            steady = (0.8 * len(completions)) / (t90 - t10)
    ideal = concurrency / latency
    n = max(refreshed, 1)
    counts = dict(sorted(counter.counts.items()))
    services = counter.by_service()
    per_refresh = {k: round(v / n, 3) for k, v in counts.items()}
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python bench/sweep.py", *sys.argv[1:]]),
        "machine": f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        "connections": args.connections,
        "latency_ms": args.latency_ms,
        "concurrency": concurrency,
        "seed_seconds": round(seed_seconds, 1),
        "sweep": {
            "runs": len(sweeps),
            "duration_ms": sum(r["duration_ms"] for r in sweeps),
            "enqueued": sum(r["enqueued"] for r in sweeps),
            "complete": bool(sweeps) and sweeps[-1]["complete"],
            "results": sweeps,
        },
        "refreshed": refreshed,
        "elapsed_seconds": round(elapsed, 2),
        "refreshes_per_second": round(rate, 1),
        "steady_refreshes_per_second": None if steady is None else round(steady, 1),
        "ideal_per_second": round(ideal, 1),
        "ratio": round(rate / ideal, 3),
        "steady_ratio": None if steady is None else round(steady / ideal, 3),
        "worker_ms_per_refresh": round(1000 * pollers.busy_seconds / n, 1),
        "worker_overhead_ms_per_refresh": round(
            1000 * pollers.busy_seconds / n - args.latency_ms, 1
        ),
        "batches": pollers.batches,
        "batch_item_failures": pollers.failures,
        "dynamodb_requests_per_refresh": round(services.get("dynamodb", 0) / n, 3),
        "dynamodb_writes_per_refresh": round(
            sum(v for k, v in counts.items() if k in DYNAMODB_WRITES) / n, 3
        ),
        "sqs_requests_per_refresh": round(services.get("sqs", 0) / n, 3),
        "kms_requests_per_refresh": round(services.get("kms", 0) / n, 3),
        "simulator_calls_per_refresh": round(sim_counts["token.refresh_token"] / n, 3),
        "requests_per_refresh_by_operation": per_refresh,
        "requests": counts,
        "mean_ms_by_operation": {
            k: round(1000 * counter.seconds[k] / v, 2) for k, v in counts.items() if v
        },
        "mean_batch_size": round(pollers.records / pollers.batches, 2) if pollers.batches else 0,
        "emf_metrics": dict(sorted(emf.totals.items())),
        "log_bytes_per_refresh": round(emf.log_bytes / n, 1),
        "emf_bytes_per_refresh": round(emf.emf_bytes / n, 1),
        "log_level": str(parameters["LogLevel"]),
        "connection_item": items,
        "connection_item_with_access_token": seeded_items,
    }


def report(result: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    lines = [
        f"connections due           {result['connections']}",
        f"Intuit latency L          {result['latency_ms']} ms",
        f"worker concurrency C      {result['concurrency']}",
        f"sweep                     {result['sweep']['runs']} run(s), "
        f"{result['sweep']['duration_ms']} ms, enqueued {result['sweep']['enqueued']}, "
        f"complete {result['sweep']['complete']}",
        f"refreshed                 {result['refreshed']} in {result['elapsed_seconds']} s",
        f"refreshes/s (end to end)  {result['refreshes_per_second']}",
        f"refreshes/s (steady)      {fmt(result['steady_refreshes_per_second'])}",
        f"ideal C/L                 {result['ideal_per_second']}",
        f"ratio (end to end)        {result['ratio']:.2f}",
        f"ratio (steady)            {fmt(result['steady_ratio'])}",
        f"worker ms per refresh     {result['worker_ms_per_refresh']} "
        f"(L + {result['worker_overhead_ms_per_refresh']} ms)",
        f"DynamoDB req per refresh  {result['dynamodb_requests_per_refresh']:.2f}",
        f"DynamoDB writes/refresh   {result['dynamodb_writes_per_refresh']:.2f}",
        f"SQS req per refresh       {result['sqs_requests_per_refresh']:.2f}",
        f"KMS req per refresh       {result['kms_requests_per_refresh']:.2f}",
        f"simulator calls/refresh   {result['simulator_calls_per_refresh']:.2f}",
        f"log bytes per refresh     {result['log_bytes_per_refresh']} "
        f"+ EMF {result['emf_bytes_per_refresh']} (LogLevel {result['log_level']})",
        f"EMF RefreshSucceeded      {result['emf_metrics'].get('RefreshSucceeded', 0):g}",
    ]
    for label, key in (
        ("connection item", "connection_item"),
        ("  with its access token", "connection_item_with_access_token"),
    ):
        item = result.get(key) or {}
        if item:
            largest = ", ".join(f"{k} {v}" for k, v in item["largest_attributes_bytes"].items())
            lines.append(
                f"{label:<26}{item['median_bytes']} B median, {item['max_bytes']} B max "
                f"({item['wru_per_write']} WRU per write; largest: {largest})"
            )
    lines.append("by operation (per refresh):")
    for name, value in result["requests_per_refresh_by_operation"].items():
        lines.append(f"  {name:<38}{value:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000, help="due connections (2000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="Intuit latency L (50)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="worker concurrency C (default: the template's WorkerMaxConcurrency default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the moto server process is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.connections < 1 or args.latency_ms <= 0:
        parser.error("--connections must be >= 1 and --latency-ms > 0")
    out = args.out.resolve()
    if RESULTS_DIR.resolve() not in (out, *out.parents):
        parser.error("results are written under bench/results/ only")
    result = run(args)
    text = report(result)
    say("")
    say(text)
    out.mkdir(parents=True, exist_ok=True)
    stamp = result["when"].replace(":", "").replace("-", "")
    name = f"sweep-{result['connections']}-L{args.latency_ms:g}-C{result['concurrency']}-{stamp}"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.txt").write_text(f"$ {result['command']}\n{text}\n", encoding="utf-8")
    say(f"\nwritten: {out / name}.json")
    return 0 if result["simulator_calls_per_refresh"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
