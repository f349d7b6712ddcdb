"""The deployer's branding on the hosted pages: name, logo, accent colour, support and privacy.

Every value comes from a template parameter (``AppName``, ``AppLogoUrl``, ``AccentColor``,
``SupportUrl``, ``PrivacyUrl``) and is checked once, when settings load, so a bad value fails
the deploy's first request with a clear configuration error instead of a broken page:

- the logo must be an ``https://`` URL without credentials: the pages' Content-Security-Policy
  then allows images from exactly that origin and nothing else;
- the accent colour must be ``#rrggbb``. The text drawn on it is not configurable: it is black
  or white, whichever contrasts more (WCAG 2 relative luminance). One of the two always reaches
  at least 4.58:1, above the 4.5:1 that normal-size text needs, so no accent can make the
  button unreadable;
- support and privacy addresses must be ``https://`` (or ``mailto:`` for support).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from qbo_connect.errors import ConfigurationError
from qbo_connect.fieldwise import Fieldwise, frozen

#: A green close to QuickBooks' own that carries white text at 5.5:1.
DEFAULT_ACCENT = "#1e7a14"
APP_NAME_MAX = 64
URL_MAX = 512
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
_UNSAFE_URL_CHARS = re.compile(r"[\s\"'<>\\`]")


def relative_luminance(color: str) -> float:
    """WCAG 2 relative luminance of ``#rrggbb``."""
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    light, dark = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_color_on(background: str) -> str:
    """Black or white, whichever is more readable on ``background``."""
    return (
        "#ffffff"
        if contrast_ratio(background, "#ffffff") >= contrast_ratio(background, "#000000")
        else "#000000"
    )


def darker(color: str, amount: float = 0.15) -> str:
    """``color`` mixed with black (the hover shade of the button)."""
    channels = [round(int(color[i : i + 2], 16) * (1 - amount)) for i in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in channels)


def check_accent(value: str) -> str:
    value = value.strip()
    if not value:
        return DEFAULT_ACCENT
    if not _HEX.fullmatch(value):
        raise ConfigurationError(f"ACCENT_COLOR must look like #1e7a14, got {value[:16]!r}")
    return value.lower()


def check_url(name: str, value: str, *, schemes: tuple[str, ...] = ("https",)) -> str:
    """An absolute URL with one of ``schemes``, no credentials, nothing that breaks out of HTML."""
    value = value.strip()
    if not value:
        return ""
    problem = None
    if len(value) > URL_MAX or _UNSAFE_URL_CHARS.search(value):
        problem = "is too long or holds spaces or quotes"
    else:
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in schemes:
            problem = f"must start with {' or '.join(s + ':' for s in schemes)}"
        elif parts.scheme != "mailto" and (not parts.hostname or "@" in parts.netloc):
            problem = "needs a host and no user name or password"
        elif parts.scheme == "mailto" and "@" not in parts.path:
            problem = "must be mailto:someone@example.com"
    if problem:
        raise ConfigurationError(f"{name} {problem}")
    return value


@frozen
class Branding(Fieldwise):
    """What the pages show of the deployer; built from settings, never from a request."""

    app_name: str = ""
    logo_url: str = ""
    accent: str = DEFAULT_ACCENT
    support_url: str = ""
    privacy_url: str = ""
    sandbox: bool = False

    @property
    def accent_text(self) -> str:
        return text_color_on(self.accent)

    @property
    def accent_hover(self) -> str:
        return darker(self.accent)

    @property
    def logo_origin(self) -> str | None:
        if not self.logo_url:
            return None
        parts = urlsplit(self.logo_url)
        port = f":{parts.port}" if parts.port else ""
        return f"https://{(parts.hostname or '').lower()}{port}"
