"""The ``qbo-connect`` CLI, run as the installed console script against the local stack.

One ``python -m devstack`` subprocess (schedules off, auto-approve) serves the module; every
command runs as its own process exactly as an operator runs it, with ``--endpoints`` naming the
stack's endpoints file. The simulator is driven through its ``/_sim/`` admin API: it issues the
refresh tokens the import file carries and counts every refresh, so "nothing changed" is checked
at Intuit as well as in the table.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.process import DevstackProcess
from tests.helpers.cli import run_cli
from tests.helpers.stack import module_stack

CLIENT_ID = "cli-test-client"
CLIENT_SECRET = "cli-test-secret-value"
TIMEOUT = 10
#: Every secret value the tests handled: none may appear in any CLI output.
SECRETS: list[str] = [CLIENT_SECRET]

pytestmark = pytest.mark.timeout(240)


stack = module_stack(
    "cli",
    env={"INTUIT_CLIENT_ID": CLIENT_ID, "INTUIT_CLIENT_SECRET": CLIENT_SECRET},
    extra_args=["--no-schedule", "--auto-approve"],
)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without QBO_CONNECT_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QBO_CONNECT_")}
    env.update(extra)
    return env


class Cli:
    """Runs ``qbo-connect --endpoints <stack's file> ...`` and keeps what it printed."""

    def __init__(self, stack: DevstackProcess) -> None:
        self.stack = stack
        self.outputs: list[str] = []

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        endpoints = str(self.stack.state_dir / "endpoints.json")
        result = run_cli(["--endpoints", endpoints, *args], clean_env(COLUMNS="200"), stdin=stdin)
        self.outputs += [result.stdout, result.stderr]
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        result = self(*args, "--json")
        assert result.returncode == code, result.stderr + result.stdout
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli(stack) -> Iterator[Cli]:
    runner = Cli(stack)
    yield runner
    printed = "\n".join(runner.outputs)
    leaked = [s for s in SECRETS if s and s in printed]
    assert not leaked, "a token or secret was printed by the CLI"


def connect_through_link(stack: DevstackProcess, url: str, realm: str) -> None:
    """What a user's browser does with a connect link (the simulator approves)."""
    stack.sim("POST", "/_sim/config", {"auto_approve": True, "next_realm_id": realm})
    http = requests.Session()
    assert http.get(url, timeout=TIMEOUT).status_code == 200
    go = http.get(url + "&go=1", allow_redirects=False, timeout=TIMEOUT)
    assert go.status_code == 302, go.text
    cookie = go.headers["Set-Cookie"].split(";", 1)[0]
    approve = http.get(go.headers["Location"], allow_redirects=False, timeout=TIMEOUT)
    assert approve.status_code == 302, approve.text
    callback = approve.headers["Location"]
    SECRETS.extend(v[0] for k, v in parse_qs(urlsplit(callback).query).items() if k == "code")
    done = http.get(callback, headers={"Cookie": cookie}, allow_redirects=False, timeout=TIMEOUT)
    assert done.status_code in (200, 302), done.text


def refresh_count(stack: DevstackProcess) -> int:
    return int(stack.sim("GET", "/_sim/counters").get("token.refresh_token", 0))


