"""The ``qbo-connect`` commands (click). Each command is one invoke contract call, shown.

Exit codes: 0 when everything asked succeeded; 1 when the service refused or failed any of
it (an error code of the invoke contract, or an import row); 2 for bad usage; 3 when the stack
could not be reached at all (not found, not running, no permission, no credentials).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from qbo_connect_cli import __version__, api_command, output
from qbo_connect_cli.backend import (
    CONNECTIONS_FUNCTION,
    ENV_ENDPOINTS,
    ENV_STACK,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    GET_TOKEN_FUNCTION,
    CliError,
    ServiceError,
    Target,
    local_target,
    stack_target,
)

HEALTH_VALUES = ("healthy", "retrying", "needs_reauthorization", "disconnected", "expiring_soon")
#: The order ``connections show`` lists a connection's fields in (others follow, sorted).
SHOW_ORDER = (
    "realm_id",
    "tenant_id",
    "company_name",
    "environment",
    "status",
    "health",
    "scopes",
    "connected_at",
    "updated_at",
    "last_refreshed_at",
    "access_expires_at",
    "refresh_expires_at",
    "refresh_hard_expires_at",
    "last_used_at",
    "next_attempt_at",
    "failing_since",
    "failed_attempts",
    "last_error",
    "reauth_reason",
)
LIST_COLUMNS = (
    ("realm_id", "realm"),
    ("company_name", "company"),
    ("status", "status"),
    ("health", "health"),
    ("last_refreshed_at", "last refreshed"),
    ("refresh_expires_at", "refresh token expires"),
    ("failing_since", "failing since"),
)
HISTORY_COLUMNS = (
    ("at", "time"),
    ("source", "ran by"),
    ("outcome", "outcome"),
    ("intuit_tid", "intuit_tid"),
    ("detail", "detail"),
)
IMPORT_COLUMNS = (
    ("row", "row"),
    ("realm_id", "realm"),
    ("tenant_id", "tenant"),
    ("result", "result"),
    ("code", "code"),
    ("message", "detail"),
)
PAGE_SIZE = 200  # list_connections' largest page

F = TypeVar("F", bound=Callable[..., int])


@dataclass
class Options:
    """The global options, resolved into a Target on first use (so --help needs no stack)."""

    stack: str | None
    local: bool
    endpoints: Path | None
    region: str | None
    profile: str | None
    json: bool
    _target: Target | None = None

    def target(self) -> Target:
        if self._target is None:
            if self.stack and (self.local or self.endpoints):
                raise CliError("usage", "pass either --stack or --local, not both", EXIT_USAGE)
            if self.stack:
                self._target = stack_target(self.stack, profile=self.profile, region=self.region)
            elif self.local or self.endpoints:
                self._target = local_target(self.endpoints)
            else:
                raise CliError(
                    "usage",
                    f"say which stack: --stack NAME (or {ENV_STACK}) for a deployed stack, "
                    "--local for the one `make dev` runs",
                    EXIT_USAGE,
                )
        return self._target

    def connections(self, action: str, **fields: Any) -> dict[str, Any]:
        payload = {"action": action, **{k: v for k, v in fields.items() if v not in (None, ())}}
        return self.target().invoke(CONNECTIONS_FUNCTION, payload)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        options = ctx.find_object(Options)
        if options is not None:
            options.json = True


def command_body(func: F) -> F:
    """Adds ``--json`` to a command and turns a CliError into its report and exit code."""

    @click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print the answer as JSON (the invoke contract's own shape).",
    )
    @click.pass_obj
    @functools.wraps(func)
    def wrapper(options: Options, *args: Any, **kwargs: Any) -> int:
        try:
            return func(options, *args, **kwargs)
        except CliError as exc:
            report_error(options, exc)
            return exc.exit_code

    return wrapper  # type: ignore[return-value]


def report_error(options: Options, exc: CliError) -> None:
    if options.json:
        output.print_json(exc.to_dict())
    kind = "refused" if isinstance(exc, ServiceError) else "error"
    # soft_wrap: one line however long, so the terminal (not rich) wraps it, never mid-word
    output.err().print(
        output.plain(f"qbo-connect: {kind}: {exc.code}: {exc.message}"), soft_wrap=True
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--stack",
    envvar=ENV_STACK,
    metavar="NAME",
    help=f"A deployed stack: its Outputs name the functions. Env: {ENV_STACK}.",
)
@click.option("--local", is_flag=True, help="The local stack `make dev` runs.")
@click.option(
    "--endpoints",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar=ENV_ENDPOINTS,
    metavar="FILE",
    help=(
        "The local stack's endpoints file (implies --local; default: .devstack/endpoints.json "
        f"here or in a parent directory). Env: {ENV_ENDPOINTS}."
    ),
)
@click.option("--region", metavar="REGION", help="AWS region of --stack (default: your config).")
@click.option("--profile", metavar="PROFILE", help="AWS profile for --stack.")
@click.option(
    "--json", "json_output", is_flag=True, help="Print answers as JSON (also per command)."
)
@click.version_option(__version__, prog_name="qbo-connect")
@click.pass_context
def cli(
    ctx: click.Context,
    stack: str | None,
    local: bool,
    endpoints: Path | None,
    region: str | None,
    profile: str | None,
    json_output: bool,
) -> None:
    """Operate a qbo-connect stack: connect links, connections, imports, tokens.

    \b
    Exit codes: 0 everything asked succeeded; 1 the service refused or failed
    some of it; 2 bad usage; 3 the stack could not be reached.
    """
    ctx.obj = Options(stack, local, endpoints, region, profile, json_output)


# ----------------------------------------------------------------------------- links


@cli.group()
def links() -> None:
    """Connect links: the URL you send a user to so they connect their company."""


#: How to allow a return URL, said where one is refused.
RETURN_URL_HINT = (
    "Allow it with the stack parameter AllowedReturnUrls (comma-separated URL prefixes): "
    "`sam deploy --parameter-overrides AllowedReturnUrls=https://app.example.com/` for a "
    'deployed stack, `make dev ARGS="--parameter-overrides '
    "AllowedReturnUrls=https://app.example.com/\"` locally, where the stack's own stand-in "
    "page (`your_app` in endpoints.json, http://127.0.0.1:3000/your-app by default) is "
    "always allowed"
)


@links.command("create")
@click.option("--tenant", required=True, help="Your tenant (customer) id the company joins.")
@click.option("--tenant-name", help="The tenant's display name, shown on the connect page.")
@click.option("--return-url", help="Where the user goes afterwards (must be allowed).")
@click.option("--scope", "scopes", multiple=True, help="An extra Intuit scope (repeatable).")
@command_body
def links_create(
    options: Options,
    tenant: str,
    tenant_name: str | None,
    return_url: str | None,
    scopes: Sequence[str],
) -> int:
    """Create a single-use connect link for TENANT."""
    try:
        answer = options.connections(
            "create_connect_link",
            tenant_id=tenant,
            tenant_name=tenant_name,
            return_url=return_url,
            scopes=list(scopes) or None,
        )
    except ServiceError as exc:
        if return_url and exc.message.startswith("return_url is not allowed"):
            raise ServiceError(exc.code, f"{exc.message}. {RETURN_URL_HINT}") from None
        raise
    if options.json:
        output.print_json(answer)
    else:
        console = output.out()
        console.print(
            output.plain(f"Connect link for tenant {tenant} (expires {answer.get('expires_at')}):")
        )
        console.print(output.plain(str(answer.get("url"))), soft_wrap=True)
    return EXIT_OK


# ----------------------------------------------------------------------------- connections


@cli.group()
def connections() -> None:
    """Connections: list, show, history, refresh, disconnect, import."""


@dataclass
class _Listing:
    """Every connection asked for, and the cursor of the rest (None: there is no more)."""

    items: list[Any]
    next_cursor: str | None


def _pages(options: Options, tenant: str, health: str | None, limit: int | None) -> _Listing:
    cursor: str | None = None
    left = limit
    items: list[Any] = []
    while left is None or left > 0:
        page_size = PAGE_SIZE if left is None else min(PAGE_SIZE, left)
        answer = options.connections(
            "list_connections", tenant_id=tenant, health=health, limit=page_size, cursor=cursor
        )
        page = answer.get("connections") or []
        items.extend(page)
        if left is not None:
            left -= len(page)
        cursor = answer.get("next_cursor") or None
        if not cursor or not page:
            return _Listing(items, None)
    return _Listing(items, cursor)


@connections.command("list")
@click.option("--tenant", required=True, help="List this tenant's connections.")
@click.option("--health", type=click.Choice(HEALTH_VALUES), help="Only connections this healthy.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (default: all).")
@command_body
def connections_list(options: Options, tenant: str, health: str | None, limit: int | None) -> int:
    """List a tenant's connections (every page, or --limit)."""
    listing = _pages(options, tenant, health, limit)
    items = listing.items
    if options.json:
        # next_cursor always, null at the end, so a script can page without guessing
        output.print_json({"connections": items, "next_cursor": listing.next_cursor})
        return EXIT_OK
    if not items:
        which = f"{health} connections" if health else "connections"
        output.err().print(
            output.plain(
                f"Tenant {tenant} has no {which}. Create a connect link for it with "
                f"`qbo-connect links create --tenant {tenant}`, or adopt existing ones with "
                "`qbo-connect connections import FILE`."
            ),
            soft_wrap=True,
        )
        return EXIT_OK
    title = f"Connections of tenant {tenant}" + (f" ({health})" if health else "")
    output.out().print(output.table(LIST_COLUMNS, [_for_people(i) for i in items], title=title))
    more = " (more: raise --limit)" if listing.next_cursor else ""
    output.err().print(f"{len(items)} connection(s){more}")
    return EXIT_OK


