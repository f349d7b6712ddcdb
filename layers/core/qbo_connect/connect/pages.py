"""The hosted pages of the connect flow: one small template, everything escaped.

Every page is the same shell (``lang``, a mobile viewport, one ``<main>`` with an ``<h1>``) with
plain-text paragraphs and at most one action: a form with a real ``<button>`` (the landing
page) or a link styled as a button ("Try again"). Around it: a header with the deployer's logo
and name (``branding``) and a "Sandbox" mark on sandbox deployments; a footer with the support
and privacy links. Nothing else is loaded from anywhere: no script, no font, no external
stylesheet; the only image is the logo (``AppLogoUrl``, https), from exactly its origin.

Security headers on every response (pages and redirects alike):

- ``Content-Security-Policy``: ``default-src 'none'``; the one inline ``<style>`` is allowed by
  its SHA-256 hash (computed below from the exact text, so editing the CSS cannot silently
  break it); ``img-src`` is the logo's origin or ``'none'``; ``form-action`` lists only where
  the landing form may go, which includes the origin of Intuit's authorize endpoint because
  Chromium checks form-action against the redirect that answers the form;
  ``frame-ancestors 'none'``; ``base-uri 'none'``.
- ``X-Frame-Options: DENY`` (older browsers), ``X-Content-Type-Options: nosniff``.
- ``Referrer-Policy: no-referrer``: the callback URL carries the authorization code and the
  state, so no page or redirect of ours may leak it through ``Referer``.
- ``Cache-Control: no-store``: pages are per-user and single-use.
- ``Strict-Transport-Security: max-age=31536000``: a browser that has been here once never again
  tries the service over plain HTTP (where a network attacker could rewrite a connect link or
  read a callback's code). Without ``includeSubDomains``: on a custom domain the service must
  not decide for the app's other hosts.

The texts never contain a token, a code, a state or a link value, with one deliberate
exception: the "Try again" link back to ``connect?session=...`` shown to the same browser that
already holds that link.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aws_lambda_powertools.shared.cookies import Cookie

from qbo_connect.config import Settings
from qbo_connect.connect.branding import Branding, text_color_on
from qbo_connect.connect.copy_table import COPY, EN, SCOPE_WORDS, UI, render_text
from qbo_connect.connect.outcomes import Outcome

# Small, readable on a phone down to 320 px, visible keyboard focus, respects dark mode. The
# accent (the button) comes from AccentColor; the text on it is black or white, whichever
# contrasts more (branding.text_color_on), so no accent makes it unreadable.
BASE_STYLE = (
    ":root{color-scheme:light dark;font-family:system-ui,-apple-system,'Segoe UI',Roboto,"
    "sans-serif;line-height:1.5}"
    "body{margin:0;padding:1.5rem 1rem;overflow-wrap:anywhere}"
    "header,main,footer{max-width:32rem;margin:0 auto}"
    "header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;margin-bottom:1.5rem}"
    "header img{height:40px;width:auto;max-width:10rem}"
    ".app{font-weight:600}"
    ".sandbox{background:#fde68a;color:#3b2f00;border-radius:.25rem;padding:.1rem .5rem;"
    "font-size:.9rem;font-weight:600}"
    "h1{font-size:1.5rem;margin:0 0 1rem}"
    ".button{display:inline-block;font:inherit;font-size:1.05rem;font-weight:600;"
    "padding:.75rem 1.5rem;min-height:44px;box-sizing:border-box;border:0;border-radius:.5rem;"
    "cursor:pointer;text-decoration:none}"
    ".button:focus-visible,a:focus-visible{outline:3px solid #0b5cad;outline-offset:3px}"
    ".note{font-size:.9rem}"
    ".ref{font-size:.9rem;font-family:ui-monospace,Menlo,Consolas,monospace}"
    "footer{margin-top:2rem;padding-top:1rem;border-top:1px solid #8886;font-size:.9rem}"
    "footer a{margin-right:1.5rem}"
    ".badge{display:flex;align-items:center;justify-content:center;width:3rem;height:3rem;"
    "border-radius:50%;font-size:1.75rem;font-weight:700;margin:0 0 .75rem}"
    ".badge.success{background:#dcfce7;color:#14532d}"
    ".badge.problem{background:#fee2e2;color:#7f1d1d}"
    ".next{font-weight:600}"
)

#: The visual cue of a page's outcome (the heading says it in words for screen readers).
BADGES = {"success": "\u2713", "problem": "!"}


def style_for(branding: Branding) -> str:
    """The stylesheet with the deployment's accent colour (hashed into the CSP per page)."""
    accent, text, hover = branding.accent, branding.accent_text, branding.accent_hover
    hover_text = text_color_on(hover)
    return BASE_STYLE + (
        f".button{{background:{accent};color:{text}}}"
        f".button:hover{{background:{hover};color:{hover_text}}}"
    )


