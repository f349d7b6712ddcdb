"""Benchmark: warm GetTokenFunction latency against a raw DynamoDB GetItem, and KMS calls.

What it answers: does a warm ``get_token`` cost what the design says (one DynamoDB read, no
KMS call, a little AES-GCM), measured against the cheapest thing the same endpoint can do, a
raw ``GetItem`` of the same item with the same client, interleaved in the same run so both
see the same machine load?

It starts its own moto server (devstack/moto_server.py: counts requests per
operation, so KMS calls are counted by the server, not only by ``TokenCipher.kms_calls``) and
the Intuit simulator, imports one connection through the real ConnectionsFunction, warms the
real GetTokenFunction handler up, then alternates ``--reads`` handler calls with as many raw
GetItems. It prints a short table and writes the numbers to bench/results/ (nothing else is
written anywhere). Absolute numbers are moto's over loopback HTTP; the ratio is the point.

    python bench/get_token.py [--reads 1000] [--warmup 50]
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write nothing outside bench/results/

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from harness import (  # noqa: E402  (bench/harness.py, next to this script)
    TABLE_NAME,
    latency_row,
    local_functions,
    progress,
    report,
)

REALM_ID = "9130357766042906"


def run(reads: int, warmup: int) -> dict[str, Any]:
    with local_functions() as local:
        moto, sim = local.moto, local.sim
        get_token = local.function("get_token", "GetTokenFunction")
        from qbo_connect.wiring import aws as aws_wiring
        from qbo_connect.wiring import vault as vault_wiring

        progress("importing one connection through ConnectionsFunction")
        local.import_connection(REALM_ID)
        event = {"realm_id": REALM_ID, "min_valid_seconds": 300}
        raw = aws_wiring.aws_client("dynamodb")  # same endpoint, same client config as the vault
        key = {"pk": {"S": f"REALM#{REALM_ID}"}, "sk": {"S": "CONNECTION"}}

        progress(f"warming up ({warmup} reads of each)")
        for _ in range(warmup):
            assert "access_token" in get_token(event)
            raw.get_item(TableName=TABLE_NAME, Key=key, ConsistentRead=True)
        cipher = vault_wiring.cipher()
        kms_before = cipher.kms_calls
        moto.reset_counts()

        handler_ms: list[float] = []
        raw_ms: list[float] = []
        step = max(1, reads // 10)
        for i in range(reads):
            t0 = time.perf_counter()
            result = get_token(event)
            t1 = time.perf_counter()
            raw.get_item(TableName=TABLE_NAME, Key=key, ConsistentRead=True)
            t2 = time.perf_counter()
            if "access_token" not in result:
                raise SystemExit(f"get_token failed: {result.get('error')}")
            handler_ms.append((t1 - t0) * 1000)
            raw_ms.append((t2 - t1) * 1000)
            if (i + 1) % step == 0:
                progress(f"{i + 1}/{reads} reads")

        counts = moto.counts()
        kms_server = sum(v for k, v in counts.items() if k.startswith("TrentService."))
        dynamodb_total = sum(v for k, v in counts.items() if k.startswith("DynamoDB_"))
        dynamodb_vault = dynamodb_total - reads  # minus the raw GetItems
        intuit_refreshes = sim.counters()["token.refresh_token"]

    raw_row, handler_row = latency_row(raw_ms), latency_row(handler_ms)
    return {
        "reads": reads,
        "warmup": warmup,
        "raw_getitem": raw_row,
        "get_token": handler_row,
        "ratio_p50": round(handler_row["p50_ms"] / raw_row["p50_ms"], 2),
        "ratio_p99": round(handler_row["p99_ms"] / raw_row["p99_ms"], 2),
        "kms_calls_per_1000_warm_reads": round(kms_server * 1000 / reads, 2),
        "kms_calls_counted_by_cipher": cipher.kms_calls - kms_before,
        "dynamodb_requests_per_warm_read": round(dynamodb_vault / reads, 3),
        "intuit_refreshes_total": intuit_refreshes,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
        "endpoint": "moto server over HTTP on 127.0.0.1 (devstack/moto_server.py)",
    }


def render(result: dict[str, Any]) -> str:
    raw, tok = result["raw_getitem"], result["get_token"]
    lines = [
        f"warm get_token vs raw DynamoDB GetItem, {result['reads']} reads each "
        f"(after {result['warmup']} warm-up), {result['endpoint']}",
        "",
        f"{'':28}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}",
        f"{'raw GetItem (same client)':28}{raw['p50_ms']:>9.2f}{raw['p99_ms']:>9.2f}"
        f"{1:>8.2f}{1:>8.2f}",
        f"{'get_token (real handler)':28}{tok['p50_ms']:>9.2f}{tok['p99_ms']:>9.2f}"
        f"{result['ratio_p50']:>8.2f}{result['ratio_p99']:>8.2f}",
        "",
        f"KMS calls per 1,000 warm reads: {result['kms_calls_per_1000_warm_reads']:g} "
        f"(moto server count; TokenCipher.kms_calls: {result['kms_calls_counted_by_cipher']})",
        f"DynamoDB requests per warm read: {result['dynamodb_requests_per_warm_read']:g}",
        f"Intuit refreshes during the run: {result['intuit_refreshes_total']} "
        "(the one proving the imported token)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1000, help="warm reads to time (1000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed reads first (50)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if args.reads < 1 or args.warmup < 1:
        parser.error("--reads and --warmup must be at least 1")
    return report("get_token", lambda: run(args.reads, args.warmup), render, save=not args.no_save)


if __name__ == "__main__":
    sys.exit(main())
