"""The README's local commands, run as written against the local stack, so they cannot drift.

Extracted from README.md (not copied here): every ``qbo-connect --local`` line of the CLI block
in README order, the ``export QBO_CONNECT_ENDPOINTS=`` line, the import file example and the
simulator's ``curl`` line from endpoints.json. Only what a reader would change is changed: the
stack here runs on any free ports (the README's are 3000 and up), the endpoints file lives in
this test's directory, optional ``[...]`` parts are left out, and the import example's
``RT1-...`` is a refresh token minted the way the README says.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import requests

from tests.helpers.cli import run, run_cli, run_python
from tests.helpers.stack import module_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.timeout(300)


stack = module_stack(
    "readme",
    extra_args=["--no-schedule", "--no-connect-link", "--auto-approve"],
)


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def readme_cli_lines() -> list[str]:
    """Every ``qbo-connect --local`` command of the README, continuations joined."""
    lines: list[str] = []
    for block in blocks("sh"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith("qbo-connect --local ") and "..." not in command:
                lines.append(" ".join(re.sub(r"\[[^\]]*\]", "", command).split()))
    return lines


def test_the_readme_still_has_the_commands_this_test_runs():
    commands = readme_cli_lines()
    verbs = [" ".join(shlex.split(c)[2:4]) for c in commands]
    assert verbs == [
        "links create",
        "connections list",
        "connections show",
        "connections history",
        "connections refresh",
        "connections disconnect",
        "connections import",
        "changes reconcile",
        "changes status",
        "token 9130357766042906",
    ], commands


def test_the_readme_local_commands_run_as_written(stack, tmp_path):
    port = str(requests.utils.urlparse(stack.api).port)
    # The README's one exported variable, pointed at this stack's file
    export = next(
        line for b in blocks("sh") for line in b.splitlines() if "QBO_CONNECT_ENDPOINTS=" in line
    )
    assert export.startswith("export QBO_CONNECT_ENDPOINTS=")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QBO_"))}
    env["QBO_CONNECT_ENDPOINTS"] = str(stack.state_dir / "endpoints.json")
    # The import example, with a refresh token minted as the README says (endpoints.json)
    csv = next(b for b in blocks("csv") if "RT1-..." in b)
    sim = stack.endpoints["simulator"]
    minted = run(["sh", "-c", sim["issue_tokens_curl"]], timeout=30)
    token = json.loads(minted.stdout)["refresh_token"]
    (tmp_path / "connections.csv").write_text(csv.replace("RT1-...", token), encoding="utf-8")

    def run_line(command: str) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(command.replace("127.0.0.1:3000", f"127.0.0.1:{port}"))
        return run_cli(argv[1:], env, cwd=tmp_path, timeout=120)

    for command in readme_cli_lines():
        result = run_line(command)
        verb = " ".join(shlex.split(command)[2:4])
        if verb == "connections disconnect":
            # Away from a terminal it asks for its [--yes], as the README says; then with it
            assert result.returncode == 2 and "--yes" in result.stderr
            result = run_line(command + " --yes")
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        if verb == "links create":
            # The user opens the printed link and connects (the simulator auto-approves)
            link = result.stdout.strip().splitlines()[-1]
            go = requests.get(link + "&go=1", allow_redirects=False, timeout=30)
            cookie = go.headers["Set-Cookie"].split(";", 1)[0]
            back = requests.get(go.headers["Location"], allow_redirects=False, timeout=30)
            page = requests.get(back.headers["Location"], headers={"Cookie": cookie}, timeout=30)
            assert page.status_code == 200 and "Verified" in page.text, page.text
        if verb == "connections import":
            assert "imported" in result.stdout + result.stderr
        if verb == "changes reconcile":
            assert "Reconciled 9130357766042906" in result.stdout
    # The README's token line printed a token for the re-imported company
    assert result.stdout.strip()


def test_the_readme_local_python_snippet_runs_as_written(stack, tmp_path):
    # Given the README's company connected to acme-inc (a refresh token minted as it says)
    sim = stack.endpoints["simulator"]
    minted = run(["sh", "-c", sim["issue_tokens_curl"]], timeout=30)
    token = json.loads(minted.stdout)["refresh_token"]
    rows = tmp_path / "rows.csv"
    rows.write_text(f"realm_id,tenant_id,refresh_token\n9130357766042906,acme-inc,{token}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QBO_"))}
    env["QBO_CONNECT_ENDPOINTS"] = str(stack.state_dir / "endpoints.json")
    imported = run_cli(["connections", "import", str(rows)], env, cwd=tmp_path, timeout=120)
    assert imported.returncode == 0, imported.stderr
    # When the README's snippet runs as it is, with only QBO_CONNECT_ENDPOINTS exported
    snippet = re.search(
        r"<!-- local-python-snippet:start -->\n```python\n(.*?)```\n"
        r"<!-- local-python-snippet:end -->",
        README,
        re.S,
    )
    assert snippet, "README lost its local Python snippet"
    program = snippet.group(1) + (
        "\nprint(json.dumps({'token': bool(token['access_token']), 'status': info['status'],"
        " 'customers': isinstance(customers, list)}))\n"
    )
    pythonpath = str(REPO_ROOT / "clients" / "python")
    result = run_python("import json\n" + program, {**env, "PYTHONPATH": pythonpath}, tmp_path, 120)
    # Then it gets a token, a proxied answer and python-quickbooks' customers
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "token": True,
        "status": 200,
        "customers": True,
    }