#: Token times that mean nothing once a connection is disconnected (its tokens are revoked).
TOKEN_TIMES = ("access_expires_at", "refresh_expires_at", "refresh_hard_expires_at")


def _for_people(connection: Mapping[str, Any]) -> dict[str, Any]:
    """A connection as tables show it: a disconnected one has no token expiry to show."""
    if connection.get("status") != "disconnected":
        return dict(connection)
    return {k: v for k, v in connection.items() if k not in TOKEN_TIMES}


def _show_pairs(connection: Mapping[str, Any]) -> list[tuple[str, Any]]:
    connection = _for_people(connection)
    keys = [k for k in SHOW_ORDER if k in connection]
    keys += sorted(k for k in connection if k not in SHOW_ORDER)
    pairs: list[tuple[str, Any]] = []
    for key in keys:
        value = connection[key]
        if isinstance(value, Mapping):
            pairs.extend((f"{key}.{k}", v) for k, v in value.items())
        else:
            pairs.append((key, value))
    return pairs


def _print_connection(options: Options, answer: Mapping[str, Any], title: str) -> None:
    if options.json:
        output.print_json(answer)
        return
    connection = answer.get("connection") or {}
    output.out().print(output.details(_show_pairs(connection), title=title))


tenant_guard = click.option(
    "--tenant", help="Only if the realm belongs to this tenant (else: not_connected)."
)


