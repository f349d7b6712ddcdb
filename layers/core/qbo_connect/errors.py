"""Domain exceptions with stable codes.

The ``code`` of a :class:`ServiceError` is part of the invoke contract (README, "Invoke
contracts"): callers branch on it. Messages are for people and never contain a token, a code or
a secret.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error a caller of the service can act on; ``code`` is stable, ``message`` is safe."""

    code = "internal_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(ServiceError):
    code = "invalid_request"


class NotConnected(ServiceError):
    code = "not_connected"


class NeedsReauthorization(ServiceError):
    code = "needs_reauthorization"


class RefreshUnavailable(ServiceError):
    """Intuit could not be reached or refused for now; the stored tokens are untouched."""

    code = "refresh_unavailable"


class ConfigurationError(ServiceError):
    """The deployment is misconfigured (bad env var, wrong client credentials)."""

    code = "configuration_error"


class Conflict(ServiceError):
    """The request conflicts with stored state (e.g. a realm held by another tenant)."""

    code = "conflict"


# ----- adopting a grant (callback and import) ----------------------------------------------


class RealmNotProven(ServiceError):
    """The tokens are not for the realm asked for; they were revoked and nothing was stored."""

    code = "invalid_request"


class RealmCheckUnavailable(ServiceError):
    """The realm could not be checked right now (Intuit unavailable): nothing was stored."""

    code = "refresh_unavailable"


class HeldByOtherTenant(ServiceError):
    """The realm is connected to another tenant; nothing was stored."""

    code = "conflict"


class StoreContention(ServiceError):
    """The realm kept changing under us; nothing was stored."""

    code = "conflict"


# ----- Intuit --------------------------------------------------------------------------------


class IntuitError(Exception):
    """A failed call to Intuit. Carries ``intuit_tid`` (what Intuit support asks for).

    The message holds the endpoint name, the HTTP status and Intuit's error code, never the
    request or response body, which can hold tokens.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        intuit_tid: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        tid = f" (intuit_tid={intuit_tid})" if intuit_tid else ""
        super().__init__(f"{message}{tid}")
        self.status = status
        self.error = error
        self.intuit_tid = intuit_tid
        self.retry_after = retry_after


class InvalidGrant(IntuitError):
    """Intuit answered invalid_grant: expired, revoked, stale token, or an Intuit outage."""


class InvalidClient(IntuitError):
    """Client id/secret rejected: a configuration problem, never the connection's fault."""


class IntuitTransientError(IntuitError):
    """5xx, 429, timeout or connection failure: retry later; tokens must stay untouched."""


class IntuitRequestError(IntuitError):
    """Any other 4xx from Intuit (invalid_request, invalid_scope, ...)."""


class IdTokenInvalid(IntuitError):
    """The id_token failed validation (signature, issuer, audience, expiry)."""


# ----- Store ---------------------------------------------------------------------------------


class StoreConflict(Exception):
    """A DynamoDB conditional write failed its condition."""


class VersionConflict(StoreConflict):
    """The connection's version moved on: someone else committed first."""


class LeaseHeld(StoreConflict):
    """Another worker holds a live refresh lease on the connection."""


class LeaseLost(StoreConflict):
    """Our lease was taken over or the version moved before our commit."""


class AlreadyExists(StoreConflict):
    """The item to create exists already."""


class NotFound(StoreConflict):
    """The item does not exist (or no longer matches)."""


class AlreadyConsumed(StoreConflict):
    """A single-use item (state, connect link) was used already or has expired."""
