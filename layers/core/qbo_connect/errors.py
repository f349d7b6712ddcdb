"""Every exception of the package, in one place.

A :class:`ServiceError` is what a caller of the service can act on: its subclass implies the
caller-facing ``code`` (part of the invoke contract, README "Invoke contracts"), and it may carry
a finer ``reason`` (one of :data:`REASONS`) and the ``intuit_tid`` of the Intuit answer behind it
(what Intuit support asks for). Messages are for people and never contain a token, a code or a
secret. The other exceptions are internal: they never reach a caller as such.
"""

from __future__ import annotations

from typing import Any

#: The documented values of ``error.reason`` in an invoke answer, and what each means.
REASONS: dict[str, str] = {
    # refresh_unavailable: nothing was changed; try again later.
    "intuit_unavailable": "Intuit's token endpoint failed (5xx, 429, timeout or network)",
    "intuit_refused": "Intuit refused the refresh with an error other than invalid_grant",
    "invalid_grant_unconfirmed": (
        "Intuit rejected the refresh token; it is retried before the connection is declared dead"
    ),
    "store_unavailable": "DynamoDB did not answer in time",
    "key_unavailable": "KMS did not answer in time",
    "refresh_in_progress": "another caller's refresh holds the lease and has not finished in time",
    "changed_during_refresh": "the connection changed while it was being refreshed",
    "realm_check_unavailable": "the company could not be checked at Intuit right now",
    # needs_reauthorization: the user must connect again.
    "invalid_grant": "Intuit kept rejecting the refresh token over the configured window",
    "refresh_token_expired": "the refresh token is past its known expiry",
    "tokens_undecryptable": "the stored tokens cannot be decrypted",
    # invalid_request
    "raw_token_reads_disabled": "GetTokenFunction hands out no tokens (RawTokenReads=disabled)",
    "realm_not_proven": "the tokens are not for the company asked for (they were revoked)",
    # budget_exhausted: a CorePlus (read) call was not sent; Core calls still go through.
    "soft_limit": "workloads have spent the month's CorePlus soft limit",
    "tenant_quota": "the tenant has spent its own CorePlus quota for the month",
    "budget": "the month's whole CorePlus budget (the service's reserve too) is spent",
    # conflict
    "held_by_other_tenant": "the company is connected to another tenant",
    "store_contention": "the connection kept changing while it was being stored",
    # QuickBooksApiFunction (docs/proxy.md)
    "invalid_path": "the path could leave the company (or is not a path QuickBooks uses)",
    "reserved_query_parameter": "minorversion or requestid sent inside query",
    "request_id": "request_id is not 1-50 printable ASCII characters (36 for a batch)",
    "upload_not_supported": "multipart uploads (Attachable) are out of the proxy's scope",
    "governor": "no room for the call within max_wait_seconds (governor or cool-down)",
    "no_answer": "QuickBooks did not answer (timeouts, connection errors) after the retries",
    "cdc_failed": "reconcile_changes: CDC answered with an error; the watermark stays",
}


class ServiceError(Exception):
    """An error a caller of the service can act on; ``code`` is stable, ``message`` is safe."""

    code = "internal_error"
    #: The default ``reason`` of the subclass (an instance may give a finer one).
    default_reason: str | None = None

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        intuit_tid: str | None = None,
        **details: object,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.intuit_tid = intuit_tid
        self.details = details

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The ``{"error": {...}}`` answer: ``code`` and ``message``, ``reason`` and
        ``intuit_tid`` when known."""
        error = {"code": self.code, "message": self.message}
        if self.reason:
            error["reason"] = self.reason
        if self.intuit_tid:
            error["intuit_tid"] = self.intuit_tid
        for name in ("retry_after_seconds", "request_id"):
            if self.details.get(name) is not None:
                error[name] = self.details[name]  # type: ignore[assignment]
        return {"error": error}

    def log_fields(self) -> dict[str, Any]:
        """What the invoke log record says about this error (the same fields as the answer)."""
        return {
            "error_code": self.code,
            "detail": self.message,
            "reason": self.reason,
            "intuit_tid": self.intuit_tid,
        }


class InvalidRequest(ServiceError):
    code = "invalid_request"


class NotConnected(ServiceError):
    code = "not_connected"


class NeedsReauthorization(ServiceError):
    code = "needs_reauthorization"


class RefreshUnavailable(ServiceError):
    """Intuit could not be reached or refused for now; the stored tokens are untouched."""

    code = "refresh_unavailable"


class RateLimited(ServiceError):
    """The proxy's governor, or a cool-down after a QuickBooks throttle, kept a call from
    being sent; ``retry_after_seconds`` says when to try again."""

    code = "rate_limited"


class QuickBooksUnavailable(ServiceError):
    """QuickBooks gave no answer (timeouts, connection errors) after the proxy's retries."""

    code = "quickbooks_unavailable"


