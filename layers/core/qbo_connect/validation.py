"""Input validation shared by the invoke actions and the HTTP routes.

Identifiers are checked against tight patterns before they reach DynamoDB keys, log lines or
pages, so a malformed value is refused early with a clear ``invalid_request`` and nothing is
written.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from qbo_connect.errors import InvalidRequest

# ``\Z``, not ``$``: ``$`` also matches before a trailing newline, and "5151\n" must never
# become a realm of its own. Use ``fullmatch`` with these patterns.
#
# A realm id has one spelling: Intuit's company ids are positive integers written without a
# leading zero, at most 20 digits (an unsigned 64-bit number). "0" + a realm would otherwise be
# a second key, with its own item, lease and tokens, for one company.
REALM_ID = re.compile(r"[1-9][0-9]{0,19}\Z")
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}\Z")


def require_str(payload: Mapping[str, Any], name: str, *, max_length: int = 4096) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} is required and must be a non-empty string")
    if len(value) > max_length:
        raise InvalidRequest(f"{name} is too long")
    return value.strip()


def optional_str(payload: Mapping[str, Any], name: str, *, max_length: int = 4096) -> str | None:
    if payload.get(name) is None:
        return None
    return require_str(payload, name, max_length=max_length)


def is_realm_id(value: object) -> bool:
    """A QuickBooks company id in its one spelling: 1-20 ASCII digits, no leading zero, nothing
    else (no sign, no whitespace)."""
    return isinstance(value, str) and value.isascii() and REALM_ID.fullmatch(value) is not None


def realm_id(payload: Mapping[str, Any], name: str = "realm_id") -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} is required and must be a non-empty string")
    if not is_realm_id(value):
        raise InvalidRequest(
            f"{name} must be the numeric QuickBooks company id (1-20 digits, no leading zero)"
        )
    return value


def tenant_id(payload: Mapping[str, Any], name: str = "tenant_id") -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} is required and must be a non-empty string")
    if not (value.isascii() and TENANT_ID.fullmatch(value)):
        raise InvalidRequest(
            f"{name} must be 1-128 characters: letters, digits and . _ : @ / + = -"
        )
    return value


def optional_tenant_id(payload: Mapping[str, Any], name: str = "tenant_id") -> str | None:
    """The tenant a caller acts for, when it says so (the tenant guard of the invoke actions)."""
    if payload.get(name) is None:
        return None
    return tenant_id(payload, name)


def optional_bool(payload: Mapping[str, Any], name: str) -> bool:
    value = payload.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false")
    return value


def optional_int(
    payload: Mapping[str, Any], name: str, *, default: int, minimum: int, maximum: int
) -> int:
    value = payload.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer")
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"{name} must be between {minimum} and {maximum}")
    return value


#: The key attributes a page cursor may carry (a TenantIndex page's last key).
_CURSOR_KEYS = frozenset({"pk", "sk", "tenant_id", "realm_id"})


def encode_cursor(key: Mapping[str, Any] | None) -> str | None:
    """A page's last key as the opaque ``next_cursor`` string (None on the last page)."""
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def page_cursor(payload: Mapping[str, Any], name: str = "cursor") -> dict[str, Any] | None:
    """The key a ``cursor`` from :func:`encode_cursor` stands for; anything else is refused."""
    cursor = optional_str(payload, name, max_length=2048)
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise InvalidRequest(f"{name} is not valid") from None
    if not isinstance(value, dict) or set(value) - _CURSOR_KEYS:
        raise InvalidRequest(f"{name} is not valid")
    return value
