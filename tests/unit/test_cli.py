"""The qbo-connect CLI's pure parts: reading import files, and turning AWS failures into
one-line errors with the right exit code (the end-to-end runs are in
tests/http/test_cli_http.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from qbo_connect_cli.backend import (
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    CliError,
    ServiceError,
    Target,
    Unreachable,
    find_endpoints_file,
    local_target,
    stack_target,
)
from qbo_connect_cli.importer import ImportFileError, read_rows

HEADER = "realm_id,tenant_id,refresh_token,environment\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_keep_their_line_numbers_and_problems(tmp_path):
    path = write(
        tmp_path,
        "a.csv",
        "\ufeff"  # a spreadsheet's byte-order mark
        + HEADER
        + "111,t1,RT-a,sandbox\n"
        + "\n"
        + "222,t1,,\n"
        + "333,t1,RT-c,staging\n"
        + "111,t2,RT-d,\n"
        + "444,t1,RT-e,,extra\n",
    )
    rows = read_rows(path)
    assert [(r.line, r.problem) for r in rows] == [
        (2, None),
        (4, "missing refresh_token"),
        (5, "environment must be sandbox or production"),
        (6, "realm 111 is also in row 2"),
        (7, "more values than columns in the header"),
    ]
    assert rows[0].payload(dry_run=True) == {
        "action": "import_connection",
        "realm_id": "111",
        "tenant_id": "t1",
        "refresh_token": "RT-a",
        "environment": "sandbox",
        "dry_run": True,
    }


def test_json_lines_rows(tmp_path):
    path = write(
        tmp_path,
        "a.jsonl",
        json.dumps({"realm_id": "1", "tenant_id": "t", "refresh_token": "x", "scopes": "a b"})
        + "\n[1]\n{oops\n\n"
        + json.dumps({"realm_id": "2", "tenant_id": "t", "refresh_token": "y", "other": 1})
        + "\n",
    )
    rows = read_rows(path)
    assert [(r.line, r.problem) for r in rows] == [
        (1, None),
        (2, "not a JSON object"),
        (3, "not valid JSON"),
        (5, None),
    ]
    assert rows[0].payload(dry_run=False)["scopes"] == ["a", "b"]
    assert "other" not in rows[3].fields


@pytest.mark.parametrize(
    ("name", "text", "code"),
    [
        ("a.csv", "realm,tenant\n1,2\n", "bad_header"),
        ("a.csv", HEADER, "empty_file"),
        ("a.csv", "", "bad_header"),
        ("missing.csv", None, "file_not_found"),
    ],
)
def test_a_file_that_cannot_be_imported_as_a_whole(tmp_path, name, text, code):
    path = tmp_path / name if text is None else write(tmp_path, name, text)
    with pytest.raises(ImportFileError) as caught:
        read_rows(path)
    assert caught.value.code == code and caught.value.exit_code == 2


class FakeLambda:
    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.answer, self.error = answer, error
        self.calls: list[dict[str, Any]] = []

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.answer).encode())}


def client_error(code: str, message: str = "nope") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "Invoke")


def target(client: FakeLambda) -> Target:
    return Target("test stack", {"ConnectionsFunction": "fn-name"}, client)


def test_invoke_returns_the_answer_and_raises_the_contract_error():
    assert target(FakeLambda({"connections": []})).invoke("ConnectionsFunction", {}) == {
        "connections": []
    }
    with pytest.raises(ServiceError) as caught:
        target(FakeLambda({"error": {"code": "not_connected", "message": "m"}})).invoke(
            "ConnectionsFunction", {}
        )
    assert (caught.value.code, caught.value.exit_code) == ("not_connected", EXIT_FAILED)


@pytest.mark.parametrize(
    ("error", "code", "exit_code"),
    [
        (client_error("AccessDeniedException"), "no_permission", EXIT_UNREACHABLE),
        (client_error("ResourceNotFoundException"), "function_not_found", EXIT_UNREACHABLE),
        (client_error("TooManyRequestsException"), "throttled", EXIT_FAILED),
        (client_error("ExpiredTokenException"), "bad_credentials", EXIT_UNREACHABLE),
        (NoCredentialsError(), "no_credentials", EXIT_UNREACHABLE),
        (NoRegionError(), "no_region", EXIT_UNREACHABLE),
        (EndpointConnectionError(endpoint_url="http://x"), "unreachable", EXIT_UNREACHABLE),
        (client_error("ServiceException"), "invoke_failed", EXIT_FAILED),
    ],
)
def test_invoke_failures_are_one_clear_line(error, code, exit_code):
    with pytest.raises(CliError) as caught:
        target(FakeLambda(error=error)).invoke("ConnectionsFunction", {})
    assert (caught.value.code, caught.value.exit_code) == (code, exit_code)
    message = caught.value.message
    assert "fn-name" in message or "test stack" in message or code.startswith(("no_", "bad_"))


def test_local_target_needs_a_running_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_endpoints_file() is None
    with pytest.raises(Unreachable, match="make dev"):
        local_target()
    state = tmp_path / ".devstack"
    state.mkdir()
    (state / "endpoints.json").write_text(
        json.dumps({"lambda": "http://127.0.0.1:9", "pid": 2**22 + 12345}), encoding="utf-8"
    )
    (tmp_path / "sub").mkdir()
    assert find_endpoints_file(tmp_path / "sub") == state / "endpoints.json"
    with pytest.raises(Unreachable, match="has stopped"):
        local_target()


def test_service_values_are_text_with_control_characters_replaced():
    from rich.console import Console

    from qbo_connect_cli import output

    hostile = "Acme [/b] [link=https://x.example]y[/link]\x1b[31m\x07\u202e\x9b\n"
    assert output.safe(hostile) == (
        "Acme [/b] [link=https://x.example]y[/link]"
        + "\N{REPLACEMENT CHARACTER}[31m"
        + "\N{REPLACEMENT CHARACTER}" * 4
    )
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    console.print(output.table([("name", "name")], [{"name": hostile}], title=hostile))
    console.print(output.details([("company", hostile)]))
    console.print(output.plain(hostile))
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert printed.count("[/b]") == 4 and "\x1b" not in printed and "\u202e" not in printed


def test_an_import_row_with_columns_swapped_is_refused_and_never_shows_the_token(tmp_path):
    from qbo_connect_cli.importer import RowResult

    path = write(tmp_path, "swapped.csv", HEADER + "RT1-secret-token-value,t1,9130,\n")
    (row,) = read_rows(path)
    assert row.problem is not None and "columns swapped" in row.problem
    shown = RowResult(row.line, row.realm_id, row.tenant_id, "failed").as_dict()
    assert "RT1-secret-token-value" not in json.dumps(shown)


def test_an_unknown_profile_or_a_missing_region_is_a_clear_error(tmp_path, monkeypatch):
    config = write(tmp_path, "config", "[profile known]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(Unreachable) as caught:
        stack_target("a-stack", profile="no-such-profile")
    assert (caught.value.code, caught.value.exit_code) == ("no_credentials", EXIT_UNREACHABLE)
    assert "'no-such-profile' not found" in caught.value.message

    # A known profile without a region, and none in the environment: says where one goes
    write(tmp_path, "config", "[profile known]\n")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(Unreachable) as caught:
        stack_target("a-stack", profile="known")
    assert caught.value.code == "no_region"
    assert "--region" in caught.value.message and "AWS_DEFAULT_REGION" in caught.value.message


def test_the_cli_reaches_the_local_stack_without_importing_boto3(tmp_path):
    """Every command starts a process: botocore alone builds its clients (boto3 would pull in
    s3transfer, about a fifth of a second per command)."""
    import subprocess
    import sys

    endpoints = write(tmp_path, "endpoints.json", json.dumps({"lambda": "http://127.0.0.1:9"}))
    program = (
        "import sys\n"
        "from qbo_connect_cli.main import cli\n"
        "from qbo_connect_cli.backend import local_target\n"
        f"target = local_target(__import__('pathlib').Path({str(endpoints)!r}))\n"
        "assert target.lambda_client.meta.region_name == 'us-east-1'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 's3transfer')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
