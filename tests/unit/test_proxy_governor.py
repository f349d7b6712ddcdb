"""The governor: sliding-window limits across containers sharing one table, in-flight cap,
cool-downs shared by every container, and the cost in writes (an injected clock, moto)."""

from __future__ import annotations

import random
from bisect import bisect_left
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from qbo_connect.api.governor import Governor, Limits
from qbo_connect.errors import RateLimited
from qbo_connect.store.governor import GovernorTable


class FakeClock:
    """A clock the code under test advances by sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class CountingTable(GovernorTable):
    def __init__(self, table: Any) -> None:
        super().__init__(table)
        self.writes = 0

    def write(self, *args: Any, **kwargs: Any) -> Any:
        self.writes += 1
        return super().write(*args, **kwargs)


@pytest.fixture
def table(aws) -> CountingTable:
    return CountingTable(boto3.resource("dynamodb").Table(aws["table_name"]))


def containers(table: GovernorTable, clock: FakeClock, count: int, limits: Limits) -> list:
    return [
        Governor(
            table,
            limits,
            clock=clock,
            sleep=clock.sleep,
            container_id=f"c{i}",
        )
        for i in range(count)
    ]


def most_in_any_window(times: list[float], width: float) -> int:
    """The largest number of ``times`` inside any half-open window of ``width`` seconds."""
    times = sorted(times)
    return max(bisect_left(times, t + width) - i for i, t in enumerate(times))


def test_no_window_of_a_second_or_a_minute_exceeds_the_limits_across_containers(table):
    clock = FakeClock()
    limits = Limits(per_minute=450, per_second=8, max_in_flight=8, batch_per_minute=36)
    govs = containers(table, clock, 3, limits)
    rng = random.Random(7)
    sent: list[float] = []
    while clock.now < 1_800_000_000.0 + 62:
        gov = rng.choice(govs)
        try:
            ticket = gov.acquire("9130", batch=False, max_wait=rng.choice([0.0, 0.3, 10.0]))
        except RateLimited as exc:
            assert exc.to_dict()["error"]["retry_after_seconds"] >= 1
        else:
            sent.append(clock.now)
            gov.release(ticket)
        clock.sleep(rng.choice([0.0, 0.0, 0.01, 0.05, 0.2]))

    assert most_in_any_window(sent, 1.0) <= 8
    assert most_in_any_window(sent, 60.0) <= 450


def test_a_busy_container_uses_nearly_every_slot(table):
    clock = FakeClock()
    limits = Limits()
    (gov,) = containers(table, clock, 1, limits)
    for _ in range(140):  # a caller that always has the next request ready
        gov.release(gov.acquire("9130", batch=False, max_wait=10))
    assert 140 / (clock.now - 1_800_000_000.0) >= 0.95 / limits.spacing()


def test_steady_traffic_costs_far_less_than_one_write_per_call(table):
    clock = FakeClock()
    (gov,) = containers(table, clock, 1, Limits())
    for _ in range(300):  # 5 calls a second for a minute
        gov.release(gov.acquire("9130", batch=False, max_wait=10))
        clock.sleep(0.2)
    assert table.writes / 300 <= 0.25


def test_batch_calls_keep_their_own_minute_limit(table):
    clock = FakeClock()
    govs = containers(table, clock, 2, Limits(batch_per_minute=36))
    sent = []
    for i in range(80):
        gov = govs[i % 2]
        gov.release(gov.acquire("9130", batch=True, max_wait=120))
        sent.append(clock.now)
    assert most_in_any_window(sent, 60.0) <= 36


def test_in_flight_permits_are_shared_and_come_back(table):
    clock = FakeClock()
    first, second = containers(table, clock, 2, Limits(max_in_flight=2))
    held = [first.acquire("9130", batch=False, max_wait=5) for _ in range(2)]
    with pytest.raises(RateLimited):
        second.acquire("9130", batch=False, max_wait=1)
    for ticket in held:
        first.release(ticket)
    # Released permits lapse within their short hold, without a write; then they are free.
    second.release(second.acquire("9130", batch=False, max_wait=6))


def test_permits_of_a_dead_container_are_reclaimed_after_their_hold(table):
    clock = FakeClock()
    dead, alive = containers(table, clock, 2, Limits(max_in_flight=1))
    dead.acquire("9130", batch=False, max_wait=5)  # never released: the container died
    with pytest.raises(RateLimited):
        alive.acquire("9130", batch=False, max_wait=1)
    clock.sleep(6)
    alive.release(alive.acquire("9130", batch=False, max_wait=5))


def test_a_cool_down_set_by_one_container_holds_every_container(table):
    clock = FakeClock()
    first, second = containers(table, clock, 2, Limits())
    second.release(second.acquire("9130", batch=False, max_wait=1))
    first.cool_down("9130", 60)
    clock.sleep(2)  # the second container's chunk has ended; its next write meets the cool-down
    with pytest.raises(RateLimited) as refused:
        second.acquire("9130", batch=False, max_wait=10)
    assert 50 <= refused.value.to_dict()["error"]["retry_after_seconds"] <= 60
    ticket = second.acquire("9130", batch=False, max_wait=70)
    assert clock.now >= 1_800_000_000.0 + 60
    second.release(ticket)


def test_a_ticket_is_too_late_once_its_slot_has_ended(table):
    clock = FakeClock()
    (governor,) = containers(table, clock, 1, Limits())
    ticket = governor.acquire("9130", batch=False, max_wait=1)
    assert ticket.slot_at <= clock.now and not governor.too_late(ticket)
    clock.sleep(Limits().spacing() + 0.001)  # the thread was held up past its slot
    assert governor.too_late(ticket)
    governor.release(ticket)


class BrokenTable(GovernorTable):
    """DynamoDB refusing every write (throttled, or the table unreachable)."""

    def write(self, *args: Any, **kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
            "UpdateItem",
        )


def test_without_its_shared_state_the_governor_sends_nothing_and_says_when_to_retry(aws):
    clock = FakeClock()
    table = BrokenTable(boto3.resource("dynamodb").Table(aws["table_name"]))
    (governor,) = containers(table, clock, 1, Limits())
    # A call is refused as rate_limited (never internal_error, never sent unbudgeted) ...
    with pytest.raises(RateLimited) as refused:
        governor.acquire("9130", batch=False, max_wait=5)
    error = refused.value.to_dict()["error"]
    assert error["reason"] == "store_unavailable" and error["retry_after_seconds"] == 1
    # ... and a cool-down QuickBooks asked for still holds this container back
    assert governor.cool_down("9130", 60) == clock.now + 60
    with pytest.raises(RateLimited):
        governor.acquire("9130", batch=False, max_wait=1)


def test_limits_too_small_to_schedule_are_refused():
    with pytest.raises(ValueError):
        Limits(per_second=1)
