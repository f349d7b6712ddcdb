"""Many callers, one refresh: 52 threads in 4 processes against a strict Intuit.

The simulator is strict (grace 0, a new refresh token on every refresh): if two callers ever
refreshed with the same token, the second would get invalid_grant and the first's token would
be the only one Intuit still honours. Intuit answers slowly (0.4 s), so every caller arrives
while the first refresh is still in flight: the race is real, not a matter of luck.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import Harness, Workers, token_is_valid_at_intuit

PROCESSES = 4
THREADS_PER_PROCESS = 13  # 52 concurrent callers in 4 separate "containers"
INTUIT_LATENCY = 0.4


def run_all_at_once(
    workers: Workers, tmp_path: Path, realms: list[str], *, threads: int
) -> list[dict[str, Any]]:
    """Start the processes, wait until all are warm, release them together, gather results."""
    go = tmp_path / "go"
    started = [workers.start(realms, threads=threads, go_file=go) for _ in range(PROCESSES)]
    workers.wait_ready(started)
    go.touch()
    results: list[dict[str, Any]] = []
    for proc, out in started:
        run = workers.finish(proc, out)
        assert run.returncode == 0, run.stderr[-3000:]
        results += run.results
    return results


def assert_one_refresh_per_realm(harness: Harness, realms: list[str], results: list[dict]) -> None:
    by_realm: dict[str, set[str]] = defaultdict(set)
    errors = [r["response"] for r in results if "access_token" not in r["response"]]
    assert errors == [], f"{len(errors)} callers got no token, e.g. {errors[:3]}"
    for r in results:
        by_realm[r["realm_id"]].add(r["response"]["access_token"])
    counters = harness.sim.counters()
    # Exactly one refresh per realm reached Intuit, and none was refused.
    assert counters["token.refresh_token"] == len(realms)
    assert counters["token.refresh_token.ok"] == len(realms)
    assert counters["token.refresh_token.invalid_grant"] == 0
    calls = harness.refresh_calls()
    assert [c["outcome"] for c in calls] == ["ok"] * len(realms)
    assert len({c["refresh_token_sha256"] for c in calls}) == len(realms)
    for realm_id in realms:
        # Every caller of a realm got the same token: the one that was committed ...
        assert len(by_realm[realm_id]) == 1, f"{realm_id}: {len(by_realm[realm_id])} tokens"
        (token,) = by_realm[realm_id]
        stored = harness.stored_tokens(realm_id)
        assert stored["access"] == token
        conn = harness.connection(realm_id)
        assert conn is not None
        assert (conn.version, conn.status, conn.lease_owner, conn.last_error) == (
            2,
            "active",
            None,
            None,
        )
        # ... and QuickBooks accepts it.
        assert token_is_valid_at_intuit(harness.sim, realm_id, token)


@pytest.mark.slow
def test_one_expired_realm_52_callers_in_4_processes_cause_exactly_one_refresh(
    harness: Harness, workers: Workers, tmp_path: Path
) -> None:
    # Given a realm whose access token expired and a slow, strict Intuit
    realm_id, issued = harness.connect(access_expires_in=0)
    harness.sim.reset_counters()
    harness.sim.set_faults(latency_seconds=INTUIT_LATENCY)
    # When 52 threads in 4 processes ask for a token at the same moment
    results = run_all_at_once(workers, tmp_path, [realm_id], threads=THREADS_PER_PROCESS)
    # Then exactly one refresh reached Intuit and all 52 callers got its token
    assert len(results) == PROCESSES * THREADS_PER_PROCESS
    assert_one_refresh_per_realm(harness, [realm_id], results)
    assert results[0]["response"]["access_token"] != issued["access_token"]
    # and the rotated refresh token is the one stored: it works in strict mode
    harness.sim.clear_faults()
    assert harness.vault.refresh(realm_id).version == 3


@pytest.mark.slow
def test_twenty_expired_realms_at_once_cause_exactly_twenty_refreshes(
    harness: Harness, workers: Workers, tmp_path: Path
) -> None:
    # Given 20 realms whose access tokens expired and a slow, strict Intuit
    realms = [harness.connect(access_expires_in=0)[0] for _ in range(20)]
    harness.sim.reset_counters()
    harness.sim.set_faults(latency_seconds=INTUIT_LATENCY)
    # When 40 threads in 4 processes each ask for every realm (own shuffled order) at once
    results = run_all_at_once(workers, tmp_path, realms, threads=10)
    # Then each realm was refreshed exactly once and its callers all got that token
    assert len(results) == PROCESSES * 10 * len(realms)
    assert_one_refresh_per_realm(harness, realms, results)
