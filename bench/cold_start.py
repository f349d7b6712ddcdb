"""Benchmark: what a cold start costs each function, and what each function weighs.

For every ``AWS::Serverless::Function`` in template.yaml (so functions added later are
measured without touching this file) it reports:

- **Import time** of the handler module in a fresh interpreter, as a ratio to a bare
  ``import boto3`` in the same run. Each round starts one process per function plus one that
  only imports boto3, in a shuffled order, and times the whole process (interpreter start
  included: that is what a cold start pays); the ratio is the median of the function's runs
  over the median of boto3's. Functions and the layer package are staged into a temporary
  directory laid out as Lambda lays them out (the function's code as the task root, the layer
  package as ``/opt/python``), without ``__pycache__`` and with ``PYTHONDONTWRITEBYTECODE=1``:
  Lambda's file system is read-only, so the package's own modules are compiled on every cold
  start there too, while boto3 and the layer's dependencies come with their bytecode.
- **Peak RSS after a warm invocation**: each function runs in its own process against a moto
  server over HTTP on 127.0.0.1 (the AWS endpoint: table built from template.yaml, KMS key,
  secret, queue) and the Intuit simulator, with a realistic event (a real connect link, a real
  authorization code, a stored connection), invoked twice (cold, then warm); the process's
  ``ru_maxrss`` is read after the warm one. A function the bench has no scenario for gets its
  sample event from ``events/`` (``events/<dir>.json``).
- **Built size** of each function and of the layer. From ``sam build``'s output when
  ``.aws-sam/build`` is newer than the layer's requirements; otherwise the layer is assembled
  the way ``sam build`` does it for python3.13 on arm64 (``pip install --platform
  manylinux2014_aarch64 --only-binary=:all:`` of layers/core/requirements.txt into a temporary
  directory, plus the package). The report says which. Sizes are unzipped (Lambda's 250 MB
  limit) and zipped (what is uploaded).

Absolute times are this machine's, under whatever else it is running; the ratios are the point.
Nothing is written outside a temporary directory except the result in bench/results/.

    python bench/cold_start.py [--rounds 15] [--skip-rss] [--skip-size] [--check]
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write nothing outside bench/results/

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import harness  # noqa: E402  (bench/harness.py, next to this script: it sets the import path)
from harness import CLIENT_ID, REPO_ROOT, TABLE_NAME, create_resources  # noqa: E402

LAYER_DIR = REPO_ROOT / "layers" / "core"
REGION = "us-east-1"
REALM_ID = "9130357766042906"
PUBLIC_BASE_URL = "https://connect.bench.test"
WEBHOOK_VERIFIER = "bench-webhook-verifier-token"
TARGET_GET_TOKEN = 1.3
TARGET_EVERY_FUNCTION = 1.6
# Environment both the boto3 baseline and the functions import under (as Globals sets it).
IMPORT_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "POWERTOOLS_SERVICE_NAME": "qbo-connect",
    "POWERTOOLS_METRICS_NAMESPACE": "QboConnect",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
}


def progress(message: str) -> None:
    harness.progress(message, name="cold_start")


def load_functions() -> dict[str, dict[str, Any]]:
    from devstack.template import functions, load_template

    return functions(load_template(REPO_ROOT / "template.yaml"))


def clean_env() -> dict[str, str]:
    """This process's environment without anything that changes how Python imports."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "AWS_", "POWERTOOLS_")) and k != "VIRTUAL_ENV"
    }
    env.update(IMPORT_ENV)
    return env


# ----- import time ----------------------------------------------------------------------------


def stage(
    functions: dict[str, dict[str, Any]], root: Path, python: str, bytecode: bool
) -> dict[str, Path]:
    """Copy each function's code and the layer package as Lambda lays them out."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    opt = root / "opt" / "python"
    shutil.copytree(LAYER_DIR / "qbo_connect", opt / "qbo_connect", ignore=ignore)
    if bytecode:  # as layers/core/Makefile ships it: pycs used without timestamp checks
        subprocess.run(
            [python, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(opt)],
            check=True,
            capture_output=True,
        )
    tasks: dict[str, Path] = {}
    for logical_id, fn in functions.items():
        task = root / "task" / logical_id
        shutil.copytree(REPO_ROOT / fn["code_uri"], task, ignore=ignore)
        tasks[logical_id] = task
    return tasks


def run_timed(argv: list[str], cwd: str, env: dict[str, str], name: str) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one whole child process."""
    started = time.perf_counter()
    child = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall_ms = (time.perf_counter() - started) * 1000
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"importing {name} failed:\n{stderr[-2000:]}")
    return wall_ms, (usage.ru_utime + usage.ru_stime) * 1000


