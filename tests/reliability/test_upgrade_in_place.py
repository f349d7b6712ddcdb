"""An existing deployment upgrades in place: items written by the previous release are read and
written by this one.

The previous release's own code writes them (``PREVIOUS_RELEASE``, extracted from git history
into a temporary folder and run in a subprocess against the same moto server and simulator):
a connection imported through its ConnectionsFunction, a get_token, its history, the sweep's
run state and the refresh message its sweep enqueued. Then this release's handlers serve the
same table: the old sealed tokens open, the old history is listed, the old sweep state and queue
message are taken over, and a refresh commits over the old item. Nothing is migrated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from devstack import aws_calls
from tests.reliability.conftest import new_realm, service_env, token_is_valid_at_intuit

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The last commit before the package was reshaped into capability rooms (v0.1.0 items).
PREVIOUS_RELEASE = "0dc04c5"

OLD_WRITER = r"""
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import importlib.util
from devstack.handlers import LambdaContext

def handler(name):
    path = f"{sys.argv[2]}/functions/{name}/app.py"
    spec = importlib.util.spec_from_file_location(f"old_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler

realm, tenant, refresh_token = sys.argv[3], sys.argv[4], sys.argv[5]
connections = handler("connections")
out = {"import": connections({"action": "import_connection", "realm_id": realm,
        "tenant_id": tenant, "refresh_token": refresh_token},
        LambdaContext.for_function("ConnectionsFunction"))}
out["token"] = handler("get_token")({"realm_id": realm},
        LambdaContext.for_function("GetTokenFunction"))
out["history"] = connections({"action": "connection_history", "realm_id": realm},
        LambdaContext.for_function("ConnectionsFunction"))
import qbo_connect, qbo_connect.store
out["package"] = qbo_connect.__file__
out["store_module"] = qbo_connect.store.__file__
print(json.dumps(out))
"""


def previous_release(tmp_path: Path) -> Path:
    """The previous release's layer package and handlers, as ``git archive`` gives them."""
    archive = subprocess.run(
        [
            "git",
            "archive",
            "--format=tar",
            PREVIOUS_RELEASE,
            "layers/core/qbo_connect",
            "functions",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    assert (tmp_path / "layers/core/qbo_connect/store.py").is_file()  # the flat layout
    return tmp_path


def test_items_written_by_the_previous_release_are_served_by_this_one(
    harness, service, tmp_path, ledger
):
    # Given a connection the previous release imported and served
    old = previous_release(tmp_path / "previous")
    realm = new_realm()
    issued = harness.issue(realm)
    env = {**service_env(harness.aws, harness.sim), "PYTHONPATH": ""}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            OLD_WRITER,
            str(old / "layers/core"),
            str(old),
            realm,
            "tenant-old",
            issued["refresh_token"],
        ],
        cwd=REPO_ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    ledger.text("previous release stderr", run.stderr)
    assert run.returncode == 0, run.stderr[-2000:]
    written = json.loads(run.stdout.strip().splitlines()[-1])
    assert written["store_module"].endswith("qbo_connect/store.py"), written  # really the old code
    assert "connection" in written["import"], written["import"]
    old_token = written["token"]["access_token"]
    ledger.add(old_token)
    raw = harness.table.get_item(Key={"pk": f"REALM#{realm}", "sk": "CONNECTION"})["Item"]
    old_version = int(raw["version"])

    # When this release serves the same table
    current = service()
    token = current.get_token(realm)
    listed = current.connections({"action": "list_connections", "tenant_id": "tenant-old"})
    history = current.connections({"action": "connection_history", "realm_id": realm})
    refreshed = current.connections({"action": "refresh", "realm_id": realm})
    after = current.get_token(realm, min_valid_seconds=300)

    # Then the old sealed tokens open, the old rows are listed, and a refresh commits over them
    assert token["access_token"] == old_token
    assert [c["realm_id"] for c in listed["connections"]] == [realm]
    sources = [row["source"] for row in history["history"]]
    assert "import" in sources, history
    assert "connection" in refreshed, refreshed
    raw = harness.table.get_item(Key={"pk": f"REALM#{realm}", "sk": "CONNECTION"})["Item"]
    assert int(raw["version"]) == old_version + 1
    assert after["access_token"] != old_token
    assert token_is_valid_at_intuit(harness.sim, realm, after["access_token"])
    assert ledger.leaks() == []


def test_the_sweep_takes_over_the_previous_release_s_run_state_and_queue_messages(harness, service):
    # Given the previous release's sweep state item and one of its refresh messages in flight
    # (an earlier version's message still carries claimed_due_at)
    sqs = harness.aws.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"upgrade-{int(time.time() * 1000)}")["QueueUrl"]
    realm = new_realm()
    harness.connect(realm, tenant_id="tenant-old")
    before = harness.table.get_item(Key={"pk": f"REALM#{realm}", "sk": "CONNECTION"})["Item"]
    now = time.time()
    harness.table.put_item(
        Item={
            "pk": "SWEEP#DueIndex",
            "sk": "STATE",
            "last_run": "previous-run",
            "shard_00": {"watermark": int(now - 600), "stale_at": int(now - 600), "sent": []},
        }
    )
    old_message: dict[str, Any] = {
        "realm_id": realm,
        "due_at": now - 60,
        "enqueued_at": now - 30,
        "claimed_due_at": now - 60,
    }

    # When this release's sweep runs and its worker handles the old message
    service(REFRESH_QUEUE_URL=queue_url)  # this release's environment, a fresh container
    from qbo_connect.wiring import sweep as wiring

    with aws_calls.attributed_to("RefreshSweepFunction"):
        result = wiring.sweeper().run(remaining_ms=lambda: 60_000).as_dict()
    with aws_calls.attributed_to("RefreshWorkerFunction"):
        outcome = wiring.worker().process(json.dumps(old_message), message_id="old-1")

    # Then the sweep ran from the old state without failing, and the old message refreshed
    assert result["complete"] is True, result
    assert outcome in {"refreshed", "skipped_not_due"}, outcome
    item = harness.table.get_item(Key={"pk": "SWEEP#DueIndex", "sk": "STATE"})["Item"]
    assert item["last_run"] != "previous-run"
    stored = harness.table.get_item(Key={"pk": f"REALM#{realm}", "sk": "CONNECTION"})["Item"]
    assert int(stored["version"]) >= int(before["version"])
