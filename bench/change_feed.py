"""Benchmark: what the change feed's reconciliation costs in CorePlus calls and AWS requests.

Against the Intuit simulator (CDC served from its entity store) and a moto server, through the
real ConnectionsFunction handler in this process:

1. ``--realms`` companies are imported (their feeds start there);
2. for each of ``--runs`` periods, ``--changes`` changes are made in every company (their
   webhooks are not delivered: the feed must find them), and every realm is reconciled once;
3. one busy company gets ``--busy-changes`` changes in one period (more than CDC's 1000 per
   entity per answer), to show what narrowing costs.

It counts the CDC calls and token refreshes the simulator served and the AWS requests moto
served, and turns them into CorePlus calls per realm per day at the template's default
``ReconcileEveryHours``, the share of Intuit's Builder tier (500,000 CorePlus calls a month) that
1,000 realms take, and what those 1,000 realms' runs cost in AWS a month (bench/cost_model.py's
list prices). Access tokens are issued for 60 s, so every run refreshes first, as it does for an
idle connection (whose access token the keep-alive does not keep) six hours after the last run.

    python bench/change_feed.py [--realms 20] [--runs 4] [--changes 5] [--busy-changes 1500]
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write nothing outside bench/results/

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from cost_model import PRICES, PRICES_READ  # noqa: E402  (bench/cost_model.py)
from harness import (  # noqa: E402  (bench/harness.py, next to this script)
    REPO_ROOT,
    TENANT_ID,
    context,
    load_handler,
    local_functions,
    progress,
    save_result,
)

BUILDER_TIER_MONTHLY = 500_000
FLEET = 1_000
DAYS_A_MONTH = 30


def template_default(name: str) -> Any:
    from devstack.template import load_template

    return load_template(REPO_ROOT / "template.yaml")["Parameters"][name]["Default"]


def run(realms: int, runs: int, changes: int, busy_changes: int) -> dict[str, Any]:
    every_hours = float(template_default("ReconcileEveryHours"))
    entities = str(template_default("ReconcileEntities"))
    with local_functions(
        {
            "POWERTOOLS_METRICS_DISABLED": "true",
            "RECONCILE_EVERY_HOURS": str(every_hours),
            "RECONCILE_ENTITIES": entities,
        }
    ) as local:
        moto, sim = local.moto, local.sim
        connections = load_handler("connections")
        sim.drop_webhooks(True)
        sim.configure(access_token_ttl=60)  # every run needs a refresh, as an idle realm's does
        realm_ids = [str(9130358000000000 + n) for n in range(realms)]
        progress(f"importing {realms} connections", name="change_feed")
        for realm in realm_ids:
            local.import_connection(realm)
        sim.reset_api_counts()
        sim.reset_counters()
        moto.reset_counts()
        handler_seconds = 0.0

        def reconcile(realm: str) -> dict[str, Any]:
            nonlocal handler_seconds
            started_at = time.perf_counter()
            answer = connections.lambda_handler(
                {"action": "reconcile_changes", "realm_id": realm, "tenant_id": TENANT_ID},
                context("ConnectionsFunction"),
            )
            handler_seconds += time.perf_counter() - started_at
            assert "error" not in answer, answer
            return answer

        published = 0
        for period in range(runs):
            progress(f"period {period + 1}/{runs}: {changes} changes a realm", name="change_feed")
            for realm in realm_ids:
                for n in range(changes):
                    sim.change_entity(
                        realm, "Customer", "Create", {"DisplayName": f"P{period} C{n} {realm}"}
                    )
            for realm in realm_ids:
                published += reconcile(realm)["published"]
        cdc_calls = sum(int(sim.api_counts(r)["cdc"]) for r in realm_ids)
        refreshes = int(sim.counters()["token.refresh_token"])
        aws = moto.counts()
        dynamodb = sum(v for k, v in aws.items() if k.startswith("DynamoDB_"))
        dynamodb_reads = sum(
            v for k, v in aws.items() if k.startswith("DynamoDB_") and ("Get" in k or "Query" in k)
        )
        kms = sum(v for k, v in aws.items() if k.startswith("TrentService."))
        events_calls = sum(v for k, v in aws.items() if k.startswith("AWSEvents."))
        run_seconds = handler_seconds / (realms * runs)

        progress(f"a busy company: {busy_changes} changes in one period", name="change_feed")
        busy = realm_ids[0]
        for n in range(busy_changes):
            sim.change_entity(busy, "Customer", "Create", {"DisplayName": f"Busy {n}"})
        before = int(sim.api_counts(busy)["cdc"])
        # A run that meets its deadline is partial; the schedule continues it soon after.
        busy_published, busy_runs = 0, 0
        while True:
            busy_answer = reconcile(busy)
            busy_published += busy_answer["published"]
            busy_runs += 1
            if not busy_answer["partial"] or busy_runs >= 10:
                break
        busy_calls = int(sim.api_counts(busy)["cdc"]) - before

    runs_a_day = 24 / every_hours
    calls_per_run = cdc_calls / (realms * runs)
    n_runs = realms * runs
    fleet_runs = FLEET * runs_a_day * DAYS_A_MONTH
    writes_per_run = (dynamodb - dynamodb_reads) / n_runs
    # This process keeps every realm's unwrapped data key; a worker container in Lambda rarely
    # sees the same realm twice, so it unwraps it (one KMS Decrypt) on each run.
    kms_per_run = max(kms / n_runs, 1.0)
    reads_per_run = dynamodb_reads / n_runs
    # One SQS message a run (send, receive, delete: a tenth each in batches of ten, as the
    # sweep measures), one Lambda request share, and the worker's time at 256 MB.
    aws_month = fleet_runs * (
        writes_per_run * PRICES["dynamodb_wru"]
        + reads_per_run * PRICES["dynamodb_rru"]
        + kms_per_run * PRICES["kms_request"]
        + run_seconds * 0.25 * PRICES["lambda_arm_gb_second"]
        + 0.1 * PRICES["lambda_request"]
        + 0.3 * PRICES["sqs_request"]
    )
    per_realm_day = calls_per_run * runs_a_day
    fleet_month = per_realm_day * FLEET * DAYS_A_MONTH
    return {
        "bench": "change_feed",
        "python": platform.python_version(),
        "reconcile_every_hours": every_hours,
        "entities": entities.split(","),
        "realms": realms,
        "runs": runs,
        "changes_per_realm_per_run": changes,
        "published": published,
        "expected_published": realms * runs * changes,
        "cdc_calls": cdc_calls,
        "coreplus_calls_per_run": round(calls_per_run, 3),
        "coreplus_calls_per_realm_per_day": round(per_realm_day, 2),
        "coreplus_calls_per_month_for_1000_realms": round(fleet_month),
        "builder_tier_share_for_1000_realms": round(fleet_month / BUILDER_TIER_MONTHLY, 4),
        "dynamodb_requests_per_change": round(dynamodb / max(1, published), 2),
        "refreshes_per_run": round(refreshes / n_runs, 3),
        "kms_requests_per_run_measured": round(kms / n_runs, 3),
        "kms_requests_per_run_priced": round(kms_per_run, 3),
        "dynamodb_writes_per_run": round(writes_per_run, 2),
        "dynamodb_reads_per_run": round(reads_per_run, 2),
        "seconds_per_run_in_process": round(run_seconds, 3),
        "aws_usd_per_month_for_1000_realms": round(aws_month, 2),
        "prices_read": PRICES_READ,
        "dynamodb_requests_per_run": round(dynamodb / (realms * runs), 2),
        "put_events_calls": events_calls,
        "busy_changes": busy_changes,
        "busy_published": busy_published,
        "busy_runs": busy_runs,
        "busy_cdc_calls": busy_calls,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realms", type=int, default=20)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--busy-changes", type=int, default=1500)
    args = parser.parse_args()
    started = time.time()
    result = run(args.realms, args.runs, args.changes, args.busy_changes)
    result["duration_seconds"] = round(time.time() - started, 1)
    print(
        f"reconcile every {result['reconcile_every_hours']:g} h, {len(result['entities'])} entities"
    )
    print(
        f"published {result['published']} of {result['expected_published']} missed changes; "
        f"{result['coreplus_calls_per_run']} CorePlus call(s) a run"
    )
    print(
        f"CorePlus calls per realm per day: {result['coreplus_calls_per_realm_per_day']}; "
        f"1,000 realms: {result['coreplus_calls_per_month_for_1000_realms']:,} a month = "
        f"{100 * result['builder_tier_share_for_1000_realms']:.1f} % of the Builder tier"
    )
    print(
        f"DynamoDB requests: {result['dynamodb_requests_per_run']} a run, "
        f"{result['dynamodb_requests_per_change']} per change published; "
        f"{result['refreshes_per_run']} token refresh a run; KMS priced at "
        f"{result['kms_requests_per_run_priced']} Decrypt a run"
    )
    print(
        f"AWS for 1,000 realms' runs: ${result['aws_usd_per_month_for_1000_realms']} a month "
        f"(list prices read {result['prices_read']}; the changes' own events and marks apart)"
    )
    print(
        f"busy company: {result['busy_published']} of {result['busy_changes']} changes in "
        f"{result['busy_cdc_calls']} CDC calls over {result['busy_runs']} run(s) "
        "(narrowed past 1000 per answer; a run that meets its deadline is continued)"
    )
    save_result("change_feed", result, started)
    ok = result["published"] == result["expected_published"] and (
        result["busy_published"] == result["busy_changes"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
