"""CorePlus usage through the local stack: the service's own realm proofs are metered, the
report and quotas work through the CLI (the installed console script) and ConnectionsFunction.

The local stack is a sandbox, whose calls Intuit does not meter: they are counted apart
(``sandbox_*``) and never spend the budget, which is what these tests see.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.stack import module_stack
from tests.http.test_cli_http import Cli

pytestmark = pytest.mark.timeout(240)
CLIENT_ID = "usage-test-client"
TENANT = "acme-usage"


stack = module_stack(
    "usage",
    env={"INTUIT_CLIENT_ID": CLIENT_ID, "INTUIT_CLIENT_SECRET": "usage-test-secret-value"},
    extra_args=["--no-schedule", "--auto-approve"],
)


@pytest.fixture(scope="module")
def cli(stack) -> Cli:
    return Cli(stack)


def test_an_import_s_realm_proof_is_metered_and_reported_per_tenant(stack, cli, tmp_path):
    # Given a company imported for a tenant (its proof reads CompanyInfo: a CorePlus call)
    realm = "9130355500000001"
    issued = stack.sim("POST", "/_sim/issue-tokens", {"client_id": CLIENT_ID, "realm_id": realm})
    path = Path(tmp_path) / "one.csv"
    path.write_text(
        f"realm_id,tenant_id,refresh_token\n{realm},{TENANT},{issued['refresh_token']}\n",
        encoding="utf-8",
    )
    imported = cli("connections", "import", str(path))
    assert imported.returncode == 0, imported.stderr + imported.stdout
    # When the container's buffer is flushed and the month is reported
    flushed = cli.json("usage", "flush")
    report = cli.json("usage")
    # Then the call is counted for that tenant, apart from the budget (a sandbox call)
    assert flushed["flushed_calls"] >= 1
    assert report["totals"]["sandbox_coreplus"] >= 1 and report["totals"]["coreplus"] == 0
    assert [t["tenant_id"] for t in report["tenants"]] == [TENANT]
    assert report["limits"]["monthly_budget"] == 500000
    assert report["raw_token_reads"]["enabled"] is True
    # and people get a table where a tenant's name is printed as it is, never as markup
    human = cli("usage")
    assert human.returncode == 0, human.stderr
    assert TENANT in human.stdout and "CorePlus usage for" in human.stdout
    assert "raw tokens" in human.stderr


def test_a_tenant_quota_is_set_shown_and_reset_to_the_default(cli):
    assert cli.json("usage", "set-quota", "quota-tenant", "3")["effective_quota"] == 3
    back = cli.json("usage", "set-quota", "quota-tenant", "default")
    assert back == {"tenant_id": "quota-tenant", "monthly_quota": None, "effective_quota": 0}
    bad = cli("usage", "set-quota", "quota-tenant", "many")
    assert bad.returncode == 2 and "whole number" in bad.stderr
    refused = cli.json("usage", "--month", "December", code=1)
    assert refused["error"]["code"] == "invalid_request", json.dumps(refused)
