"""Fixtures shared by the whole suite.

Fast tests use moto's in-process ``mock_aws`` for AWS (with the table built from template.yaml's
own properties, so tests cannot drift from the deploy) and the Intuit simulator over real HTTP
on loopback. The tests in tests/http start the local stack in a subprocess.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Never talk to a real AWS account from tests, whatever the developer's shell holds.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "qbo-connect")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "QboConnect")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

# Every AWS call a function makes in this session (in the local stack, reliability workers and
# in-process handlers, which inherit this variable) is recorded here for the IAM test
# (tests/iam). Set at import, before any conftest below installs the recorder.
_CALL_LOG_OWNED = "QBO_AWS_CALL_LOG_DIR" not in os.environ
if _CALL_LOG_OWNED:
    os.environ["QBO_AWS_CALL_LOG_DIR"] = tempfile.mkdtemp(prefix="qbo-aws-calls-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``after_suites`` read what the others recorded: they run last."""
    items.sort(key=lambda item: item.get_closest_marker("after_suites") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Note which tests this session runs, beside its call records, for the IAM test.

    Parallel workers (pytest-xdist) cannot order a test after all the others, so CI runs the
    ``after_suites`` tests in a second session over the same record directory; that session
    learns from these notes which suites the first one ran, and whether it ran them whole.
    Every worker collects the same tests and writes the same note under its own name.
    """
    directory = os.environ.get("QBO_AWS_CALL_LOG_DIR")
    if not directory or not session.items:
        return
    option = session.config.option
    note = {
        "paths": sorted({str(Path(item.path).resolve()) for item in session.items}),
        "args": [str(Path(arg.split("::", 1)[0]).resolve()) for arg in session.config.args],
        "keyword": getattr(option, "keyword", "") or "",
        "markexpr": getattr(option, "markexpr", "") or "",
    }
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    target = Path(directory) / f"session-{os.getpid()}-{worker}.json"
    target.write_text(json.dumps(note), encoding="utf-8")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this session's call records when it passed (kept for a look when it failed)."""
    if _CALL_LOG_OWNED and exitstatus == 0:
        shutil.rmtree(os.environ["QBO_AWS_CALL_LOG_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def template() -> dict:
    from devstack.template import load_template

    return load_template(REPO_ROOT / "template.yaml")


@pytest.fixture
def sim() -> Iterator:
    """An Intuit simulator over real HTTP with one registered client (grace 24 h like Intuit)."""
    from devstack.intuit_sim import IntuitSimulator

    simulator = IntuitSimulator(clients={"test-client": "test-secret"}, auto_approve=True)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@functools.cache
def _client(service: str) -> Any:
    """The aws fixture's clients, made once: moto intercepts a client whichever mock is active."""
    return boto3.client(service)


@pytest.fixture
def aws(template) -> Iterator[dict]:
    """moto in-process: the table from template.yaml, a KMS key, the client secret."""
    from moto import mock_aws

    from devstack.moto_fixes import apply_dynamodb_backend_lock, apply_kms_fixes
    from devstack.template import create_table_from_template

    # DynamoDB applies a conditional write atomically; in-process moto does not unless told to.
    apply_dynamodb_backend_lock()
    apply_kms_fixes()
    # A fresh moto per test, but the same boto3 default session: moto would otherwise drop it,
    # and every test would read botocore's service models from disk again (about 0.3 s each).
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        create_table_from_template(_client("dynamodb"), template, "connections-test")
        key_id = _client("kms").create_key()["KeyMetadata"]["Arn"]
        secret_arn = _client("secretsmanager").create_secret(
            Name="intuit-client",
            SecretString='{"client_id": "test-client", "client_secret": "test-secret"}',
        )["ARN"]
        yield {"table_name": "connections-test", "key_id": key_id, "secret_id": secret_arn}
