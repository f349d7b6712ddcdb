"""Readable log lines for ``make dev``: one line per record instead of a JSON document.

In Lambda every record is a Powertools JSON document (CloudWatch Logs Insights reads the
fields), and every metric flush is an EMF document. On a developer's terminal the same output is
a wall of JSON, so the local stack puts :class:`ReadableStream` in front of stdout: each
complete line that is a Powertools record becomes ``time function level message key=value...``,
each EMF document becomes ``time metrics Name=value...``, and anything else (the stack's own
announcements) passes through unchanged. ``python -m devstack --json-logs`` keeps the raw JSON
(the integration tests use it, to scan every field of every record).

Why a stream and not a logging formatter: Powertools keeps per-request keys on its own formatter
(``append_keys`` reaches it through the handler), and EMF documents are ``print()``ed, not
logged. Rendering what reaches stdout sees both without touching either.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, TextIO

#: Powertools' fields that every record carries; the rest are the record's own key fields.
STANDARD_KEYS = frozenset(
    {
        "level",
        "location",
        "message",
        "timestamp",
        "service",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "sampling_rate",
        "xray_trace_id",
        "exception",
        "exception_name",
        "stack_trace",
        "correlation_id",
    }
)
_COLORS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}
FUNCTION_WIDTH = 13


def _time(value: Any) -> str:
    """``2026-12-02 04:29:59,339+0000`` -> ``04:29:59.339`` (anything else as it is)."""
    text = str(value or "")
    if len(text) >= 23 and text[10] == " " and text[19] == ",":
        return f"{text[11:19]}.{text[20:23]}"
    return text


def _value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value) if (not value or any(c in value for c in ' ="')) else value
    return json.dumps(value, separators=(",", ":"), default=str)


def _function(record: Mapping[str, Any], names: Mapping[str, str]) -> str:
    physical = str(record.get("function_name") or record.get("service") or "-")
    name = names.get(physical, physical)
    return name.removesuffix("Function") or name


def render_record(
    record: Mapping[str, Any], names: Mapping[str, str] | None = None, *, color: bool = False
) -> str:
    """One Powertools log record as one line (a traceback, if any, indented below it)."""
    level = str(record.get("level", "INFO"))
    fields = " ".join(
        f"{key}={_value(value)}" for key, value in record.items() if key not in STANDARD_KEYS
    )
    shown_level = f"\x1b[{_COLORS.get(level, '0')}m{level:<7}\x1b[0m" if color else f"{level:<7}"
    function = _function(record, names or {})
    line = f"{_time(record.get('timestamp'))} {function:<{FUNCTION_WIDTH}} {shown_level} "
    line += str(record.get("message", ""))
    if fields:
        line += f"  {fields}"
    trace = record.get("exception")
    if isinstance(trace, str) and trace:
        line += "\n" + "\n".join("    " + part for part in trace.rstrip().splitlines())
    return line


def render_emf(document: Mapping[str, Any]) -> str:
    """One EMF metrics document as ``metrics Name=value ...``."""
    names: list[str] = []
    for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
        names += [m.get("Name", "") for m in directive.get("Metrics", [])]
    parts = []
    for name in names:
        value = document.get(name)
        values = value if isinstance(value, list) else [value]
        total = sum(v for v in values if isinstance(v, int | float))
        parts.append(f"{name}={total:g}")
    stamp = document.get("_aws", {}).get("Timestamp")
    when = ""
    if isinstance(stamp, int | float):
        import time

        seconds, millis = divmod(int(stamp), 1000)
        when = time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}"
    return f"{when} {'metrics':<{FUNCTION_WIDTH}} {'':<7} {' '.join(parts)}"


def render_line(line: str, names: Mapping[str, str] | None = None, *, color: bool = False) -> str:
    """The readable form of one stdout line (unchanged if it is not a record or EMF)."""
    if not line.startswith("{"):
        return line
    try:
        document = json.loads(line)
    except ValueError:
        return line
    if not isinstance(document, dict):
        return line
    if "_aws" in document:
        return render_emf(document)
    if "level" in document and "message" in document:
        return render_record(document, names, color=color)
    return line


class ReadableStream:
    """A text stream that renders complete lines (per writing thread) into ``out``.

    ``print()`` writes a document and its newline in two calls, and the local stack runs
    functions in threads, so each thread assembles its own line; a finished line is rendered
    and written under a lock, whole.
    """

    def __init__(self, out: TextIO, *, color: bool | None = None) -> None:
        self.out = out
        self.color = out.isatty() if color is None else color
        #: Physical function names -> logical ids (filled in once the stack knows them).
        self.names: dict[str, str] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        buffer = getattr(self._local, "buffer", "") + text
        *lines, rest = buffer.split("\n")
        self._local.buffer = rest
        if lines:
            rendered = "".join(
                render_line(line, self.names, color=self.color) + "\n" for line in lines
            )
            with self._lock:
                self.out.write(rendered)
                self.out.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.out.flush()

    def isatty(self) -> bool:
        return self.out.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)
