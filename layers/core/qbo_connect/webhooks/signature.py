"""Intuit's webhook signature, and the verifier tokens it is checked against.

``intuit-signature`` is the base64 of HMAC-SHA256 over the raw request body, keyed by the app's
verifier token. It is checked over the bytes as received (never a re-serialised JSON) and
compared with :func:`hmac.compare_digest`, so the time taken says nothing about how much of a
forged signature was right.

The verifier token lives in Secrets Manager (``WebhookVerifierSecret``), as the bare token or as
``{"verifier_token": "..."}``. Rotating it is one ``put-secret-value``: Secrets Manager keeps the
old value as ``AWSPREVIOUS``, and :class:`VerifierTokens` keeps accepting it until ``overlap``
seconds after the new version was created, so deliveries Intuit signed before the switch in its
portal still verify. Tokens are cached per container for ``max_age`` seconds; a signature that
matches no cached token makes one early re-read (at most once per ``refetch_interval``), so a
container notices a rotation at the first delivery signed with the new token instead of
refusing it until its cache expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from qbo_connect.errors import ConfigurationError

SIGNATURE_HEADER = "intuit-signature"
#: Shortest time between two reads of the secret forced by an unknown signature (a flood of
#: forged requests must not turn into a flood of Secrets Manager calls).
REFETCH_INTERVAL_SECONDS = 5.0


def sign(body: bytes, token: str) -> str:
    """The ``intuit-signature`` value Intuit sends for ``body`` signed with ``token``."""
    digest = hmac.new(token.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_matches(body: bytes, signature: str | None, tokens: Iterable[str]) -> bool:
    """True when ``signature`` is ``body`` signed with one of ``tokens`` (constant-time)."""
    if not signature:
        return False
    try:
        presented = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    matched = False
    for token in tokens:
        if not token:
            continue  # an empty key would let anyone sign
        expected = hmac.new(token.encode("utf-8"), body, hashlib.sha256).digest()
        # Every token is compared, matched or not: no early exit to time.
        matched |= hmac.compare_digest(expected, presented)
    return matched


def token_from_secret(secret_string: str | None) -> str:
    """The verifier token in a secret value: the bare token, or JSON ``verifier_token``."""
    text = (secret_string or "").strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return ""
        token = value.get("verifier_token") if isinstance(value, dict) else None
        return token.strip() if isinstance(token, str) else ""
    return text


@dataclass(frozen=True)
class _Snapshot:
    current: str
    previous: str
    #: When the current version was created (epoch seconds): the previous one is accepted
    #: until ``rotated_at + overlap``.
    rotated_at: float
    fetched_at: float  # monotonic


class VerifierTokens:
    """The verifier tokens valid right now, read from Secrets Manager and cached."""

    def __init__(
        self,
        secrets_client: Any,
        secret_id: str,
        *,
        overlap_seconds: float,
        max_age_seconds: float,
        refetch_interval: float = REFETCH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not secret_id:
            raise ConfigurationError("WEBHOOK_VERIFIER_SECRET_ID is not set")
        self._client = secrets_client
        self._secret_id = secret_id
        self._overlap = overlap_seconds
        self._max_age = max_age_seconds
        self._refetch_interval = min(refetch_interval, max_age_seconds)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when ``signature`` signs ``body`` with a token valid now.

        Raises :class:`ConfigurationError` when the secret holds no token at all (every
        delivery would be refused: the operator has to set it).
        """
        if not signature:
            return False
        snapshot = self._get(force=False)
        if signature_matches(body, signature, self._valid(snapshot)):
            return True
        if self._monotonic() - snapshot.fetched_at < self._refetch_interval:
            return False
        # Maybe rotated since we cached it: read once more before refusing.
        return signature_matches(body, signature, self._valid(self._get(force=True)))

    def _valid(self, snapshot: _Snapshot) -> list[str]:
        tokens = [snapshot.current]
        if snapshot.previous and self._clock() < snapshot.rotated_at + self._overlap:
            tokens.append(snapshot.previous)
        return tokens

    def _get(self, *, force: bool) -> _Snapshot:
        with self._lock:
            snapshot = self._snapshot
            fresh = snapshot is not None and (
                self._monotonic() - snapshot.fetched_at < self._max_age
            )
            if snapshot is not None and fresh and not force:
                return snapshot
            if (
                snapshot is not None
                and force
                and (self._monotonic() - snapshot.fetched_at < self._refetch_interval)
            ):
                return snapshot  # another request just re-read it
            snapshot = self._fetch()
            self._snapshot = snapshot
            return snapshot

    def _fetch(self) -> _Snapshot:
        current = self._client.get_secret_value(SecretId=self._secret_id, VersionStage="AWSCURRENT")
        token = token_from_secret(current.get("SecretString"))
        if not token:
            raise ConfigurationError(
                "the webhook verifier secret holds no token (see README: Webhooks)"
            )
        created = current.get("CreatedDate")
        rotated_at = created.timestamp() if hasattr(created, "timestamp") else 0.0
        previous = ""
        try:
            older = self._client.get_secret_value(
                SecretId=self._secret_id, VersionStage="AWSPREVIOUS"
            )
            previous = token_from_secret(older.get("SecretString"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
        return _Snapshot(
            current=token, previous=previous, rotated_at=rotated_at, fetched_at=self._monotonic()
        )
