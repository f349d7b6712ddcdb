"""The monthly AWS cost of keeping connections alive, built from a measured ``bench/sweep.py`` run.

Why a script and not a paragraph of arithmetic: the model must follow the measurements. It
reads the requests, worker time, log volume and item sizes that ``bench/sweep.py`` measured, the
settings (``KeepAliveHours``, memory sizes, the indexes' projections) from ``template.yaml``,
and the list prices below, and prints the cost per month of two fleets of 1,000,000
connections, and per 1,000 idle ones.

What a refresh costs in DynamoDB is derived, not measured (moto does not bill): each write is
billed on the larger of the item before and after it, rounded up to 1 KB; a write that moves an
index key (``due_at`` in DueIndex) costs that index a delete and a put; a write that changes an
attribute an index projects costs it one write. The lease write changes only the lease
attributes, the commit the tokens and everything the refresh settles; which index sees which
is read from the template.

    python bench/cost_model.py                       # from the newest bench/sweep.py result
    python bench/sweep.py --latency-ms 300 && python bench/cost_model.py   # as in the docs
    python bench/cost_model.py --keep-alive-hours 24 # what the old default cost

It writes nothing; it prints the model, and exits 1 if 1,000 idle connections cost more than
``--target`` ($0.20) a month.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
sys.path[:0] = [str(REPO_ROOT / "layers" / "core"), str(REPO_ROOT)]

MONTH_DAYS = 30
KB = 1024
GB = 1024**3

#: us-east-1 list prices, no free tier, read on 2026-12-02 from the AWS pricing pages
#: (aws.amazon.com/dynamodb/pricing/on-demand, /kms/pricing, /lambda/pricing, /sqs/pricing,
#: /cloudwatch/pricing, /secrets-manager/pricing). Check them again before relying on a figure.
PRICES = {
    "dynamodb_wru": 0.625 / 1e6,  # on demand, per write request unit (since Nov 2024)
    "dynamodb_rru": 0.125 / 1e6,  # on demand, per read request unit
    "dynamodb_storage_gb_month": 0.25,
    "dynamodb_pitr_gb_month": 0.20,
    "kms_request": 0.03 / 10_000,
    "kms_key_month": 1.00,
    "lambda_arm_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "sqs_request": 0.40 / 1e6,  # standard queue
    "logs_ingest_gb": 0.50,
    "metric_month": 0.30,
    "alarm_month": 0.10,
    "dashboard_month": 3.00,
    "secret_month": 0.40,
}
PRICES_READ = "2026-12-02"

#: Attributes each write of a refresh changes (see ``Store.lease_if_due`` / ``commit_refresh``).
LEASE_WRITES = {"lease_owner", "lease_until"}
COMMIT_WRITES = {
    "version",
    "due_at",
    "due_shard",
    "last_refreshed_at",
    "updated_at",
    "access_expires_at",
    "refresh_expires_at",
    "committed_by",
    "refresh_run",
    "lease_owner",
    "lease_until",
}
#: Lambda's START/END/REPORT lines per invocation (an estimate; not in the bench's log count).
PLATFORM_LOG_BYTES_PER_INVOCATION = 600
#: Per-item storage overhead DynamoDB bills, per item in the table and in each index.
ITEM_OVERHEAD_BYTES = 100
#: An index entry's own size: DueIndex holds keys only; TenantIndex the projected metadata.
DUE_ENTRY_BYTES = 90
TENANT_ENTRY_BYTES = 450
#: Idle long polls by Lambda's SQS pollers (about 5 per event source mapping, one per 20 s).
IDLE_POLLS_PER_MONTH = 2 * 5 * 3 * 60 * 24 * MONTH_DAYS
#: Custom metrics the service emits in a steady state (telemetry.py, sweep.py, worker.py).
CUSTOM_METRICS = 20


def units(size_bytes: float, unit: int = KB) -> int:
    return max(1, math.ceil(size_bytes / unit))


@dataclass(frozen=True)
class Measured:
    """What ``bench/sweep.py`` measured, per refresh."""

    source: str
    latency_ms: float
    writes: float
    requests: float
    queries: float
    kms: float
    sqs: float
    worker_seconds: float
    sweep_seconds_per_connection: float
    log_bytes: float
    batch_size: float
    idle_item_bytes: int
    warm_item_bytes: int

    @classmethod
    def load(cls, path: Path) -> Measured:
        data = json.loads(path.read_text(encoding="utf-8"))
        per_op = data["requests_per_refresh_by_operation"]
        idle = data.get("connection_item") or {}
        warm = data.get("connection_item_with_access_token") or {}
        if not idle or not warm:
            raise SystemExit(f"{path}: no item sizes (run bench/sweep.py again)")
        sweep = data["sweep"]
        return cls(
            source=str(path.relative_to(REPO_ROOT)),
            latency_ms=float(data["latency_ms"]),
            writes=float(data["dynamodb_writes_per_refresh"]),
            requests=float(data["dynamodb_requests_per_refresh"]),
            queries=float(per_op.get("dynamodb.Query", 0.0)),
            kms=float(data["kms_requests_per_refresh"]),
            sqs=float(data["sqs_requests_per_refresh"]),
            worker_seconds=float(data["worker_ms_per_refresh"]) / 1000.0,
            sweep_seconds_per_connection=sweep["duration_ms"] / 1000.0 / max(sweep["enqueued"], 1),
            log_bytes=float(data["log_bytes_per_refresh"]) + float(data["emf_bytes_per_refresh"]),
            batch_size=float(data.get("mean_batch_size") or 10.0),
            idle_item_bytes=int(idle["max_bytes"]),
            warm_item_bytes=int(warm["max_bytes"]),
        )


@dataclass(frozen=True)
class Template:
    """What the model takes from template.yaml."""

    keep_alive_hours: float
    keep_warm_interval_seconds: float
    worker_memory_gb: float
    sweep_memory_gb: float
    sweep_runs_per_day: float
    tenant_projection: frozenset[str]
    alarms: int
    kms_keys: int
    secrets: int

    @classmethod
    def load(cls) -> Template:
        from devstack.template import load_template, parameter_values
        from qbo_connect.config import load_settings
        from qbo_connect.vault.due import keep_warm_lead_seconds

        template = load_template(REPO_ROOT / "template.yaml")
        parameters = parameter_values(template, {})
        resources = template["Resources"]
        default_memory = float(template["Globals"]["Function"]["MemorySize"])

        def memory(name: str) -> float:
            props = resources[name]["Properties"]
            return float(props.get("MemorySize", default_memory)) / 1024.0

        indexes = resources["ConnectionsTable"]["Properties"]["GlobalSecondaryIndexes"]
        tenant = next(i for i in indexes if i["IndexName"] == "TenantIndex")
        keys = {k["AttributeName"] for k in tenant["KeySchema"]}
        projected = frozenset(keys | set(tenant["Projection"].get("NonKeyAttributes", ())))
        schedule = str(parameters["SweepSchedule"])  # rate(5 minutes)
        minutes = float(schedule.split("(")[1].split()[0])
        kinds = [r["Type"] for r in resources.values()]
        # The service's defaults (the template sets no ACCESS_TOKEN_REFRESH_MARGIN_SECONDS).
        lead = keep_warm_lead_seconds(load_settings({}))
        return cls(
            keep_alive_hours=float(parameters["KeepAliveHours"]),
            keep_warm_interval_seconds=3600.0 - lead,
            worker_memory_gb=memory("RefreshWorkerFunction"),
            sweep_memory_gb=memory("RefreshSweepFunction"),
            sweep_runs_per_day=24 * 60 / minutes,
            tenant_projection=projected,
            alarms=kinds.count("AWS::CloudWatch::Alarm"),
            kms_keys=kinds.count("AWS::KMS::Key"),
            secrets=kinds.count("AWS::SecretsManager::Secret"),
        )


@dataclass(frozen=True)
class Line:
    name: str
    dollars: float
    how: str


class Model:
    """Cost lines for a fleet; every figure per month."""

    def __init__(self, measured: Measured, template: Template) -> None:
        self.m = measured
        self.t = template

    # ----- per refresh -----------------------------------------------------------------------

    def write_units(self, *, keeps_access_token: bool) -> dict[str, float]:
        """Write units of one refresh: table writes, and each index's share."""
        size = self.m.warm_item_bytes if keeps_access_token else self.m.idle_item_bytes
        table = self.m.writes * units(size)
        tenant_lease = 1 if LEASE_WRITES & self.t.tenant_projection else 0
        tenant_commit = 1 if COMMIT_WRITES & self.t.tenant_projection else 0
        return {
            "table": table,
            # The commit moves due_at: DueIndex deletes the old entry and puts the new one.
            "DueIndex": 2.0,
            "TenantIndex": float(tenant_lease + tenant_commit),
        }

    def per_refresh(self, *, keeps_access_token: bool) -> dict[str, float]:
        """Dollars per refresh, by service."""
        wru = sum(self.write_units(keeps_access_token=keeps_access_token).values())
        # A DueIndex page: 200 KEYS_ONLY entries, eventually consistent (0.5 RRU per 4 KB).
        rru = self.m.queries * units(200 * DUE_ENTRY_BYTES, 4 * KB) * 0.5
        invocations = 1.0 / self.m.batch_size
        gb_seconds = (
            self.t.worker_memory_gb * self.m.worker_seconds
            + self.t.sweep_memory_gb * self.m.sweep_seconds_per_connection
        )
        log_bytes = self.m.log_bytes + PLATFORM_LOG_BYTES_PER_INVOCATION * invocations
        return {
            "DynamoDB requests": wru * PRICES["dynamodb_wru"] + rru * PRICES["dynamodb_rru"],
            "KMS": self.m.kms * PRICES["kms_request"],
            "Lambda (worker + sweep)": gb_seconds * PRICES["lambda_arm_gb_second"]
            + invocations * PRICES["lambda_request"],
            "CloudWatch Logs": log_bytes / GB * PRICES["logs_ingest_gb"],
            "SQS": self.m.sqs * PRICES["sqs_request"],
        }

    # ----- per fleet -------------------------------------------------------------------------

    def refreshes_per_month(
        self, idle: int, warm: int, keep_alive_hours: float
    ) -> tuple[float, float]:
        month = MONTH_DAYS * 86400.0
        return (
            idle * month / (keep_alive_hours * 3600.0),
            warm * month / self.t.keep_warm_interval_seconds,
        )

    def fixed(self) -> float:
        """What a deployment costs whatever its size."""
        return (
            self.t.kms_keys * PRICES["kms_key_month"]
            + self.t.secrets * PRICES["secret_month"]
            + self.t.alarms * PRICES["alarm_month"]
            + PRICES["dashboard_month"]
            + CUSTOM_METRICS * PRICES["metric_month"]
            + IDLE_POLLS_PER_MONTH * PRICES["sqs_request"]
        )

    def storage(self, connections: int, *, warm: int = 0) -> float:
        idle_bytes = (connections - warm) * (self.m.idle_item_bytes + ITEM_OVERHEAD_BYTES)
        warm_bytes = warm * (self.m.warm_item_bytes + ITEM_OVERHEAD_BYTES)
        index_bytes = connections * (DUE_ENTRY_BYTES + TENANT_ENTRY_BYTES + 2 * ITEM_OVERHEAD_BYTES)
        gb = (idle_bytes + warm_bytes + index_bytes) / GB
        return gb * (PRICES["dynamodb_storage_gb_month"] + PRICES["dynamodb_pitr_gb_month"])

    def fleet(self, connections: int, warm: int, keep_alive_hours: float) -> list[Line]:
        idle_refreshes, warm_refreshes = self.refreshes_per_month(
            connections - warm, warm, keep_alive_hours
        )
        idle = self.per_refresh(keeps_access_token=False)
        hot = self.per_refresh(keeps_access_token=True)
        lines = [
            Line(
                name,
                idle[name] * idle_refreshes + hot[name] * warm_refreshes,
                f"{idle_refreshes + warm_refreshes:,.0f} refreshes",
            )
            for name in idle
        ]
        lines.append(Line("DynamoDB storage + PITR", self.storage(connections, warm=warm), ""))
        lines.append(
            Line("fixed (keys, secrets, alarms, dashboard, metrics, idle polls)", self.fixed(), "")
        )
        return lines


