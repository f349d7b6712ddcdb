"""CorePlus usage: classification, the buffered meter and the budget guard, over moto."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from qbo_connect.errors import BudgetExhausted, RateLimited
from qbo_connect.store.connections import ConnectionRepository
from qbo_connect.store.usage import TOTAL_SK, UsageRepository, realm_sk, tenant_sk
from qbo_connect.usage.budget import BudgetGuard
from qbo_connect.usage.classify import API, PER_CALL, SERVICE, Call, classify
from qbo_connect.usage.meter import UsageMeter, coreplus_of
from tests.helpers.clock import Clock

DEC_1 = datetime(2026, 12, 1, 10, tzinfo=UTC).timestamp()
READ = Call(coreplus=1)
WRITE = Call(core=1)


@pytest.fixture
def repo(aws) -> UsageRepository:
    return UsageRepository(boto3.resource("dynamodb").Table(aws["table_name"]))


def make_meter(repo: UsageRepository, clock: Clock, **kwargs: Any) -> UsageMeter:
    kwargs.setdefault("sandbox", False)
    kwargs.setdefault("soft_limit", 100)
    return UsageMeter(repo, clock=clock, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("GET", "companyinfo/123", None, Call(coreplus=1)),
        ("GET", "invoice/5", None, Call(coreplus=1)),
        ("POST", "query", "select * from Customer", Call(coreplus=1)),
        ("GET", "cdc?entities=Customer", None, Call(coreplus=1)),
        ("GET", "reports/ProfitAndLoss", None, Call(coreplus=1)),
        ("POST", "invoice", {"Line": []}, Call(core=1)),
        ("POST", "customer?operation=update", {"Id": "1"}, Call(core=1)),
        (
            "POST",
            "batch",
            {
                "BatchItemRequest": [
                    {"bId": "1", "operation": "create", "Customer": {}},
                    {"bId": "2", "Query": "select * from Invoice"},
                    {"bId": "3", "operation": "delete", "Invoice": {"Id": "1"}},
                ]
            },
            Call(core=2, coreplus=1),
        ),
    ],
)
def test_calls_are_classed_by_method_and_path_kind(method, path, body, expected):
    assert classify(method, path, body=body) == expected


def test_a_batch_counts_one_call_when_told_to():
    body = {"BatchItemRequest": [{"bId": "1", "Query": "q"}, {"bId": "2", "Query": "q"}]}
    assert classify("POST", "batch", body=body, batch_counting=PER_CALL) == Call(coreplus=1)


def test_counts_stay_in_memory_until_the_buffer_is_old_or_large(repo):
    clock = Clock(DEC_1)
    meter = make_meter(repo, clock, flush_after_seconds=5, flush_after_calls=3)
    meter.record(tenant_id="t1", realm_id="1", call=READ)
    meter.record(tenant_id="t1", realm_id="1", call=WRITE)
    assert meter.flush_if_due() is None
    assert repo.month_items("2026-12") == []
    clock.now += 5
    assert meter.flush_if_due() is not None
    total = repo.get("2026-12", TOTAL_SK)
    assert (total["coreplus_api"], total["core_api"]) == (1, 1)


def test_exact_counts_per_tenant_realm_class_and_source_from_concurrent_containers(repo):
    clock = Clock(DEC_1)
    meters = [make_meter(repo, clock) for _ in range(4)]

    def work(meter: UsageMeter) -> None:
        for i in range(50):
            meter.record(tenant_id=f"t{i % 2}", realm_id=f"{i % 5}", call=READ)
            meter.record(tenant_id="t0", realm_id="0", call=WRITE, source=SERVICE)
            if i % 10 == 0:
                meter.flush()
        meter.flush()

    threads = [threading.Thread(target=work, args=(m,)) for m in meters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = repo.get("2026-12", TOTAL_SK)
    assert (total["coreplus_api"], total["core_service"]) == (200, 200)
    assert coreplus_of(repo.get("2026-12", tenant_sk("t0"))) == 100
    assert coreplus_of(repo.get("2026-12", tenant_sk("t1"))) == 100
    realms = [i for i in repo.month_items("2026-12") if i["sk"].startswith("R#")]
    assert sum(coreplus_of(item) for item in realms) == 200
    assert repo.get("2026-12", realm_sk("t0", "0"))["core_service"] == 200


def test_usage_items_stay_out_of_the_tenant_and_due_indexes(repo, aws):
    # Given a tenant whose calls were metered and flushed
    meter = make_meter(repo, Clock(DEC_1))
    meter.record(tenant_id="acme", realm_id="9130356600000001", call=READ)
    meter.flush()
    # Then no usage item carries an index key, so listing the tenant's connections through
    # TenantIndex finds none (a usage item there would be listed as an empty connection)
    items = repo.month_items("2026-12")
    assert {i["sk"] for i in items} >= {realm_sk("acme", "9130356600000001"), tenant_sk("acme")}
    assert not [i for i in items if "tenant_id" in i or "due_shard" in i]
    connections = ConnectionRepository(repo.table)
    assert connections.list_connections("acme", limit=10) == ([], None)


def test_a_retried_flush_meets_its_own_write_and_counts_once(repo):
    clock = Clock(DEC_1)
    meter = make_meter(repo, clock)
    meter.record(tenant_id="t1", realm_id="1", call=READ)
    real_add = repo.add
    calls: list[int] = []

    def lost_answer(*args: Any, **kwargs: Any) -> Any:
        # The write is applied, its answer lost, and boto3 sends the very same request again.
        calls.append(1)
        real_add(*args, **kwargs)
        return real_add(*args, **kwargs)

    repo.add = lost_answer  # type: ignore[method-assign]
    meter.flush()
    assert len(calls) == 3  # realm, tenant and total items
    assert repo.get("2026-12", TOTAL_SK)["coreplus_api"] == 1
    assert repo.get("2026-12", tenant_sk("t1"))["coreplus_api"] == 1


def test_what_a_failed_flush_could_not_write_is_kept_for_the_next(repo, monkeypatch):
    clock = Clock(DEC_1)
    meter = make_meter(repo, clock)
    meter.record(tenant_id="t1", realm_id="1", call=READ)
    real_add = repo.add

    def throttled(*args: Any, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "Update")

    monkeypatch.setattr(repo, "add", throttled)
    assert meter.flush().failed == 3
    monkeypatch.setattr(repo, "add", real_add)
    meter.flush()
    assert coreplus_of(repo.get("2026-12", realm_sk("t1", "1"))) == 1


def test_the_month_rolls_over_at_midnight_utc(repo):
    clock = Clock(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
    meter = make_meter(repo, clock)
    meter.record(tenant_id="t1", realm_id="1", call=READ)
    clock.now += 2
    meter.record(tenant_id="t1", realm_id="1", call=READ)
    meter.record(tenant_id="t1", realm_id="1", call=READ)
    meter.flush()
    assert coreplus_of(repo.get("2026-12", TOTAL_SK)) == 1
    assert coreplus_of(repo.get("2027-01", TOTAL_SK)) == 2
    item = repo.table.get_item(Key={"pk": "USAGE#2027-01", "sk": TOTAL_SK})["Item"]
    assert int(item["ttl"]) > clock.now + 365 * 86400  # kept 13 months


def test_sandbox_calls_are_counted_apart_and_never_spend_the_budget(repo):
    clock = Clock(DEC_1)
    meter = make_meter(repo, clock, sandbox=True)
    guard = BudgetGuard(
        repo, meter, monthly_budget=1, soft_limit_percent=90, default_tenant_quota=0, clock=clock
    )
    for _ in range(5):
        guard.admit(tenant_id="t1", call=READ)
        meter.record(tenant_id="t1", realm_id="1", call=READ)
    meter.flush()
    total = repo.get("2026-12", TOTAL_SK)
    assert total["sandbox_coreplus"] == 5 and coreplus_of(total) == 0


def test_a_tenant_past_its_quota_is_refused_reads_while_writes_and_other_tenants_pass(repo):
    clock = Clock(DEC_1)
    meter = make_meter(repo, clock, soft_limit=1000)
    guard = BudgetGuard(
        repo, meter, monthly_budget=1000, soft_limit_percent=90, default_tenant_quota=0, clock=clock
    )
    repo.set_quota("busy", 3, now=clock.now)
    for _ in range(3):
        guard.admit(tenant_id="busy", call=READ)
        meter.record(tenant_id="busy", realm_id="1", call=READ)
    with pytest.raises(BudgetExhausted) as refused:
        guard.admit(tenant_id="busy", call=READ)
    answer = refused.value.to_dict()["error"]
    assert answer["code"] == "budget_exhausted" and answer["reason"] == "tenant_quota"
    assert (answer["used"], answer["limit"], answer["resets_at"]) == (3, 3, "2027-01-01T00:00:00Z")
    guard.admit(tenant_id="busy", call=WRITE)  # Core calls still go through
    guard.admit(tenant_id="quiet", call=READ)  # other tenants are untouched
    repo.set_quota("busy", None, now=clock.now)  # back to the default (none)
    clock.now += 60
    guard.admit(tenant_id="busy", call=READ)


def test_past_the_soft_limit_workloads_stop_while_the_service_s_own_calls_use_the_reserve(repo):
    clock = Clock(DEC_1)
    meter = make_meter(repo, clock, soft_limit=9)
    guard = BudgetGuard(
        repo, meter, monthly_budget=10, soft_limit_percent=90, default_tenant_quota=0, clock=clock
    )
    for i in range(9):
        guard.admit(tenant_id=f"t{i}", call=READ)
        meter.record(tenant_id=f"t{i}", realm_id=str(i), call=READ)
    meter.flush()
    with pytest.raises(BudgetExhausted) as refused:
        guard.admit(tenant_id="someone-new", call=READ)
    assert refused.value.reason == "soft_limit"
    guard.admit(tenant_id="t0", call=READ, source=SERVICE)  # a realm proof at connect
    meter.record(tenant_id="t0", realm_id="0", call=READ, source=SERVICE)
    with pytest.raises(BudgetExhausted) as spent:
        guard.admit(tenant_id="t0", call=READ, source=SERVICE)
    assert spent.value.reason == "budget"


def test_an_unreadable_budget_uses_the_last_total_read_or_refuses_reads_as_rate_limited(
    repo, monkeypatch
):
    clock = Clock(DEC_1)
    meter = make_meter(repo, clock, soft_limit=9)
    guard = BudgetGuard(
        repo, meter, monthly_budget=10, soft_limit_percent=90, default_tenant_quota=0, clock=clock
    )

    def throttled(*args: Any, **kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
            "GetItem",
        )

    # A container that never read the month's total cannot know the budget: a CorePlus read is
    # refused as retryable (never internal_error), while a Core write needs no read and passes
    monkeypatch.setattr(repo, "get", throttled)
    with pytest.raises(RateLimited) as refused:
        guard.admit(tenant_id="t", call=READ)
    error = refused.value.to_dict()["error"]
    assert error["reason"] == "store_unavailable" and error["retry_after_seconds"] == 1
    guard.admit(tenant_id="t", call=WRITE)
    # A container that read it goes on with the last total read (the limit still holds)
    monkeypatch.undo()
    for i in range(9):
        guard.admit(tenant_id="t", call=READ)
        meter.record(tenant_id="t", realm_id=str(i), call=READ)
    meter.flush()
    clock.now += 3600
    monkeypatch.setattr(repo, "get", throttled)
    with pytest.raises(BudgetExhausted):
        guard.admit(tenant_id="t", call=READ)
    guard.admit(tenant_id="t", call=READ, source=SERVICE)


def test_each_threshold_is_announced_once_a_month(repo):
    clock = Clock(DEC_1)
    published: list[tuple[str, dict[str, Any]]] = []

    def publish(detail_type: str, detail: dict[str, Any], event_id: str) -> bool:
        published.append((detail_type, detail))
        return True

    meters = [make_meter(repo, clock, soft_limit=10, publish=publish) for _ in range(2)]
    for round_ in range(6):
        for meter in meters:
            meter.record(tenant_id="t1", realm_id="1", call=READ)
            meter.flush()
        assert round_ < 6
    crossed = sorted(d["threshold_percent"] for t, d in published if t == "usage.threshold_crossed")
    assert crossed == [50, 80, 100]
    assert {d["event_id"] for _, d in published} == {
        "usage-2026-12-50",
        "usage-2026-12-80",
        "usage-2026-12-100",
    }


def test_an_unpublished_threshold_event_is_retried_by_the_next_flush(repo):
    clock = Clock(DEC_1)
    answers = [False, True]
    published: list[str] = []

    def flaky(detail_type: str, detail: dict[str, Any], event_id: str) -> bool:
        published.append(event_id)
        return answers.pop(0) if answers else True

    meter = make_meter(repo, clock, soft_limit=2, publish=flaky)
    meter.record(tenant_id="t1", realm_id="1", call=READ)
    meter.flush()  # 50 % crossed, EventBridge refused
    meter.record(tenant_id="t1", realm_id="1", call=WRITE)
    meter.flush()  # the marker's event goes out now
    assert published == ["usage-2026-12-50", "usage-2026-12-50"]
    assert "th_50_sent" in repo.get("2026-12", TOTAL_SK)
    _ = API


def test_the_report_is_exact_after_a_flush_and_quotas_are_validated(repo):
    from qbo_connect.operations.usage import UsageService

    clock = Clock(DEC_1 + 9 * 86400)  # 10 days into December
    meter = make_meter(repo, clock, soft_limit=900)
    guard = BudgetGuard(
        repo, meter, monthly_budget=1000, soft_limit_percent=90, default_tenant_quota=0, clock=clock
    )
    service = UsageService(
        repository=repo, meter=meter, guard=guard, raw_token_reads=True, flush_bound="50 calls"
    )
    service.clock = clock
    for i in range(30):
        meter.record(tenant_id="big", realm_id="1", call=READ)
        meter.record(tenant_id="small" if i % 3 else "big", realm_id="2", call=WRITE)
    before = service.usage({})
    assert before["totals"]["coreplus"] == 0 and before["unflushed"]["this_container"] == 30
    assert service.flush_usage({}) == {"flushed_calls": 60, "items_written": 6}
    service.set_usage_quota({"tenant_id": "big", "monthly_quota": 25})
    report = service.usage({"month": "2026-12"})
    assert report["totals"]["coreplus"] == 30 and report["totals"]["core"] == 30
    big = next(t for t in report["tenants"] if t["tenant_id"] == "big")
    assert (big["coreplus"], big["core"], big["quota"]) == (30, 10, 25)
    assert report["top_realms"][0] == {
        "realm_id": "1",
        "tenant_id": "big",
        "core": 0,
        "coreplus": 30,
    }
    assert report["projected_coreplus"] == round(30 * 31 / 9.4166667)
    assert report["limits"]["soft_limit"] == 900 and report["limits"]["reserve"] == 100
    only_small = service.usage({"tenant_id": "small"})
    assert [t["tenant_id"] for t in only_small["tenants"]] == ["small"]
    for bad in ({"tenant_id": "big"}, {"tenant_id": "big", "monthly_quota": -1}):
        with pytest.raises(Exception, match="monthly_quota"):
            service.set_usage_quota(bad)
    with pytest.raises(Exception, match="month must look like"):
        service.usage({"month": "December"})
    assert (
        service.set_usage_quota({"tenant_id": "big", "monthly_quota": None})["effective_quota"] == 0
    )
