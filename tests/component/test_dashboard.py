"""The operations dashboard and the ServerlessRepo metadata in template.yaml.

CloudFormation accepts any string as a DashboardBody and CloudWatch only complains at deploy
time, and a dashboard quietly shows nothing for a metric the code never emits. So the body is
parsed here after substitution, every reference must name a resource of the template, and
every QboConnect metric it plots must be one the package emits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from devstack import template as tpl
from qbo_connect.vault.observer import FAILURE_CLASSES

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "layers" / "core" / "qbo_connect"
REFERENCE = re.compile(r"\$\{([A-Za-z0-9:]+)(?:\.([A-Za-z]+))?\}")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return tpl.load_template(REPO_ROOT / "template.yaml")


@pytest.fixture(scope="module")
def body(template) -> dict[str, Any]:
    dashboard = template["Resources"]["OperationsDashboard"]
    assert dashboard["Type"] == "AWS::CloudWatch::Dashboard"
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    resources = template["Resources"]
    for name, attribute in REFERENCE.findall(text):
        assert name.startswith("AWS::") or name in resources, f"unknown reference {name}"
        if attribute:
            assert attribute in ("QueueName", "Arn"), attribute
    parsed = json.loads(REFERENCE.sub("placeholder", text))
    assert isinstance(parsed, dict)
    return parsed


def widgets_titled(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["properties"]["title"]: w for w in body["widgets"]}


def qbo_metrics(body: dict[str, Any]) -> set[str]:
    names = set()
    for widget in body["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            if metric[0] == "QboConnect":
                assert metric[2:4] == ["service", "qbo-connect"]  # Powertools' dimension
                names.add(metric[1])
    return names


def test_dashboard_covers_what_operators_watch(body):
    titles = " | ".join(widgets_titled(body)).lower()
    for topic in (
        "refreshes",
        "failures by class",
        "connections by health",
        "sweep duration",
        "sweep backlog",
        "dead-letter",
        "gettoken latency",
        "callback outcomes",
        "webhooks received",
        "webhook changes",
    ):
        assert topic in titles, topic


def test_every_failure_class_is_plotted(body):
    names = qbo_metrics(body)
    for cls in FAILURE_CLASSES:
        assert ("InvalidGrant" if cls == "invalid_grant" else f"RefreshFailed_{cls}") in names


def test_every_plotted_metric_is_emitted_by_the_package(body):
    # The package with its subpackages, and the handlers (the webhook gateway counts there).
    files = [*PACKAGE.rglob("*.py"), *(REPO_ROOT / "functions").glob("*/app.py")]
    source = "\n".join(p.read_text(encoding="utf-8") for p in files)
    derived = {"InvalidGrant"} | {f"RefreshFailed_{c}" for c in FAILURE_CLASSES}
    missing = sorted(n for n in qbo_metrics(body) - derived if f'"{n}"' not in source)
    assert not missing, f"plotted but never emitted: {missing}"


def test_log_widgets_read_the_fields_the_code_logs(body):
    queries = [w["properties"]["query"] for w in body["widgets"] if w["type"] == "log"]
    source = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    for query in queries:
        for message in re.findall(r"message = '([^']+)'", query):
            literal = message.replace("Callback answered", "{route} answered")
            assert f'"{literal}"' in source or f'f"{literal}"' in source, message


def test_serverless_repo_metadata_is_publishable(template):
    app = template["Metadata"]["AWS::ServerlessRepo::Application"]
    for key in ("Name", "Description", "Author", "SpdxLicenseId", "SemanticVersion"):
        assert app[key], key
    assert re.fullmatch(r"\d+\.\d+\.\d+", app["SemanticVersion"])
    assert (REPO_ROOT / app["LicenseUrl"]).is_file()
    assert (REPO_ROOT / app["ReadmeUrl"]).is_file()
    assert app["SourceCodeUrl"].startswith("https://")
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'version = "{app["SemanticVersion"]}"' in pyproject
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{app['SemanticVersion']}]" in changelog
