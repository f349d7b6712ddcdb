"""Service values reach the operator's terminal as text: a company name chosen by whoever
connects it (rich markup, an OSC 8 hyperlink, ESC colour codes, a bidi override) is printed
literally with its control characters replaced, in tables, ``show`` and the ``disconnect``
confirmation prompt; and an import file with two columns swapped never shows the refresh token.
The CLI is the installed console script, run against the local stack (and under a pseudo
terminal for the prompt)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from devstack.process import DevstackProcess
from tests.helpers.cli import cli_path
from tests.helpers.stack import module_stack
from tests.http.test_cli_http import Cli, clean_env

pytestmark = pytest.mark.timeout(240)
CLIENT_ID = "render-test-client"
HOSTILE = (
    "Acme [/b] [link=https://evil.example]x[/link] "
    "\x1b]8;;https://evil.example\x07y\x1b[31m \u202eZ"
)
CONTROLS = ("\x1b", "\x07", "\u202e")


stack = module_stack(
    "render",
    env={"INTUIT_CLIENT_ID": CLIENT_ID, "INTUIT_CLIENT_SECRET": "render-test-secret-value"},
    extra_args=["--no-schedule", "--auto-approve"],
)


def import_one(stack: DevstackProcess, cli: Cli, tmp_path: Path, realm: str, tenant: str) -> str:
    issued = stack.sim("POST", "/_sim/issue-tokens", {"client_id": CLIENT_ID, "realm_id": realm})
    path = tmp_path / f"{realm}.csv"
    path.write_text(
        f"realm_id,tenant_id,refresh_token\n{realm},{tenant},{issued['refresh_token']}\n",
        encoding="utf-8",
    )
    result = cli("connections", "import", str(path))
    assert result.returncode == 0, result.stderr + result.stdout
    return str(issued["refresh_token"])


def test_a_hostile_company_name_is_printed_as_text_everywhere(stack, tmp_path):
    # Given a company whose name is markup, an OSC 8 hyperlink, colour codes and a bidi override
    realm = "9130356600000001"
    stack.sim("POST", "/_sim/api/company-name", {"realm_id": realm, "name": HOSTILE})
    cli = Cli(stack)
    import_one(stack, cli, tmp_path, realm, "render-tenant")
    # When the operator lists and shows it
    listed = cli("connections", "list", "--tenant", "render-tenant")
    shown = cli("connections", "show", realm)
    # Then nothing crashes, the markup is there literally, and no control character got through
    for result in (listed, shown):
        assert result.returncode == 0, result.stderr
        assert "[/b]" in result.stdout and "[link=https://evil.example]" in result.stdout
        assert not any(c in result.stdout + result.stderr for c in CONTROLS)
    assert "\N{REPLACEMENT CHARACTER}" in shown.stdout


def test_the_disconnect_prompt_shows_the_name_as_text(stack, tmp_path):
    realm = "9130356600000002"
    stack.sim("POST", "/_sim/api/company-name", {"realm_id": realm, "name": HOSTILE})
    cli = Cli(stack)
    import_one(stack, cli, tmp_path, realm, "render-tenant")
    endpoints = str(stack.state_dir / "endpoints.json")
    # A terminal: the prompt is asked, answered "n", and nothing is disconnected.
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [cli_path(), "--endpoints", endpoints, "connections", "disconnect", realm],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=clean_env(COLUMNS="200"),
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            seen += os.read(leader, 4096)
    os.write(leader, b"n\n")
    process.wait(timeout=60)
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if not ready:
                break
            seen += os.read(leader, 4096)
    except OSError:
        pass
    os.close(leader)
    text = seen.decode("utf-8", "replace")
    assert "[/b]" in text and "Disconnect realm" in text, text
    assert not any(c in text for c in CONTROLS), repr(text)
    still = cli.json("connections", "show", realm)
    assert still["connection"]["status"] == "active"


def test_a_refresh_token_in_the_wrong_column_is_never_shown(stack, tmp_path):
    cli = Cli(stack)
    realm = "9130356600000003"
    issued = stack.sim("POST", "/_sim/issue-tokens", {"client_id": CLIENT_ID, "realm_id": realm})
    token = str(issued["refresh_token"])
    swapped = tmp_path / "swapped.csv"
    swapped.write_text(
        f"realm_id,tenant_id,refresh_token,scopes\n{token},render-tenant,{realm},{token}\n",
        encoding="utf-8",
    )
    scopes_only = tmp_path / "scopes.csv"
    scopes_only.write_text(
        f"realm_id,tenant_id,refresh_token,scopes\n{realm},render-tenant,{token},{token}\n",
        encoding="utf-8",
    )
    results = [
        cli("connections", "import", str(swapped)),
        cli("connections", "import", str(swapped), "--json"),
        cli("connections", "import", str(scopes_only)),
        cli("connections", "import", str(scopes_only), "--json"),
    ]
    for result in results:
        assert result.returncode == 1, result.stdout + result.stderr
        assert token not in result.stdout + result.stderr
    assert "columns swapped" in results[0].stdout + results[0].stderr
    assert token not in stack.log_text()
