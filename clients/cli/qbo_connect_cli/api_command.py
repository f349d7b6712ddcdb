"""``qbo-connect api METHOD PATH --realm REALM``: one QuickBooks call through the proxy.

The request id of a POST is made here, before the first invoke, so the Lambda client's own
retries of that invoke send the same ``requestid`` and QuickBooks creates the entity once.
The answer is printed as QuickBooks gave it (its body as JSON on stdout, the status line on
stderr); the token never reaches this process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from qbo_connect_cli import output
from qbo_connect_cli.backend import API_FUNCTION, EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError


def _body(value: str | None) -> Any:
    """``@file.json`` (JSON, or text for a query) or inline JSON."""
    if value is None:
        return None
    if value.startswith("@"):
        try:
            raw = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(
                "usage", f"cannot read {value[1:]}: {exc.strerror}", EXIT_USAGE
            ) from None
    else:
        raw = value
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a query's text body (content type application/text)


def _query(pairs: Sequence[str]) -> dict[str, str] | None:
    query: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CliError("usage", f"--query takes NAME=VALUE, not {pair!r}", EXIT_USAGE)
        query[name] = value
    return query or None


def register(group: click.Group, command_body: Callable[..., Any]) -> None:
    """Add ``api`` to the CLI (``command_body`` gives ``--json`` and the error report)."""

    @group.command("api")
    @click.argument("method", type=click.Choice(["GET", "POST"], case_sensitive=False))
    @click.argument("path")
    @click.option("--realm", required=True, help="The company (realm id).")
    @click.option("--tenant", help="Act for this tenant: another tenant's company is refused.")
    @click.option("--query", "query", multiple=True, metavar="NAME=VALUE", help="Repeatable.")
    @click.option("--body", metavar="@FILE|JSON", help="POST body: @file.json or inline JSON.")
    @click.option("--content-type", help="Content type of the body (default: JSON's).")
    @click.option("--request-id", help="Idempotency key of a POST (default: a new one).")
    @click.option("--minorversion", type=int, help="At least the stack's QuickBooksMinorVersion.")
    @click.option("--max-wait-seconds", type=click.FloatRange(0, 60), help="Wait for room.")
    @command_body
    def api(
        options: Any,
        method: str,
        path: str,
        realm: str,
        tenant: str | None,
        query: Sequence[str],
        body: str | None,
        content_type: str | None,
        request_id: str | None,
        minorversion: int | None,
        max_wait_seconds: float | None,
    ) -> int:
        """Call QuickBooks: METHOD (GET or POST) PATH relative to /v3/company/REALM/.

        \b
        qbo-connect api GET companyinfo/9130... --realm 9130...
        qbo-connect api POST invoice --realm 9130... --body @invoice.json
        """
        method = method.upper()
        if method == "POST" and request_id is None:
            request_id = uuid.uuid4().hex[:32]
        payload = {
            "realm_id": realm,
            "tenant_id": tenant,
            "method": method,
            "path": path,
            "query": _query(query),
            "body": _body(body),
            "content_type": content_type,
            "request_id": request_id,
            "minorversion": minorversion,
            "max_wait_seconds": max_wait_seconds,
        }
        answer = options.target().invoke(
            API_FUNCTION, {k: v for k, v in payload.items() if v is not None}
        )
        status = int(answer.get("status") or 0)
        if options.json:
            output.print_json(answer)
        else:
            output.print_json(answer.get("body"))
            line = f"HTTP {status}; intuit_tid {answer.get('intuit_tid')}; "
            line += f"attempts {answer.get('attempts')}; waited {answer.get('waited_ms')} ms"
            if answer.get("request_id"):
                line += f"; request_id {answer['request_id']}"
            output.err().print(output.plain(line))
        return EXIT_OK if 200 <= status < 300 else EXIT_FAILED
