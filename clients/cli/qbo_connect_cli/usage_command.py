"""``qbo-connect usage``: the month's CorePlus and Core calls per tenant, and tenant quotas.

Registered on the ``qbo-connect`` group when ``main`` loads (the last import there).
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from qbo_connect_cli import output
from qbo_connect_cli.backend import CONNECTIONS_FUNCTION, EXIT_OK
from qbo_connect_cli.main import Options, cli, command_body

BAR_WIDTH = 30


def _bar(used: int, limit: int) -> Text:
    """A bar of ``used`` against ``limit`` (plain text, never markup)."""
    if limit <= 0:
        return Text("no quota")
    share = min(used / limit, 1.0)
    filled = round(share * BAR_WIDTH)
    style = "red" if share >= 1 else "yellow" if share >= 0.8 else "green"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (BAR_WIDTH - filled))
    bar.append(f" {100 * used / limit:.0f}%")
    return bar


def _print_report(answer: dict[str, Any]) -> None:
    console = output.out()
    totals = answer.get("totals") or {}
    limits = answer.get("limits") or {}
    soft = int(limits.get("soft_limit") or 0)
    console.print(
        output.plain(
            f"CorePlus usage for {answer.get('month')} (as of {answer.get('as_of')}): "
            f"{totals.get('coreplus', 0)} CorePlus, {totals.get('core', 0)} Core calls; "
            f"projected {answer.get('projected_coreplus')} CorePlus this month"
        )
    )
    if soft:
        line = Text("soft limit ")
        line.append(_bar(int(totals.get("coreplus") or 0), soft))
        line.append(f"  ({soft} of a {limits.get('monthly_budget')} budget)")
        console.print(line)
    if totals.get("sandbox_coreplus") or totals.get("sandbox_core"):
        console.print(
            Text(
                f"sandbox (not metered by Intuit): {totals.get('sandbox_coreplus', 0)} CorePlus, "
                f"{totals.get('sandbox_core', 0)} Core"
            )
        )
    tenants = answer.get("tenants") or []
    if not tenants:
        console.print(Text("No calls counted this month yet."))
    else:
        table = Table(title_justify="left", header_style="bold")
        for heading in ("tenant", "CorePlus", "Core", "quota", "of quota"):
            table.add_column(heading, overflow="fold")
        for tenant in tenants:
            quota = int(tenant.get("quota") or 0)
            table.add_row(
                Text(output.text(tenant.get("tenant_id"))),
                Text(str(tenant.get("coreplus", 0))),
                Text(str(tenant.get("core", 0))),
                Text(str(quota or "-")),
                _bar(int(tenant.get("coreplus") or 0), quota),
            )
        console.print(table)
    unflushed = answer.get("unflushed") or {}
    raw = answer.get("raw_token_reads") or {}
    note = f"Exact after a flush; unflushed at most {unflushed.get('bound')}."
    if raw.get("enabled"):
        note += " Calls made with raw tokens from GetTokenFunction are not counted."
    output.err().print(Text(note))


@cli.group(invoke_without_command=True)
@click.option("--month", metavar="YYYY-MM", help="The month (default: this one, UTC).")
@click.option("--tenant", help="Only this tenant.")
@command_body
def usage(options: Options, month: str | None, tenant: str | None) -> int:
    """CorePlus (read) and Core (write) calls of a month, per tenant; `set-quota`."""
    if click.get_current_context().invoked_subcommand is not None:
        return EXIT_OK
    answer = options.connections("usage", month=month, tenant_id=tenant)
    if options.json:
        output.print_json(answer)
    else:
        _print_report(answer)
    return EXIT_OK


@usage.command("set-quota")
@click.argument("tenant")
@click.argument("quota", metavar="N|default")
@command_body
def usage_set_quota(options: Options, tenant: str, quota: str) -> int:
    """Set TENANT's monthly CorePlus quota to N calls (0 = none; `default` = the stack's)."""
    if quota == "default":
        value: int | None = None
    elif quota.isdigit():
        value = int(quota)
    else:
        raise click.BadParameter("a whole number of calls, 0 for none, or `default`")
    # Sent as given: a null quota means "back to the stack's default".
    payload = {"action": "set_usage_quota", "tenant_id": tenant, "monthly_quota": value}
    answer = options.target().invoke(CONNECTIONS_FUNCTION, payload)
    if options.json:
        output.print_json(answer)
    else:
        output.out().print(
            output.plain(f"Tenant {tenant}: monthly CorePlus quota {answer.get('effective_quota')}")
        )
    return EXIT_OK


@usage.command("flush")
@command_body
def usage_flush(options: Options) -> int:
    """Write the counts ConnectionsFunction's container holds now (the local stack: all)."""
    answer = options.connections("flush_usage")
    if options.json:
        output.print_json(answer)
    else:
        output.out().print(
            Text(
                f"Flushed {answer.get('flushed_calls')} calls ({answer.get('items_written')} items)"
            )
        )
    return EXIT_OK
