"""Typed settings, read once per container from environment variables.

Logic never reads ``os.environ`` itself: it receives a :class:`Settings`. That keeps every knob
in one place, makes tests build settings explicitly, and lets the local stack set one set of
variables for all functions (os.environ is one per process).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from qbo_connect.connect.branding import APP_NAME_MAX, DEFAULT_ACCENT, check_accent, check_url
from qbo_connect.errors import ConfigurationError

# Intuit's real endpoints: the defaults. Every one can be replaced by an env var of the same
# name, which is how tests and the local stack point the service at the simulator.
INTUIT_DEFAULTS: dict[str, str] = {
    "INTUIT_AUTHORIZATION_ENDPOINT": "https://appcenter.intuit.com/connect/oauth2",
    "INTUIT_TOKEN_ENDPOINT": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
    "INTUIT_REVOCATION_ENDPOINT": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
    "INTUIT_JWKS_URI": "https://oauth.platform.intuit.com/op/v1/jwks",
    "INTUIT_ISSUER": "https://oauth.platform.intuit.com/op/v1",
}
USERINFO_DEFAULTS = {
    "sandbox": "https://sandbox-accounts.platform.intuit.com/v1/openid_connect/userinfo",
    "production": "https://accounts.platform.intuit.com/v1/openid_connect/userinfo",
}
API_BASE_DEFAULTS = {
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
    "production": "https://quickbooks.api.intuit.com",
}
KNOWN_SCOPES = frozenset(
    {
        "com.intuit.quickbooks.accounting",
        "com.intuit.quickbooks.payment",
        "openid",
        "profile",
        "email",
        "phone",
        "address",
    }
)


@dataclass(frozen=True)
class IntuitEndpoints:
    """Where Intuit (or the simulator) lives."""

    environment: str
    authorization: str
    token: str
    revocation: str
    userinfo: str
    jwks_uri: str
    issuer: str
    api_base_url: str


#: AWS calls a refresh makes while holding the lease, at most: the KMS unwrap of the data key,
#: then either the commit, or a consistent re-read and the verdict (release or mark).
AWS_CALLS_UNDER_LEASE = 3
LEASE_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with. Built once per container."""

    table_name: str
    token_key_id: str
    client_secret_id: str
    intuit: IntuitEndpoints
    scopes: tuple[str, ...] = ("com.intuit.quickbooks.accounting", "openid", "profile", "email")
    allowed_extra_scopes: tuple[str, ...] = ("com.intuit.quickbooks.payment", "phone", "address")
    connect_mode: str = "link"
    allowed_return_urls: tuple[str, ...] = ()
    public_base_url: str = ""
    # Where connect links point when PUBLIC_BASE_URL is empty: the API's own URL, given only
    # to ConnectionsFunction (it builds links but serves no HTTP request to learn the host).
    connect_base_url: str = ""
    connect_link_ttl_seconds: int = 1800
    # Secrets Manager id of the key that signs the return redirect (ReturnSigningSecret).
    return_signing_secret_id: str = ""
    state_ttl_seconds: int = 600
    # Intuit HTTP behaviour: per-request timeout and how many attempts a transient failure gets.
    intuit_timeout_seconds: float = 10.0
    intuit_max_attempts: int = 3
    intuit_backoff_base_seconds: float = 0.5
    intuit_backoff_max_seconds: float = 8.0
    # AWS SDK behaviour (every DynamoDB, KMS, SQS and EventBridge client of the service).
    aws_connect_timeout_seconds: float = 1.0
    aws_read_timeout_seconds: float = 3.0
    aws_max_attempts: int = 3
    # Refresh protocol.
    lease_seconds: float = 0.0  # 0 = the worst case under the lease (see lease_duration)
    lease_wait_seconds: float = 25.0
    invalid_grant_window_seconds: int = 21600
    invalid_grant_min_attempts: int = 3
    # Fleet-level invalid_grant breaker: this many distinct connections rejected within the
    # breaker window, with no successful refresh since, is an Intuit outage, not revocations.
    invalid_grant_breaker_threshold: int = 10
    invalid_grant_breaker_window_seconds: int = 3600
    # After a failed or interrupted refresh, come back after a bounded, jittered backoff.
    retry_backoff_base_seconds: float = 60.0
    retry_backoff_max_seconds: float = 1800.0
    access_token_refresh_margin_seconds: int = 300
    last_used_write_interval_seconds: int = 300
    # Sweep.
    keep_alive_hours: int = 48
    keep_warm_minutes: int = 60
    due_shards: int = 16
    # How often the sweep re-enqueues connections still due after it enqueued them (sweep.py).
    sweep_requeue_seconds: float = 900.0
    refresh_queue_url: str = ""
    # Events.
    event_bus_name: str = "default"
    emit_refreshed_events: bool = False
    secret_max_age_seconds: int = 300
    # Branding of the hosted pages (checked in qbo_connect.connect.branding when settings load).
    app_name: str = ""
    app_logo_url: str = ""
    accent_color: str = DEFAULT_ACCENT
    support_url: str = ""
    privacy_url: str = ""
    # Intuit's Disconnect URL: at most one verification per realm per interval, and at most
    # ``source_limit`` verifications per source address per window.
    disconnect_hint_realm_interval_seconds: int = 300
    disconnect_hint_source_limit: int = 10
    disconnect_hint_source_window_seconds: int = 600
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lease_seconds and self.lease_seconds < self.worst_case_under_lease:
            raise ConfigurationError(
                f"REFRESH_LEASE_SECONDS={self.lease_seconds:g} is shorter than the worst case "
                f"a refresh can spend under the lease ({self.worst_case_under_lease:.1f} s from "
                "the INTUIT_* and AWS_* timeouts and retries): a holder still at work would "
                "see its lease taken over. Raise it, or lower those timeouts."
            )

    @property
    def aws_call_worst_seconds(self) -> float:
        """One AWS SDK call when every attempt times out: attempts x (connect + read) plus
        botocore's standard-mode backoff between attempts (at most 2^n s, capped at 20 s)."""
        attempts = max(1, self.aws_max_attempts)
        backoff = sum(min(2.0**n, 20.0) for n in range(attempts - 1))
        return attempts * (self.aws_connect_timeout_seconds + self.aws_read_timeout_seconds) + (
            backoff
        )

    @property
    def intuit_call_worst_seconds(self) -> float:
        """One Intuit refresh when every attempt times out, backoffs at their cap."""
        attempts = max(1, self.intuit_max_attempts)
        return attempts * self.intuit_timeout_seconds + (attempts - 1) * (
            self.intuit_backoff_max_seconds
        )

    @property
    def worst_case_under_lease(self) -> float:
        """The longest a refresh can hold the lease: the one place this figure is computed.

        Under the lease a refresher makes at most :data:`AWS_CALLS_UNDER_LEASE` AWS calls
        (unwrap the data key at KMS; then re-read and write the verdict, or the commit) and
        one Intuit refresh. The lease must outlive all of them; the worker defers a message
        when less than this is left of its invocation.
        """
        return self.intuit_call_worst_seconds + AWS_CALLS_UNDER_LEASE * (
            self.aws_call_worst_seconds
        )

    @property
    def lease_duration(self) -> float:
        """How long a refresh lease lives: ``REFRESH_LEASE_SECONDS`` or the worst case plus a
        margin, so a holder that is still working never sees its lease taken over."""
        if self.lease_seconds:
            return float(self.lease_seconds)
        return self.worst_case_under_lease + LEASE_MARGIN_SECONDS

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and the local stack use this)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _split(value: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(sep) if part.strip())


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from exc


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from a mapping of env vars (``os.environ`` by default).

    Fails with :class:`ConfigurationError` naming the variable, so a misconfigured deploy says
    what is wrong instead of failing later with a KeyError.
    """
    env = os.environ if env is None else env
    environment = env.get("INTUIT_ENVIRONMENT", "sandbox").strip() or "sandbox"
    if environment not in ("sandbox", "production"):
        raise ConfigurationError("INTUIT_ENVIRONMENT must be 'sandbox' or 'production'")

    def url(name: str, default: str) -> str:
        return (
            (env.get(name) or default).strip().rstrip("/")
            if name != "INTUIT_ISSUER"
            else (env.get(name) or default).strip()
        )

    endpoints = IntuitEndpoints(
        environment=environment,
        authorization=url(
            "INTUIT_AUTHORIZATION_ENDPOINT", INTUIT_DEFAULTS["INTUIT_AUTHORIZATION_ENDPOINT"]
        ),
        token=url("INTUIT_TOKEN_ENDPOINT", INTUIT_DEFAULTS["INTUIT_TOKEN_ENDPOINT"]),
        revocation=url("INTUIT_REVOCATION_ENDPOINT", INTUIT_DEFAULTS["INTUIT_REVOCATION_ENDPOINT"]),
        userinfo=url("INTUIT_USERINFO_ENDPOINT", USERINFO_DEFAULTS[environment]),
        jwks_uri=url("INTUIT_JWKS_URI", INTUIT_DEFAULTS["INTUIT_JWKS_URI"]),
        issuer=url("INTUIT_ISSUER", INTUIT_DEFAULTS["INTUIT_ISSUER"]),
        api_base_url=url("QUICKBOOKS_API_BASE_URL", API_BASE_DEFAULTS[environment]),
    )

    scopes = _split(env.get("SCOPES", "")) or Settings.scopes
    extra_scopes = _split(env.get("ALLOWED_EXTRA_SCOPES", "")) or ()
    unknown = sorted(set(scopes + extra_scopes) - KNOWN_SCOPES)
    if unknown:
        raise ConfigurationError(f"unknown Intuit scopes in SCOPES/ALLOWED_EXTRA_SCOPES: {unknown}")
    if "com.intuit.quickbooks.accounting" not in scopes and "openid" not in scopes:
        # A company is stored only once it is proven: by the id_token's realmid (openid) or by
        # a CompanyInfo call (accounting). With neither, no connection could ever be made.
        raise ConfigurationError(
            "SCOPES must include com.intuit.quickbooks.accounting or openid: one of them is "
            "needed to prove which QuickBooks company was connected"
        )
    connect_mode = env.get("CONNECT_MODE", "link").strip() or "link"
    if connect_mode not in ("link", "open"):
        raise ConfigurationError("CONNECT_MODE must be 'link' or 'open'")

    return Settings(
        table_name=env.get("TABLE_NAME", "").strip(),
        token_key_id=env.get("TOKEN_KEY_ID", "").strip(),
        client_secret_id=env.get("INTUIT_CLIENT_SECRET_ID", "").strip(),
        intuit=endpoints,
        scopes=scopes,
        allowed_extra_scopes=extra_scopes,
        connect_mode=connect_mode,
        allowed_return_urls=_split(env.get("ALLOWED_RETURN_URLS", ""), ","),
        public_base_url=env.get("PUBLIC_BASE_URL", "").strip().rstrip("/"),
        connect_base_url=env.get("CONNECT_BASE_URL", "").strip().rstrip("/"),
        connect_link_ttl_seconds=_int(env, "CONNECT_LINK_TTL_SECONDS", 1800),
        return_signing_secret_id=env.get("RETURN_SIGNING_SECRET_ID", "").strip(),
        state_ttl_seconds=_int(env, "STATE_TTL_SECONDS", 600),
        intuit_timeout_seconds=_float(env, "INTUIT_TIMEOUT_SECONDS", 10.0),
        intuit_max_attempts=_int(env, "INTUIT_MAX_ATTEMPTS", 3),
        intuit_backoff_base_seconds=_float(env, "INTUIT_BACKOFF_BASE_SECONDS", 0.5),
        intuit_backoff_max_seconds=_float(env, "INTUIT_BACKOFF_MAX_SECONDS", 8.0),
        aws_connect_timeout_seconds=_float(env, "AWS_CONNECT_TIMEOUT_SECONDS", 1.0),
        aws_read_timeout_seconds=_float(env, "AWS_READ_TIMEOUT_SECONDS", 3.0),
        aws_max_attempts=_int(env, "AWS_MAX_ATTEMPTS", 3),
        lease_seconds=_float(env, "REFRESH_LEASE_SECONDS", 0.0),
        lease_wait_seconds=_float(env, "LEASE_WAIT_SECONDS", 25.0),
        # The template speaks minutes (CloudFormation cannot multiply); seconds win if set.
        invalid_grant_window_seconds=_int(
            env,
            "INVALID_GRANT_WINDOW_SECONDS",
            _int(env, "INVALID_GRANT_WINDOW_MINUTES", 360) * 60,
        ),
        invalid_grant_min_attempts=_int(env, "INVALID_GRANT_MIN_ATTEMPTS", 3),
        invalid_grant_breaker_threshold=_int(env, "INVALID_GRANT_BREAKER_THRESHOLD", 10),
        invalid_grant_breaker_window_seconds=_int(
            env,
            "INVALID_GRANT_BREAKER_WINDOW_SECONDS",
            _int(env, "INVALID_GRANT_BREAKER_WINDOW_MINUTES", 60) * 60,
        ),
        retry_backoff_base_seconds=_float(env, "RETRY_BACKOFF_BASE_SECONDS", 60.0),
        retry_backoff_max_seconds=_float(env, "RETRY_BACKOFF_MAX_SECONDS", 1800.0),
        access_token_refresh_margin_seconds=_int(env, "ACCESS_TOKEN_REFRESH_MARGIN_SECONDS", 300),
        last_used_write_interval_seconds=_int(env, "LAST_USED_WRITE_INTERVAL_SECONDS", 300),
        keep_alive_hours=_int(env, "KEEP_ALIVE_HOURS", 48),
        keep_warm_minutes=_int(env, "KEEP_WARM_MINUTES", 60),
        due_shards=_int(env, "DUE_SHARDS", 16),
        sweep_requeue_seconds=_float(env, "SWEEP_REQUEUE_SECONDS", 900.0),
        refresh_queue_url=env.get("REFRESH_QUEUE_URL", "").strip(),
        event_bus_name=env.get("EVENT_BUS_NAME", "default").strip() or "default",
        emit_refreshed_events=env.get("EMIT_REFRESHED_EVENTS", "false").strip().lower() == "true",
        secret_max_age_seconds=_int(env, "SECRET_MAX_AGE_SECONDS", 300),
        app_name=" ".join(env.get("APP_NAME", "").split())[:APP_NAME_MAX],
        app_logo_url=check_url("APP_LOGO_URL", env.get("APP_LOGO_URL", "")),
        accent_color=check_accent(env.get("ACCENT_COLOR", "")),
        support_url=check_url(
            "SUPPORT_URL", env.get("SUPPORT_URL", ""), schemes=("https", "mailto")
        ),
        privacy_url=check_url("PRIVACY_URL", env.get("PRIVACY_URL", "")),
        disconnect_hint_realm_interval_seconds=_int(
            env, "DISCONNECT_HINT_REALM_INTERVAL_SECONDS", 300
        ),
        disconnect_hint_source_limit=_int(env, "DISCONNECT_HINT_SOURCE_LIMIT", 10),
        disconnect_hint_source_window_seconds=_int(
            env, "DISCONNECT_HINT_SOURCE_WINDOW_SECONDS", 600
        ),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The container's settings, built on first use and then reused."""
    return load_settings()
