"""``make dev`` prints one readable line per log record; ``--json-logs`` keeps the raw JSON."""

from __future__ import annotations

import io
import json
import threading
import time

from devstack.logs import ReadableStream, render_emf, render_line, render_record
from devstack.process import DevstackProcess, start_devstack

RECORD = {
    "level": "WARNING",
    "location": "refresh:120",
    "message": "refresh failed",
    "timestamp": "2026-12-02 04:29:59,339+0000",
    "service": "qbo-connect",
    "cold_start": False,
    "function_name": "qbo-connect-local-RefreshWorkerFunction",
    "function_request_id": "9b4e7dab",
    "realm_id": "9130357766042906",
    "failure_class": "invalid_grant",
    "detail": "Intuit said no",
    "scopes": ["a", "b"],
}


def test_a_record_is_one_line_with_time_function_level_message_and_key_fields():
    line = render_record(
        RECORD, {"qbo-connect-local-RefreshWorkerFunction": "RefreshWorkerFunction"}
    )
    assert line == (
        "04:29:59.339 RefreshWorker WARNING refresh failed  realm_id=9130357766042906 "
        'failure_class=invalid_grant detail="Intuit said no" scopes=["a","b"]'
    )


def test_a_traceback_is_indented_under_its_line():
    record = dict(
        RECORD, level="ERROR", exception="Traceback (most recent call last):\n  boom\nValueError: x"
    )
    first, *rest = render_record(record).splitlines()
    assert "ERROR" in first and "refresh failed" in first
    assert rest == ["    Traceback (most recent call last):", "      boom", "    ValueError: x"]


def test_emf_documents_become_a_metrics_line_and_other_lines_pass_through():
    emf = {
        "_aws": {
            "Timestamp": 1764649799339,
            "CloudWatchMetrics": [
                {
                    "Namespace": "QboConnect",
                    "Metrics": [{"Name": "RefreshSucceeded"}, {"Name": "RefreshFailed"}],
                }
            ],
        },
        "RefreshSucceeded": [1.0, 1.0],
        "RefreshFailed": 0,
    }
    assert render_emf(emf).endswith("metrics               RefreshSucceeded=2 RefreshFailed=0")
    assert render_line(json.dumps(emf)) == render_emf(emf)
    for plain in ("devstack: ready", "{not json", '{"no": "level"}', "[1, 2]"):
        assert render_line(plain) == plain


def test_stream_renders_whole_lines_per_thread():
    out = io.StringIO()
    stream = ReadableStream(out, color=False)

    def emit(i: int) -> None:
        for _ in range(50):
            record = dict(RECORD, message=f"m{i}")
            stream.write(json.dumps(record))  # print() writes the newline separately
            stream.write("\n")

    threads = [threading.Thread(target=emit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 200
    assert all(" WARNING refresh failed" not in line or "realm_id=" in line for line in lines)
    assert all(line.startswith("04:29:59.339 ") for line in lines)


def announced(stack: DevstackProcess) -> str:
    """The log once the stack has printed its connect link (it does so after it is ready)."""
    deadline = time.monotonic() + 30
    while "ready in" not in stack.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return stack.log_text()


def test_make_dev_prints_readable_lines_and_json_logs_keeps_json(tmp_path):
    with start_devstack(
        tmp_path / "readable", readable_logs=True, extra_args=["--no-schedule"]
    ) as stack:
        text = announced(stack)
    assert " Connections   INFO    connect link created  action=create_connect_link" in text
    assert '{"level"' not in text

    with start_devstack(tmp_path / "json", extra_args=["--no-schedule"]) as stack:
        text = announced(stack)
    records = [json.loads(line) for line in text.splitlines() if line.startswith('{"level"')]
    assert any(r["message"] == "connect link created" for r in records)