def _connection_action(
    options: Options, action: str, realm: str, tenant: str | None, title: str
) -> int:
    """An action answering ``{"connection": {...}}``, printed as the connection's details."""
    answer = options.connections(action, realm_id=realm, tenant_id=tenant)
    _print_connection(options, answer, f"{title} {realm}")
    return EXIT_OK


def realm_command(group: click.Group, name: str) -> Callable[[F], click.Command]:
    """A command on one realm: the ``REALM`` argument, the ``--tenant`` guard and ``--json``
    (options written under it come after ``--tenant`` in the help)."""

    def register(func: F) -> click.Command:
        return group.command(name)(click.argument("realm")(tenant_guard(command_body(func))))

    return register


@realm_command(connections, "show")
def connections_show(options: Options, realm: str, tenant: str | None) -> int:
    """Show one connection's metadata and health (never its tokens)."""
    return _connection_action(options, "get_connection", realm, tenant, "Connection")


@realm_command(connections, "history")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N outcomes.")
def connections_history(options: Options, realm: str, tenant: str | None, limit: int | None) -> int:
    """The latest refresh and connect outcomes of a connection, newest first."""
    answer = options.connections(
        "connection_history", realm_id=realm, tenant_id=tenant, limit=limit
    )
    if options.json:
        output.print_json(answer)
        return EXIT_OK
    entries = answer.get("history") or []
    output.out().print(output.table(HISTORY_COLUMNS, entries, title=f"History of {realm}"))
    output.err().print(f"{len(entries)} outcome(s)")
    return EXIT_OK


@realm_command(connections, "refresh")
def connections_refresh(options: Options, realm: str, tenant: str | None) -> int:
    """Refresh a connection's tokens now (under the same lease as every refresh)."""
    return _connection_action(options, "refresh", realm, tenant, "Refreshed")


@realm_command(connections, "disconnect")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def connections_disconnect(options: Options, realm: str, tenant: str | None, yes: bool) -> int:
    """Revoke a connection at Intuit and delete its tokens (asks first unless --yes)."""
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(
                "confirmation_required",
                "disconnecting cannot be undone: pass --yes when not at a terminal",
                EXIT_USAGE,
            )
        current = options.connections("get_connection", realm_id=realm, tenant_id=tenant)
        company = (current.get("connection") or {}).get("company_name") or "unnamed company"
        click.confirm(
            f"Disconnect realm {realm} ({output.safe(str(company))})? Intuit access is revoked "
            "and the tokens deleted; the user must connect again",
            abort=True,
            err=True,
        )
    try:
        answer = options.connections("disconnect", realm_id=realm, tenant_id=tenant)
    except ServiceError as exc:
        if exc.code != "not_connected":
            raise
        # A connection that `show` finds disconnected is what the operator asked for: say so
        # and succeed (disconnecting twice is not an error); anything else stays not_connected.
        try:
            current = options.connections("get_connection", realm_id=realm, tenant_id=tenant)
        except CliError:
            raise exc from None
        if (current.get("connection") or {}).get("status") != "disconnected":
            raise
        if options.json:
            output.print_json({"realm_id": realm, "already_disconnected": True})
        else:
            output.out().print(
                output.plain(
                    f"Realm {realm} is already disconnected; to use it again, send its user a "
                    "new connect link."
                )
            )
        return EXIT_OK
    if options.json:
        output.print_json(answer)
        return EXIT_OK
    how = (
        "revoked at Intuit"
        if answer.get("revoked")
        else f"not revoked at Intuit: {answer.get('revoke_error') or 'no token'}"
    )
    output.out().print(output.plain(f"Disconnected {realm} ({how})."))
    return EXIT_OK


