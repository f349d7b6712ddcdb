"""QuickBooksApiFunction's invoke payload, checked before anything is sent."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qbo_connect import validation
from qbo_connect.api.paths import check_path, check_query, check_request_id, is_batch
from qbo_connect.errors import InvalidRequest

MAX_WAIT_SECONDS_LIMIT = 60.0
_FIELDS = {
    "realm_id",
    "tenant_id",
    "method",
    "path",
    "query",
    "body",
    "content_type",
    "request_id",
    "minorversion",
    "max_wait_seconds",
}


@dataclass(frozen=True)
class ApiRequest:
    """One call to make: ``path`` is relative to ``/v3/company/{realm_id}/``."""

    realm_id: str
    tenant_id: str | None
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str | None
    request_id: str | None
    minorversion: int | None
    max_wait_seconds: float | None

    @property
    def batch(self) -> bool:
        return is_batch(self.path)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ApiRequest:
        unknown = sorted(set(payload) - _FIELDS)
        if unknown:
            raise InvalidRequest(f"unknown fields: {', '.join(unknown)}")
        method = payload.get("method")
        if method not in ("GET", "POST"):
            raise InvalidRequest("method must be GET or POST")
        path = check_path(payload.get("path"))
        body = payload.get("body")
        if method == "GET" and body is not None:
            raise InvalidRequest("a GET carries no body")
        if body is not None and not isinstance(body, dict | list | str):
            raise InvalidRequest("body must be an object, an array or a string")
        content_type = validation.optional_str(payload, "content_type", max_length=100)
        if content_type is not None and "multipart" in content_type.lower():
            raise InvalidRequest(
                "multipart uploads (Attachable) are not supported by the proxy",
                reason="upload_not_supported",
            )
        minorversion = payload.get("minorversion")
        if minorversion is not None and (
            isinstance(minorversion, bool)
            or not isinstance(minorversion, int)
            or not 1 <= minorversion <= 999
        ):
            raise InvalidRequest("minorversion must be an integer between 1 and 999")
        max_wait = payload.get("max_wait_seconds")
        if max_wait is not None and (
            isinstance(max_wait, bool)
            or not isinstance(max_wait, int | float)
            or not math.isfinite(max_wait)
            or not 0 <= max_wait <= MAX_WAIT_SECONDS_LIMIT
        ):
            raise InvalidRequest(
                f"max_wait_seconds must be a number between 0 and {MAX_WAIT_SECONDS_LIMIT:g}"
            )
        return cls(
            realm_id=validation.realm_id(payload),
            tenant_id=validation.optional_tenant_id(payload),
            method=method,
            path=path,
            query=check_query(payload.get("query")),
            body=body,
            content_type=content_type,
            request_id=check_request_id(payload.get("request_id"), batch=is_batch(path)),
            minorversion=minorversion,
            max_wait_seconds=None if max_wait is None else float(max_wait),
        )
