"""The local stack's servers refuse what a foreign web page could send them.

A page on any site can make the developer's browser send requests to 127.0.0.1 while
``make dev`` runs; a DNS-rebinding name makes them look same-origin. Each test sends what such a
page would (an ``Origin``, a foreign ``Host``, fetch metadata) over real HTTP to the started
stack, and checks the answer is a 403 that ran nothing, while the same request from this machine
(boto3, curl, the gateway's own pages) still works.
"""

from __future__ import annotations

import json
import stat
import time
from urllib.parse import urlsplit

import pytest
import requests

from devstack.process import start_devstack

EVIL = "https://evil.example"
PUBLIC = "https://tunnel.example"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with start_devstack(
        tmp_path_factory.mktemp("local-only"),
        parameter_overrides={"PublicBaseUrl": PUBLIC},
        extra_args=["--no-schedule"],
    ) as running:
        # The startup connect link invokes ConnectionsFunction: let it finish before counting
        deadline = time.monotonic() + 30
        while "devstack: ready in" not in running.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield running


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["message"].startswith("Forbidden")
    assert not any(k.lower().startswith("access-control-") for k in response.headers)


def secret_request(stack, **headers: str) -> requests.Response:
    """A raw Secrets Manager GetSecretValue, as a page's fetch() would send it."""
    return requests.post(
        stack.aws + "/",
        data=json.dumps({"SecretId": stack.endpoints["secret"]}),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "secretsmanager.GetSecretValue",
            # Any signature does: moto reads only the service from the credential scope
            "Authorization": (
                "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/secretsmanager/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
            **headers,
        },
        timeout=10,
    )


def invocations(stack, function: str) -> int:
    return int(stack.health()["functions"][function]["invocations"])


def invoke_request(stack, **headers: str) -> requests.Response:
    return requests.post(
        f"{stack.lambda_url}/2015-03-31/functions/ConnectionsFunction/invocations",
        data=json.dumps({"action": "create_connect_link", "tenant_id": "evil"}),
        headers={"Content-Type": "text/plain", **headers},
        timeout=30,
    )


def test_aws_endpoint_refuses_a_foreign_origin(stack):
    # Given the secret is readable from this machine without an Origin (as boto3 sends it)
    plain = secret_request(stack)
    assert plain.status_code == 200
    secret_value = plain.json()["SecretString"]
    # When a foreign page asks for it, preflight or not
    answer = secret_request(stack, Origin=EVIL)
    preflight = requests.options(
        stack.aws + "/",
        headers={
            "Origin": EVIL,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-amz-target,content-type",
        },
        timeout=10,
    )
    # Then both are refused and the value is not in the answer
    assert_refused(answer)
    assert_refused(preflight)
    assert secret_value not in answer.text
    # And boto3 still works
    client = stack.boto3_client("secretsmanager")
    assert client.get_secret_value(SecretId=stack.endpoints["secret"])["SecretString"]


def test_aws_endpoint_refuses_a_rebinding_host_and_cross_site_fetches(stack):
    port = port_of(stack.aws)
    assert_refused(secret_request(stack, Host=f"evil.example:{port}"))
    # A no-cors GET carries no Origin, but the browser marks it cross-site
    assert_refused(
        requests.get(
            stack.aws + "/?Action=ListQueues",
            headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
            timeout=10,
        )
    )
    # The loopback names with the right port are all accepted
    for name in ("127.0.0.1", "localhost"):
        assert secret_request(stack, Host=f"{name}:{port}").status_code == 200
    assert_refused(secret_request(stack, Host=f"localhost:{port + 1}"))


def test_lambda_api_runs_nothing_for_a_foreign_page(stack):
    # Given the invocation count of the function a page would run
    before = invocations(stack, "ConnectionsFunction")
    port = port_of(stack.lambda_url)
    # When a foreign page posts text/plain (no preflight), or through a rebinding name
    assert_refused(invoke_request(stack, Origin=EVIL))
    assert_refused(invoke_request(stack, Origin="null"))
    assert_refused(invoke_request(stack, Host=f"evil.example:{port}"))
    assert_refused(invoke_request(stack, **{"Sec-Fetch-Site": "cross-site"}))
    # Then nothing ran
    assert invocations(stack, "ConnectionsFunction") == before
    # While the same invoke from this machine runs the function
    assert invoke_request(stack).status_code == 200
    assert invocations(stack, "ConnectionsFunction") == before + 1


def test_gateway_refuses_foreign_origins_and_hosts(stack):
    port = port_of(stack.api)
    url = stack.api + "/connect"
    assert_refused(requests.post(url, data="x=1", headers={"Origin": EVIL}, timeout=10))
    assert_refused(requests.get(url, headers={"Host": f"evil.example:{port}"}, timeout=10))
    assert_refused(
        requests.get(
            url,
            headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
            timeout=10,
        )
    )


def test_gateway_accepts_its_own_origin_navigations_and_the_public_host(stack):
    url = stack.api + "/connect"
    baseline = requests.get(url, allow_redirects=False, timeout=10)
    assert baseline.status_code != 403

    def same_as_baseline(**headers: str) -> None:
        response = requests.get(url, headers=headers, allow_redirects=False, timeout=10)
        assert response.status_code == baseline.status_code, headers
        assert "Forbidden:" not in response.text

    # Its own pages (a same-origin Origin on a form post), a link from any site, the tunnel
    same_as_baseline(Origin=stack.api)
    same_as_baseline(**{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    same_as_baseline(Host="tunnel.example", Origin=PUBLIC)
    same_as_baseline(Host="TUNNEL.example")


def test_intuit_simulator_refuses_foreign_origins_and_hosts(stack):
    url = stack.intuit + "/.well-known/openid_configuration"
    port = port_of(stack.intuit)
    assert requests.get(url, timeout=10).status_code == 200
    assert requests.get(url, headers={"Origin": stack.intuit}, timeout=10).status_code == 200
    assert_refused(requests.get(url, headers={"Origin": EVIL}, timeout=10))
    assert_refused(requests.get(url, headers={"Host": f"evil.example:{port}"}, timeout=10))


def test_the_public_host_is_only_the_gateways(stack):
    assert_refused(secret_request(stack, Host="tunnel.example", Origin=PUBLIC))


def test_endpoints_file_and_log_are_private(stack):
    state = stack.state_dir
    assert stat.S_IMODE((state / "endpoints.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(stack.log_path.stat().st_mode) == 0o600
