"""Every way a hosted page or redirect can end, as one enum.

The flow decides an :class:`Outcome`; ``copy_table`` says what the person sees for it (status,
title, text, whether "Try again" is offered) in each language; ``pages`` renders it. Logs and
metrics carry the outcome's value, which is why the values are short, stable snake_case.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    # The landing page and the way out to Intuit.
    LANDING = "landing"
    LANDING_RECONNECT = "landing_reconnect"
    CROSS_SITE_REFUSED = "cross_site_refused"
    AUTHORIZE = "authorize"
    RECONNECT_INFO = "reconnect_info"
    # Connect links.
    LINK_REQUIRED = "link_required"
    LINK_UNKNOWN = "link_unknown"
    LINK_USED = "link_used"
    LINK_EXPIRED = "link_expired"
    BAD_REQUEST = "bad_request"
    # The callback: state and cookie.
    STATE_UNKNOWN = "state_unknown"
    STATE_USED = "state_used"
    STATE_EXPIRED = "state_expired"
    COOKIE_MISSING = "cookie_missing"
    COOKIE_MISMATCH = "cookie_mismatch"
    # The callback: Intuit's answer.
    DENIED = "denied"
    INVALID_SCOPE = "invalid_scope"
    INTUIT_ERROR = "intuit_error"
    REALM_MISSING = "realm_missing"
    EXCHANGE_UNAVAILABLE = "exchange_unavailable"
    EXCHANGE_REFUSED = "exchange_refused"
    ID_TOKEN_MISSING = "id_token_missing"
    ID_TOKEN_INVALID = "id_token_invalid"
    ID_TOKEN_UNVERIFIED = "id_token_unverified"
    REALM_MISMATCH = "realm_mismatch"
    REALM_INVALID = "realm_invalid"
    REALM_NOT_PROVEN = "realm_not_proven"
    REALM_CHECK_UNAVAILABLE = "realm_check_unavailable"
    # The callback: storing.
    OTHER_TENANT = "other_tenant"
    STORE_CONFLICT = "store_conflict"
    CREATED = "created"
    RECONNECTED = "reconnected"
    # Intuit's Disconnect URL.
    DISCONNECTED = "disconnected"
    # Anywhere.
    CONFIGURATION_ERROR = "configuration_error"
    INTERNAL_ERROR = "internal_error"
    NOT_FOUND = "not_found"
