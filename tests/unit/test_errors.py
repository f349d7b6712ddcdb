"""The error contract: one home for every exception, codes implied by subclasses, documented
reasons, and the same fields in the answer and in the log record."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from qbo_connect import errors
from qbo_connect.errors import (
    REASONS,
    Conflict,
    HeldByOtherTenant,
    InvalidRequest,
    RealmCheckUnavailable,
    RealmNotProven,
    RefreshUnavailable,
    ServiceError,
    StoreContention,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "layers" / "core" / "qbo_connect"


def test_every_exception_of_the_package_is_defined_in_errors_py():
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if bases & {"Exception", "ValueError", "RuntimeError", "ServiceError"}:
                    elsewhere.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert elsewhere == []


@pytest.mark.parametrize(
    ("error", "code", "parent"),
    [
        (RealmNotProven, "invalid_request", InvalidRequest),
        (RealmCheckUnavailable, "refresh_unavailable", RefreshUnavailable),
        (HeldByOtherTenant, "conflict", Conflict),
        (StoreContention, "conflict", Conflict),
    ],
)
def test_an_adoption_error_is_a_subclass_of_the_code_it_answers(error, code, parent):
    exc = error("nothing was stored")
    assert isinstance(exc, parent) and exc.code == code
    assert exc.to_dict()["error"]["reason"] == error.default_reason
    assert error.default_reason in REASONS


def test_the_answer_and_the_log_record_carry_reason_and_intuit_tid_only_when_known():
    bare = RefreshUnavailable("try again")
    assert bare.to_dict() == {"error": {"code": "refresh_unavailable", "message": "try again"}}
    full = RefreshUnavailable("try again", reason="intuit_unavailable", intuit_tid="tid-1")
    assert full.to_dict()["error"] == {
        "code": "refresh_unavailable",
        "message": "try again",
        "reason": "intuit_unavailable",
        "intuit_tid": "tid-1",
    }
    assert full.log_fields() == {
        "error_code": "refresh_unavailable",
        "detail": "try again",
        "reason": "intuit_unavailable",
        "intuit_tid": "tid-1",
    }


def test_every_reason_the_code_gives_is_documented_in_errors_and_the_readme():
    service_errors = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, ServiceError)
    }
    given = {e.default_reason for e in map(vars(errors).get, service_errors) if e.default_reason}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in service_errors:
                for keyword in node.keywords:
                    if keyword.arg == "reason" and isinstance(keyword.value, ast.Constant):
                        given.add(keyword.value.value)
    assert "intuit_unavailable" in given, "the scan found too little: it is broken"
    assert given <= set(REASONS), given - set(REASONS)
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert [r for r in REASONS if f"`{r}`" not in readme] == []


def test_one_parse_or_drop_step_serves_both_queues_with_one_malformed_message():
    import json

    from qbo_connect.contracts import ChangesMessage, RefreshMessage, parse_or_drop

    counted: list[str] = []
    for parse in (RefreshMessage.from_payload, ChangesMessage.from_payload):
        for body in ("not json", "[1]", json.dumps({"realm_id": 5, "changes": "no"})):
            dropped = parse_or_drop(
                body, parse, kind="test", message_id="m", count=counted.append, metric="Bad"
            )
            assert dropped is None
    assert counted == ["Bad"] * 6
    with pytest.raises(errors.MalformedMessage):
        RefreshMessage.from_payload({"realm_id": "1", "due_at": "soon"})
    with pytest.raises(errors.MalformedMessage):
        ChangesMessage.from_payload({"changes": [{"realm_id": "1"}]})