def style_hash(style: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()


#: The stylesheet (and its CSP hash) of a deployment without branding.
STYLE = style_for(Branding())
STYLE_HASH = style_hash(STYLE)


NONE = "'none'"
#: One year; see the module docstring.
HSTS = "max-age=31536000"
BASE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Strict-Transport-Security": HSTS,
}


@dataclass
class HttpResult:
    """What a route answers; the handler turns it into the resolver's Response.

    ``outcome`` is a short label for logs and metrics (never a secret); ``reference`` is the
    short id an error page shows, logged with the answer so an operator can find it.
    """

    status: int
    headers: dict[str, str]
    body: str = ""
    cookies: list[Cookie] = field(default_factory=list)
    outcome: str = ""
    reference: str = ""


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


def csp(
    form_action: Iterable[str] = (), *, style: str = STYLE, img_origin: str | None = None
) -> str:
    """The page's policy: its own inline style by hash, images only from the logo's origin."""
    sources = " ".join(dict.fromkeys(form_action)) or "'none'"
    return (
        "default-src 'none'; "
        f"style-src '{style_hash(style)}'; "
        f"img-src {img_origin or NONE}; "
        f"form-action {sources}; "
        "frame-ancestors 'none'; "
        "base-uri 'none'"
    )


def security_headers(
    form_action: Iterable[str] = (), *, style: str = STYLE, img_origin: str | None = None
) -> dict[str, str]:
    policy = csp(form_action, style=style, img_origin=img_origin)
    return {"Content-Security-Policy": policy, **BASE_HEADERS}


def new_reference() -> str:
    """A short id for an error page, easy to read aloud: ``7F3A-91C2``."""
    value = secrets.token_hex(4).upper()
    return f"{value[:4]}-{value[4:]}"


def branding_from(settings: Settings) -> Branding:
    """The deployment's branding, from its settings (never from a request)."""
    return Branding(
        app_name=settings.app_name,
        logo_url=settings.app_logo_url,
        accent=settings.accent_color,
        support_url=settings.support_url,
        privacy_url=settings.privacy_url,
        sandbox=settings.intuit.environment == "sandbox",
    )


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
    language: str = EN,
    branding: Branding | None = None,
    details: Sequence[str] = (),
    items: Sequence[str] = (),
    return_link: Link | None = None,
    tone: str = "",
    next_step: str | None = None,
) -> HttpResult:
    """One page; every piece of text and every attribute is escaped here.

    ``tone`` (``success`` or ``problem``) puts a visual mark above the heading; ``next_step``
    is what the person can do now, shown when the page offers no button or link to go on.

    Around the content: a header with the app's logo and name and, for a sandbox deployment,
    a visible "Sandbox" mark; a footer with the support and privacy links. A page with a status
    of 400 or more also shows a reference id (logged with the answer, see ``web.respond``).
    """
    esc = html.escape
    brand = branding or Branding()
    ui = UI[language]
    app = brand.app_name or ui["app"]
    header: list[str] = []
    if brand.logo_url:
        alt = ui["logo"].format(app=app) if brand.app_name else ""
        header.append(f'<img src="{esc(brand.logo_url)}" alt="{esc(alt)}">')
    if brand.app_name:
        header.append(f'<span class="app">{esc(brand.app_name)}</span>')
    if brand.sandbox:
        header.append(f'<span class="sandbox" id="sandbox">{esc(ui["sandbox"])}</span>')
    parts = []
    if tone in BADGES:
        parts.append(
            f'<div class="badge {tone}" id="badge" aria-hidden="true">{BADGES[tone]}</div>'
        )
    parts.append(f"<h1>{esc(heading or title)}</h1>")
    parts += [f"<p>{esc(p)}</p>" for p in paragraphs]
    parts += [f"<p><strong>{esc(d)}</strong></p>" for d in details]
    if items:
        parts.append(f"<p>{esc(ui['access'])}</p><ul>")
        parts += [f"<li>{esc(item)}</li>" for item in items]
        parts.append("</ul>")
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
    if return_link is not None:
        parts.append(
            f'<p><a id="return" href="{esc(return_link.href)}">{esc(return_link.label)}</a></p>'
        )
    if next_step and link is None and return_link is None and form is None:
        parts.append(f'<p class="next" id="next">{esc(next_step)}</p>')
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    reference = new_reference() if status >= 400 else ""
    if reference:
        text = ui["reference"].format(reference=reference)
        parts.append(f'<p class="ref" id="reference">{esc(text)}</p>')
    footer = []
    if brand.support_url and status >= 400:
        footer.append(f'<a id="support" href="{esc(brand.support_url)}">{esc(ui["support"])}</a>')
    elif brand.support_url:
        footer.append(f'<a href="{esc(brand.support_url)}">{esc(ui["support"])}</a>')
    if brand.privacy_url:
        footer.append(f'<a id="privacy" href="{esc(brand.privacy_url)}">{esc(ui["privacy"])}</a>')
    style = style_for(brand)
    body = (
        f'<!doctype html><html lang="{esc(language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex,nofollow">'
        f"<title>{esc(title)}</title><style>{style}</style></head><body>"
        + (f"<header>{''.join(header)}</header>" if header else "")
        + f"<main>{''.join(parts)}</main>"
        + (f"<footer>{''.join(footer)}</footer>" if footer else "")
        + "</body></html>"
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Language": language,
        **security_headers(
            form_action if form is not None else (), style=style, img_origin=brand.logo_origin
        ),
    }
    return HttpResult(status, headers, body, list(cookies), outcome, reference)


