"""QuickBooksApiFunction over HTTP against the local stack and its Intuit simulator: a proxied
GET, one Intuit refresh for a storm of 401s, hostile paths that send nothing, and no token in
any answer or log line."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devstack.process import DevstackProcess
from tests.helpers.stack import module_stack

CLIENT_ID = "proxy-test-client"
TENANT = "proxy-tenant"

pytestmark = pytest.mark.timeout(240)


stack = module_stack(
    "proxy",
    env={"INTUIT_CLIENT_ID": CLIENT_ID, "INTUIT_CLIENT_SECRET": "proxy-test-secret-value"},
    extra_args=["--no-schedule", "--auto-approve"],
)


def invoke(stack: DevstackProcess, function: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = stack.lambda_client().invoke(FunctionName=function, Payload=json.dumps(payload))
    assert "FunctionError" not in response, response
    return json.loads(response["Payload"].read())


def connect(stack: DevstackProcess, realm: str) -> list[str]:
    """Import a connection for ``realm``; returns the token values issued so far."""
    issued = stack.sim("POST", "/_sim/issue-tokens", {"client_id": CLIENT_ID, "realm_id": realm})
    answer = invoke(
        stack,
        "ConnectionsFunction",
        {
            "action": "import_connection",
            "realm_id": realm,
            "tenant_id": TENANT,
            "refresh_token": issued["refresh_token"],
        },
    )
    assert "connection" in answer, answer
    return [issued["refresh_token"], issued["access_token"]]


def api(stack: DevstackProcess, realm: str, path: str, **extra: Any) -> dict[str, Any]:
    payload = {"realm_id": realm, "tenant_id": TENANT, "method": "GET", "path": path, **extra}
    return invoke(stack, "QuickBooksApiFunction", payload)


def push(
    realm: str, callers: list[DevstackProcess], seconds: float
) -> tuple[list[Any], dict[str, Any]]:
    """One caller per entry of ``callers`` (the stack it calls through) reads ``realm``'s
    CompanyInfo in a loop for ``seconds``, QuickBooks answering after a realistic 50 ms.
    Returns every answer's status (or error code) and the simulator's counts for the realm
    (the simulator of the first stack: attached stacks share it)."""
    sim_stack = callers[0]
    sim_stack.sim("POST", "/_sim/api/faults", {"realm_id": realm, "latency_seconds": 0.05})
    stop_at = time.monotonic() + seconds
    statuses: list[Any] = []

    def caller(stack: DevstackProcess) -> None:
        while time.monotonic() < stop_at:
            answer = api(stack, realm, f"companyinfo/{realm}", max_wait_seconds=5)
            statuses.append(answer.get("status") or answer["error"]["code"])

    try:
        with ThreadPoolExecutor(len(callers)) as pool:
            list(pool.map(caller, callers))
    finally:
        sim_stack.sim("DELETE", "/_sim/api/faults")
    return statuses, sim_stack.sim("GET", f"/_sim/api/counts?realm_id={realm}")


def current_access_token(stack: DevstackProcess, realm: str) -> str:
    """The access token the vault holds now (the one the proxy calls QuickBooks with)."""
    answer = invoke(stack, "GetTokenFunction", {"realm_id": realm, "tenant_id": TENANT})
    return str(answer["access_token"])


def test_a_proxied_get_answers_as_quickbooks_did(stack):
    realm = "9130357000000001"
    issued = connect(stack, realm)
    answer = api(stack, realm, f"companyinfo/{realm}")
    assert answer["status"] == 200, answer
    assert answer["body"]["CompanyInfo"]["CompanyName"]
    assert answer["content_type"].startswith("application/json")
    assert answer["attempts"] == 1 and answer["minorversion"] == 75
    assert "request_id" not in answer and "fault" not in answer
    # The token is used inside the function only: not in the answer, not in any log line.
    text = json.dumps(answer) + stack.log_text()
    for value in [*issued, current_access_token(stack, realm)]:
        assert value not in text


def test_a_storm_of_401s_causes_one_intuit_refresh(stack):
    realm = "9130357000000002"
    connect(stack, realm)
    assert api(stack, realm, f"companyinfo/{realm}")["status"] == 200  # the token is cached
    # Intuit's clock moves past the access token's hour: QuickBooks now answers 401 to it,
    # while the stored expiry (our clock) still says it is valid.
    stack.sim("POST", "/_sim/advance-clock", {"seconds": 3700})
    before = len(stack.sim("GET", "/_sim/refresh-calls"))
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: api(stack, realm, f"companyinfo/{realm}"), range(20)))
    assert [a.get("status") for a in answers] == [200] * 20, answers
    assert len(stack.sim("GET", "/_sim/refresh-calls")) - before == 1
    # Every caller met the 401 or the refreshed token: some were retried once.
    assert max(a["attempts"] for a in answers) == 2


@pytest.mark.parametrize(
    "path",
    ["../9130357000000009/companyinfo/9130357000000009", "a//b", "%2e%2e/x", "https://x/y"],
)
def test_hostile_paths_send_nothing(stack, path):
    realm = "9130357000000003"
    before = stack.sim("GET", "/_sim/counters")
    answer = api(stack, realm, path)
    assert answer["error"]["code"] == "invalid_request", answer
    assert stack.sim("GET", "/_sim/counters") == before


def test_the_cli_calls_quickbooks_through_the_proxy(stack, tmp_path):
    from tests.http.test_cli_http import Cli

    realm = "9130357000000004"
    issued = connect(stack, realm)
    cli = Cli(stack)
    shown = cli("api", "GET", f"companyinfo/{realm}", "--realm", realm, "--tenant", TENANT)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["CompanyInfo"]["CompanyName"]
    assert "HTTP 200" in shown.stderr
    answer = cli.json("api", "GET", f"companyinfo/{realm}", "--realm", realm)
    assert answer["status"] == 200 and answer["attempts"] == 1
    # A POST the simulator does not serve yet comes back as QuickBooks' own error, with the
    # request id the CLI made before invoking.
    body = tmp_path / "customer.json"
    body.write_text('{"DisplayName": "Proxy Test"}', encoding="utf-8")
    posted = cli("api", "POST", "customer", "--realm", realm, "--body", f"@{body}", "--json")
    answer = json.loads(posted.stdout)
    assert len(answer["request_id"]) == 32
    printed = "\n".join(cli.outputs)
    for value in [*issued, current_access_token(stack, realm)]:
        assert value not in printed


def test_a_post_whose_answer_is_lost_creates_one_entity(stack):
    realm = "9130357000000005"
    connect(stack, realm)
    # The simulator applies the next write and then drops the connection: the answer is lost.
    stack.sim("POST", "/_sim/api/faults", {"realm_id": realm, "lost_answers": 1})
    try:
        answer = invoke(
            stack,
            "QuickBooksApiFunction",
            {
                "realm_id": realm,
                "tenant_id": TENANT,
                "method": "POST",
                "path": "customer",
                "body": {"DisplayName": "Lost Answer Ltd"},
            },
        )
    finally:
        stack.sim("DELETE", "/_sim/api/faults")
    # The retry carried the same requestid: QuickBooks gave the first answer again.
    assert answer["status"] == 200, answer
    assert answer["attempts"] == 2 and len(answer["request_id"]) == 32
    counts = stack.sim("GET", f"/_sim/api/counts?realm_id={realm}")
    assert (counts["writes"], counts["lost"], counts["replays"]) == (1, 1, 1), counts
    found = api(
        stack,
        realm,
        "query",
        query={"query": "select * from Customer where DisplayName = 'Lost Answer Ltd'"},
    )
    assert len(found["body"]["QueryResponse"]["Customer"]) == 1, found


def call_throttled_in_xml(stack: DevstackProcess, realm: str) -> dict[str, Any]:
    """One proxied call that QuickBooks (the simulator) answers with an XML 429."""
    stack.sim(
        "POST", "/_sim/api/faults", {"realm_id": realm, "throttles": 1, "throttle_format": "xml"}
    )
    try:
        return api(stack, realm, f"companyinfo/{realm}")
    finally:
        stack.sim("DELETE", "/_sim/api/faults")


def test_an_xml_throttle_cools_the_realm_down_for_every_container(stack):
    realm = "9130357000000006"
    connect(stack, realm)
    throttled = call_throttled_in_xml(stack, realm)
    # Returned as QuickBooks gave it, not retried, its XML fault normalised
    assert throttled["status"] == 429 and throttled["attempts"] == 1, throttled
    assert throttled["fault"]["code"] == "3001"
    # The cool-down is in the table, where every container's next lease meets it
    item = (
        stack.boto3_resource("dynamodb")
        .Table(stack.endpoints["table"])
        .get_item(Key={"pk": f"GOVERNOR#{realm}", "sk": "GOVERNOR"}, ConsistentRead=True)["Item"]
    )
    assert float(item["cool_until"]) > time.time() + 50
    before = stack.sim("GET", f"/_sim/api/counts?realm_id={realm}")["requests"]
    refused = api(stack, realm, f"companyinfo/{realm}", max_wait_seconds=1)
    assert refused["error"]["code"] == "rate_limited", refused
    assert 50 <= refused["error"]["retry_after_seconds"] <= 60
    assert stack.sim("GET", f"/_sim/api/counts?realm_id={realm}")["requests"] == before


def test_25_concurrent_callers_never_meet_a_quickbooks_throttle(stack):
    # The simulator enforces Intuit's limits as sliding windows (500/min, 10/s, 10 in flight);
    # the governor at its defaults keeps one realm under them, however many callers push.
    realm = "9130357000000007"
    connect(stack, realm)
    statuses, counts = push(realm, [stack] * 25, seconds=12)
    assert counts["429"] == 0 and 429 not in statuses, counts
    assert statuses.count(200) >= 60, statuses  # the realm was kept busy, at most 8 a second
    assert set(statuses) <= {200, "rate_limited"}


def test_proxied_calls_are_metered_to_the_connections_tenant(stack):
    realm = "9130357000000008"
    connect(stack, realm)
    invoke(stack, "ConnectionsFunction", {"action": "flush_usage"})
    before = invoke(stack, "ConnectionsFunction", {"action": "usage", "tenant_id": TENANT})
    # tenant_id left out: the calls are metered to the connection's owner all the same
    payload = {"realm_id": realm, "method": "GET", "path": f"companyinfo/{realm}"}
    for _ in range(3):
        assert invoke(stack, "QuickBooksApiFunction", payload)["status"] == 200
    invoke(stack, "ConnectionsFunction", {"action": "flush_usage"})
    after = invoke(stack, "ConnectionsFunction", {"action": "usage", "tenant_id": TENANT})
    # The simulator is a sandbox: Intuit does not meter those calls, they are counted apart.
    delta = after["totals"]["sandbox_coreplus"] - before["totals"]["sandbox_coreplus"]
    assert delta == 3, (before["totals"], after["totals"])
