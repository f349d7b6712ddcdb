"""Load test: concurrent connect flows and get_token calls against the local stack.

What it answers: under concurrent use, do the public connect flow and the token vault stay
correct (zero errors: every flow ends with a stored connection, every ``get_token`` returns a
token) and what throughput and tail latency does the local stack give? Everything runs on
127.0.0.1: it starts ``python -m devstack`` on free ports (moto server, the Intuit simulator in
consent-page mode, the HTTP gateway and the Lambda invoke API), drives it over real HTTP, and
stops it. It is bounded by construction: a fixed number of flows and calls, and a deadline
(``--deadline``) after which it stops and reports what it measured as errors.

Phase 1, connect: ``--flows`` flows over ``--concurrency`` threads, each one as a browser does
it: create_connect_link (Lambda invoke), the landing page, "Connect to QuickBooks" (302 to
Intuit with the state cookie), Intuit's consent page (a company of its own picked and
approved, 302 back), the callback.

Phase 2, get_token: ``--calls`` invokes of GetTokenFunction over the same threads, spread over
the realms phase 1 connected (warm reads: one DynamoDB read each).

    python bench/load.py [--flows 40] [--calls 400] [--concurrency 8] [--deadline 240]

Prints a table, writes bench/results/load.json, exits 1 when any error happened.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write nothing outside bench/results/

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor, as_completed  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from devstack.process import DevstackProcess, start_devstack  # noqa: E402

COOKIE = "__Host-qbo_connect_state"
TIMEOUT = 30


def progress(message: str) -> None:
    print(f"[load] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies_ms)
        return {
            "phase": self.name,
            "ok": done,
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "seconds": round(self.seconds, 2),
            "per_second": round(done / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(statistics.median(self.latencies_ms), 1) if done else None,
            "p99_ms": round(percentile(self.latencies_ms, 99), 1) if done else None,
        }


def realm_for(tenant_id: str) -> str:
    """A distinct 16-digit realm per flow (one company per tenant, as in real use)."""
    return str(9_200_000_000_000_000 + int(tenant_id.rsplit("-", 1)[1]))


def connect_flow(stack: DevstackProcess, tenant_id: str) -> str:
    """One user's whole connect flow over HTTP; the realm it connected."""
    import requests

    http = requests.Session()
    link = stack.invoke(
        "ConnectionsFunction", {"action": "create_connect_link", "tenant_id": tenant_id}
    )
    if "url" not in link:
        raise RuntimeError(f"create_connect_link: {link.get('error', link)}")
    landing = http.get(link["url"], allow_redirects=False, timeout=TIMEOUT)
    if landing.status_code != 200:
        raise RuntimeError(f"landing page: HTTP {landing.status_code}")
    go = http.get(link["url"] + "&go=1", allow_redirects=False, timeout=TIMEOUT)
    if go.status_code != 302:
        raise RuntimeError(f"connect: HTTP {go.status_code}")
    # requests never sends a Secure cookie over http://: carry it as a browser on loopback does.
    cookie = go.headers["Set-Cookie"].split(";", 1)[0]
    if not cookie.startswith(COOKIE + "="):
        raise RuntimeError("connect: no state cookie")
    # Intuit's consent page: the user picks a company (each flow its own realm) and approves.
    location = go.headers["Location"]
    consent = http.get(location, allow_redirects=False, timeout=TIMEOUT)
    txn = re.search(r'name=txn value="([^"]+)"', consent.text)
    if consent.status_code != 200 or not txn:
        raise RuntimeError(f"Intuit consent page: HTTP {consent.status_code}")
    approved = http.post(
        location.split("?", 1)[0],
        data={"txn": txn.group(1), "decision": "approve", "realm_id": realm_for(tenant_id)},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    if approved.status_code != 302:
        raise RuntimeError(f"Intuit consent: HTTP {approved.status_code}")
    callback_url = approved.headers["Location"]
    realm_id = parse_qs(urlsplit(callback_url).query).get("realmId", [""])[0]
    done = http.get(
        callback_url, headers={"Cookie": cookie}, allow_redirects=False, timeout=TIMEOUT
    )
    if done.status_code != 200 or not realm_id:
        raise RuntimeError(f"callback: HTTP {done.status_code}")
    return realm_id


def get_token(stack: DevstackProcess, realm_id: str) -> None:
    result = stack.invoke("GetTokenFunction", {"realm_id": realm_id, "min_valid_seconds": 300})
    if not result.get("access_token"):
        raise RuntimeError(f"get_token: {(result.get('error') or {}).get('code', result)}")


def run_phase(
    name: str, jobs: list[Callable[[], Any]], concurrency: int, deadline: float
) -> tuple[Phase, list[Any]]:
    phase = Phase(name)
    results: list[Any] = []
    lock = threading.Lock()

    def timed(job: Callable[[], Any]) -> None:
        if time.monotonic() > deadline:
            with lock:
                phase.errors.append("not started: deadline reached")
            return
        started = time.perf_counter()
        try:
            value = job()
        except Exception as exc:
            with lock:
                phase.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            phase.latencies_ms.append(elapsed)
            results.append(value)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name) as pool:
        futures = [pool.submit(timed, job) for job in jobs]
        for count, future in enumerate(as_completed(futures), 1):
            future.result()
            if count % max(1, len(jobs) // 4) == 0:
                progress(f"{name}: {count}/{len(jobs)}")
    phase.seconds = time.perf_counter() - began
    return phase, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=40, help="connect flows (phase 1)")
    parser.add_argument("--calls", type=int, default=400, help="get_token invokes (phase 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds, then stop")
    args = parser.parse_args(argv)
    if min(args.flows, args.calls, args.concurrency) < 1:
        parser.error("--flows, --calls and --concurrency must be at least 1")

    deadline = time.monotonic() + args.deadline
    with tempfile.TemporaryDirectory(prefix="qbo-load-") as tmp:
        progress("starting the local stack (moto, simulator, gateway) on 127.0.0.1")
        env = {"POWERTOOLS_LOG_LEVEL": "WARNING"}
        with start_devstack(tmp, env=env, extra_args=["--no-schedule"]) as stack:
            flows = [
                functools.partial(connect_flow, stack, f"load-tenant-{i}")
                for i in range(args.flows)
            ]
            progress(f"phase 1: {args.flows} connect flows over {args.concurrency} threads")
            connect, realms = run_phase("connect", flows, args.concurrency, deadline)
            if not realms:
                progress("no flow connected a realm; skipping get_token")
                reads = Phase("get_token", errors=["no realm connected"])
            else:
                calls = [
                    functools.partial(get_token, stack, realms[i % len(realms)])
                    for i in range(args.calls)
                ]
                progress(f"phase 2: {args.calls} get_token invokes over {len(realms)} realms")
                reads, _ = run_phase("get_token", calls, args.concurrency, deadline)
            health = stack.health()
    summaries = [connect.summary(), reads.summary()]
    report = {
        "command": "python bench/load.py " + " ".join(argv or sys.argv[1:]),
        "flows": args.flows,
        "calls": args.calls,
        "concurrency": args.concurrency,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "phases": summaries,
        "function_errors": {k: v["errors"] for k, v in health["functions"].items()},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{'phase':<12}{'ok':>6}{'errors':>8}{'seconds':>9}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    )
    for s in summaries:
        print(
            f"{s['phase']:<12}{s['ok']:>6}{s['errors']:>8}{s['seconds']:>9}{s['per_second']:>8}"
            f"{s['p50_ms'] if s['p50_ms'] is not None else '-':>9}"
            f"{s['p99_ms'] if s['p99_ms'] is not None else '-':>9}"
        )
    failed_functions = {k: v for k, v in report["function_errors"].items() if v}
    print(f"function errors in the stack: {failed_functions or 0}")
    for s in summaries:
        for error in s["first_errors"]:
            print(f"  {s['phase']} error: {error}")
    errors = sum(s["errors"] for s in summaries) + sum(failed_functions.values())
    return 1 if errors else 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