class ResponseTooLarge(ServiceError):
    """QuickBooks' answer exceeds what a direct invoke may return: page the query."""

    code = "response_too_large"


class ConfigurationError(ServiceError):
    """The deployment is misconfigured (bad env var, wrong client credentials)."""

    code = "configuration_error"


class Conflict(ServiceError):
    """The request conflicts with stored state (e.g. a realm held by another tenant)."""

    code = "conflict"


class BudgetExhausted(ServiceError):
    """A CorePlus call would pass the month's budget, the soft limit or the tenant's quota.

    The answer says how much is used, the limit and when the month resets (ISO 8601 UTC).
    """

    code = "budget_exhausted"

    def __init__(
        self, message: str, *, used: int, limit: int, resets_at: float, reason: str
    ) -> None:
        super().__init__(message, reason=reason)
        self.used = used
        self.limit = limit
        self.resets_at = resets_at

    def to_dict(self) -> dict[str, dict[str, Any]]:
        import time

        answer: dict[str, dict[str, Any]] = dict(super().to_dict())
        answer["error"].update(
            used=self.used,
            limit=self.limit,
            resets_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.resets_at)),
        )
        return answer


# ----- adopting a grant (callback and import) ----------------------------------------------


class RealmNotProven(InvalidRequest):
    """The tokens are not for the realm asked for; they were revoked and nothing was stored."""

    default_reason = "realm_not_proven"


class RealmCheckUnavailable(RefreshUnavailable):
    """The realm could not be checked right now (Intuit unavailable): nothing was stored."""

    default_reason = "realm_check_unavailable"


class HeldByOtherTenant(Conflict):
    """The realm is connected to another tenant; nothing was stored."""

    default_reason = "held_by_other_tenant"


class StoreContention(Conflict):
    """The realm kept changing under us; nothing was stored."""

    default_reason = "store_contention"


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


# ----- sealing ---------------------------------------------------------------------------------


class DecryptionError(Exception):
    """A sealed token did not open (wrong key, wrong realm/field, or tampering)."""


# ----- queue messages and webhook payloads ------------------------------------------------------


class MalformedMessage(ValueError):
    """A queue message (refresh or webhook change) that can never be processed: dropped, not
    retried."""


class MalformedPayload(ValueError):
    """A signed webhook body that is neither shape (or breaks one); the message says where."""


class EnqueueFailed(RuntimeError):
    """SQS did not take every message (after one retry of the ones it refused)."""


class PublishFailed(RuntimeError):
    """EventBridge refused or failed some entries; the message is retried."""


# ----- the refresh worker -------------------------------------------------------------------------


class Deferred(Exception):
    """Not enough time left in this invocation to refresh safely; SQS redelivers the message."""


class EventsPending(Exception):
    """A lifecycle event could not be published; SQS redelivers the message to try again."""


# ----- the change feed ------------------------------------------------------------------------


class CdcFailed(QuickBooksUnavailable):
    """CDC answered with something other than a success: the run stops, the watermark stays."""

    default_reason = "cdc_failed"


# ----- the connect flow ---------------------------------------------------------------------------


class ParameterError(Exception):
    """A missing, oversized or duplicated parameter (answered with a 400 page)."""


class Refusal(Exception):
    """Ends the connect flow early with an ``Ending`` (internal control flow)."""

    def __init__(self, ending: Any) -> None:
        super().__init__(ending.outcome.value)
        self.ending = ending