@connections.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--dry-run", is_flag=True, help="Check every row and say what would happen; store nothing."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 32),
    default=8,
    show_default=True,
    help="Rows imported at the same time.",
)
@command_body
def connections_import(options: Options, file: Path, dry_run: bool, concurrency: int) -> int:
    """Import connections from a CSV or JSON-lines FILE.

    \b
    Columns (CSV header or JSON keys): realm_id, tenant_id, refresh_token,
    and optionally environment (sandbox|production) and scopes (space separated).
    Each row is imported on its own and reported; a realm already connected to
    the same tenant is left unchanged, so a re-run is safe.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from qbo_connect_cli.importer import IMPORTED, Importer, RowResult, read_rows, summarize

    rows = read_rows(file)
    target = options.target()
    importer = Importer(target, dry_run=dry_run, concurrency=concurrency)
    verb = "Checking" if dry_run else "Importing"
    progress = Progress(
        f"[bold]{verb}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=output.err(),
        transient=False,
    )
    with progress:
        task = progress.add_task(verb, total=len(rows))

        def advance(_result: RowResult) -> None:
            progress.advance(task)

        results = importer.run(rows, advance)
    counts = summarize(results)
    failed = [r for r in results if not r.ok]
    if options.json:
        output.print_json(
            {
                "dry_run": dry_run,
                "rows": [r.as_dict() for r in results],
                "summary": counts,
            }
        )
    else:
        title = f"{'Dry run of ' if dry_run else ''}import of {file}"
        rows_shown = [r.as_dict() for r in results]
        output.out().print(output.table(IMPORT_COLUMNS, rows_shown, title=title))
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    output.err().print(output.plain(f"{len(results)} row(s): {summary}"))
    if importer.stopped is not None:
        output.err().print(
            output.plain(
                f"qbo-connect: stopped: {importer.stopped.message}; re-run the same file when the "
                "stack is reachable (rows already imported stay unchanged)"
            )
        )
        return importer.stopped.exit_code
    if failed:
        imported = counts.get(IMPORTED, 0)
        note = "" if dry_run else f" ({imported} imported)"
        output.err().print(
            output.plain(
                f"qbo-connect: {len(failed)} row(s) failed{note}; fix them and re-run the file"
            )
        )
        return EXIT_FAILED
    return EXIT_OK


# ----------------------------------------------------------------------------- token


@realm_command(cli, "token")
@click.option(
    "--print-secret", is_flag=True, help="Required: the access token is printed in clear."
)
@click.option(
    "--min-valid-seconds",
    type=click.IntRange(0, 3000),
    default=300,
    show_default=True,
    help="The token stays valid at least this long.",
)
def token(
    options: Options, realm: str, tenant: str | None, print_secret: bool, min_valid_seconds: int
) -> int:
    """Get a valid access token for REALM (for debugging; needs --print-secret)."""
    if not print_secret:
        raise CliError(
            "refused",
            "this prints a live access token: pass --print-secret if you mean it",
            EXIT_USAGE,
        )
    payload: dict[str, Any] = {"realm_id": realm, "min_valid_seconds": min_valid_seconds}
    if tenant:
        payload["tenant_id"] = tenant
    answer = options.target().invoke(GET_TOKEN_FUNCTION, payload)
    if options.json:
        output.print_json(answer)
        return EXIT_OK
    sys.stdout.write(f"{answer.get('access_token')}\n")
    output.err().print(
        output.plain(f"expires {answer.get('expires_at')}; API base {answer.get('api_base_url')}")
    )
    return EXIT_OK


api_command.register(cli, command_body)


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: run the command and exit with its code."""
    try:
        code = cli.main(args=argv, prog_name="qbo-connect", standalone_mode=False)
    except click.exceptions.Abort:
        output.err().print("qbo-connect: aborted")
        code = EXIT_FAILED
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except KeyboardInterrupt:
        output.err().print("qbo-connect: interrupted")
        code = 130
    sys.exit(code if isinstance(code, int) else EXIT_OK)


# Commands kept in modules of their own register themselves on `cli` when imported.
from qbo_connect_cli import changes_command, usage_command  # noqa: E402, F401
