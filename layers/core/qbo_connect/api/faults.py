"""Intuit's error bodies in one shape, whatever form they came in.

QuickBooks answers errors as ``{"Fault": {"Error": [{"Message", "Detail", "code", "element"}],
"type"}}``, its gateway's 401 as the lower-case ``{"fault": {"error": [{"message", "detail",
"code"}], "type"}}``, a throttle sometimes as XML (``<IntuitResponse><Fault type="SERVICE">
<Error code="3001"><Message>..</Message><Detail>..</Detail></Error></Fault></IntuitResponse>``)
even when JSON was asked for, and a 200 may carry a ``Fault`` too. :func:`normalise` turns any
of them into ``{"type", "code", "message", "detail", "element"}`` (the first error), or None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

THROTTLE_CODE = "3001"
_THROTTLE_WORD = "throttleexceeded"
_ERROR_CODE = re.compile(r"errorCode=0*(\d+)")


def normalise(body: Any, content_type: str = "") -> dict[str, str] | None:
    """The normalised fault of a decoded JSON body or an XML text, or None if there is none."""
    if isinstance(body, Mapping):
        return _from_json(body)
    if isinstance(body, str) and body.lstrip().startswith("<"):
        return _from_xml(body)
    return None


def is_throttle(status: int, fault: Mapping[str, str] | None) -> bool:
    """Intuit's throttle: a 429, or Fault code 3001 / ThrottleExceeded (also its 403 form)."""
    if status == 429:
        return True
    if fault is None:
        return False
    text = f"{fault.get('message', '')} {fault.get('detail', '')}".lower()
    return fault.get("code") == THROTTLE_CODE or _THROTTLE_WORD in text


def _from_json(body: Mapping[str, Any]) -> dict[str, str] | None:
    fault = body.get("Fault")
    if fault is None:
        fault = body.get("fault")
    if not isinstance(fault, Mapping):
        return None
    errors = _get(fault, "Error")
    first = errors[0] if isinstance(errors, list) and errors else errors
    first = first if isinstance(first, Mapping) else {}
    return _shape(
        fault_type=_get(fault, "type"),
        code=_get(first, "code"),
        message=_get(first, "Message"),
        detail=_get(first, "Detail"),
        element=_get(first, "element"),
    )


def _get(mapping: Mapping[str, Any], name: str) -> Any:
    for key in (name, name.lower(), name[:1].upper() + name[1:]):
        if key in mapping:
            return mapping[key]
    return None


def _from_xml(text: str) -> dict[str, str] | None:
    # No DTD, no entities: Intuit's answers have none, and refusing any document that declares
    # them before parsing is what keeps expat safe here (entity expansion needs a DTD; expat
    # never fetches external ones), without a dependency for one error body.
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return None
    try:
        root = ElementTree.fromstring(text)  # noqa: S314  # nosec B314 - DTDs refused above
    except ElementTree.ParseError:
        return None
    fault = next((e for e in root.iter() if _local(e.tag).lower() == "fault"), None)
    if fault is None:
        return None
    error = next((e for e in fault.iter() if _local(e.tag).lower() == "error"), None)

    def child(name: str) -> str | None:
        if error is None:
            return None
        found = next((e for e in error if _local(e.tag).lower() == name), None)
        return None if found is None else (found.text or "")

    return _shape(
        fault_type=fault.get("type"),
        code=None if error is None else error.get("code"),
        message=child("message"),
        detail=child("detail"),
        element=None if error is None else error.get("element"),
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _shape(
    *, fault_type: Any, code: Any, message: Any, detail: Any, element: Any
) -> dict[str, str]:
    code_text = "" if code is None else str(code)
    if not code_text and isinstance(message, str):
        # The gateway's lower-case form may put the code only inside the message text.
        found = _ERROR_CODE.search(message)
        code_text = found.group(1) if found else ""
    return {
        "type": "" if fault_type is None else str(fault_type),
        "code": code_text.lstrip("0") or code_text,
        "message": "" if message is None else str(message),
        "detail": "" if detail is None else str(detail),
        "element": "" if element is None else str(element),
    }
