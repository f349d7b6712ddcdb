"""What the benches share: the import path, progress lines, percentiles, a local AWS endpoint and
Intuit simulator with the resources the functions need, and where results are written.

Importing it puts ``layers/core`` and the repository root on ``sys.path`` (the benches run the
real handlers, as Lambda loads them) and writes no bytecode: a bench writes nothing outside
``bench/results/``. Each bench script is run as ``python bench/<name>.py``, so this module is
found next to it.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator, Mapping  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
for _path in (REPO_ROOT / "layers" / "core", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"
TABLE_NAME = "bench-connections"
TENANT_ID = "bench"

from devstack.handlers import LambdaContext, load_handler  # noqa: E402


def progress(message: str, *, name: str = "bench") -> None:
    print(f"[{name}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (``pct`` from 0 to 100)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


def latency_row(values_ms: list[float]) -> dict[str, float]:
    """The median, 99th percentile and mean of timings in milliseconds (a row of a table)."""
    import statistics

    return {
        "p50_ms": round(statistics.median(values_ms), 3),
        "p99_ms": round(percentile(values_ms, 99), 3),
        "mean_ms": round(statistics.fmean(values_ms), 3),
    }


def context(function_name: str) -> LambdaContext:
    return LambdaContext.for_function(function_name)


def create_resources(url: str) -> dict[str, str]:
    """The table (from template.yaml), the token key and the client secret at ``url``."""
    import boto3

    from devstack.template import create_table_from_template, load_template

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    create_table_from_template(
        session.client("dynamodb", endpoint_url=url),
        load_template(REPO_ROOT / "template.yaml"),
        TABLE_NAME,
    )
    key_id = session.client("kms", endpoint_url=url).create_key()["KeyMetadata"]["Arn"]
    secret_id = session.client("secretsmanager", endpoint_url=url).create_secret(
        Name="bench/intuit-client",
        SecretString=json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    )["ARN"]
    return {"key_id": key_id, "secret_id": secret_id}


@dataclass
class Local:
    """A moto server (counting requests per operation) and the Intuit simulator, with the
    functions' environment pointing at them."""

    moto: Any
    sim: Any

    def function(self, function_dir: str, logical_id: str) -> Callable[[dict[str, Any]], Any]:
        """The real handler of ``functions/<function_dir>``, called as Lambda calls
        ``logical_id`` (a fresh context each invocation)."""
        handler = load_handler(function_dir).lambda_handler
        return lambda event: handler(event, context(logical_id))

    def import_connection(self, realm_id: str) -> None:
        """One connection, imported through the real ConnectionsFunction."""
        issued = self.sim.issue_tokens(client_id=CLIENT_ID, realm_id=realm_id)
        imported = self.function("connections", "ConnectionsFunction")(
            {
                "action": "import_connection",
                "realm_id": realm_id,
                "tenant_id": TENANT_ID,
                "refresh_token": issued["refresh_token"],
            }
        )
        assert "connection" in imported, imported


@contextmanager
def local_functions(extra_env: Mapping[str, str] | None = None) -> Iterator[Local]:
    """Start moto and the simulator, create the resources, set the functions' environment."""
    from devstack.intuit_sim import IntuitSimulator
    from devstack.moto_server import start_process

    progress("starting moto server and the Intuit simulator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    moto = start_process(env)
    sim = IntuitSimulator(clients={CLIENT_ID: CLIENT_SECRET}, auto_approve=True).start()
    try:
        resources = create_resources(moto.url)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": moto.url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "TABLE_NAME": TABLE_NAME,
                "TOKEN_KEY_ID": resources["key_id"],
                "INTUIT_CLIENT_SECRET_ID": resources["secret_id"],
                "INTUIT_ENVIRONMENT": "sandbox",
                **sim.endpoints,
                "POWERTOOLS_SERVICE_NAME": "qbo-connect",
                "POWERTOOLS_METRICS_NAMESPACE": "QboConnect",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                **(extra_env or {}),
            }
        )
        warnings.filterwarnings("ignore", message="No application metrics")
        yield Local(moto, sim)
    finally:
        sim.stop()
        moto.stop()


def save_result(name: str, result: Mapping[str, Any], started: float) -> None:
    """``bench/results/<name>-<UTC time>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    progress(f"wrote {path.relative_to(REPO_ROOT)} ({result['duration_seconds']} s)", name=name)


def report(
    name: str,
    run: Callable[[], dict[str, Any]],
    render: Callable[[dict[str, Any]], str],
    *,
    save: bool = True,
) -> int:
    """Run a bench, add how long it took (``duration_seconds``), print its table and, unless
    ``save`` is false (``--no-save``), write its result. The exit code of the bench."""
    started = time.time()
    result = run()
    result["duration_seconds"] = round(time.time() - started, 1)
    print(render(result))
    if save:
        save_result(name, result, started)
    return 0
