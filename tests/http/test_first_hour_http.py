"""A newcomer's first hour against ``make dev``: calling the service from your own code, and
trying ``connections import``, with nothing but what the stack writes to endpoints.json.

Before, the client helper failed with ``NoRegionError`` then ``NoCredentialsError`` until one
found ``AWS_ENDPOINT_URL_LAMBDA``, a region and dummy keys; the simulator's client id was only in
the startup log; the CLI outside the checkout said the stack was not running, not where it
looked.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.process import DevstackProcess, start_devstack
from tests.helpers.cli import run, run_cli, run_python
from tests.helpers.stack import module_stack
from tests.helpers.webhooks import simulate_entity_change

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO_ROOT / "clients" / "python"
REALM = "4620816365012345678"

pytestmark = pytest.mark.timeout(240)


stack = module_stack(
    "first-hour",
    extra_args=["--no-schedule", "--no-connect-link", "--auto-approve"],
)


def bare_env(**extra: str) -> dict[str, str]:
    """A shell with no AWS or qbo-connect settings at all, as a newcomer's is."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "QBO_CONNECT_", "BOTO_", "INTUIT_"))
    }
    env["HOME"] = extra.pop("HOME", env.get("HOME", "/nonexistent"))
    env.update(extra)
    return env


def endpoints_file(stack: DevstackProcess) -> Path:
    return stack.state_dir / "endpoints.json"


