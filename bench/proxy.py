"""Benchmark: the QuickBooks API proxy's overhead, its AWS cost, and how much of the allowed rate
it uses.

What it answers, against the Intuit simulator with 50 ms of latency on every QuickBooks call:

1. p50/p99 of a warm proxied GET (the real QuickBooksApiFunction handler, in process) against a
   direct GET to the simulator with the same token, interleaved so both see the same load
   (goal: p50 ratio <= 1.10);
2. DynamoDB and KMS requests per proxied call at 5 calls a second on one realm, counted by the
   moto server (goals: <= 0.25 and 0);
3. the share of the allowed rate (QuickBooksRequestsPerMinute / 60 per second) that 50
   concurrent callers on one realm get through (goal: >= 90 %), and how many 429s came back.

It starts its own moto server (devstack/moto_server.py counts requests per operation) and the
simulator, imports one connection through the real ConnectionsFunction, and calls the handlers
in this process (one container). It prints a table and writes bench/results/proxy-*.json.

    python bench/proxy.py [--calls 200] [--steady-seconds 60] [--busy-seconds 30]
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write nothing outside bench/results/

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

from harness import (  # noqa: E402  (bench/harness.py, next to this script)
    latency_row,
    local_functions,
    progress,
    report,
)

REALM_ID = "9130357766042907"
LATENCY_SECONDS = 0.05


def run(calls: int, steady_seconds: float, busy_seconds: float, callers: int) -> dict[str, Any]:
    import requests

    # No EMF lines on stdout: the bench prints its own table.
    with local_functions({"POWERTOOLS_METRICS_DISABLED": "true"}) as local:
        moto, sim = local.moto, local.sim
        api = local.function("quickbooks_api", "QuickBooksApiFunction")
        get_token = local.function("get_token", "GetTokenFunction")
        from qbo_connect.api.governor import Limits
        from qbo_connect.wiring import api as api_wiring

        progress("importing one connection through ConnectionsFunction")
        local.import_connection(REALM_ID)
        sim.set_faults(latency_seconds=LATENCY_SECONDS, endpoints=("companyinfo",))
        event = {"realm_id": REALM_ID, "method": "GET", "path": f"companyinfo/{REALM_ID}"}

        def proxied() -> dict[str, Any]:
            return api(event)

        token = get_token({"realm_id": REALM_ID})
        session = requests.Session()
        url = f"{token['api_base_url']}/v3/company/{REALM_ID}/companyinfo/{REALM_ID}"
        headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"}

        def direct() -> int:
            response = session.get(url, params={"minorversion": "75"}, headers=headers, timeout=10)
            return response.status_code

        # 1. latency, interleaved
        spacing = Limits().spacing()
        progress(f"latency: {calls} proxied and {calls} direct GETs, interleaved")
        # The simulator enforces Intuit's limits and the direct GETs are not governed: one pair
        # every 0.3 s keeps the realm under 10 a second, so no call waits or is throttled.
        pair_seconds = max(0.3, 2 * spacing)
        for _ in range(5):
            proxied()
            direct()
            time.sleep(pair_seconds)
        proxy_ms: list[float] = []
        direct_ms: list[float] = []
        for _ in range(calls):
            t0 = time.perf_counter()
            answer = proxied()
            t1 = time.perf_counter()
            status = direct()
            t2 = time.perf_counter()
            if answer.get("status") != 200 or status != 200:
                raise SystemExit(f"a GET failed: {answer.get('error') or answer.get('status')}")
            proxy_ms.append((t1 - t0) * 1000)
            direct_ms.append((t2 - t1) * 1000)
            time.sleep(max(0.0, pair_seconds - (time.perf_counter() - t0)))

        # 2. AWS requests per call at 5 calls a second
        progress(f"steady: 5 proxied calls a second for {steady_seconds:g} s")
        time.sleep(6)  # let this container's permits and slots lapse: a fresh start
        moto.reset_counts()
        steady_calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < steady_seconds:
            due = started + steady_calls * 0.2
            time.sleep(max(0.0, due - time.perf_counter()))
            assert proxied().get("status") == 200
            steady_calls += 1
        counts = moto.counts()
        dynamodb = sum(v for k, v in counts.items() if k.startswith("DynamoDB_"))
        kms = sum(v for k, v in counts.items() if k.startswith("TrentService."))

        # 3. share of the allowed rate used by many callers
        progress(f"busy: {callers} callers for {busy_seconds:g} s")
        sim.set_faults(latency_seconds=LATENCY_SECONDS, endpoints=("companyinfo",))
        outcomes: dict[str, int] = {}
        lock = threading.Lock()
        stop_at = time.perf_counter() + busy_seconds

        def caller() -> None:
            while time.perf_counter() < stop_at:
                answer = proxied()
                key = str(answer.get("status") or answer.get("error", {}).get("code"))
                with lock:
                    outcomes[key] = outcomes.get(key, 0) + 1

        busy_started = time.perf_counter()
        with ThreadPoolExecutor(callers) as pool:
            for future in [pool.submit(caller) for _ in range(callers)]:
                future.result()
        busy_elapsed = time.perf_counter() - busy_started
        allowed_per_second = api_wiring.proxy_settings().per_minute / 60

    proxy_row, direct_row = latency_row(proxy_ms), latency_row(direct_ms)
    sent = outcomes.get("200", 0)
    return {
        "calls": calls,
        "simulator_latency_ms": LATENCY_SECONDS * 1000,
        "direct_get": direct_row,
        "proxied_get": proxy_row,
        "ratio_p50": round(proxy_row["p50_ms"] / direct_row["p50_ms"], 3),
        "ratio_p99": round(proxy_row["p99_ms"] / direct_row["p99_ms"], 3),
        "steady_calls": steady_calls,
        "dynamodb_requests_per_call": round(dynamodb / steady_calls, 3),
        "kms_requests_per_call": round(kms / steady_calls, 3),
        "busy_callers": callers,
        "busy_seconds": round(busy_elapsed, 1),
        "busy_outcomes": outcomes,
        "busy_share_of_allowed_rate": round(sent / busy_elapsed / allowed_per_second, 3),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
    }


def render(result: dict[str, Any]) -> str:
    d, p = result["direct_get"], result["proxied_get"]
    return "\n".join(
        [
            f"warm proxied GET vs direct GET, {result['calls']} each, simulator latency "
            f"{result['simulator_latency_ms']:g} ms",
            "",
            f"{'':24}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}",
            f"{'direct GET':24}{d['p50_ms']:>9.2f}{d['p99_ms']:>9.2f}{1:>8.2f}{1:>8.2f}",
            f"{'proxied GET':24}{p['p50_ms']:>9.2f}{p['p99_ms']:>9.2f}"
            f"{result['ratio_p50']:>8.2f}{result['ratio_p99']:>8.2f}",
            "",
            f"at 5 calls/s for {result['steady_calls']} calls: DynamoDB requests per call "
            f"{result['dynamodb_requests_per_call']:g}, KMS {result['kms_requests_per_call']:g}",
            f"{result['busy_callers']} callers for {result['busy_seconds']:g} s: "
            f"{result['busy_share_of_allowed_rate']:.1%} of the allowed rate; outcomes "
            f"{result['busy_outcomes']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="timed GETs of each kind (200)")
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="5 calls/s phase (60)")
    parser.add_argument("--busy-seconds", type=float, default=30.0, help="busy phase (30)")
    parser.add_argument("--callers", type=int, default=50, help="busy callers (50)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    return report(
        "proxy",
        lambda: run(args.calls, args.steady_seconds, args.busy_seconds, args.callers),
        render,
        save=not args.no_save,
    )


if __name__ == "__main__":
    sys.exit(main())
