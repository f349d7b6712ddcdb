"""``qbo-connect changes``: the change feed's reconciliation, run now, and its status.

Registered on the ``qbo-connect`` group when ``main`` loads (imported at its end).
"""

from __future__ import annotations

from typing import Any

import click

from qbo_connect_cli import output
from qbo_connect_cli.backend import EXIT_OK
from qbo_connect_cli.main import Options, cli, command_body, realm_command

STATUS_COLUMNS = (
    ("realm_id", "realm"),
    ("status", "connection"),
    ("watermark", "reconciled up to"),
    ("last_run", "last run"),
    ("next_run", "next run"),
    ("recovered", "recovered"),
)


@cli.group()
def changes() -> None:
    """The change feed: webhooks reconciled with QuickBooks' CDC, per realm."""


@realm_command(changes, "reconcile")
def changes_reconcile(options: Options, realm: str, tenant: str | None) -> int:
    """Reconcile REALM's changes with CDC now: publish what no webhook announced."""
    answer = options.connections("reconcile_changes", realm_id=realm, tenant_id=tenant)
    if options.json:
        output.print_json(answer)
        return EXIT_OK
    line = (
        f"Reconciled {realm} up to {answer.get('watermark')}: "
        f"{answer.get('published')} published, {answer.get('already_seen')} already seen"
    )
    output.out().print(output.plain(line))
    if answer.get("resync_required"):
        output.err().print(
            output.plain(
                "Its last reconciliation is older than CDC's 30 days: a "
                "quickbooks.resync_required event names the window that cannot be recovered."
            )
        )
    if answer.get("partial"):
        output.err().print(
            output.plain("Stopped at its deadline: run it again to go on (the schedule will).")
        )
    return EXIT_OK


@changes.command("status")
@click.option("--realm", help="One realm's feed.")
@click.option("--tenant", help="Every realm of this tenant (with --realm: only if it is theirs).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many realms.")
@command_body
def changes_status(
    options: Options, realm: str | None, tenant: str | None, limit: int | None
) -> int:
    """How far each realm's changes are reconciled, its last and next run, and how many changes
    reconciliation recovered (non-zero: webhooks lost them)."""
    if realm is None and tenant is None:
        raise click.UsageError("give --realm R, or --tenant T for all of a tenant's realms")
    if realm is not None:
        answer = options.connections("change_status", realm_id=realm, tenant_id=tenant)
        rows = [answer]
    else:
        rows = _all_realms(options, str(tenant), limit)
        answer = {"realms": rows}
    if options.json:
        output.print_json(answer)
        return EXIT_OK
    if not rows:
        output.err().print(output.plain(f"Tenant {tenant} has no connections."))
        return EXIT_OK
    output.out().print(output.table(STATUS_COLUMNS, rows, title="Change feed"))
    recovered = sum(int(r.get("recovered") or 0) for r in rows)
    if recovered:
        output.err().print(
            output.plain(
                f"{recovered} change(s) reached the bus only through reconciliation: "
                "webhooks are losing deliveries (check the webhook endpoint and verifier token)."
            )
        )
    return EXIT_OK


def _all_realms(options: Options, tenant: str, limit: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = options.connections(
            "change_status",
            tenant_id=tenant,
            limit=min(100, limit - len(rows)) if limit else 100,
            cursor=cursor,
        )
        rows.extend(page.get("realms") or [])
        cursor = page.get("next_cursor")
        if not cursor or (limit and len(rows) >= limit):
            return rows[:limit] if limit else rows
