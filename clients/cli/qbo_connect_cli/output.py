"""How answers are shown: rich tables for people, plain JSON for scripts.

stdout carries the result only (a table, or one JSON document); progress, notes and errors go
to stderr, so ``qbo-connect ... --json | jq`` always reads a clean document.

Every value the service returns is data chosen by someone else (whoever connects a company
names it): it is shown as text, never as rich markup (``[link=...]``, ``[/b]``), and control
characters are replaced before they reach the terminal (an ESC or OSC sequence could recolour,
hide or rewrite what the operator reads, a bidi override could reorder it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Columns that never wrap or get cut: ids and times are copied from the terminal.
_NO_WRAP = {"realm", "time", "row", "intuit_tid"}


def out() -> Console:
    """stdout, wide enough that a table in a pipe or a log keeps every column."""
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200, highlight=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


#: Characters never written to a terminal as they are: C0 and C1 controls, DEL, and the bidi
#: embedding, override and isolate marks.
_UNSAFE = {
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
}
_REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


def safe(value: str) -> str:
    """``value`` with every control character (tabs and newlines too) replaced by U+FFFD."""
    return "".join(_REPLACEMENT if ord(ch) in _UNSAFE else ch for ch in value)


def plain(value: str) -> Text:
    """A service value (or a line holding one) to print: text, never markup, nothing unsafe."""
    return Text(safe(value))


def text(value: Any) -> str:
    """A cell: ``-`` for nothing, lists space-separated, everything else as its string; with
    control characters replaced (see :func:`safe`). Print it through :func:`plain` or a
    :func:`table`, never as markup."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " ".join(text(v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{text(k)}={text(v)}" for k, v in value.items())
    return safe(str(value))


def table(
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Mapping[str, Any]],
    *,
    title: str | None = None,
) -> Table:
    """A table of ``rows``; ``columns`` are (key, heading) pairs."""
    result = Table(
        title=plain(title) if title else None,
        title_justify="left",
        show_lines=False,
        header_style="bold",
    )
    for key, heading in columns:
        result.add_column(heading, overflow="fold", no_wrap=key in _NO_WRAP)
    for row in rows:
        result.add_row(*(Text(text(row.get(key))) for key, _ in columns))
    return result


def details(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> Table:
    """A two-column key/value table for one object."""
    result = Table(
        title=plain(title) if title else None, title_justify="left", show_header=False, box=None
    )
    result.add_column("field", style="bold", no_wrap=True)
    result.add_column("value", overflow="fold")
    for key, value in pairs:
        result.add_row(Text(key), Text(text(value)))
    return result