def measure_imports(
    functions: dict[str, dict[str, Any]], rounds: int, python: str, bytecode: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qbo-cold-start-") as tmp:
        root = Path(tmp)
        tasks = stage(functions, root, python, bytecode)
        opt = str(root / "opt" / "python")
        base_env = clean_env()

        def command(name: str) -> tuple[list[str], str, dict[str, str]]:
            if name == "boto3":
                env = dict(base_env, PYTHONPATH=opt)
                return [python, "-c", "import boto3"], str(root), env
            module = functions[name]["handler"].rsplit(".", 1)[0]
            task = str(tasks[name])
            env = dict(base_env, PYTHONPATH=os.pathsep.join((task, opt)))
            env["AWS_LAMBDA_FUNCTION_NAME"] = name
            return [python, "-c", f"import {module}"], task, env

        names = ["boto3", *functions]
        timings: dict[str, list[float]] = {name: [] for name in names}
        wall: dict[str, list[float]] = {name: [] for name in names}
        rng = random.Random(12)  # a reproducible order
        for round_no in range(rounds + 1):  # round 0 warms the file cache and is not kept
            order = names[:]
            rng.shuffle(order)
            for name in order:
                argv, cwd, env = command(name)
                wall_ms, cpu_ms = run_timed(argv, cwd, env, name)
                if round_no:
                    timings[name].append(cpu_ms)
                    wall[name].append(wall_ms)
            if round_no:
                progress(f"imports: round {round_no}/{rounds}")
        version = subprocess.run(
            [
                python,
                "-c",
                "import platform, boto3; print(platform.python_version(), boto3.__version__)",
            ],
            env=dict(base_env, PYTHONPATH=opt),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    boto3_ms = statistics.median(timings["boto3"])
    boto3_wall = statistics.median(wall["boto3"])
    return {
        "rounds": rounds,
        "layer_bytecode": bytecode,
        "python": version[0],
        "boto3": version[1],
        "boto3_median_ms": round(boto3_ms, 1),
        "boto3_median_wall_ms": round(boto3_wall, 1),
        "boto3_samples_ms": [round(t, 1) for t in timings["boto3"]],
        "functions": {
            name: {
                "median_ms": round(statistics.median(timings[name]), 1),
                "ratio": round(statistics.median(timings[name]) / boto3_ms, 2),
                "wall_ratio": round(statistics.median(wall[name]) / boto3_wall, 2),
                "samples_ms": [round(t, 1) for t in timings[name]],
            }
            for name in functions
        },
    }


# ----- peak RSS after a warm invocation -------------------------------------------------------


@contextlib.contextmanager
def local_aws_and_intuit() -> Iterator[tuple[dict[str, str], Any]]:
    """moto server + Intuit simulator + resources; yields the env every function runs with."""
    import boto3

    from devstack.intuit_sim import IntuitSimulator
    from devstack.moto_server import start_process

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    moto = start_process(env)
    sim = IntuitSimulator(clients={CLIENT_ID: harness.CLIENT_SECRET}, auto_approve=True).start()
    try:
        resources = create_resources(moto.url)
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        secrets = session.client("secretsmanager", endpoint_url=moto.url)
        sqs = session.client("sqs", endpoint_url=moto.url)
        queue_url = sqs.create_queue(QueueName="bench-refresh")["QueueUrl"]
        webhook_queue = sqs.create_queue(QueueName="bench-webhooks")["QueueUrl"]
        webhook_dlq = sqs.create_queue(QueueName="bench-webhooks-dlq")["QueueUrl"]
        verifier_id = secrets.create_secret(
            Name="bench/webhook-verifier", SecretString=WEBHOOK_VERIFIER
        )["ARN"]
        yield (
            {
                "AWS_ENDPOINT_URL": moto.url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "TABLE_NAME": TABLE_NAME,
                "TOKEN_KEY_ID": resources["key_id"],
                "INTUIT_CLIENT_SECRET_ID": resources["secret_id"],
                "INTUIT_ENVIRONMENT": "sandbox",
                "REFRESH_QUEUE_URL": queue_url,
                "WEBHOOK_VERIFIER_SECRET_ID": verifier_id,
                "WEBHOOK_QUEUE_URL": webhook_queue,
                "WEBHOOK_DEAD_LETTER_QUEUE_URL": webhook_dlq,
                "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
                "CONNECT_BASE_URL": PUBLIC_BASE_URL,
                "POWERTOOLS_SERVICE_NAME": "qbo-connect",
                "POWERTOOLS_METRICS_NAMESPACE": "QboConnect",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                **sim.endpoints,
            },
            sim,
        )
    finally:
        sim.stop()
        moto.stop()


def http_event(name: str, query: str, cookies: list[str] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / f"{name}.json").read_text())
    event["rawQueryString"] = query
    event["queryStringParameters"] = {k: v[-1] for k, v in parse_qs(query).items()}
    if cookies is not None:
        event["cookies"] = cookies
    return event


def prepare(env: dict[str, str], sim: Any) -> dict[str, list[Any]]:
    """Store one connection and make the events each scenario needs, twice (cold, warm).

    Runs the real handlers in this process: ConnectionsFunction imports the connection and
    creates connect links; ConnectFunction and the simulator's consent give the callback a real
    state cookie and authorization code (each usable once, hence one per invocation).
    """
    import requests

    from devstack.handlers import LambdaContext, load_handler

    os.environ.update(env)
    connections = load_handler("connections", module_prefix="bench_prepare")
    connect = load_handler("connect", module_prefix="bench_prepare")
    issued = sim.issue_tokens(client_id=CLIENT_ID, realm_id=REALM_ID)
    imported = connections.lambda_handler(
        {
            "action": "import_connection",
            "realm_id": REALM_ID,
            "tenant_id": "bench",
            "refresh_token": issued["refresh_token"],
        },
        LambdaContext.for_function("ConnectionsFunction"),
    )
    if "connection" not in imported:
        raise SystemExit(f"could not store the bench connection: {imported.get('error')}")

    def link() -> str:
        made = connections.lambda_handler(
            {"action": "create_connect_link", "tenant_id": "bench"},
            LambdaContext.for_function("ConnectionsFunction"),
        )
        if "url" not in made:
            raise SystemExit(f"could not create a connect link: {made.get('error')}")
        return str(parse_qs(urlsplit(made["url"]).query)["session"][0])

    def callback_event() -> dict[str, Any]:
        redirect = connect.lambda_handler(
            http_event("connect", f"session={link()}&go=1"),
            LambdaContext.for_function("ConnectFunction"),
        )
        if redirect.get("statusCode") != 302:
            raise SystemExit(f"connect did not redirect: {redirect.get('statusCode')}")
        consent = requests.get(redirect["headers"]["Location"], allow_redirects=False, timeout=10)
        query = urlsplit(consent.headers["Location"]).query
        cookie = redirect["cookies"][0].split(";", 1)[0]
        return http_event("callback", query, [cookie])

    sqs = json.loads((REPO_ROOT / "events" / "refresh_worker.json").read_text())
    events: dict[str, list[Any]] = {
        "GetTokenFunction": [{"realm_id": REALM_ID, "min_valid_seconds": 300}] * 2,
        "ConnectionsFunction": [{"action": "get_connection", "realm_id": REALM_ID}] * 2,
        "ConnectFunction": [http_event("connect", f"session={link()}&go=1") for _ in range(2)],
        "CallbackFunction": [callback_event() for _ in range(2)],
        "RefreshSweepFunction": [
            json.loads((REPO_ROOT / "events" / "refresh_sweep.json").read_text())
        ]
        * 2,
        # The worker refreshes the stored connection for real (one Intuit call each).
        "RefreshWorkerFunction": [sqs, sqs],
    }
    webhook_sample = REPO_ROOT / "events" / "webhook.json"
    if webhook_sample.exists():
        # Intuit's delivery of the sample payload, signed with the bench's verifier token.
        from qbo_connect.webhooks.signature import sign

        delivery = json.loads(webhook_sample.read_text())
        delivery["headers"]["intuit-signature"] = sign(delivery["body"].encode(), WEBHOOK_VERIFIER)
        events["WebhookFunction"] = [delivery, delivery]
    return events


SUCCESS: dict[str, Callable[[Any], bool]] = {
    "GetTokenFunction": lambda r: "access_token" in r,
    "ConnectionsFunction": lambda r: "connection" in r,
    "ConnectFunction": lambda r: r.get("statusCode") == 302,
    "CallbackFunction": lambda r: r.get("statusCode") in (200, 302),
    "RefreshSweepFunction": lambda r: "enqueued" in r,
    "RefreshWorkerFunction": lambda r: r.get("batchItemFailures") == [],
    "WebhookFunction": lambda r: r.get("statusCode") == 200,
    "WebhookProcessorFunction": lambda r: r.get("batchItemFailures") == [],
}


def invoke_child(plan_path: str) -> int:
    """``--invoke``: run one function's events in this process, print peak RSS as JSON."""
    import resource
    import warnings

    plan = json.loads(Path(plan_path).read_text())
    os.environ.update(plan["env"])
    warnings.filterwarnings("ignore", message="No application metrics")
    from devstack.handlers import LambdaContext, load_handler

    module = load_handler(plan["function_dir"])
    handler = getattr(module, plan["handler"].rsplit(".", 1)[1])
    check = SUCCESS.get(plan["logical_id"])
    outcomes = []
    for event in plan["events"]:
        context = LambdaContext.for_function(plan["logical_id"], timeout_seconds=plan["timeout"])
        try:
            result = handler(event, context)
        except Exception as exc:  # a sample event may well be refused: the RSS is still real
            outcomes.append({"raised": type(exc).__name__, "ok": check is None})
            continue
        outcomes.append({**summarise(result), "ok": True if check is None else check(result)})
    peak_kb = peak_rss_kb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    sys.stdout.write(json.dumps({"peak_rss_kb": peak_kb, "outcomes": outcomes}) + "\n")
    return 0


def peak_rss_kb(ru_maxrss: int) -> int:
    """This process's own high-water RSS: VmHWM where Linux has it.

    ``ru_maxrss`` is no good on Linux here: across ``execve`` it keeps the larger of the
    parent's RSS at fork time and the child's, so every child would report the bench's own size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return ru_maxrss


def summarise(result: Any) -> dict[str, Any]:
    """What an invocation answered, without token material (the bench prints it)."""
    if not isinstance(result, dict):
        return {"type": type(result).__name__}
    if "statusCode" in result:
        return {"statusCode": result["statusCode"]}
    if isinstance(result.get("error"), dict):
        return {"error": result["error"].get("code")}
    return {"keys": sorted(result)[:6]}


def measure_rss(functions: dict[str, dict[str, Any]], python: str) -> dict[str, Any]:
    progress("starting moto server and the Intuit simulator for the RSS runs")
    saved = dict(os.environ)
    try:
        with local_aws_and_intuit() as (env, sim), tempfile.TemporaryDirectory() as tmp:
            with contextlib.redirect_stdout(io.StringIO()):  # the handlers' EMF lines
                events = prepare(env, sim)
            result: dict[str, Any] = {}
            for logical_id, fn in functions.items():
                function_dir = Path(fn["code_uri"]).name
                scenario = events.get(logical_id)
                source = "scenario"
                if scenario is None:
                    sample = REPO_ROOT / "events" / f"{function_dir}.json"
                    payload = json.loads(sample.read_text()) if sample.exists() else {}
                    scenario = [payload, payload]
                    source = f"events/{sample.name}" if sample.exists() else "empty event"
                plan = Path(tmp) / f"{logical_id}.json"
                plan.write_text(
                    json.dumps(
                        {
                            "env": env,
                            "function_dir": function_dir,
                            "handler": fn["handler"],
                            "logical_id": logical_id,
                            "timeout": fn["timeout"],
                            "events": scenario,
                        }
                    )
                )
                child_env = {k: v for k, v in saved.items() if not k.startswith("AWS_")}
                child_env["PYTHONDONTWRITEBYTECODE"] = "1"
                done = subprocess.run(
                    [python, str(Path(__file__).resolve()), "--invoke", str(plan)],
                    cwd=REPO_ROOT,
                    env=child_env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                lines = [line for line in done.stdout.splitlines() if line.startswith('{"peak')]
                if done.returncode != 0 or not lines:
                    raise SystemExit(f"{logical_id} failed:\n{done.stderr[-3000:]}")
                measured = json.loads(lines[-1])
                if not all(o["ok"] for o in measured["outcomes"]):
                    raise SystemExit(f"{logical_id}: an invocation failed: {measured['outcomes']}")
                warm = {k: v for k, v in measured["outcomes"][-1].items() if k != "ok"}
                result[logical_id] = {
                    "peak_rss_mb": round(measured["peak_rss_kb"] / 1024, 1),
                    "events": source,
                    "warm_outcome": warm,
                }
                progress(f"RSS {logical_id}: {result[logical_id]['peak_rss_mb']} MB ({warm})")
            return result
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ----- built size -----------------------------------------------------------------------------


def tree_size(root: Path) -> dict[str, float]:
    """Unzipped bytes and the size of a deflate zip of the tree, both in MB."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    raw = sum(p.stat().st_size for p in files)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in files:
            zf.write(path, path.relative_to(root))
    return {
        "unzipped_mb": round(raw / 1e6, 3),
        "zipped_mb": round(len(buffer.getvalue()) / 1e6, 3),
    }


def find_python313() -> str | None:
    """A python3.13 for building the layer as sam build would (PATH, then pyenv)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which("python3.13")]
    candidates += [str(p) for p in sorted(pyenv_root.glob("versions/3.13.*/bin/python3.13"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "pass"], capture_output=True)
        if probe.returncode == 0:  # a pyenv shim with no 3.13 selected fails here
            return candidate
    return None


def measure_sizes(functions: dict[str, dict[str, Any]], build_dir: Path) -> dict[str, Any]:
    inputs = [LAYER_DIR / "requirements.txt", LAYER_DIR / "Makefile"]
    inputs += list((LAYER_DIR / "qbo_connect").rglob("*.py"))
    layer_build = build_dir / "CoreLayer"
    fresh = layer_build.is_dir() and layer_build.stat().st_mtime >= max(
        p.stat().st_mtime for p in inputs
    )
    sizes: dict[str, Any] = {}
    if fresh:
        method = f"sam build output in {build_dir}"
        sizes["CoreLayer"] = tree_size(layer_build)
        for logical_id, fn in functions.items():
            built = build_dir / logical_id
            sizes[logical_id] = tree_size(built if built.is_dir() else REPO_ROOT / fn["code_uri"])
        return {"method": method, "sizes": sizes}
    python = find_python313() or sys.executable
    method = (
        f"no fresh sam build output: the layer built by `make -C layers/core build-CoreLayer` "
        f"(what sam build runs; python3.13/arm64 wheels, compiled by {python}); "
        "functions: their CodeUri"
    )
    progress("building the layer with layers/core/Makefile (no fresh sam build output)")
    with tempfile.TemporaryDirectory(prefix="qbo-layer-") as tmp:
        done = subprocess.run(
            [
                "make",
                "-s",
                "-C",
                str(LAYER_DIR),
                "build-CoreLayer",
                f"ARTIFACTS_DIR={tmp}",
                f"PYTHON={python}",
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"the layer build failed:\n{done.stderr[-2000:]}")
        sizes["CoreLayer"] = tree_size(Path(tmp))
        target = Path(tmp) / "python"
        biggest = sorted(
            (
                (sum(f.stat().st_size for f in d.rglob("*") if f.is_file()), d.name)
                for d in target.iterdir()
                if d.is_dir() and not d.name.endswith(".dist-info")
            ),
            reverse=True,
        )[:5]
        sizes["CoreLayer"]["largest_packages_mb"] = {n: round(b / 1e6, 2) for b, n in biggest}
    for logical_id, fn in functions.items():
        with tempfile.TemporaryDirectory() as fn_tmp:
            staged = Path(fn_tmp) / "code"
            shutil.copytree(
                REPO_ROOT / fn["code_uri"],
                staged,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
            sizes[logical_id] = tree_size(staged)
    return {"method": method, "sizes": sizes}


# ----- report ---------------------------------------------------------------------------------


def verdicts(result: dict[str, Any]) -> list[tuple[str, bool]]:
    ratios = {k: v["ratio"] for k, v in result["imports"]["functions"].items()}
    found: list[tuple[str, bool]] = []
    if "GetTokenFunction" in ratios:
        found.append(
            (
                f"GetTokenFunction import ratio {ratios['GetTokenFunction']:.2f} "
                f"<= {TARGET_GET_TOKEN}",
                ratios["GetTokenFunction"] <= TARGET_GET_TOKEN,
            )
        )
    worst = max(ratios, key=lambda k: ratios[k])
    found.append(
        (
            f"every function's import ratio <= {TARGET_EVERY_FUNCTION} "
            f"(highest: {worst} {ratios[worst]:.2f})",
            ratios[worst] <= TARGET_EVERY_FUNCTION,
        )
    )
    return found


def render(result: dict[str, Any]) -> str:
    imports = result["imports"]
    rss = result.get("rss") or {}
    sizes = (result.get("size") or {}).get("sizes") or {}
    nan = float("nan")
    lines = [
        f"import of each handler module: CPU time of a fresh Python {imports['python']} "
        f"process, {imports['rounds']} interleaved rounds, medians, layer "
        f"{'with' if imports.get('layer_bytecode', True) else 'WITHOUT'} bytecode; "
        f"bare `import boto3` ({imports['boto3']}) = {imports['boto3_median_ms']:.0f} ms",
        "",
        f"{'function':26}{'import ms':>10}{'x boto3':>9}{'peak RSS MB':>13}"
        f"{'code KB':>9}{'zip KB':>8}{'MemorySize':>12}",
    ]
    for name, row in imports["functions"].items():
        size = sizes.get(name, {})
        lines.append(
            f"{name:26}{row['median_ms']:>10.0f}{row['ratio']:>9.2f}"
            f"{rss.get(name, {}).get('peak_rss_mb', nan):>13.1f}"
            f"{size.get('unzipped_mb', nan) * 1000:>9.1f}{size.get('zipped_mb', nan) * 1000:>8.1f}"
            f"{result['memory_size'][name]:>12}"
        )
    if "CoreLayer" in sizes:
        layer = sizes["CoreLayer"]
        lines.append(
            f"CoreLayer: {layer['unzipped_mb']:.1f} MB unzipped, {layer['zipped_mb']:.1f} MB zipped"
        )
        if "largest_packages_mb" in layer:
            biggest = ", ".join(f"{k} {v:g}" for k, v in layer["largest_packages_mb"].items())
            lines.append(f"  largest packages (MB): {biggest}")
        lines.append(f"  sizes from: {result['size']['method']}")
    if rss:
        lines.append(
            "peak RSS: VmHWM of a process that ran the handler cold, then warm, against a moto "
            "server and the Intuit simulator over HTTP"
        )
    lines.append("")
    for text, ok in verdicts(result):
        lines.append(f"{'PASS' if ok else 'FAIL'}  {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved import rounds (15)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter to import with (this one)"
    )
    parser.add_argument(
        "--no-layer-bytecode",
        action="store_true",
        help="stage the package without pycs (as SAM's python builder would ship it)",
    )
    parser.add_argument("--skip-rss", action="store_true", help="no peak-RSS runs")
    parser.add_argument("--skip-size", action="store_true", help="no built sizes")
    parser.add_argument(
        "--build-dir", default=str(REPO_ROOT / ".aws-sam" / "build"), help="sam build output"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--invoke", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.invoke:
        return invoke_child(args.invoke)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    started = time.time()
    functions = load_functions()
    progress(f"{len(functions)} functions in template.yaml: {', '.join(functions)}")
    result: dict[str, Any] = {
        "memory_size": {name: fn["memory_size"] for name, fn in functions.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    result["imports"] = measure_imports(
        functions, args.rounds, args.python, bytecode=not args.no_layer_bytecode
    )
    if not args.skip_rss:
        result["rss"] = measure_rss(functions, args.python)
    if not args.skip_size:
        result["size"] = measure_sizes(functions, Path(args.build_dir))
    result["duration_seconds"] = round(time.time() - started, 1)
    print(render(result))
    if not args.no_save:
        harness.save_result("cold_start", result, started)
    if args.check and not all(ok for _, ok in verdicts(result)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
