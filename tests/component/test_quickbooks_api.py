"""The simulator's QuickBooks Accounting API over real HTTP: entities, query, batch, CDC,
reports, the gateway's 401/403, Intuit's limits, ``requestid``, fault injection, per-realm
counts, webhooks from the same entity store, and the consent page a person sees.

The proxy and the change feed are built against this API, so it must fail the way Intuit does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devstack.intuit_sim import ACCOUNTING_SCOPE, IntuitSimulator
from qbo_connect.webhooks.payload import parse
from qbo_connect.webhooks.signature import signature_matches

CLIENT_ID = "qb-api-client"
CLIENT_SECRET = "qb-api-secret"
REALM = "4620816365000000123"
OTHER_REALM = "4620816365000000456"
TIMEOUT = 10
VERIFIER = "qb-api-verifier"


class Api:
    """A thin QuickBooks caller for one realm with one access token."""

    def __init__(self, sim: IntuitSimulator, realm: str, token: str) -> None:
        self.sim = sim
        self.realm = realm
        self.token = token

    def url(self, path: str) -> str:
        return f"{self.sim.base_url}/v3/company/{self.realm}/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def get(self, path: str, **params: Any) -> requests.Response:
        params.setdefault("minorversion", "75")
        return requests.get(self.url(path), params=params, headers=self.headers(), timeout=TIMEOUT)

    def post(self, path: str, body: Any, **params: Any) -> requests.Response:
        params.setdefault("minorversion", "75")
        return requests.post(
            self.url(path), params=params, json=body, headers=self.headers(), timeout=TIMEOUT
        )

    def query(self, statement: str) -> dict[str, Any]:
        response = self.get("query", query=statement)
        assert response.status_code == 200, response.text
        return response.json()["QueryResponse"]


@pytest.fixture
def sim() -> Iterator[IntuitSimulator]:
    simulator = IntuitSimulator(clients={CLIENT_ID: CLIENT_SECRET}, auto_approve=True).start()
    # These tests call faster than 10 a second; the tests of the limits set their own.
    simulator.configure_api(per_second=1000)
    try:
        yield simulator
    finally:
        simulator.stop()


def connect(sim: IntuitSimulator, realm: str = REALM) -> Api:
    tokens = sim.issue_tokens(client_id=CLIENT_ID, realm_id=realm, scopes=[ACCOUNTING_SCOPE])
    return Api(sim, realm, tokens["access_token"])


@pytest.fixture
def api(sim: IntuitSimulator) -> Api:
    return connect(sim)


def create_customer(api: Api, name: str, **params: Any) -> dict[str, Any]:
    response = api.post("customer", {"DisplayName": name}, **params)
    assert response.status_code == 200, response.text
    return response.json()["Customer"]


# ----- entities, query, reports --------------------------------------------------------------


def test_create_read_update_carry_intuits_bookkeeping_fields(api: Api) -> None:
    created = api.post("customer", {"DisplayName": "Acme Ltd", "CompanyName": "Acme"})
    assert created.status_code == 200
    assert created.headers["intuit_tid"]
    body = created.json()
    customer = body["Customer"]
    assert "time" in body
    assert customer["SyncToken"] == "0" and customer["Id"]
    meta = customer["MetaData"]
    assert meta["CreateTime"] == meta["LastUpdatedTime"]

    read = api.get(f"customer/{customer['Id']}")
    assert read.status_code == 200 and read.json()["Customer"]["DisplayName"] == "Acme Ltd"

    sparse = {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "VIP"}
    updated = api.post("customer", sparse).json()["Customer"]
    assert updated["SyncToken"] == "1"
    assert updated["Notes"] == "VIP" and updated["CompanyName"] == "Acme"  # sparse keeps fields
    assert updated["MetaData"]["CreateTime"] == meta["CreateTime"]

    stale = api.post("customer", {**sparse, "Notes": "again"})  # SyncToken 0 is stale now
    assert stale.status_code == 400
    assert stale.json()["Fault"]["Error"][0]["code"] == "5010"

    full = {"Id": customer["Id"], "SyncToken": "1", "DisplayName": "Acme Ltd"}
    replaced = api.post("customer", full).json()["Customer"]
    assert replaced["SyncToken"] == "2" and "Notes" not in replaced  # a full update replaces


def test_validation_and_missing_objects_answer_a_fault(api: Api) -> None:
    missing_name = api.post("customer", {"CompanyName": "no display name"})
    assert missing_name.status_code == 400
    assert missing_name.json()["Fault"]["type"] == "ValidationFault"
    create_customer(api, "Dup")
    duplicate = api.post("customer", {"DisplayName": "Dup"})
    assert duplicate.json()["Fault"]["Error"][0]["code"] == "6240"
    bad_ref = api.post("invoice", {"CustomerRef": {"value": "999"}, "Line": [{"Amount": 5}]})
    assert bad_ref.status_code == 400
    assert bad_ref.json()["Fault"]["Error"][0]["code"] == "2500"
    assert api.get("invoice/42").json()["Fault"]["Error"][0]["code"] == "610"


def test_invoices_total_their_lines_and_can_be_deleted(api: Api) -> None:
    customer = create_customer(api, "Buyer")
    lines = [{"Amount": 100.5, "DetailType": "SalesItemLineDetail"}, {"Amount": 20}]
    invoice = api.post("invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": lines}).json()[
        "Invoice"
    ]
    assert invoice["TotalAmt"] == 120.5
    deleted = api.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": "0"}, operation="delete"
    ).json()["Invoice"]
    assert deleted == {"status": "Deleted", "domain": "QBO", "Id": invoice["Id"]}
    assert api.get(f"invoice/{invoice['Id']}").status_code == 400
    refused = api.post("customer", {"Id": customer["Id"], "SyncToken": "0"}, operation="delete")
    assert refused.status_code == 400  # name-list entities are made inactive, not deleted


@pytest.mark.parametrize(
    "entity,body",
    [
        ("vendor", {"DisplayName": "Paper Co"}),
        ("item", {"Name": "Widget"}),
        ("account", {"Name": "Sales", "AccountType": "Income"}),
        ("journalentry", {"Line": [{"Amount": 1}]}),
    ],
)
def test_the_other_entities_use_the_same_machinery(api: Api, entity: str, body: dict) -> None:
    created = api.post(entity, body)
    assert created.status_code == 200, created.text
    (name,) = [key for key in created.json() if key != "time"]
    entity_id = created.json()[name]["Id"]
    assert api.get(f"{entity}/{entity_id}").json()[name]["Id"] == entity_id
    assert api.query(f"select * from {name}")[name][0]["Id"] == entity_id


def test_query_filters_pages_and_counts(api: Api) -> None:
    ids = [create_customer(api, f"Customer {n}")["Id"] for n in range(5)]
    assert api.query("select count(*) from Customer") == {"totalCount": 5}
    assert [
        c["Id"] for c in api.query(f"select * from Customer where Id = '{ids[2]}'")["Customer"]
    ] == [ids[2]]
    page = api.query("select * from Customer startposition 2 maxresults 2")
    assert [c["Id"] for c in page["Customer"]] == ids[1:3]
    assert page["startPosition"] == 2 and page["maxResults"] == 2
    third = api.get(f"customer/{ids[3]}").json()["Customer"]
    since = third["MetaData"]["LastUpdatedTime"]
    later = api.query(f"select * from Customer where MetaData.LastUpdatedTime > '{since}'")
    assert [c["Id"] for c in later["Customer"]] == ids[4:]
    assert api.query("select * from Customer where DisplayName = 'nobody'") == {}
    posted = requests.post(
        api.url("query"),
        data="select * from Customer maxresults 1",
        headers={**api.headers(), "Content-Type": "application/text"},
        timeout=TIMEOUT,
    )
    assert len(posted.json()["QueryResponse"]["Customer"]) == 1
    broken = api.get("query", query="select nonsense")
    assert broken.status_code == 400 and broken.json()["Fault"]["Error"][0]["code"] == "4000"


def test_profit_and_loss_reports_from_the_books(api: Api) -> None:
    customer = create_customer(api, "Payer")
    api.post("invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [{"Amount": 250}]})
    report = api.get("reports/ProfitAndLoss").json()
    assert report["Header"]["ReportName"] == "ProfitAndLoss"
    rows = {row["group"]: row["Summary"]["ColData"][1]["value"] for row in report["Rows"]["Row"]}
    assert rows == {"Income": "250.00", "Expenses": "0.00", "NetIncome": "250.00"}


def test_each_company_has_its_own_name_and_books(sim: IntuitSimulator) -> None:
    first, second = connect(sim, REALM), connect(sim, OTHER_REALM)
    names = {
        api.get(f"companyinfo/{api.realm}").json()["CompanyInfo"]["CompanyName"]
        for api in (first, second)
    }
    assert len(names) == 2 and "Sandbox Company 0123" in names
    sim.set_company_name(OTHER_REALM, "Chosen By The Test")
    info = second.get(f"companyinfo/{OTHER_REALM}").json()["CompanyInfo"]
    assert info["CompanyName"] == "Chosen By The Test"
    create_customer(first, "Only in the first")
    assert second.query("select count(*) from Customer") == {"totalCount": 0}


# ----- batch, CDC ------------------------------------------------------------------------------


def test_batch_answers_each_item_and_faults_per_item_in_a_200(api: Api) -> None:
    create_customer(api, "Existing")
    response = api.post(
        "batch",
        {
            "BatchItemRequest": [
                {"bId": "a", "operation": "create", "Customer": {"DisplayName": "New"}},
                {"bId": "b", "operation": "create", "Customer": {"DisplayName": "Existing"}},
                {"bId": "c", "Query": "select count(*) from Customer"},
            ]
        },
    )
    assert response.status_code == 200
    items = {item["bId"]: item for item in response.json()["BatchItemResponse"]}
    assert items["a"]["Customer"]["DisplayName"] == "New"
    assert items["b"]["Fault"]["Error"][0]["code"] == "6240"
    assert items["c"]["QueryResponse"] == {"totalCount": 2}  # counted after item a
    too_many = [{"bId": str(n), "Query": "select * from Item"} for n in range(31)]
    assert api.post("batch", {"BatchItemRequest": too_many}).status_code == 400


def test_cdc_reports_changes_deletions_and_refuses_more_than_30_days(
    sim: IntuitSimulator, api: Api
) -> None:
    start = time.time() - 1
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    customer = create_customer(api, "Changed")
    invoice = api.post(
        "invoice", {"CustomerRef": {"value": customer["Id"]}, "Line": [{"Amount": 1}]}
    ).json()["Invoice"]
    api.post("invoice", {"Id": invoice["Id"], "SyncToken": "0"}, operation="delete")
    answer = api.get("cdc", entities="Customer,Invoice,Vendor", changedSince=since).json()
    customers, invoices, vendors = answer["CDCResponse"][0]["QueryResponse"]
    assert [c["Id"] for c in customers["Customer"]] == [customer["Id"]]
    deleted = invoices["Invoice"][0]
    assert deleted["Id"] == invoice["Id"] and deleted["status"] == "Deleted"
    assert vendors == {}
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sim.now() - 31 * 86400))
    refused = api.get("cdc", entities="Customer", changedSince=old)
    assert refused.status_code == 400 and refused.json()["Fault"]["type"] == "ValidationFault"


def test_cdc_answers_at_most_1000_per_entity_oldest_first(sim: IntuitSimulator, api: Api) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sim.now() - 60))
    for n in range(1005):
        sim.change_entity(REALM, "Customer", "Create", {"DisplayName": f"Bulk {n}"})
    page = api.get("cdc", entities="Customer", changedSince=since).json()
    rows = page["CDCResponse"][0]["QueryResponse"][0]["Customer"]
    assert len(rows) == 1000 and rows[0]["DisplayName"] == "Bulk 0"
    narrowed_since = rows[-1]["MetaData"]["LastUpdatedTime"]
    rest = api.get("cdc", entities="Customer", changedSince=narrowed_since).json()
    tail = rest["CDCResponse"][0]["QueryResponse"][0]["Customer"]
    assert {row["DisplayName"] for row in tail} >= {f"Bulk {n}" for n in range(1000, 1005)}


# ----- the gateway: tokens --------------------------------------------------------------------


def test_expired_revoked_and_foreign_tokens_are_refused_like_intuits_gateway(
    sim: IntuitSimulator,
) -> None:
    api = connect(sim)
    other = connect(sim, OTHER_REALM)
    foreign = Api(sim, REALM, other.token).get(f"companyinfo/{REALM}")
    assert foreign.status_code in (401, 403)
    sim.advance_clock(3601)
    expired = api.get("query", query="select * from Customer")
    assert expired.status_code == 401
    fault = expired.json()["fault"]
    assert fault["type"] == "AUTHENTICATION" and fault["error"][0]["code"] == "3200"
    assert expired.headers["intuit_tid"]
    fresh = connect(sim)
    assert fresh.get(f"companyinfo/{REALM}").status_code == 200
    sim.revoke_realm(REALM)
    assert fresh.post("customer", {"DisplayName": "x"}).status_code == 401
    counts = sim.api_counts(REALM)
    assert counts["401"] == 2 and counts["writes"] == 0


# ----- limits ---------------------------------------------------------------------------------


def test_the_minute_limit_throttles_with_fault_3001_in_json_then_xml_then_403(
    sim: IntuitSimulator, api: Api
) -> None:
    sim.configure_api(per_minute=3)
    assert [api.get(f"companyinfo/{REALM}").status_code for _ in range(3)] == [200] * 3
    throttled = api.get(f"companyinfo/{REALM}")
    assert throttled.status_code == 429
    error = throttled.json()["Fault"]["Error"][0]
    assert error["code"] == "3001" and "ThrottleExceeded" in error["Message"]
    sim.set_api_faults(REALM, throttle_format="xml")
    as_xml = api.get(f"companyinfo/{REALM}")
    assert as_xml.status_code == 429 and as_xml.headers["Content-Type"].startswith(
        "application/xml"
    )
    assert '<Error code="3001">' in as_xml.text and "ThrottleExceeded" in as_xml.text
    sim.set_api_faults(REALM, throttle_status=403)
    assert api.get(f"companyinfo/{REALM}").status_code == 403
    assert sim.api_counts(REALM)["429"] == 3
    assert connect(sim, OTHER_REALM).get(f"companyinfo/{OTHER_REALM}").status_code == 200


def test_the_second_window_is_per_realm(sim: IntuitSimulator, api: Api) -> None:
    sim.configure_api(per_second=1, per_minute=1000)
    statuses = [api.get(f"companyinfo/{REALM}").status_code for _ in range(10)]
    # Ten calls in a row: at least two fall inside one second, and only the first is admitted.
    assert statuses[0] == 200 and 429 in statuses
    assert connect(sim, OTHER_REALM).get(f"companyinfo/{OTHER_REALM}").status_code == 200


def test_batch_has_its_own_per_minute_limit(sim: IntuitSimulator, api: Api) -> None:
    sim.configure_api(batch_per_minute=2)
    batch = {"BatchItemRequest": [{"bId": "1", "Query": "select * from Customer"}]}
    assert [api.post("batch", batch).status_code for _ in range(3)] == [200, 200, 429]
    assert api.get(f"companyinfo/{REALM}").status_code == 200  # plain calls still pass


def test_requests_in_flight_are_limited(sim: IntuitSimulator, api: Api) -> None:
    sim.configure_api(in_flight=1)
    sim.set_api_faults(REALM, latency_seconds=3)
    results: list[int] = []
    slow = threading.Thread(
        target=lambda: results.append(api.get(f"companyinfo/{REALM}").status_code)
    )
    slow.start()
    deadline = time.monotonic() + 10
    while sim.api_counts(REALM)["in_flight"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.get(f"companyinfo/{REALM}").status_code == 429
    slow.join()
    assert results == [200]


# ----- requestid, faults ----------------------------------------------------------------------


def test_a_repeated_requestid_returns_the_first_answer_and_creates_nothing(api: Api) -> None:
    first = create_customer(api, "Once", requestid="req-1")
    again = api.post("customer", {"DisplayName": "Twice?"}, requestid="req-1")
    assert again.status_code == 200 and again.json()["Customer"] == first
    assert api.query("select count(*) from Customer") == {"totalCount": 1}
    assert api.sim.api_counts(REALM)["replays"] == 1
    assert api.post("customer", {"DisplayName": "x"}, requestid="r" * 51).status_code == 400


def test_an_applied_write_whose_answer_is_lost_is_created_once_on_retry(
    sim: IntuitSimulator, api: Api
) -> None:
    sim.set_api_faults(REALM, lost_answers=1)
    with pytest.raises(requests.ConnectionError):
        api.post("customer", {"DisplayName": "Lost"}, requestid="lost-1")
    retried = api.post("customer", {"DisplayName": "Lost"}, requestid="lost-1")
    assert retried.status_code == 200
    assert api.query("select count(*) from Customer") == {"totalCount": 1}
    assert sim.api_counts(REALM)["lost"] == 1


def test_injected_5xx_and_throttles_are_per_realm_or_global(sim: IntuitSimulator) -> None:
    api, other = connect(sim), connect(sim, OTHER_REALM)
    sim.set_api_faults(REALM, status_5xx=1, status_code=500)
    failed = api.get(f"companyinfo/{REALM}")
    assert failed.status_code == 500 and failed.json()["Fault"]["type"] == "SystemFault"
    assert other.get(f"companyinfo/{OTHER_REALM}").status_code == 200
    assert api.get(f"companyinfo/{REALM}").status_code == 200
    sim.clear_api_faults()
    sim.set_api_faults(status_5xx=2, throttles=1)  # global
    assert api.get(f"companyinfo/{REALM}").status_code == 503
    assert other.get(f"companyinfo/{OTHER_REALM}").status_code == 503
    assert api.get(f"companyinfo/{REALM}").status_code == 429
    assert sim.api_counts(REALM)["5xx"] == 2 and sim.api_counts(OTHER_REALM)["5xx"] == 1


def test_the_admin_api_sets_limits_faults_and_reads_counts(sim: IntuitSimulator, api: Api) -> None:
    admin = sim.base_url + "/_sim/api"
    limits = requests.post(admin + "/limits", json={"per_minute": 1}, timeout=TIMEOUT).json()
    assert limits["per_minute"] == 1
    faults = requests.post(
        admin + "/faults", json={"realm_id": REALM, "throttle_format": "xml"}, timeout=TIMEOUT
    ).json()
    assert faults[REALM]["throttle_format"] == "xml"
    assert api.get(f"companyinfo/{REALM}").status_code == 200
    assert api.get(f"companyinfo/{REALM}").status_code == 429
    counts = requests.get(admin + "/counts", params={"realm_id": REALM}, timeout=TIMEOUT).json()
    assert counts["reads"] == 1 and counts["429"] == 1
    bad = requests.post(admin + "/faults", json={"throttle_format": "yaml"}, timeout=TIMEOUT)
    assert bad.status_code == 400


# ----- webhooks from the same store -----------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = threading.Condition()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        assert signature_matches(body, request.headers.get("intuit-signature"), [VERIFIER])
        with self.arrived:
            self.bodies.append(body)
            self.arrived.notify_all()
        return Response("{}", status=200)(environ, start_response)

    def wait_for(self, count: int) -> list[bytes]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout=TIMEOUT)
            return list(self.bodies)


@pytest.fixture
def receiver(sim: IntuitSimulator) -> Iterator[Receiver]:
    app = Receiver()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sim.webhooks.configure(
        url=f"http://127.0.0.1:{server.server_port}/webhooks", verifier_token=VERIFIER
    )
    try:
        yield app
    finally:
        server.shutdown()


def test_changes_are_sent_as_webhooks_in_both_shapes(
    sim: IntuitSimulator, api: Api, receiver: Receiver
) -> None:
    customer = create_customer(api, "Notified")
    (body,) = receiver.wait_for(1)
    shape, events = parse(body)
    assert shape == "legacy"
    assert (events[0].entity, events[0].entity_id, events[0].operation) == (
        "Customer",
        customer["Id"],
        "Create",
    )
    entity = json.loads(body)["eventNotifications"][0]["dataChangeEvent"]["entities"][0]
    assert entity["lastUpdated"] == customer["MetaData"]["LastUpdatedTime"].replace("+00:00", "Z")
    sim.webhooks.configure(shape="cloudevents")
    api.post("customer", {"Id": customer["Id"], "SyncToken": "0", "sparse": True, "Notes": "n"})
    cloud = receiver.wait_for(2)[1]
    assert parse(cloud)[0] == "cloudevents"
    assert json.loads(cloud)[0]["type"] == "qbo.customer.updated.v1"


def test_dropped_deliveries_are_still_in_cdc(
    sim: IntuitSimulator, api: Api, receiver: Receiver
) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sim.now() - 60))
    sim.drop_webhooks(True)
    missed = create_customer(api, "Missed")
    sim.change_entity(REALM, "Vendor", "Create", {"DisplayName": "Edited in QuickBooks"})
    sim.drop_webhooks(False)
    seen = create_customer(api, "Seen")
    (body,) = receiver.wait_for(1)
    assert [event.entity_id for event in parse(body)[1]] == [seen["Id"]]
    assert sim.api_counts(REALM)["webhooks_dropped"] == 2
    answer = api.get("cdc", entities="Customer,Vendor", changedSince=since).json()
    customers, vendors = answer["CDCResponse"][0]["QueryResponse"]
    assert {c["Id"] for c in customers["Customer"]} == {missed["Id"], seen["Id"]}
    assert vendors["Vendor"][0]["DisplayName"] == "Edited in QuickBooks"


# ----- the consent page -----------------------------------------------------------------------


def test_the_consent_page_is_mobile_ready_and_names_the_app(sim: IntuitSimulator) -> None:
    sim.configure(auto_approve=False)
    sim.add_client(CLIENT_ID, CLIENT_SECRET, app_name="Acme Books Sync")
    page = requests.get(
        sim.endpoints["INTUIT_AUTHORIZATION_ENDPOINT"],
        params={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "scope": ACCOUNTING_SCOPE,
            "redirect_uri": "http://127.0.0.1:9/callback",
            "state": "s",
        },
        timeout=TIMEOUT,
    )
    assert page.status_code == 200
    assert '<meta name=viewport content="width=device-width, initial-scale=1">' in page.text
    assert "Acme Books Sync" in page.text and CLIENT_ID not in page.text
    assert "max-width" in page.text and "min-height:44px" in page.text


def test_a_lost_answer_can_also_time_out_and_the_retry_still_creates_once(
    sim: IntuitSimulator, api: Api
) -> None:
    customer = create_customer(api, "T")
    invoice = {"CustomerRef": {"value": customer["Id"]}, "Line": [{"Amount": 3}]}
    sim.set_api_faults(REALM, lost_answers=1, lost_mode="timeout", timeout_seconds=2)
    with pytest.raises(requests.Timeout):
        requests.post(
            api.url("invoice"),
            params={"requestid": "slow-1"},
            json=invoice,
            headers=api.headers(),
            timeout=0.5,
        )
    retried = api.post("invoice", invoice, requestid="slow-1")
    assert retried.status_code == 200
    assert api.query("select count(*) from Invoice") == {"totalCount": 1}
    assert sim.api_counts(REALM)["lost"] == 1 and sim.api_counts(REALM)["replays"] == 1


def test_a_repeat_arriving_while_the_first_is_in_flight_gets_the_same_answer(
    sim: IntuitSimulator, api: Api
) -> None:
    sim.set_api_faults(REALM, latency_seconds=1)
    answers: list[dict[str, Any]] = []

    def post() -> None:
        answers.append(api.post("customer", {"DisplayName": "Racing"}, requestid="race-1").json())

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({answer["Customer"]["Id"] for answer in answers}) == 1
    sim.clear_api_faults()
    assert api.query("select count(*) from Customer") == {"totalCount": 1}


def test_no_token_reaches_the_logs(
    sim: IntuitSimulator, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    sim.configure_api(per_minute=1)
    create_customer(api, "Logged", requestid="log-1")
    api.get(f"companyinfo/{OTHER_REALM}")  # 403
    api.get(f"companyinfo/{REALM}")  # 429
    Api(sim, REALM, api.token + "x").get(f"companyinfo/{REALM}")  # 401
    assert sim.api_counts(REALM)["429"] == 1 and sim.api_counts(REALM)["401"] == 1
    assert api.token not in caplog.text and api.token[:40] not in caplog.text
