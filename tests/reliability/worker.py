"""A separate process standing in for one Lambda container of the service.

It loads the real handlers by file path (``functions/get_token/app.py``,
``functions/connections/app.py``) with the env the test gives it, warms up (settings, clients,
the Intuit client secret), writes ``<out>.ready`` and waits for the test's go file, so that
every worker of a test starts calling at the same moment. Then ``--threads`` threads each call
the handler ``--calls`` times for every ``--realm`` (in a per-thread shuffled order), and the
handler responses are written as JSON to ``--out``. Logs go to stdout/stderr, which the test
reads (and checks for leaked tokens); results never go there.

``--crash-at`` makes the process SIGKILL itself at one step of the refresh protocol, by wrapping
a production method here (no test hook exists in the production code):

- ``after_lease``: the lease was acquired, Intuit not yet called;
- ``after_intuit``: Intuit answered the refresh (and may have rotated), nothing committed yet;
- ``after_commit``: the new tokens are committed, the caller not yet answered.

Before dying it writes ``<out>.crashed`` holding the step's name, so the test knows the crash
happened exactly there and not earlier.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
for _path in (REPO_ROOT / "layers" / "core", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

CRASH_POINTS = ("after_lease", "after_intuit", "after_commit")

from devstack import aws_calls  # noqa: E402
from devstack.handlers import LambdaContext, load_handler  # noqa: E402

#: Which function each action's handler is (its AWS calls are recorded under that name).
FUNCTION_OF_ACTION = {"get_token": "GetTokenFunction", "refresh": "ConnectionsFunction"}


def context(function_name: str) -> LambdaContext:
    return LambdaContext.for_function(function_name)


def install_crash_point(step: str, marker: Path) -> None:
    """Wrap the production method of ``step`` so the process dies right after it returns."""
    from qbo_connect.intuit import IntuitClient
    from qbo_connect.store.connections import ConnectionRepository

    def die() -> None:
        marker.write_text(step)
        os.kill(os.getpid(), signal.SIGKILL)

    def after(owner: type, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            die()
            return result

        setattr(owner, name, wrapped)

    if step == "after_lease":
        after(ConnectionRepository, "acquire_lease")
    elif step == "after_intuit":
        after(IntuitClient, "refresh")
    elif step == "after_commit":
        after(ConnectionRepository, "commit_refresh")
    else:
        raise SystemExit(f"unknown crash point {step!r}; one of {CRASH_POINTS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one simulated Lambda container")
    parser.add_argument("--realm", action="append", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1, help="calls per thread and realm")
    parser.add_argument("--interval", type=float, default=0.0, help="pause between rounds")
    parser.add_argument("--action", choices=("get_token", "refresh"), default="get_token")
    parser.add_argument("--min-valid", type=int, default=300)
    parser.add_argument("--crash-at", choices=CRASH_POINTS)
    parser.add_argument("--go-file", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    aws_calls.install_from_env()
    get_token = load_handler("get_token")
    connections = load_handler("connections")
    from qbo_connect.wiring import vault as wiring

    function = FUNCTION_OF_ACTION[args.action]
    # Warm up like a container that already served a request: clients built, secret cached.
    with aws_calls.attributed_to(function):
        wiring.vault()
        wiring.intuit()
    if args.crash_at:
        install_crash_point(args.crash_at, args.out.with_suffix(".crashed"))
    args.out.with_suffix(".ready").write_text(str(os.getpid()))
    if args.go_file is not None:
        deadline = time.monotonic() + 120
        while not args.go_file.exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go signal")
            time.sleep(0.005)

    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(args.threads)

    def call(realm_id: str) -> dict[str, Any]:
        if args.action == "refresh":
            return connections.lambda_handler(
                {"action": "refresh", "realm_id": realm_id}, context("ConnectionsFunction")
            )
        return get_token.lambda_handler(
            {"realm_id": realm_id, "min_valid_seconds": args.min_valid},
            context("GetTokenFunction"),
        )

    def run(thread: int) -> None:
        order = list(args.realm)
        random.Random(thread * 7919 + os.getpid()).shuffle(order)
        barrier.wait()
        for round_ in range(args.calls):
            if round_ and args.interval:
                time.sleep(args.interval)
            for realm_id in order:
                started = time.time()
                try:
                    with aws_calls.attributed_to(function):
                        response = call(realm_id)
                except Exception as exc:  # the handler must never raise; record it if it does
                    response = {"raised": type(exc).__name__}
                with lock:
                    results.append(
                        {
                            "pid": os.getpid(),
                            "thread": thread,
                            "round": round_,
                            "realm_id": realm_id,
                            "started": started,
                            "finished": time.time(),
                            "response": response,
                        }
                    )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
