"""Typed settings, read once per container from environment variables.

Logic never reads ``os.environ`` itself: it receives a :class:`Settings`. That keeps every knob
in one place, makes tests build settings explicitly, and lets the local stack set one set of
variables for all functions (os.environ is one per process).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import field, replace
from functools import lru_cache

from qbo_connect.connect.branding import APP_NAME_MAX, DEFAULT_ACCENT, check_accent, check_url
from qbo_connect.errors import ConfigurationError
from qbo_connect.fieldwise import Fieldwise, frozen

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


@frozen
class IntuitEndpoints(Fieldwise):
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


@frozen
class Settings(Fieldwise):
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
    # Intuit's Disconnect URL: at most one verification (a probe and at most one refresh) per
    # realm per interval, however many hints anyone sends.
    disconnect_hint_realm_interval_seconds: int = 86400
    # CorePlus usage (qbo_connect.usage): this app's share of the workspace's monthly pool.
    coreplus_monthly_budget: int = 500_000
    coreplus_soft_limit_percent: float = 90.0
    coreplus_tenant_quota: int = 0
    coreplus_batch_counting: str = "per_item"
    raw_token_reads: bool = True
    usage_flush_seconds: float = 5.0
    usage_flush_calls: int = 50
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
    def coreplus_soft_limit(self) -> int:
        """Workloads' CorePlus calls a month (the rest of the budget is the service's reserve)."""
        return int(self.coreplus_monthly_budget * self.coreplus_soft_limit_percent / 100)

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


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


def _text(name: str, raw: str) -> str:
    return raw


def _base_url(name: str, raw: str) -> str:
    return raw.rstrip("/")


def _flag(name: str, raw: str) -> bool:
    return raw.lower() == "true"


def _enabled(name: str, raw: str) -> bool:
    if raw.lower() not in ("enabled", "disabled", "true", "false"):
        raise ConfigurationError(f"{name} must be 'enabled' or 'disabled', got {raw!r}")
    return raw.lower() in ("enabled", "true")


def _batch_counting(name: str, raw: str) -> str:
    if raw not in ("per_item", "per_call"):
        raise ConfigurationError(f"{name} must be 'per_item' or 'per_call', got {raw!r}")
    return raw


def _list(name: str, raw: str) -> tuple[str, ...]:
    return _split(raw, ",")


def _words(name: str, raw: str) -> tuple[str, ...]:
    return _split(raw)


def _app_name(name: str, raw: str) -> str:
    return " ".join(raw.split())[:APP_NAME_MAX]


def _url(name: str, raw: str) -> str:
    return check_url(name, raw)


def _support_url(name: str, raw: str) -> str:
    return check_url(name, raw, schemes=("https", "mailto"))


def _accent(name: str, raw: str) -> str:
    return check_accent(raw)


#: Every function of the template (its logical ID) and the settings it cannot run without.
FUNCTIONS = (
    "ConnectFunction",
    "CallbackFunction",
    "GetTokenFunction",
    "ConnectionsFunction",
    "RefreshSweepFunction",
    "RefreshWorkerFunction",
    "WebhookFunction",
    "WebhookProcessorFunction",
)
_VAULT = ("GetTokenFunction", "ConnectionsFunction", "RefreshWorkerFunction")
_FLOW = ("ConnectFunction", "CallbackFunction")


@frozen
class Setting(Fieldwise):
    """One environment variable: the Settings field it fills, how it is read, its default when
    unset or empty, and the functions that cannot run without a value (``required_by``)."""

    env: str
    field: str
    parse: Callable[[str, str], object]
    default: object = None
    required_by: tuple[str, ...] = ()
    #: Another variable whose value, times ``scale``, is the default (minutes -> seconds).
    fallback: tuple[str, float] | None = None


#: The service's settings, declared once. Intuit's endpoints (INTUIT_*, QUICKBOOKS_API_BASE_URL)
#: and the scopes are read by :func:`load_settings` itself: their defaults depend on the
#: environment and they are checked together.
SETTINGS: tuple[Setting, ...] = (
    Setting("TABLE_NAME", "table_name", _text, "", (*_VAULT, *_FLOW, "RefreshSweepFunction")),
    Setting("TOKEN_KEY_ID", "token_key_id", _text, "", (*_VAULT, *_FLOW)),
    Setting("INTUIT_CLIENT_SECRET_ID", "client_secret_id", _text, "", (*_VAULT, *_FLOW)),
    Setting("CONNECT_MODE", "connect_mode", _text, "link"),
    Setting("ALLOWED_RETURN_URLS", "allowed_return_urls", _list, ()),
    Setting("PUBLIC_BASE_URL", "public_base_url", _base_url, ""),
    Setting("CONNECT_BASE_URL", "connect_base_url", _base_url, ""),
    Setting("CONNECT_LINK_TTL_SECONDS", "connect_link_ttl_seconds", _int, 1800),
    # Needed only when a connect link carries a return_url (the flow says so then).
    Setting("RETURN_SIGNING_SECRET_ID", "return_signing_secret_id", _text, ""),
    Setting("STATE_TTL_SECONDS", "state_ttl_seconds", _int, 600),
    Setting("INTUIT_TIMEOUT_SECONDS", "intuit_timeout_seconds", _float, 10.0),
    Setting("INTUIT_MAX_ATTEMPTS", "intuit_max_attempts", _int, 3),
    Setting("INTUIT_BACKOFF_BASE_SECONDS", "intuit_backoff_base_seconds", _float, 0.5),
    Setting("INTUIT_BACKOFF_MAX_SECONDS", "intuit_backoff_max_seconds", _float, 8.0),
    Setting("AWS_CONNECT_TIMEOUT_SECONDS", "aws_connect_timeout_seconds", _float, 1.0),
    Setting("AWS_READ_TIMEOUT_SECONDS", "aws_read_timeout_seconds", _float, 3.0),
    Setting("AWS_MAX_ATTEMPTS", "aws_max_attempts", _int, 3),
    Setting("REFRESH_LEASE_SECONDS", "lease_seconds", _float, 0.0),
    Setting("LEASE_WAIT_SECONDS", "lease_wait_seconds", _float, 25.0),
    # The template speaks minutes (CloudFormation cannot multiply); seconds win if set.
    Setting(
        "INVALID_GRANT_WINDOW_SECONDS",
        "invalid_grant_window_seconds",
        _int,
        21600,
        fallback=("INVALID_GRANT_WINDOW_MINUTES", 60),
    ),
    Setting("INVALID_GRANT_MIN_ATTEMPTS", "invalid_grant_min_attempts", _int, 3),
    Setting("INVALID_GRANT_BREAKER_THRESHOLD", "invalid_grant_breaker_threshold", _int, 10),
    Setting(
        "INVALID_GRANT_BREAKER_WINDOW_SECONDS",
        "invalid_grant_breaker_window_seconds",
        _int,
        3600,
        fallback=("INVALID_GRANT_BREAKER_WINDOW_MINUTES", 60),
    ),
    Setting("RETRY_BACKOFF_BASE_SECONDS", "retry_backoff_base_seconds", _float, 60.0),
    Setting("RETRY_BACKOFF_MAX_SECONDS", "retry_backoff_max_seconds", _float, 1800.0),
    Setting(
        "ACCESS_TOKEN_REFRESH_MARGIN_SECONDS", "access_token_refresh_margin_seconds", _int, 300
    ),
    Setting("LAST_USED_WRITE_INTERVAL_SECONDS", "last_used_write_interval_seconds", _int, 300),
    Setting("KEEP_ALIVE_HOURS", "keep_alive_hours", _int, 48),
    Setting("KEEP_WARM_MINUTES", "keep_warm_minutes", _int, 60),
    Setting("DUE_SHARDS", "due_shards", _int, 16),
    Setting("SWEEP_REQUEUE_SECONDS", "sweep_requeue_seconds", _float, 900.0),
    Setting(
        "REFRESH_QUEUE_URL",
        "refresh_queue_url",
        _text,
        "",
        ("RefreshSweepFunction", "ConnectFunction"),
    ),
    Setting("EVENT_BUS_NAME", "event_bus_name", _text, "default"),
    Setting("EMIT_REFRESHED_EVENTS", "emit_refreshed_events", _flag, False),
    Setting("SECRET_MAX_AGE_SECONDS", "secret_max_age_seconds", _int, 300),
    Setting("APP_NAME", "app_name", _app_name, ""),
    Setting("APP_LOGO_URL", "app_logo_url", _url, ""),
    Setting("ACCENT_COLOR", "accent_color", _accent, DEFAULT_ACCENT),
    Setting("SUPPORT_URL", "support_url", _support_url, ""),
    Setting("PRIVACY_URL", "privacy_url", _url, ""),
    Setting(
        "DISCONNECT_HINT_REALM_INTERVAL_SECONDS",
        "disconnect_hint_realm_interval_seconds",
        _int,
        86400,
    ),
    Setting("COREPLUS_MONTHLY_BUDGET", "coreplus_monthly_budget", _int, 500_000),
    Setting("COREPLUS_SOFT_LIMIT_PERCENT", "coreplus_soft_limit_percent", _float, 90.0),
    Setting("COREPLUS_TENANT_QUOTA", "coreplus_tenant_quota", _int, 0),
    Setting("COREPLUS_BATCH_COUNTING", "coreplus_batch_counting", _batch_counting, "per_item"),
    Setting("RAW_TOKEN_READS", "raw_token_reads", _enabled, True),
    Setting("USAGE_FLUSH_SECONDS", "usage_flush_seconds", _float, 5.0),
    Setting("USAGE_FLUSH_CALLS", "usage_flush_calls", _int, 50),
)


def _non_negative(name: str, raw: str) -> float:
    value = _float(name, raw)
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative")
    return value


def _whole(name: str, raw: str) -> int:
    return int(_non_negative(name, raw))


_WEBHOOKS = ("WebhookFunction", "WebhookProcessorFunction")

#: The webhook functions' settings (``qbo_connect.webhooks.settings.WebhookSettings``): declared
#: here with the others, built apart so the gateway's cold start reads only what it uses.
WEBHOOK_SETTINGS: tuple[Setting, ...] = (
    Setting("WEBHOOK_VERIFIER_SECRET_ID", "verifier_secret_id", _text, "", ("WebhookFunction",)),
    Setting("WEBHOOK_QUEUE_URL", "queue_url", _text, "", _WEBHOOKS),
    Setting("WEBHOOK_DEAD_LETTER_QUEUE_URL", "dead_letter_queue_url", _text, ""),
    Setting("TABLE_NAME", "table_name", _text, "", ("WebhookProcessorFunction",)),
    Setting("EVENT_BUS_NAME", "event_bus_name", _text, "default"),
    Setting("WEBHOOK_MAX_BODY_BYTES", "max_body_bytes", _whole, 1_048_576),
    Setting(
        "WEBHOOK_VERIFIER_OVERLAP_SECONDS",
        "overlap_seconds",
        _non_negative,
        3600.0,
        fallback=("WEBHOOK_VERIFIER_OVERLAP_MINUTES", 60),
    ),
    Setting("SECRET_MAX_AGE_SECONDS", "secret_max_age_seconds", _non_negative, 300.0),
    Setting("WEBHOOK_DEDUP_TTL_SECONDS", "dedup_ttl_seconds", _whole, 7 * 86400),
    Setting("WEBHOOK_CLAIM_SECONDS", "claim_seconds", _non_negative, 120.0),
    Setting("WEBHOOK_RETRY_BASE_SECONDS", "retry_base_seconds", _non_negative, 10.0),
    Setting("WEBHOOK_RETRY_MAX_SECONDS", "retry_max_seconds", _non_negative, 900.0),
)


def values_of(settings: tuple[Setting, ...], env: Mapping[str, str]) -> dict[str, object]:
    """``{field: value}`` for a table of settings, read from ``env``."""
    return {s.field: _value(env, s) for s in settings}


def _value(env: Mapping[str, str], setting: Setting) -> object:
    raw = env.get(setting.env, "").strip()
    if raw:
        return setting.parse(setting.env, raw)
    if setting.fallback is not None:
        other, scale = setting.fallback
        fallback_raw = env.get(other, "").strip()
        if fallback_raw:
            scaled = _float(other, fallback_raw) * scale
            return int(scaled) if setting.parse in (_int, _whole) else scaled
    if setting.parse in (_accent,):
        return setting.parse(setting.env, "")
    return setting.default


def missing_for(function: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The variables ``function`` needs that are unset or empty in ``env``."""
    env = os.environ if env is None else env
    declared = {s.env: s for s in (*SETTINGS, *WEBHOOK_SETTINGS) if function in s.required_by}
    return [name for name in declared if not env.get(name, "").strip()]


def check_for(function: str, env: Mapping[str, str] | None = None) -> None:
    """Fail at cold start, naming every missing variable, rather than at the first request
    that needs one (the handlers call this when their module loads)."""
    missing = missing_for(function, env)
    if missing:
        raise ConfigurationError(f"{function} needs {', '.join(missing)} (template.yaml sets them)")


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
        value = (env.get(name) or default).strip()
        return value if name == "INTUIT_ISSUER" else value.rstrip("/")

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
    values = values_of(SETTINGS, env)
    if values["connect_mode"] not in ("link", "open"):
        raise ConfigurationError("CONNECT_MODE must be 'link' or 'open'")
    return Settings(
        intuit=endpoints,
        scopes=scopes,
        allowed_extra_scopes=extra_scopes,
        **values,  # type: ignore[arg-type]
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The container's settings, built on first use and then reused."""
    return load_settings()