def redirect(location: str, *, cookies: Sequence[Cookie] = (), outcome: str = "") -> HttpResult:
    """A 302 with the same security headers (Referrer-Policy matters most here)."""
    headers = {
        "Location": location,
        "Content-Type": "text/html; charset=utf-8",
        **security_headers(),
    }
    return HttpResult(302, headers, "", list(cookies), outcome)


# ----- pages from the copy table --------------------------------------------------------------


def _words(language: str, branding: Branding) -> dict[str, str]:
    ui = UI[language]
    return {
        "app": branding.app_name or ui["app"],
        "App": branding.app_name or ui["App"],
    }


def outcome_page(
    outcome: Outcome,
    *,
    language: str = EN,
    branding: Branding | None = None,
    retry: str | None = None,
    return_url: str | None = None,
    company_name: str | None = None,
    realm_id: str | None = None,
    cookies: Sequence[Cookie] = (),
    detail: str | None = None,
) -> HttpResult:
    """The page for ``outcome`` from the copy table, in ``language``.

    ``retry`` is where "Try again" leads (shown only for outcomes whose row allows it);
    ``return_url`` adds "Return to <AppName>" (the connect link's return address).
    """
    brand = branding or Branding()
    row = COPY[outcome]
    text = row.text(language)
    ui = UI[language]
    values = _words(language, brand)
    if company_name:
        values["company"] = ui["quote"].format(name=company_name)
    else:
        values["company"] = ui["company_id"].format(realm_id=realm_id or "?")
    success = outcome in (Outcome.CREATED, Outcome.RECONNECTED)
    return render(
        tone="success" if success else "problem" if row.status >= 400 else "",
        next_step=render_text(ui["next_done" if row.status < 400 else "next_problem"], values),
        status=row.status,
        title=render_text(text.title, values),
        paragraphs=[render_text(p, values) for p in text.paragraphs] + ([detail] if detail else []),
        link=Link(retry, ui["try_again"]) if retry and row.retry else None,
        return_link=(
            Link(return_url, render_text(ui["return_to"], values)) if return_url else None
        ),
        outcome=outcome.value,
        cookies=cookies,
        language=language,
        branding=brand,
    )


def scope_words(scopes: Iterable[str], language: str) -> list[str]:
    """The requested access in plain words, in a stable order; unknown scopes as they are."""
    words = SCOPE_WORDS[language]
    known = [words[s] for s in words if s in set(scopes)]
    return known + sorted(s for s in set(scopes) if s not in words)


def landing_page(
    outcome: Outcome,
    *,
    session: str | None,
    authorize_origin: str | None,
    scopes: Iterable[str],
    extra_form_action: Sequence[str] = (),
    tenant_name: str | None = None,
    language: str = EN,
    branding: Branding | None = None,
) -> HttpResult:
    """ "<AppName> wants to connect to your QuickBooks company": who asks, for which account,
    the access in plain words, and one button (a GET form back to ``connect`` with ``go=1``).

    ``outcome`` is LANDING, LANDING_RECONNECT or CROSS_SITE_REFUSED (the same page answered
    with 403 to a ``go=1`` that did not come from its own button).
    """
    brand = branding or Branding()
    row = COPY[outcome]
    text = row.text(language)
    ui = UI[language]
    values = _words(language, brand)
    fields: list[tuple[str, str]] = []
    if session:
        fields.append(("session", session))
    fields.append(("go", "1"))
    button = ui["reconnect"] if outcome == Outcome.LANDING_RECONNECT else ui["connect"]
    return render(
        status=row.status,
        title=render_text(text.title, values),
        paragraphs=[render_text(p, values) for p in text.paragraphs],
        details=[ui["account"].format(account=tenant_name, app=values["app"])]
        if tenant_name
        else (),
        items=scope_words(scopes, language),
        form=Form(action="connect", fields=tuple(fields), button=button),
        note=render_text(ui["disconnect_note"], values),
        form_action=[
            "'self'",
            *([authorize_origin] if authorize_origin else []),
            *extra_form_action,
        ],
        outcome=outcome.value,
        language=language,
        branding=brand,
    )
