"""The hosted pages of the connect flow: one small template, everything escaped.

Every page is the same shell (``lang``, a mobile viewport, one ``<main>`` with an ``<h1>``) with
plain-text paragraphs and at most one action: a form with a real ``<button>`` (the landing
page) or a link styled as a button ("Try again", "Continue"). Nothing is loaded from anywhere:
no script, no image, no font, no external stylesheet.

Security headers on every response (pages and redirects alike):

- ``Content-Security-Policy``: ``default-src 'none'``; the one inline ``<style>`` is allowed by
  its SHA-256 hash (computed below from the exact text, so editing the CSS cannot silently
  break it); ``form-action`` lists only where the landing form may go, which includes the
  origin of Intuit's authorize endpoint because Chromium checks form-action against the
  redirect that answers the form; ``frame-ancestors 'none'``; ``base-uri 'none'``.
- ``X-Frame-Options: DENY`` (older browsers), ``X-Content-Type-Options: nosniff``.
- ``Referrer-Policy: no-referrer``: the callback URL carries the authorization code and the
  state, so no page or redirect of ours may leak it through ``Referer``.
- ``Cache-Control: no-store``: pages are per-user and single-use.

The texts never contain a token, a code, a state or a link value, with one deliberate
exception: the "Try again" link back to ``connect?session=...`` shown to the same browser that
already holds that link.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aws_lambda_powertools.shared.cookies import Cookie

# Small, readable on a phone, visible keyboard focus, respects dark mode.
STYLE = (
    ":root{color-scheme:light dark;font-family:system-ui,-apple-system,'Segoe UI',Roboto,"
    "sans-serif;line-height:1.5}"
    "body{margin:0;padding:1.5rem 1rem}"
    "main{max-width:32rem;margin:0 auto}"
    "h1{font-size:1.5rem;margin:0 0 1rem}"
    ".button{display:inline-block;font:inherit;font-size:1.05rem;font-weight:600;"
    "padding:.75rem 1.5rem;min-height:44px;border:0;border-radius:.5rem;cursor:pointer;"
    "background:#2ca01c;color:#fff;text-decoration:none}"
    ".button:hover{background:#23801a}"
    ".button:focus-visible,a:focus-visible{outline:3px solid #0b5cad;outline-offset:3px}"
    ".note{font-size:.9rem;opacity:.8}"
)
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

BASE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class HttpResult:
    """What a route answers; the handler turns it into the resolver's Response.

    ``outcome`` is a short label for logs and metrics (never a secret).
    """

    status: int
    headers: dict[str, str]
    body: str = ""
    cookies: list[Cookie] = field(default_factory=list)
    outcome: str = ""


@dataclass(frozen=True)
class Link:
    href: str
    label: str


@dataclass(frozen=True)
class Form:
    """A GET form posting hidden fields back to ``action`` with one submit button."""

    action: str
    fields: tuple[tuple[str, str], ...]
    button: str


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, for CSP source lists."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = parts.hostname or ""
    if not host or any(c in host for c in " ;,'\""):
        return None
    port = f":{parts.port}" if parts.port else ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"


def csp(form_action: Iterable[str] = ()) -> str:
    sources = " ".join(dict.fromkeys(form_action)) or "'none'"
    return (
        "default-src 'none'; "
        f"style-src '{STYLE_HASH}'; "
        "img-src 'none'; "
        f"form-action {sources}; "
        "frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def security_headers(form_action: Iterable[str] = ()) -> dict[str, str]:
    return {"Content-Security-Policy": csp(form_action), **BASE_HEADERS}


def render(
    *,
    status: int,
    title: str,
    paragraphs: Sequence[str],
    heading: str | None = None,
    link: Link | None = None,
    form: Form | None = None,
    note: str | None = None,
    form_action: Iterable[str] = (),
    outcome: str = "",
    cookies: Sequence[Cookie] = (),
) -> HttpResult:
    """One page; every piece of text and every attribute is escaped here."""
    esc = html.escape
    parts = [f"<h1>{esc(heading or title)}</h1>"]
    parts += [f"<p>{esc(p)}</p>" for p in paragraphs]
    if form is not None:
        hidden = "".join(
            f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'
            for name, value in form.fields
        )
        parts.append(
            f'<form method="get" action="{esc(form.action)}">{hidden}'
            f'<button type="submit" class="button" id="connect">{esc(form.button)}</button>'
            "</form>"
        )
    if link is not None:
        parts.append(
            f'<p><a class="button" id="action" href="{esc(link.href)}">{esc(link.label)}</a></p>'
        )
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>"
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        **security_headers(form_action if form is not None else ()),
    }
    return HttpResult(status, headers, body, list(cookies), outcome)


def redirect(location: str, *, cookies: Sequence[Cookie] = (), outcome: str = "") -> HttpResult:
    """A 302 with the same security headers (Referrer-Policy matters most here)."""
    headers = {
        "Location": location,
        "Content-Type": "text/html; charset=utf-8",
        **security_headers(),
    }
    return HttpResult(302, headers, "", list(cookies), outcome)


# ----- the pages -----------------------------------------------------------------------------


def landing(
    *,
    session: str | None,
    reconnect: bool,
    authorize_origin: str | None,
    app_name: str = "",
    tenant_name: str | None = None,
    cross_site: bool = False,
) -> HttpResult:
    """The page a connect link opens: who the company will be connected to, and one button.

    ``cross_site``: the same page answered with 403 to a ``go=1`` that did not come from its
    own button, so a page elsewhere cannot send a person straight to Intuit.
    """
    verb = "Reconnect" if reconnect else "Connect"
    fields: list[tuple[str, str]] = []
    if session:
        fields.append(("session", session))
    fields.append(("go", "1"))
    sources = ["'self'"] + ([authorize_origin] if authorize_origin else [])
    app = app_name.strip() or "the app you came from"
    account = f" for the account “{tenant_name}”" if tenant_name else ""
    paragraphs = [
        f"Your QuickBooks company will be connected to {app}{account}.",
        "You will be sent to Intuit to sign in and choose the QuickBooks company to "
        "connect. Nothing is shared until you approve it there.",
    ]
    if cross_site:
        paragraphs.insert(
            0,
            "For your safety, connecting must be started from this page. Check the name "
            "below; if it is not what you expected, close this page.",
        )
    heading = f"{verb} {app_name.strip()} to QuickBooks" if app_name.strip() else None
    return render(
        status=403 if cross_site else 200,
        title=f"{verb} to QuickBooks",
        heading=heading,
        paragraphs=paragraphs,
        form=Form(action="connect", fields=tuple(fields), button=f"{verb} to QuickBooks"),
        note="You can disconnect at any time from the app or from your Intuit account.",
        form_action=sources,
        outcome="cross_site_refused" if cross_site else "landing",
    )


def message(
    status: int,
    title: str,
    *paragraphs: str,
    link: Link | None = None,
    note: str | None = None,
    outcome: str = "",
    cookies: Sequence[Cookie] = (),
) -> HttpResult:
    return render(
        status=status,
        title=title,
        paragraphs=paragraphs,
        link=link,
        note=note,
        outcome=outcome,
        cookies=cookies,
    )


def success(
    *, company_name: str | None, realm_id: str, reconnected: bool, cookies: Sequence[Cookie] = ()
) -> HttpResult:
    who = f"“{company_name}”" if company_name else f"(ID {realm_id})"
    verb = "reconnected" if reconnected else "connected"
    return render(
        status=200,
        title="QuickBooks connected" if not reconnected else "QuickBooks reconnected",
        paragraphs=[f"Your QuickBooks company {who} is {verb}.", "You can close this page now."],
        outcome="reconnected" if reconnected else "created",
        cookies=cookies,
    )
