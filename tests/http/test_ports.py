"""``--any-ports``: stacks side by side start at the first try.

Before it, ``--api-port 0`` still left the Lambda API on 3001 and moto on 5000, so a second
stack failed on one port per try.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from devstack.__main__ import _ports, build_parser
from devstack.process import start_devstack


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"api_port": 3000, "lambda_port": 3001, "aws_port": 5000, "intuit_port": 0}),
        (["--any-ports"], {"api_port": 0, "lambda_port": 0, "aws_port": 0, "intuit_port": 0}),
        (
            ["--any-ports", "--api-port", "3000"],
            {"api_port": 3000, "lambda_port": 0, "aws_port": 0, "intuit_port": 0},
        ),
        (
            ["--api-port", "0"],
            {"api_port": 0, "lambda_port": 3001, "aws_port": 5000, "intuit_port": 0},
        ),
    ],
)
def test_any_ports_frees_every_port_not_given(argv, expected):
    assert _ports(build_parser().parse_args(argv)) == expected


def test_two_stacks_with_any_ports_start_together(tmp_path):
    # When two stacks start at the same time with --any-ports (what start_devstack passes)
    def start(name: str):
        return start_devstack(tmp_path / name, extra_args=["--no-schedule", "--no-connect-link"])

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start, name) for name in ("one", "two")]
    stacks = [future.result() for future in futures if future.exception() is None]
    try:
        # (a failed start is raised here, after the other stack is in the list to stop)
        for future in futures:
            future.result()
        # Then both are up, each on ports of its own
        ports = [
            urlsplit(str(stack.endpoints[key])).port
            for stack in stacks
            for key in ("api", "lambda", "aws", "intuit")
        ]
        assert len(set(ports)) == len(ports) == 8
        for stack in stacks:
            assert stack.health()["status"] == "ok"
            assert requests.get(stack.api + "/connect", timeout=10).status_code != 403
    finally:
        for stack in stacks:
            stack.stop()
