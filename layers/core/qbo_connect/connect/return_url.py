"""Where the callback may send the user back to, and the signed result it appends.

Matching (``AllowedReturnUrls``)
    A return_url is allowed when it is http(s), carries no credentials, and sits under one of
    the configured prefixes: same scheme, same host and port, and a path whose *segments* start
    with the prefix's segments. ``https://app.example.com/integrations`` therefore allows
    ``/integrations`` and ``/integrations/done`` but not ``/integrationsEVIL`` (a prefix ending
    in ``/`` allows what is in that folder, not the bare ``/integrations``). Matching is on
    the parsed URL, never on the raw string, and paths a server could read differently from us
    are refused outright rather than normalised: dot segments (also percent-encoded, in any
    case), encoded slashes or backslashes, an encoded ``%`` (double encoding such as
    ``%252e``), ``;`` path parameters (``..;/``) and empty segments (``//evil.com``). Anything
    outside printable ASCII is refused too: whitespace, ASCII and C1 controls, and every
    non-ASCII code point (a bidi override, a homoglyph host, a character a browser or proxy
    rewrites), so the ``Location`` header we send is exactly the URL that was matched. An app
    percent-encodes its own path and query and writes an international host in punycode. With
    no prefix configured every return_url is refused.

The result appended to the URL
    ``realm_id``, ``tenant_id``, ``status`` (``connected`` or ``reconnected``), ``link_id``
    (what ``create_connect_link`` returned; empty in open mode), ``ts`` (Unix seconds) and
    ``sig``: the hex HMAC-SHA256, under the stack's return-signing key, of the string
    ``qbo-connect-return-v1`` and those five values joined by newlines. The app recomputes it
    (README, "Verifying the return redirect") and checks ``ts`` is recent, so a URL edited or
    forged in the browser is not mistaken for a connection the service made. Any parameters of
    these names already on the URL are replaced; the app's other parameters are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_RETURN_URL = 2048
SIGNATURE_CONTEXT = "qbo-connect-return-v1"
RESULT_FIELDS = ("realm_id", "tenant_id", "status", "link_id", "ts")
# Encodings that let a server see a different path than we do: %2e (.), %2f (/), %5c (\), %25
# (%, i.e. double encoding). Matched case-insensitively on the raw path.
_AMBIGUOUS_ESCAPE = re.compile(r"%(2e|2f|5c|25)", re.IGNORECASE)


def _path_segments(path: str) -> list[str] | None:
    """The path's segments, or None when the path is one a server might read differently."""
    if not path:
        return []
    if not path.startswith("/") or ";" in path or _AMBIGUOUS_ESCAPE.search(path):
        return None
    segments = path.split("/")[1:]
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash is fine: "/integrations/"
    if any(s in ("", ".", "..") for s in segments):
        return None
    return segments


def _prefix_parts(prefix: str) -> tuple[str, str, list[str], bool] | None:
    """Scheme, host:port, path segments, and whether the prefix names a folder ("/" last)."""
    try:
        allowed = urlsplit(prefix.strip())
    except ValueError:
        return None
    if allowed.scheme not in ("http", "https") or not allowed.netloc or "@" in allowed.netloc:
        return None
    segments = _path_segments(allowed.path)
    if segments is None:
        return None
    return allowed.scheme, allowed.netloc.lower(), segments, allowed.path.endswith("/")


def return_url_allowed(url: str, prefixes: Iterable[str]) -> bool:
    """True when ``url`` is http(s), has no credentials and sits under an allowed prefix."""
    if len(url) > MAX_RETURN_URL or not all(0x21 <= ord(c) <= 0x7E for c in url):
        return False  # printable ASCII only (see the module docstring)
    if "\\" in url:
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        return False
    segments = _path_segments(parts.path)
    if segments is None:
        return False
    for prefix in prefixes:
        allowed = _prefix_parts(prefix)
        if allowed is None:
            continue
        scheme, netloc, prefix_segments, folder = allowed
        if scheme != parts.scheme or netloc != parts.netloc.lower():
            continue
        if segments[: len(prefix_segments)] != prefix_segments:
            continue
        if folder and len(segments) == len(prefix_segments) and not parts.path.endswith("/"):
            continue  # "/integrations/" allows what is in it, not "/integrations" itself
        return True
    return False


def signed_message(realm_id: str, tenant_id: str, status: str, link_id: str, ts: str) -> bytes:
    """What the signature covers: a fixed context and the five values, one per line.

    None of the values can hold a newline (realm ids are digits, tenant ids a restricted set,
    the rest are ours), so the encoding is unambiguous.
    """
    return "\n".join([SIGNATURE_CONTEXT, realm_id, tenant_id, status, link_id, ts]).encode()


def sign(key: bytes, realm_id: str, tenant_id: str, status: str, link_id: str, ts: str) -> str:
    message = signed_message(realm_id, tenant_id, status, link_id, ts)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def with_result(
    url: str,
    *,
    key: bytes,
    realm_id: str,
    tenant_id: str,
    status: str,
    link_id: str,
    now: float,
) -> str:
    """return_url with the signed result set, its other parameters (and fragment) kept."""
    parts = urlsplit(url)
    ts = str(int(now))
    values = {
        "realm_id": realm_id,
        "tenant_id": tenant_id,
        "status": status,
        "link_id": link_id,
        "ts": ts,
        "sig": sign(key, realm_id, tenant_id, status, link_id, ts),
    }
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in values]
    query += list(values.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def link_id_of(link_hash: str | None) -> str:
    """The public id of a connect link: the first 32 hex digits of its stored SHA-256."""
    return (link_hash or "")[:32]
