"""Shaping direct-invoke responses: a result dict, or ``{"error": {"code", "message", ...}}``
(``reason`` and ``intuit_tid`` when known, see ``qbo_connect.errors``).

Direct invokes never raise to the caller for expected failures: the caller (another workload)
branches on ``error.code``. Only genuinely unexpected failures are logged with a traceback, and
even then the caller sees a generic message (no internals, never token material).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

from qbo_connect.errors import ConfigurationError, InvalidRequest, ServiceError

logger = Logger(child=True)


def respond(call: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    try:
        return dict(call())
    except ConfigurationError as exc:
        logger.error("configuration error", extra=exc.log_fields())
        return exc.to_dict()
    except ServiceError as exc:
        logger.info("request refused", extra=exc.log_fields())
        return exc.to_dict()
    except Exception:
        logger.exception("unexpected failure")
        return {"error": {"code": "internal_error", "message": "internal error"}}


def require_object(event: Any) -> Mapping[str, Any]:
    if not isinstance(event, Mapping):
        raise InvalidRequest("the payload must be a JSON object")
    return event
