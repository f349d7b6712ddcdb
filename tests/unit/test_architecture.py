"""The two rules of the package's shape (docs/architecture.md, "Code layout"), read from the
source: only the store touches the table, only the composition root builds clients, and no
service reaches through another one's attributes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "layers" / "core" / "qbo_connect"
TABLE_CALLS = {
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "query",
    "scan",
    "batch_get_item",
    "batch_write_item",
    "transact_write_items",
    "transact_get_items",
}
CLIENT_BUILDERS = {"client", "resource", "Table"}


def modules(*, outside: str) -> list[tuple[str, ast.Module, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(outside):
            continue
        source = path.read_text(encoding="utf-8")
        found.append((relative, ast.parse(source), source))
    return found


def called_attributes(tree: ast.Module) -> set[str]:
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }


def imported_modules(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_only_the_store_calls_dynamodb():
    offenders = {
        name: sorted(called_attributes(tree) & TABLE_CALLS)
        for name, tree, _ in modules(outside="store/")
        if called_attributes(tree) & TABLE_CALLS
    }
    # The two wiring modules build the Table resource the repositories wrap; they call none
    # of its methods.
    assert offenders == {}


def test_only_the_composition_root_builds_aws_clients_and_imports_boto3_sessions():
    offenders = []
    for name, tree, _ in modules(outside="wiring/"):
        if "boto3" in imported_modules(tree) or called_attributes(tree) & CLIENT_BUILDERS:
            offenders.append(name)
    assert offenders == []


def test_no_module_outside_the_composition_root_imports_it():
    offenders = [
        name
        for name, tree, _ in modules(outside="wiring/")
        if any(
            m == "qbo_connect.wiring" or m.startswith("qbo_connect.wiring.")
            for m in imported_modules(tree)
        )
    ]
    assert offenders == []


def test_the_intuit_client_is_built_only_by_the_composition_root():
    offenders = [
        name
        for name, tree, _ in modules(outside="wiring/")
        if name != "intuit.py"
        and any(
            isinstance(node, ast.Call) and getattr(node.func, "id", "") == "IntuitClient"
            for node in ast.walk(tree)
        )
    ]
    assert offenders == []


def test_no_service_reaches_through_another_services_attributes():
    reach = re.compile(
        r"(?<!qbo_connect\.)\bvault\.(store|connections|settings|cipher|intuit_client|history|breaker|events|"
        r"observer|outbox|reader|_clock|_sleep)\b"
    )
    offenders = [
        f"{name}: {match.group(0)}"
        for name, _, source in modules(outside="wiring/")
        for match in reach.finditer(source)
        if not name.startswith("vault/")
    ]
    assert offenders == []


def test_every_handler_imports_the_composition_root_and_builds_nothing():
    for app in sorted((REPO_ROOT / "functions").glob("*/app.py")):
        tree = ast.parse(app.read_text(encoding="utf-8"))
        assert any(m.startswith("qbo_connect.wiring") for m in imported_modules(tree)), app
        assert "boto3" not in imported_modules(tree), app
        assert not called_attributes(tree) & CLIENT_BUILDERS, app
