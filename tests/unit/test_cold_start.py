"""What keeps cold starts short: no tracing SDK, deferred imports, a layer that ships bytecode.

bench/cold_start.py measures the times; these tests pin the causes, so a change that brings
back the X-Ray SDK, an eager import of an HTTP or JWT stack on the get_token path, or the
Powertools event handler on the HTTP functions fails here instead of silently costing every
cold start. No timing is asserted.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack import template as tpl
from qbo_connect.connect.pages import BASE_HEADERS, HttpResult
from qbo_connect.connect.web import HttpRouter, respond

REPO_ROOT = Path(__file__).resolve().parents[2]
LAYER = REPO_ROOT / "layers" / "core"
FUNCTIONS = sorted((REPO_ROOT / "functions").glob("*/app.py"))

# Modules that only some paths need, by function: importing the handler must not load them.
NOT_AT_IMPORT = {
    "get_token": [
        "requests",
        "jwt",
        "aws_lambda_powertools.utilities.parameters",
        "cryptography.hazmat.primitives.ciphers",  # AES-GCM comes from the bindings
    ],
    "connect": [
        "aws_lambda_powertools.event_handler",
        "aws_lambda_powertools.utilities.data_classes",
        "jwt",
    ],
    "callback": [
        "aws_lambda_powertools.event_handler",
        "aws_lambda_powertools.utilities.data_classes",
    ],
}
# (Powertools itself imports its tracing module, which loads the X-Ray SDK only for a Tracer.)
NEVER = ["aws_xray_sdk", "wrapt"]


@functools.cache  # the same fresh import for every test that asks (a process is ~1 s of CPU)
def loaded_modules(function_dir: str) -> frozenset[str]:
    """sys.modules after importing ``functions/<dir>/app.py`` in a fresh interpreter."""
    code = (
        "import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import app; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT / "functions" / function_dir), str(LAYER)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return frozenset(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("function_dir", [p.parent.name for p in FUNCTIONS])
def test_no_function_imports_a_tracing_sdk(function_dir):
    # Given a handler imported as Lambda imports it
    modules = loaded_modules(function_dir)
    # Then neither the X-Ray SDK nor Powertools' Tracer came with it
    assert not [m for m in modules for name in NEVER if m == name or m.startswith(name + ".")]


@pytest.mark.parametrize(("function_dir", "deferred"), sorted(NOT_AT_IMPORT.items()))
def test_what_only_some_paths_need_is_imported_on_first_use(function_dir, deferred):
    # Given a handler imported as Lambda imports it
    modules = loaded_modules(function_dir)
    # Then the modules only some of its paths use are not loaded yet
    assert [name for name in deferred if name in modules] == []


def test_the_vault_seals_with_cryptography_s_own_aes_gcm():
    # The sealing module takes AESGCM from the bindings the public module aliases (see there)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from qbo_connect.vault import sealing

    assert sealing.AESGCM is AESGCM


def test_no_code_references_the_xray_sdk_or_the_tracer():
    # Given every module of the layer and every handler
    sources = [*LAYER.glob("qbo_connect/**/*.py"), *FUNCTIONS]
    offenders = []
    for path in sources:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n.startswith("aws_xray_sdk") or n.endswith(".Tracer") for n in names):
                offenders.append(str(path.relative_to(REPO_ROOT)))
    # Then none imports the X-Ray SDK or Powertools' Tracer
    assert offenders == []


def test_the_layer_does_not_ship_boto3_or_the_tracer_extra():
    # Given the layer's requirements (comments and blank lines aside)
    lines = [
        line.split("#", 1)[0].strip()
        for line in (LAYER / "requirements.txt").read_text().splitlines()
    ]
    names = [line.split("==")[0].split("[")[0].lower() for line in lines if line]
    # Then boto3/botocore come from the Lambda runtime and Powertools has no [tracer] extra
    assert "boto3" not in names and "botocore" not in names
    assert not [line for line in lines if "tracer" in line]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return tpl.load_template(REPO_ROOT / "template.yaml")


def test_tracing_is_lambdas_own_and_opentelemetry_is_opt_in(template):
    glob = template["Globals"]["Function"]
    # Then every function keeps Lambda active tracing
    assert glob["Tracing"] == "Active"
    # And the ADOT layer and its wrapper come only with the OpenTelemetryLayerArn parameter
    assert template["Parameters"]["OpenTelemetryLayerArn"]["Default"] == ""
    assert {
        "Fn::If": ["HasOpenTelemetry", {"Ref": "OpenTelemetryLayerArn"}, {"Ref": "AWS::NoValue"}]
    } in glob["Layers"]
    wrapper = glob["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"]
    assert wrapper == {
        "Fn::If": ["HasOpenTelemetry", "/opt/otel-instrument", {"Ref": "AWS::NoValue"}]
    }
    env = tpl.globals_env(template, tpl.Resolver(template, lambda logical_id, attr: "x"))
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in env  # off by default
    with_otel = tpl.Resolver(
        template,
        lambda logical_id, attr: "x",
        {"OpenTelemetryLayerArn": "arn:aws:lambda:us-east-1:123456789012:layer:otel:1"},
    )
    assert tpl.globals_env(template, with_otel)["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/otel-instrument"
    assert not [k for k in glob["Environment"]["Variables"] if k.startswith("POWERTOOLS_TRACER")]


def test_the_layer_is_built_with_bytecode_python_uses_without_timestamps(template):
    # Given how sam build builds CoreLayer
    layer = template["Resources"]["CoreLayer"]
    makefile = (LAYER / "Makefile").read_text()
    # Then it is our Makefile, which compiles everything with unchecked-hash pycs (SAM zips
    # files with a fixed 1980 timestamp, so timestamp pycs would never match their sources)
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert "build-CoreLayer:" in makefile
    assert "--invalidation-mode unchecked-hash" in makefile
    assert "--python-version 3.13" in makefile and "aarch64" in makefile


# ----- the HTTP router that replaced Powertools' resolver ----------------------------------------


def http_event(path: str, *, method: str = "GET", stage: str = "$default") -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {},
        "requestContext": {"http": {"method": method, "path": path}, "stage": stage},
    }


def page(status: int) -> HttpResult:
    return HttpResult(status=status, headers={**BASE_HEADERS}, body=f"<p>{status}</p>")


def test_router_dispatches_on_method_and_path_and_strips_a_named_stage():
    # Given a router with one route
    app = HttpRouter("Test")
    seen: list[str] = []

    @app.get("/connect")
    def connect(event):
        seen.append(event["rawPath"])
        return respond(page(200), route="Test")

    # When it gets the route, the route under a named stage, another path and another method
    ok = app.resolve(http_event("/connect"))
    staged = app.resolve(http_event("/prod/connect", stage="prod"))
    elsewhere = app.resolve(http_event("/elsewhere"))
    posted = app.resolve(http_event("/connect", method="POST"))
    # Then the route answers the first two, and our own 404 page the others
    assert ok["statusCode"] == staged["statusCode"] == 200
    assert seen == ["/connect", "/prod/connect"]
    assert elsewhere["statusCode"] == posted["statusCode"] == 404
    assert "Page not found" in elsewhere["body"]
    assert elsewhere["headers"]["Content-Type"] == "text/html; charset=utf-8"


def test_router_answers_an_unexpected_failure_with_a_page_not_a_traceback(caplog):
    # Given a route that fails in a way nobody planned for
    app = HttpRouter("Test")

    @app.get("/callback")
    def callback(event):
        raise RuntimeError("secret-detail-xyz")

    # When it is called
    result = app.resolve(http_event("/callback"))
    # Then the caller gets the escaped 500 page in the payload 2.0 shape, and no detail
    assert result["statusCode"] == 500
    assert set(result) == {"statusCode", "body", "isBase64Encoded", "headers", "cookies"}
    assert result["isBase64Encoded"] is False and result["cookies"] == []
    assert "secret-detail-xyz" not in result["body"] and "Traceback" not in result["body"]