def mint_refresh_token(stack: DevstackProcess, realm_id: str) -> str:
    """What endpoints.json says to do for a refresh token, done as it says."""
    sim = stack.endpoints["simulator"]
    body = {**sim["issue_tokens_body"], "realm_id": realm_id}
    answer = requests.post(sim["issue_tokens_url"], json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    token = answer.json()["refresh_token"]
    assert isinstance(token, str) and token
    return token


def import_minted(stack: DevstackProcess, tmp_path: Path, realm: str, tenant: str) -> None:
    """``realm`` imported for ``tenant`` through the CLI with a refresh token minted as
    endpoints.json says, from a shell with only QBO_CONNECT_ENDPOINTS set."""
    rows = tmp_path / f"{tenant}-{realm}.csv"
    rows.write_text(
        f"realm_id,tenant_id,refresh_token\n{realm},{tenant},{mint_refresh_token(stack, realm)}\n"
    )
    env = bare_env(QBO_CONNECT_ENDPOINTS=str(endpoints_file(stack)))
    assert run_cli(["connections", "import", str(rows)], env, cwd=tmp_path).returncode == 0


def test_endpoints_file_is_private_and_says_how_to_get_a_refresh_token(stack):
    path = endpoints_file(stack)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sim = stack.endpoints["simulator"]
    assert sim["client_id"] and sim["issue_tokens_body"] == {"client_id": sim["client_id"]}
    assert sim["issue_tokens_url"].startswith(stack.intuit)
    assert sim["issue_tokens_url"] in sim["issue_tokens_curl"]
    # The curl line, run as printed, answers a refresh token
    curl = shutil.which("curl")
    if curl is not None:
        out = run(["sh", "-c", sim["issue_tokens_curl"]], timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["refresh_token"].startswith("RT1-")


def test_import_a_simulator_token_then_call_from_your_own_code_with_one_variable(stack, tmp_path):
    # Given a refresh token minted the way endpoints.json says, in an import file
    token = mint_refresh_token(stack, REALM)
    rows = tmp_path / "connections.csv"
    rows.write_text(f"realm_id,tenant_id,refresh_token\n{REALM},acme-inc,{token}\n")
    env = bare_env(QBO_CONNECT_ENDPOINTS=str(endpoints_file(stack)))

    # When it is imported through the CLI, from a directory outside any checkout
    imported = run_cli(["connections", "import", str(rows), "--json"], env, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert token not in imported.stdout + imported.stderr

    # Then code of your own, in a shell with no AWS settings and only QBO_CONNECT_ENDPOINTS
    # exported, gets a token and calls the proxy through the client helper
    program = textwrap.dedent(
        f"""
        import json
        from qbo_connect_client import call, get_access_token

        token = get_access_token({REALM!r}, tenant_id="acme-inc")
        answer = call({REALM!r}, "GET", "companyinfo/{REALM}", tenant_id="acme-inc")
        print(json.dumps({{"realm": token["realm_id"], "status": answer["status"],
                           "has_token": bool(token["access_token"])}}))
        """
    )
    result = run_python(program, {**env, "PYTHONPATH": str(CLIENT_DIR)}, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"realm": REALM, "status": 200, "has_token": True}


def test_helper_without_configuration_says_which_variable_to_set(tmp_path):
    program = (
        "from qbo_connect_client import QboConnectError, get_access_token\n"
        "try:\n    get_access_token('1')\n"
        "except QboConnectError as e:\n    print(e.code, e.message)\n"
    )
    result = run_python(program, {**bare_env(), "PYTHONPATH": str(CLIENT_DIR)}, tmp_path)
    assert result.stdout.startswith("configuration_error ")
    assert (
        "QBO_CONNECT_ENDPOINTS" in result.stdout
        and "QBO_CONNECT_GET_TOKEN_FUNCTION" in result.stdout
    )


def test_cli_outside_the_checkout_says_where_it_looked_and_what_points_elsewhere(tmp_path):
    result = run_cli(
        ["--local", "connections", "list", "--tenant", "acme-inc"], bare_env(), cwd=tmp_path
    )
    assert result.returncode == 3
    error = " ".join(result.stderr.split())
    assert str(tmp_path.resolve()) in error
    assert ".devstack/endpoints.json" in error
    assert "--endpoints" in error and "QBO_CONNECT_ENDPOINTS" in error
    assert "Traceback" not in result.stderr


# ----- the local return URL ----------------------------------------------------------------------


def test_the_connect_flow_comes_back_to_the_local_app_page_verified(stack, tmp_path):
    # Given the stack's stand-in for your app, allowed as a return URL by default
    your_app = stack.endpoints["your_app"]
    assert your_app == stack.api + "/your-app"
    intro = requests.get(your_app, timeout=10)
    assert intro.status_code == 200 and "return URL" in intro.text
    env = bare_env(QBO_CONNECT_ENDPOINTS=str(endpoints_file(stack)))
    created = run_cli(
        ["links", "create", "--tenant", "beta-co", "--return-url", your_app, "--json"],
        env,
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    link = json.loads(created.stdout)["url"]

    # When a browser opens the link, clicks Connect and the simulator auto-approves (the
    # flow's cookie is Secure, which browsers send to 127.0.0.1 over http and requests does not)
    landing = requests.get(link, timeout=30)
    assert landing.status_code == 200 and "Connect to QuickBooks" in landing.text
    go = requests.get(link + "&go=1", allow_redirects=False, timeout=30)
    assert go.status_code == 302, go.text
    cookie = go.headers["Set-Cookie"].split(";", 1)[0]
    approved = requests.get(go.headers["Location"], allow_redirects=False, timeout=30)
    assert approved.status_code == 302, approved.text
    page = requests.get(approved.headers["Location"], headers={"Cookie": cookie}, timeout=30)

    # Then it ends on the app page, which verified the signed return with the README's snippet
    assert page.url.split("?", 1)[0] == your_app
    assert page.status_code == 200, page.text
    assert "Verified" in page.text and "beta-co" in page.text
    assert "qbo-connect --local api GET companyinfo/" in page.text

    # And the same return with one signed value changed is refused
    forged = page.url.replace("tenant_id=beta-co", "tenant_id=acme-inc")
    assert forged != page.url
    refused = requests.get(forged, timeout=10)
    assert refused.status_code == 400 and "Not verified" in refused.text


def test_a_refused_return_url_says_how_to_allow_it(stack, tmp_path):
    env = bare_env(QBO_CONNECT_ENDPOINTS=str(endpoints_file(stack)))
    result = run_cli(
        [
            "links",
            "create",
            "--tenant",
            "acme-inc",
            "--return-url",
            "https://app.example.com/integrations/quickbooks",
        ],
        env,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    error = " ".join(result.stderr.split())
    assert "return_url is not allowed" in error
    assert "AllowedReturnUrls" in error and "--parameter-overrides" in error
    assert "your_app" in error


# ----- a real Intuit sandbox app -----------------------------------------------------------------


def test_with_a_real_intuit_app_the_stack_sends_the_redirect_uri_the_readme_registers(tmp_path):
    # Given the stack configured for a real Intuit app (Intuit's own endpoints, never reached:
    # starting the flow only redirects the browser there)
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "`http://localhost:3000/callback`" in readme
    env = {
        "INTUIT_CLIENT_ID": "real-sandbox-app",
        "INTUIT_CLIENT_SECRET": "not-a-real-secret",
        "INTUIT_AUTHORIZATION_ENDPOINT": "https://appcenter.intuit.com/connect/oauth2",
        "INTUIT_TOKEN_ENDPOINT": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
    }
    with start_devstack(
        tmp_path, env=env, extra_args=["--no-schedule", "--no-connect-link"]
    ) as stack:
        link = stack.invoke(
            "ConnectionsFunction", {"action": "create_connect_link", "tenant_id": "acme-inc"}
        )["url"]
        # When the user clicks Connect on the link (opened on localhost, like the registered URI)
        go = requests.get(link + "&go=1", allow_redirects=False, timeout=30)
        assert go.status_code == 302, go.text
        # Then Intuit is asked for redirect_uri=http://localhost:<API port>/callback: with the
        # API port kept at 3000 (README), exactly the URI the README says to register
        query = parse_qs(urlsplit(go.headers["Location"]).query)
        redirect_uri = query["redirect_uri"][0]
        port = urlsplit(stack.api).port
        assert redirect_uri == f"http://localhost:{port}/callback"
        assert urlsplit(link).hostname == "localhost"


# ----- events in the dev log ---------------------------------------------------------------------


def wait_for_line(stack: DevstackProcess, needle: str, timeout: float = 30) -> str:
    """The first log line containing ``needle`` (the event log polls once a second)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stack.log_text().splitlines():
            if needle in line:
                return line
        time.sleep(0.2)
    raise AssertionError(f"no log line with {needle!r}:\n{stack.log_tail()}")


def test_the_dev_log_prints_each_published_event_in_one_line(stack, tmp_path):
    # Given a company imported for a tenant (a lifecycle event) ...
    realm = "4620816365099999"
    import_minted(stack, tmp_path, realm, "gamma")
    # ... and an invoice changed in it at Intuit (an entity change, through the webhook)
    simulate_entity_change(stack, realm, "Invoice", "130", "Create")

    # Then the dev log has one readable line for each
    created = wait_for_line(stack, f"event connection.created realm_id={realm}")
    assert created.startswith("devstack: event ") and "tenant_id=gamma" in created
    changed = wait_for_line(stack, "event quickbooks.entity_changed Invoice 130 Create")
    assert f"realm_id={realm}" in changed and "tenant_id=gamma" in changed


# ----- python-quickbooks through the proxy -------------------------------------------------------


def test_python_quickbooks_objects_run_unchanged_through_the_proxy(stack, monkeypatch, tmp_path):
    # Given python-quickbooks' client with the qbo-connect session instead of OAuth, and only
    # QBO_CONNECT_ENDPOINTS set, for a company imported for acme-inc
    quickbooks = pytest.importorskip("quickbooks")
    from quickbooks.objects.customer import Customer

    monkeypatch.syspath_prepend(str(CLIENT_DIR))
    for name in list(sys.modules):
        if name.startswith("qbo_connect_client"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("QBO_CONNECT_ENDPOINTS", str(endpoints_file(stack)))
    from qbo_connect_client.session import proxy_session

    realm = "4620816365077777"
    import_minted(stack, tmp_path, realm, "acme-inc")
    qb = quickbooks.QuickBooks(company_id=realm, minorversion=75)
    qb.session = proxy_session(tenant_id="acme-inc")
    calls_before = requests.get(f"{stack.intuit}/_sim/api/counts", timeout=10).json()

    # When its own objects create, read and query
    customer = Customer()
    customer.DisplayName = "Proxied Customer Ltd"
    customer.save(qb=qb)
    assert customer.Id
    read = Customer.get(customer.Id, qb=qb)
    found = Customer.filter(DisplayName="Proxied Customer Ltd", qb=qb)

    # Then QuickBooks (the simulator) answered each, through the service
    assert read.DisplayName == "Proxied Customer Ltd"
    assert [c.Id for c in found] == [customer.Id]
    calls_after = requests.get(f"{stack.intuit}/_sim/api/counts", timeout=10).json()
    assert calls_after != calls_before


def test_the_proxy_session_reaches_nothing_but_quickbooks_company_calls(monkeypatch):
    monkeypatch.syspath_prepend(str(CLIENT_DIR))
    from qbo_connect_client.session import proxy_session

    session = proxy_session(function_name="f", lambda_client=object())
    with pytest.raises(ValueError, match="only QuickBooks company API calls"):
        session.get("https://example.com/v3/company/1/customer/1")
    with pytest.raises(ValueError, match="only QuickBooks company API calls"):
        session.get("https://quickbooks.api.intuit.com/v3/user/current")


def test_the_client_installs_with_pip_as_a_typed_package(tmp_path):
    # pip builds and installs clients/python (no network: --no-deps, the venv's setuptools)
    # (from a copy: a build writes build/ and *.egg-info beside the sources)
    source = shutil.copytree(
        CLIENT_DIR, tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    built = run([*pip, "--target", str(target), str(source)], cwd=tmp_path, timeout=300)
    assert built.returncode == 0, built.stderr
    assert (target / "qbo_connect_client" / "py.typed").is_file()
    program = (
        "import qbo_connect_client, qbo_connect_client.session; print(qbo_connect_client.__file__)"
    )
    imported = run_python(program, {**bare_env(), "PYTHONPATH": str(target)}, tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(target))


# ----- the CLI's rough edges ---------------------------------------------------------------------


def test_cli_lists_page_hint_and_forget_token_times_of_a_disconnected_company(stack, tmp_path):
    env = bare_env(QBO_CONNECT_ENDPOINTS=str(endpoints_file(stack)), COLUMNS="80")
    # An empty tenant: no empty table, a hint to stderr
    empty = run_cli(["connections", "list", "--tenant", "nobody-yet"], env, cwd=tmp_path)
    assert empty.returncode == 0 and empty.stdout == ""
    assert "links create --tenant nobody-yet" in " ".join(empty.stderr.split())
    empty_json = run_cli(["connections", "list", "--tenant", "nobody-yet", "--json"], env, tmp_path)
    assert json.loads(empty_json.stdout) == {"connections": [], "next_cursor": None}

    # Two companies of one tenant, listed one at a time: the next page's cursor is given
    realms = ["4620816365055551", "4620816365055552"]
    rows = tmp_path / "delta.csv"
    rows.write_text(
        "realm_id,tenant_id,refresh_token\n"
        + "".join(f"{r},delta,{mint_refresh_token(stack, r)}\n" for r in realms)
    )
    assert run_cli(["connections", "import", str(rows)], env, cwd=tmp_path).returncode == 0
    first = run_cli(
        ["connections", "list", "--tenant", "delta", "--limit", "1", "--json"], env, tmp_path
    )
    page = json.loads(first.stdout)
    assert len(page["connections"]) == 1 and page["next_cursor"]
    every = json.loads(
        run_cli(["connections", "list", "--tenant", "delta", "--json"], env, tmp_path).stdout
    )
    assert len(every["connections"]) == 2 and every["next_cursor"] is None

    # A disconnected company shows no token expiry
    gone = run_cli(["connections", "disconnect", realms[0], "--yes"], env, cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    # and a second disconnect says what show says: disconnected already (and succeeds)
    again = run_cli(["connections", "disconnect", realms[0], "--yes"], env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already disconnected" in again.stdout
    shown = run_cli(["connections", "show", realms[0]], env, cwd=tmp_path)
    assert shown.returncode == 0 and "disconnected" in shown.stdout
    assert "refresh_expires_at" not in shown.stdout and "access_expires_at" not in shown.stdout
    listed = run_cli(["connections", "list", "--tenant", "delta"], env, cwd=tmp_path)
    line = next(x for x in listed.stdout.splitlines() if realms[0] in x)
    cells = [cell.strip() for cell in line.split("\u2502")]
    # realm, company, status, health, last refreshed, refresh token expires, failing since
    assert cells[3] == "disconnected" and cells[6] == "-", line


def test_cli_errors_are_one_line_however_narrow_the_terminal(stack, tmp_path):
    env = bare_env(QBO_CONNECT_ENDPOINTS=str(endpoints_file(stack)), COLUMNS="80")
    result = run_cli(
        ["links", "create", "--tenant", "acme-inc", "--return-url", "https://elsewhere.test/x"],
        env,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) > 80, result.stderr


def test_an_import_row_has_the_same_status_in_the_dry_run_and_the_real_run(stack, tmp_path):
    # Given a company connected to one tenant, and a file giving it to another
    realm = "4620816365066661"
    env = bare_env(QBO_CONNECT_ENDPOINTS=str(endpoints_file(stack)))
    owner = tmp_path / "owner.csv"
    owner.write_text(
        f"realm_id,tenant_id,refresh_token\n{realm},epsilon,{mint_refresh_token(stack, realm)}\n"
    )
    assert run_cli(["connections", "import", str(owner)], env, cwd=tmp_path).returncode == 0
    other = tmp_path / "other.csv"
    other.write_text(
        f"realm_id,tenant_id,refresh_token\n{realm},zeta,{mint_refresh_token(stack, realm)}\n"
    )

    def row_code(*flags: str) -> str:
        answer = run_cli(["connections", "import", str(other), "--json", *flags], env, tmp_path)
        assert answer.returncode == 1, answer.stderr
        rows = json.loads(answer.stdout)["rows"]
        return rows[0]["code"]

    # Then the dry run and the real run give the row the same code
    assert row_code("--dry-run") == row_code() == "other_tenant"


def test_the_startup_lines_say_where_the_app_page_is_and_what_to_export(stack):
    # (printed just after endpoints.json is written, so waited for)
    wait_for_line(stack, f"your app (return)    {stack.endpoints['your_app']}")
    wait_for_line(stack, f"export QBO_CONNECT_ENDPOINTS={endpoints_file(stack)}")
