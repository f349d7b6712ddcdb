"""What a caller may ask the proxy to call: a path inside one company, nothing else.

The caller gives a path relative to ``/v3/company/{realm_id}/``; the proxy builds the URL
itself. Any path that could leave that company (``..``, ``//``, a scheme or host,
percent-encoded dots or slashes, backslashes, control characters) is refused before anything is
sent, as are ``minorversion`` and ``requestid`` inside ``query`` (they have their own fields).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from qbo_connect.errors import InvalidRequest

MAX_PATH_LENGTH = 512
#: One path segment: what QuickBooks' resource names and ids use. No ``%``: nothing encoded.
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.]+$")
_RESERVED_QUERY = {"minorversion": "minorversion", "requestid": "request_id"}
#: Multipart uploads are out of scope (the proxy sends JSON or text bodies only).
_UPLOAD = "upload"
MAX_REQUEST_ID_LENGTH = 50
MAX_BATCH_REQUEST_ID_LENGTH = 36


def check_path(path: object) -> str:
    """The path, checked: segments of letters, digits, ``_-.``; never ``.`` or ``..`` alone."""
    if not isinstance(path, str) or not path:
        raise InvalidRequest("path must be a non-empty string", reason="invalid_path")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidRequest("path is too long", reason="invalid_path")
    segments = path.split("/")
    for segment in segments:
        if not segment or segment in (".", "..") or not _SEGMENT.fullmatch(segment):
            raise InvalidRequest(
                "path must be relative to the company: segments of letters, digits, '_', '-' "
                "and '.', without '..', '//', '%', '\\', a scheme or a host",
                reason="invalid_path",
            )
    if segments[0].lower() == _UPLOAD:
        raise InvalidRequest(
            "multipart uploads (Attachable) are not supported by the proxy",
            reason="upload_not_supported",
        )
    return path


def is_batch(path: str) -> bool:
    return path.lower() == "batch"


def check_query(query: object) -> dict[str, str]:
    """Query parameters as strings; ``minorversion`` and ``requestid`` have their own fields."""
    if query is None:
        return {}
    if not isinstance(query, Mapping):
        raise InvalidRequest("query must be an object of names to values")
    checked: dict[str, str] = {}
    for name, value in query.items():
        if not isinstance(name, str) or not name:
            raise InvalidRequest("query names must be non-empty strings")
        own_field = _RESERVED_QUERY.get(name.lower())
        if own_field:
            raise InvalidRequest(
                f"query must not carry {name}: use the {own_field} field",
                reason="reserved_query_parameter",
            )
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise InvalidRequest(f"query value of {name} must be a string or a number")
        checked[name] = str(value)
    return checked


def check_request_id(request_id: object, *, batch: bool) -> str | None:
    """A caller's ``request_id``: printable ASCII, at most 50 characters (36 for a batch)."""
    if request_id is None:
        return None
    limit = MAX_BATCH_REQUEST_ID_LENGTH if batch else MAX_REQUEST_ID_LENGTH
    if (
        not isinstance(request_id, str)
        or not request_id
        or len(request_id) > limit
        or not all(33 <= ord(c) < 127 for c in request_id)
    ):
        raise InvalidRequest(
            f"request_id must be 1 to {limit} printable ASCII characters", reason="request_id"
        )
    return request_id


def company_url(base_url: str, realm_id: str, path: str) -> str:
    """The URL of ``path`` inside the company (every part already checked or quoted)."""
    return f"{base_url.rstrip('/')}/v3/company/{quote(realm_id, safe='')}/{path}"


def masked(path: str) -> str:
    """The path for logs: ids (segments with a digit) masked, resource names kept."""
    return "/".join("*" if any(c.isdigit() for c in s) else s for s in path.split("/"))
