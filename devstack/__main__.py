"""``python -m devstack``: run the whole service locally (see devstack.stack).

The CLI mirrors ``sam local`` where it can (``--parameter-overrides K=V``) and keeps the exit
codes script-friendly: 0 after Ctrl-C/SIGTERM, 2 for a usage problem such as a taken port
(one line on stderr, no traceback), 1 if the stack failed to start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack.logs import ReadableStream
from devstack.stack import (
    DEFAULT_STATE_DIR,
    DEFAULT_TEMPLATE,
    LocalStack,
    PortInUseError,
    StackError,
)
from devstack.template import TemplateError

#: The fixed ports of ``make dev`` (the simulator's is any free one unless given).
DEFAULT_PORTS = {"api_port": 3000, "lambda_port": 3001, "aws_port": 5000, "intuit_port": 0}


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return port


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected an http(s)://host:port URL, got {value!r}")
    return value.rstrip("/")


def _override(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected Key=Value, got {value!r}")
    return key, val


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=(
            "Run qbo-connect locally without Docker: moto as AWS, the Intuit simulator, the "
            "HTTP API, the Lambda Invoke API, the SQS poller and the schedule. All on 127.0.0.1."
        ),
    )
    for option, serves, default in (
        ("--api-port", "HTTP API", 3000),
        ("--lambda-port", "Lambda Invoke API", 3001),
        ("--aws-port", "moto server", 5000),
    ):
        parser.add_argument(
            option, type=_port, default=None, help=f"{serves} (default {default}; 0 = any free)"
        )
    parser.add_argument(
        "--any-ports",
        action="store_true",
        help=(
            "every port not given explicitly is any free one, so stacks can run side by side "
            "(with a real Intuit app, keep its registered redirect URI's port: --api-port 3000)"
        ),
    )
    parser.add_argument(
        "--aws-endpoint",
        type=_endpoint,
        default=None,
        metavar="URL",
        help=(
            "use this existing AWS-compatible endpoint (another moto server, LocalStack, the "
            "fault proxy devstack.aws_faults) instead of starting moto; the table, key, secret, "
            "queues and bus are created there as usual. It must apply DynamoDB conditional "
            "writes atomically, as DynamoDB does (a plain moto server does not: serve "
            "devstack.moto_fixes.moto_app()); this stack cannot patch it from here"
        ),
    )
    parser.add_argument(
        "--attach",
        action="store_true",
        help=(
            "with --aws-endpoint: run the functions in this process (its own Lambda API and "
            "HTTP gateway, its own module state, like a second Lambda container) over the "
            "resources and Intuit simulator of the stack already running at that endpoint; "
            "no schedules or pollers (the first stack runs them)"
        ),
    )
    parser.add_argument(
        "--intuit-port", type=_port, default=None, help="Intuit simulator (default 0 = any free)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where endpoints.json is written (default: .devstack/ in the repository)",
    )
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help=argparse.SUPPRESS)
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        type=_override,
        default=[],
        metavar="KEY=VALUE",
        help="template parameter values, like sam deploy --parameter-overrides",
    )
    parser.add_argument(
        "--auto-approve",
        action="store_true",
        help="the simulator approves consent without showing its form",
    )
    parser.add_argument(
        "--refresh-grace",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="how long the simulator accepts a superseded refresh token (default 86400)",
    )
    parser.add_argument(
        "--sweep-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run scheduled functions this often instead of their rate()",
    )
    parser.add_argument("--no-schedule", action="store_true", help="do not run schedules")
    parser.add_argument("--no-poller", action="store_true", help="do not poll SQS event sources")
    parser.add_argument(
        "--no-connect-link",
        action="store_true",
        help="do not create a connect link at startup",
    )
    parser.add_argument(
        "--json-logs",
        action="store_true",
        help="print the functions' log records and metrics as raw JSON, as Lambda writes them "
        "(default: one readable line each)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _ports(args: argparse.Namespace) -> dict[str, int]:
    """The ports to listen on: explicit ones, else any free one (--any-ports), else defaults."""
    ports = {}
    for name, default in DEFAULT_PORTS.items():
        given = getattr(args, name)
        ports[name] = given if given is not None else 0 if args.any_ports else default
    return ports


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("devstack %(levelname)s %(message)s"))
    logger = logging.getLogger("devstack")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.attach and args.aws_endpoint is None:
        parser.error("--attach needs --aws-endpoint URL (the AWS endpoint of the first stack)")
    _configure_logging(args.verbose)
    readable = None
    if not args.json_logs:
        # Before any handler loads: Powertools' log handler keeps the stdout it saw at import.
        readable = ReadableStream(sys.stdout)
        sys.stdout = readable
    began = time.monotonic()
    ports = _ports(args)
    stack = LocalStack(
        api_port=ports["api_port"],
        lambda_port=ports["lambda_port"],
        aws_port=ports["aws_port"],
        intuit_port=ports["intuit_port"],
        aws_endpoint=args.aws_endpoint,
        attach=args.attach,
        state_dir=args.state_dir,
        template_path=args.template,
        parameter_overrides=dict(args.parameter_overrides),
        auto_approve=args.auto_approve,
        refresh_grace=args.refresh_grace,
        sweep_interval=args.sweep_interval,
        schedule=not args.no_schedule,
        poller=not args.no_poller,
    )

    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C while shutting down: leave now
            os._exit(1)
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            stack.start()
        except PortInUseError as exc:
            print(
                f"devstack: port {exc.port} ({exc.flag}) is not available: {exc.reason}; "
                f"pass another {exc.flag} (0 = any free port), or --any-ports for all of them",
                file=sys.stderr,
            )
            return 2
        except TemplateError as exc:
            print(f"devstack: template problem: {exc}", file=sys.stderr)
            return 2
        except StackError as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            return 2
        if readable is not None:
            readable.names = {rt.physical_name: lid for lid, rt in stack.functions.items()}
        _announce(stack, args.no_connect_link, began)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stopping = True
        print("devstack: stopping", flush=True)
        stack.stop()
        return 0


def _announce(stack: LocalStack, skip_link: bool, began: float) -> None:
    ep = stack.endpoints
    lines = [
        f"API (HTTP gateway)   {ep['api']}",
        f"Lambda invoke API    {ep['lambda']}",
        f"AWS (moto)           {ep['aws']}",
        f"Intuit               {ep['intuit'] or ep['intuit_env'].get('INTUIT_TOKEN_ENDPOINT', '')}",
        f"table                {ep['table']}",
    ]
    if ep.get("webhook_url"):
        lines.append(f"webhooks (POST)      {ep['webhook_url']} (token in endpoints.json)")
    if ep.get("events_queue"):
        lines.append(f"lifecycle events     {ep['events_queue']}")
    if ep.get("your_app"):
        lines.append(f"your app (return)    {ep['your_app']} (verifies the signed return)")
    lines.append(
        f"from your code       export QBO_CONNECT_ENDPOINTS={stack.state_dir / 'endpoints.json'}"
    )
    for line in lines:
        print(f"devstack:   {line}", flush=True)
    if not skip_link:
        url, problem = stack.connect_link()
        if problem is None:
            print(f"devstack: connect link: {url}", flush=True)
        else:
            print(f"devstack: connect page: {url} (no connect link: {problem})", flush=True)
    print(f"devstack: ready in {time.monotonic() - began:.2f}s; Ctrl-C stops", flush=True)


if __name__ == "__main__":
    sys.exit(main())