def scan(stack: DevstackProcess) -> list[dict[str, Any]]:
    client = stack.boto3_client("dynamodb")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": stack.endpoints["table"], "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            # Usage counts are flushed by whichever call comes next, so they are left out.
            kept = [i for i in items if not i["pk"]["S"].startswith("USAGE#")]
            return sorted(kept, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def connections_of(stack: DevstackProcess, tenant: str) -> list[dict[str, Any]]:
    return [i for i in scan(stack) if i.get("tenant_id", {}).get("S") == tenant and "status" in i]


# ----- link, list, show, refresh, disconnect ----------------------------------------------------


def test_link_list_show_refresh_disconnect(stack, cli):
    realm = "4620816365100000001"

    # Given a connect link made by the CLI, for people and for scripts
    made = cli("links", "create", "--tenant", "cli-a", "--tenant-name", "Acme & Co")
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip().splitlines()[-1]
    assert url.startswith(stack.api + "/connect?session=")
    link = cli.json("links", "create", "--tenant", "cli-a")
    assert link["url"].startswith(stack.api + "/connect?session=") and link["expires_at"]

    # When a user connects through it
    connect_through_link(stack, link["url"], realm)

    # Then list shows it as a table and as JSON
    table = cli("connections", "list", "--tenant", "cli-a")
    assert table.returncode == 0, table.stderr
    assert realm in table.stdout and "active" in table.stdout
    assert "1 connection(s)" in table.stderr
    listed = cli.json("connections", "list", "--tenant", "cli-a")["connections"]
    assert [c["realm_id"] for c in listed] == [realm]
    assert cli.json("connections", "list", "--tenant", "nobody-here") == {
        "connections": [],
        "next_cursor": None,
    }

    # And show gives its metadata (never a token)
    shown = cli("connections", "show", realm)
    assert shown.returncode == 0, shown.stderr
    assert realm in shown.stdout and "cli-a" in shown.stdout and "status" in shown.stdout
    detail = cli.json("connections", "show", realm)["connection"]
    assert detail["tenant_id"] == "cli-a" and detail["status"] == "active"
    assert not {"access_token", "refresh_token"} & set(detail)

    # When an operator refreshes it: exactly one refresh at Intuit
    before = refresh_count(stack)
    refreshed = cli("connections", "refresh", realm)
    assert refreshed.returncode == 0, refreshed.stderr
    assert realm in refreshed.stdout
    assert refresh_count(stack) == before + 1
    again = cli.json("connections", "refresh", realm)["connection"]
    assert again["last_refreshed_at"] >= detail["last_refreshed_at"]
    assert again["health"] == "healthy"

    # Then the history lists what happened, newest first, for people and for scripts
    history = cli.json("connections", "history", realm)
    assert [(e["source"], e["outcome"]) for e in history["history"]] == [
        ("operator", "refreshed"),
        ("operator", "refreshed"),
        ("callback", "connected"),
    ]
    table = cli("connections", "history", realm)
    assert table.returncode == 0 and "callback" in table.stdout and "refreshed" in table.stdout

    # And disconnecting without --yes away from a terminal is refused, nothing changes
    refused = cli("connections", "disconnect", realm)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert cli.json("connections", "show", realm)["connection"]["status"] == "active"

    # When it is disconnected with --yes: revoked at Intuit, shown as disconnected
    gone = cli("connections", "disconnect", realm, "--yes")
    assert gone.returncode == 0, gone.stderr
    assert "revoked at Intuit" in gone.stdout
    gone_now = cli.json("connections", "show", realm)["connection"]
    assert gone_now["status"] == "disconnected" and gone_now["health"] == "disconnected"
    latest = cli.json("connections", "history", realm)["history"][0]
    assert (latest["source"], latest["outcome"]) == ("operator", "disconnected")

    # And a second disconnect succeeds, saying it already was (as show says), as JSON too
    twice = cli.json("connections", "disconnect", realm, "--yes")
    assert twice == {"realm_id": realm, "already_disconnected": True}
    again = cli("connections", "disconnect", realm, "--yes")
    assert again.returncode == 0 and "already disconnected" in again.stdout


def test_revocation_shows_as_a_failure_after_one_refresh_attempt(stack, cli):
    realm = "4620816365100000003"
    link = cli.json("links", "create", "--tenant", "cli-revoked")
    connect_through_link(stack, link["url"], realm)
    healthy = cli.json("connections", "show", realm)["connection"]
    assert healthy["health"] == "healthy" and healthy["failing_since"] is None

    # Given the user revoked the app at Intuit
    assert stack.sim("POST", "/_sim/revoke-realm", {"realm_id": realm})["revoked_grants"] == 1

    # When one refresh is attempted: refused for now (one invalid_grant is not a verdict)
    before = refresh_count(stack)
    attempt = cli("connections", "refresh", realm)
    assert attempt.returncode == 1
    assert "refresh_unavailable" in attempt.stderr
    assert refresh_count(stack) == before + 1

    # Then show reports the failure class, when it started and Intuit's transaction id
    shown = cli.json("connections", "show", realm)["connection"]
    assert shown["status"] == "active" and shown["health"] == "retrying"
    assert shown["failing_since"] and shown["failed_attempts"] == 1
    assert shown["last_error"]["class"] == "invalid_grant"
    assert shown["last_error"]["intuit_tid"]
    assert shown["next_attempt_at"]
    table = cli("connections", "show", realm)
    assert "invalid_grant" in table.stdout and "failing_since" in table.stdout

    # And the tenant's list can be filtered by health
    retrying = cli.json("connections", "list", "--tenant", "cli-revoked", "--health", "retrying")
    assert [c["realm_id"] for c in retrying["connections"]] == [realm]
    assert cli.json("connections", "list", "--tenant", "cli-revoked", "--health", "healthy") == {
        "connections": [],
        "next_cursor": None,
    }

    # And the history names what ran each step and the intuit_tid of the failure
    history = cli.json("connections", "history", realm)["history"]
    assert [(e["source"], e["outcome"]) for e in history][:2] == [
        ("operator", "invalid_grant"),
        ("callback", "connected"),
    ]
    assert history[0]["intuit_tid"] == shown["last_error"]["intuit_tid"]
    people = cli("connections", "history", realm)
    assert people.returncode == 0 and "invalid_grant" in people.stdout


def test_token_needs_print_secret(stack, cli):
    realm = "4620816365100000002"
    link = cli.json("links", "create", "--tenant", "cli-token")
    connect_through_link(stack, link["url"], realm)

    refused = cli("token", realm)
    assert refused.returncode == 2
    assert "--print-secret" in refused.stderr and refused.stdout == ""

    printed = cli("token", realm, "--print-secret")
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()  # printed on purpose: not in the leak check's SECRETS
    assert token and "\n" not in token
    answer = stack.invoke("GetTokenFunction", {"realm_id": realm})
    assert answer["access_token"] == token


def test_unknown_realm_and_usage_errors(stack, cli):
    missing = cli("connections", "show", "999")
    assert missing.returncode == 1
    assert "not_connected" in missing.stderr
    bad = cli.json("connections", "show", "not-a-realm", code=1)
    assert bad["error"]["code"] == "invalid_request"
    usage = cli("connections", "list")  # --tenant is required
    assert usage.returncode == 2 and "--tenant" in usage.stderr


# ----- import ------------------------------------------------------------------------------------


def issue_refresh_token(stack: DevstackProcess, realm: str) -> str:
    body = stack.sim("POST", "/_sim/issue-tokens", {"client_id": CLIENT_ID, "realm_id": realm})
    SECRETS.extend([body["refresh_token"], body["access_token"]])
    return str(body["refresh_token"])


IMPORT_COLUMNS = ["realm_id", "tenant_id", "refresh_token", "environment"]


def write_import_file(stack: DevstackProcess, path: Path, tenant: str) -> dict[str, Any]:
    """200 rows: 190 good ones and 10 bad ones of different kinds; what each should do."""
    good = [f"46208163652{i:05d}" for i in range(190)]
    rows: list[dict[str, str]] = [
        {"realm_id": r, "tenant_id": tenant, "refresh_token": issue_refresh_token(stack, r)}
        for r in good
    ]
    rows[0]["environment"] = "sandbox"
    held = "4620816365300000001"  # connected to another tenant first
    issue = issue_refresh_token
    # (realm_id, tenant_id, refresh_token, environment) of each bad row, one kind of fault each
    bad = [
        ("4620816365300000002", tenant, "", ""),
        ("not-a-realm", tenant, "RT-x", ""),
        ("4620816365300000003", "", "RT-y", ""),
        ("4620816365300000004", tenant, "RT-unknown", ""),
        ("4620816365300000005", tenant, issue(stack, "4620816365300000005"), "staging"),
        (good[5], tenant, "RT-duplicate-row", ""),
        (held, tenant, issue(stack, held), ""),
        ("4620816365300000006", "bad tenant!", "RT-z", ""),
        ("4620816365300000007", tenant, "RT-gone", ""),
        ("4620816365300000008", tenant, issue(stack, "4620816365300000008"), "production"),
    ]
    rows += [dict(zip(IMPORT_COLUMNS, values, strict=True)) for values in bad]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=IMPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    # the held realm belongs to another tenant before the import
    result = stack.invoke(
        "ConnectionsFunction",
        {
            "action": "import_connection",
            "realm_id": held,
            "tenant_id": "someone-else",
            "refresh_token": issue(stack, held),
        },
    )
    assert "connection" in result, result
    return {"good": good, "bad_lines": list(range(192, 202)), "rows": len(rows)}


def test_import_dry_run_then_real_then_rerun(stack, cli, tmp_path):
    tenant = "cli-import"
    plan = write_import_file(stack, tmp_path / "connections.csv", tenant)
    assert plan["rows"] == 200
    table_before = scan(stack)
    calls_before = refresh_count(stack)

    # When the file is checked with --dry-run
    dry = cli.json("connections", "import", str(tmp_path / "connections.csv"), "--dry-run", code=1)

    # Then every row is reported, the bad ones failed, and nothing was stored or refreshed
    assert dry["dry_run"] is True and len(dry["rows"]) == 200
    failed = {r["row"]: r for r in dry["rows"] if r["result"] == "failed"}
    # all but the two rows whose tokens only Intuit can refuse (a dry run never calls Intuit)
    assert sorted(failed) == [192, 193, 194, 196, 197, 198, 199, 201]
    assert failed[198]["code"] == "other_tenant"
    assert {r["result"] for r in dry["rows"] if r["row"] not in failed} == {"would_create"}
    assert scan(stack) == table_before
    assert refresh_count(stack) == calls_before

    # When it is imported for real (the table report, for people)
    real = cli("connections", "import", str(tmp_path / "connections.csv"), "--concurrency", "4")

    # Then exit code 1, a per-row report, and every good row stored for the tenant
    assert real.returncode == 1, real.stderr
    assert "10 row(s) failed (190 imported)" in real.stderr
    for line in ("192", "201"):
        assert line in real.stdout
    stored = connections_of(stack, tenant)
    assert sorted(i["realm_id"]["S"] for i in stored) == sorted(plan["good"])
    listed = cli.json("connections", "list", "--tenant", tenant)["connections"]
    assert len(listed) == 190 and {c["status"] for c in listed} == {"active"}
    assert refresh_count(stack) - calls_before >= 190
    held = cli.json("connections", "show", "4620816365300000001")["connection"]
    assert held["tenant_id"] == "someone-else"

    # When the same file is imported again
    table_after = scan(stack)
    calls_after = refresh_count(stack)
    rerun = cli.json("connections", "import", str(tmp_path / "connections.csv"), code=1)

    # Then nothing changes: good rows unchanged (no Intuit call for them), bad rows still
    # failed; only the two tokens Intuit rejects are tried at Intuit again
    results = {r["row"]: r for r in rerun["rows"]}
    assert {results[n]["result"] for n in range(2, 192)} == {"unchanged"}
    assert sorted(n for n, r in results.items() if r["result"] == "failed") == plan["bad_lines"]
    assert scan(stack) == table_after
    assert refresh_count(stack) == calls_after + 2


def test_import_report_says_why_each_bad_row_failed(stack, cli, tmp_path):
    tenant = "cli-import-why"
    path = tmp_path / "few.jsonl"
    realm = "4620816365400000001"
    lines = [
        json.dumps(
            {
                "realm_id": realm,
                "tenant_id": tenant,
                "refresh_token": issue_refresh_token(stack, realm),
            }
        ),
        "not json",
        json.dumps({"realm_id": "4620816365400000002", "tenant_id": tenant}),
        json.dumps(
            {"realm_id": "4620816365400000003", "tenant_id": tenant, "refresh_token": "RT-nope"}
        ),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = cli.json("connections", "import", str(path), code=1)

    rows = {r["row"]: r for r in report["rows"]}
    assert rows[1]["result"] == "imported"
    assert rows[2]["code"] == "invalid_row" and "JSON" in rows[2]["message"]
    assert rows[3]["code"] == "invalid_row" and "refresh_token" in rows[3]["message"]
    assert rows[4]["code"] == "invalid_request" and "rejected" in rows[4]["message"]
    assert report["summary"] == {"failed": 3, "imported": 1}


def test_import_file_without_required_columns_imports_nothing(stack, cli, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("realm,tenant\n1,2\n", encoding="utf-8")
    before = scan(stack)
    result = cli("connections", "import", str(path))
    assert result.returncode == 2
    assert "refresh_token" in result.stderr
    assert scan(stack) == before


# ----- finding the stack -------------------------------------------------------------------------


def test_local_stack_not_running_is_a_clear_error(tmp_path):
    result = run_cli(["--local", "connections", "show", "1"], clean_env(), cwd=tmp_path)
    assert result.returncode == 3
    assert "local stack is not running" in result.stderr and "make dev" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_stack_named_is_a_usage_error(tmp_path):
    result = run_cli(["connections", "show", "1"], clean_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "--stack" in result.stderr and "--local" in result.stderr


def stack_env(stack: DevstackProcess) -> dict[str, str]:
    """CloudFormation at the stack's moto server, Lambda at its Invoke API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QBO_CONNECT_", "AWS_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_CLOUDFORMATION=stack.aws,
        AWS_ENDPOINT_URL_LAMBDA=stack.lambda_url,
    )
    return env


def test_stack_outputs_name_the_functions(stack, cli, tmp_path):
    # Given a deployed stack whose Outputs name the functions (moto's CloudFormation)
    cfn = stack.boto3_client("cloudformation")
    template = {
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "ConnectionsFunctionName": {
                "Value": stack.endpoints["functions"]["ConnectionsFunction"]
            },
            "GetTokenFunctionName": {"Value": stack.endpoints["functions"]["GetTokenFunction"]},
            "QuickBooksApiFunctionName": {
                "Value": stack.endpoints["functions"]["QuickBooksApiFunction"]
            },
        },
    }
    cfn.create_stack(StackName="qbo-connect-cli-test", TemplateBody=json.dumps(template))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(list(args), stack_env(stack))

    # Then --stack finds them and the commands work
    listed = run(
        "--stack", "qbo-connect-cli-test", "--json", "connections", "list", "--tenant", "x"
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"connections": [], "next_cursor": None}

    # And an unknown stack, or one without the outputs, is a clear error with exit code 3
    missing = run("--stack", "no-such-stack", "connections", "list", "--tenant", "x")
    assert missing.returncode == 3
    assert "stack 'no-such-stack' not found" in missing.stderr
    cfn.create_stack(
        StackName="not-qbo",
        TemplateBody=json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}}),
    )
    other = run("--stack", "not-qbo", "connections", "list", "--tenant", "x")
    assert other.returncode == 3
    assert "ConnectionsFunctionName" in other.stderr