def newest_result() -> Path:
    """The newest bench/sweep.py result that has item sizes (by the time stamp in its name)."""
    found = [
        p
        for p in RESULTS_DIR.glob("sweep-*.json")
        if "connection_item_with_access_token" in p.read_text(encoding="utf-8")
    ]
    if not found:
        raise SystemExit("no bench/sweep.py result with item sizes in bench/results/: run it first")
    return max(found, key=lambda p: p.stem.rsplit("-", 1)[-1])


def money(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.3f}"


def report(model: Model, keep_alive_hours: float, target: float) -> tuple[str, float]:
    m, t = model.m, model.t
    lines = [
        f"cost model: {m.source} (Intuit latency L = {m.latency_ms:g} ms), template.yaml, "
        f"us-east-1 list prices read {PRICES_READ}, no free tier, {MONTH_DAYS}-day month",
        f"KeepAliveHours {keep_alive_hours:g}; keep-warm refresh every "
        f"{t.keep_warm_interval_seconds / 60:.0f} min; worker {t.worker_memory_gb * 1024:.0f} MB, "
        f"{m.worker_seconds * 1000:.0f} ms per refresh (measured locally: pessimistic)",
        "",
        "per refresh                      write units                          $ per million",
    ]
    for label, keeps in (
        ("idle (access token left out)", False),
        ("warm (access token kept)", True),
    ):
        wu = model.write_units(keeps_access_token=keeps)
        parts = ", ".join(f"{k} {v:g}" for k, v in wu.items())
        dollars = sum(model.per_refresh(keeps_access_token=keeps).values()) * 1e6
        lines.append(f"  {label:<31}{sum(wu.values()):g} ({parts}){'':<4}{dollars:>10.2f}")
    lines.append(
        f"  requests: {m.requests:.2f} DynamoDB ({m.writes:.2f} writes), {m.kms:.2f} KMS, "
        f"{m.sqs:.2f} SQS; items {m.idle_item_bytes} B idle, {m.warm_item_bytes} B warm"
    )
    a = model.fleet(1_000_000, 0, keep_alive_hours)
    b = model.fleet(1_000_000, 100_000, keep_alive_hours)
    lines += ["", f"{'per month':<62}{'A: 1 M idle':>14}{'B: 10 % warm':>14}"]
    for la, lb in zip(a, b, strict=True):
        lines.append(f"  {la.name:<60}{money(la.dollars):>14}{money(lb.dollars):>14}")
    total_a = sum(line.dollars for line in a)
    total_b = sum(line.dollars for line in b)
    lines.append(f"  {'total':<60}{money(total_a):>14}{money(total_b):>14}")
    refreshes_a = model.refreshes_per_month(1_000_000, 0, keep_alive_hours)[0]
    refreshes_b = sum(model.refreshes_per_month(900_000, 100_000, keep_alive_hours))
    lines.append(
        f"  {'refreshes (Intuit token calls)':<60}{refreshes_a:>14,.0f}{refreshes_b:>14,.0f}"
    )
    per_thousand = total_a / 1000.0
    verdict = "PASS" if per_thousand <= target else "FAIL"
    lines += [
        "",
        f"per 1,000 idle connections: {money(per_thousand)} a month "
        f"(target <= ${target:.2f}: {verdict})",
    ]
    return "\n".join(lines), per_thousand


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=Path, help="a bench/sweep.py result (JSON)")
    parser.add_argument("--keep-alive-hours", type=float, help="instead of the template's default")
    parser.add_argument("--target", type=float, default=0.20, help="$ per 1,000 idle a month")
    args = parser.parse_args(argv)
    path = (args.sweep or newest_result()).resolve()
    model = Model(Measured.load(path), Template.load())
    hours = args.keep_alive_hours or model.t.keep_alive_hours
    text, per_thousand = report(model, hours, args.target)
    print(text)
    if args.keep_alive_hours is None and hours != 24:
        daily = sum(line.dollars for line in model.fleet(1_000_000, 0, 24)) / 1000.0
        print(f"(with KeepAliveHours 24, the previous default: {money(daily)} per 1,000 idle)")
    return 0 if per_thousand <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
