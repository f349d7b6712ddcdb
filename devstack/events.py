"""Lambda event shapes: what AWS hands a function, and what it makes of the answer.

Pure functions (no I/O), pinned down by the unit tests: an API Gateway HTTP API payload 2.0
event (:func:`build_http_event`) and the mapping of a handler's result back to an HTTP response
(:func:`to_http_response`), an SQS batch (:func:`build_sqs_event`) with its partial batch
response (:func:`parse_batch_item_failures`), and an EventBridge schedule event
(:func:`build_scheduled_event`). The gateway, the poller and the schedules of the local stack
build their events here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from devstack import template as tpl
from devstack.servers import HOST

API_ID = "local"
_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|xml|javascript|x-www-form-urlencoded|.*\+json|.*\+xml))$",
    re.IGNORECASE,
)


class HttpResponse(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def new_request_id() -> str:
    # API Gateway's request ids look like "JKJaXmPLvHcESHA=": base64 of a few random bytes.
    return base64.b64encode(secrets.token_bytes(10)).decode()


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    return bool(_TEXT_TYPES.match(content_type.split(";", 1)[0].strip()))


def build_http_event(
    *,
    method: str,
    raw_path: str,
    raw_query_string: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    route_key: str,
    path_parameters: Mapping[str, str] | None = None,
    source_ip: str = HOST,
    protocol: str = "HTTP/1.1",
    domain_name: str | None = None,
    api_id: str = API_ID,
    account_id: str = tpl.DEFAULT_ACCOUNT_ID,
    now: datetime | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The event API Gateway (HTTP API, payload 2.0) sends for one request.

    As AWS does: header names lowercased and duplicate values comma-joined; the Cookie header
    moved into ``cookies`` (one entry per cookie) and removed from ``headers``;
    ``rawQueryString`` verbatim and ``queryStringParameters`` decoded with duplicate keys
    comma-joined; optional fields (cookies, queryStringParameters, pathParameters, body) absent
    when empty; a body that is not text is base64-encoded with ``isBase64Encoded`` true.
    """
    now = now or datetime.now(UTC)
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    cookie_header = merged.pop("cookie", None)
    cookies = [c.strip() for c in cookie_header.split(";") if c.strip()] if cookie_header else []
    host = merged.get("host") or domain_name or HOST
    domain = domain_name or host
    params: dict[str, str] = {}
    for key, value in parse_qsl(raw_query_string, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    path = raw_path or "/"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query_string,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = merged
    if params:
        event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "http": {
            "method": method.upper(),
            "path": path,
            "protocol": protocol,
            "sourceIp": source_ip,
            "userAgent": merged.get("user-agent", ""),
        },
        "requestId": request_id or new_request_id(),
        "routeKey": route_key,
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        if _is_text(merged.get("content-type")):
            try:
                event["body"] = body.decode("utf-8")
                event["isBase64Encoded"] = False
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
        else:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


class MalformedResponseError(ValueError):
    """The handler's result is not a valid payload 2.0 response (API Gateway answers 500)."""


def to_http_response(result: Any) -> HttpResponse:
    """Map a handler's result to the HTTP response API Gateway (payload 2.0) would send.

    A dict with ``statusCode`` is taken as a structured response (headers, multiValueHeaders,
    cookies as one Set-Cookie each, body with isBase64Encoded). Anything else is inferred as
    AWS does: 200, ``content-type: application/json``, body = the JSON of the result (a string
    result is sent as is). A malformed structured response raises
    :class:`MalformedResponseError`, which the gateway turns into a 500 like API Gateway.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        body = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, [("Content-Type", "application/json")], body.encode("utf-8"))
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError) as exc:
        raise MalformedResponseError(f"statusCode is not a number: {exc}") from None
    if not 100 <= status <= 599:
        raise MalformedResponseError(f"statusCode out of range: {status}")
    headers: list[tuple[str, str]] = []
    raw_headers = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    cookies = result.get("cookies") or []
    if not isinstance(raw_headers, dict) or not isinstance(multi, dict):
        raise MalformedResponseError("headers and multiValueHeaders must be objects")
    if not isinstance(cookies, list):
        raise MalformedResponseError("cookies must be a list")
    for name, value in raw_headers.items():
        headers.append((str(name), _header_value(value)))
    for name, values in multi.items():
        if not isinstance(values, list):
            raise MalformedResponseError("multiValueHeaders values must be lists")
        headers.extend((str(name), _header_value(v)) for v in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in cookies)
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    raw_body = result.get("body")
    if raw_body is None:
        payload = b""
    elif isinstance(raw_body, str):
        if result.get("isBase64Encoded"):
            try:
                payload = base64.b64decode(raw_body, validate=True)
            except (binascii.Error, ValueError):
                raise MalformedResponseError("body is not valid base64") from None
        else:
            payload = raw_body.encode("utf-8")
    else:
        raise MalformedResponseError("body must be a string")
    return HttpResponse(status, headers, payload)


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_sqs_event(
    messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str = tpl.DEFAULT_REGION
) -> dict[str, Any]:
    """The event Lambda's SQS poller sends for ``receive_message`` results.

    Field names are the event's (camelCase), message attributes keep their types, binary
    values are base64 as in the real event.
    """
    records = []
    for message in messages:
        attributes = {}
        for name, attr in (message.get("MessageAttributes") or {}).items():
            converted: dict[str, Any] = {
                "stringListValues": list(attr.get("StringListValues") or []),
                "binaryListValues": [
                    base64.b64encode(v).decode() if isinstance(v, bytes) else v
                    for v in attr.get("BinaryListValues") or []
                ],
                "dataType": attr.get("DataType", "String"),
            }
            if "StringValue" in attr:
                converted["stringValue"] = attr["StringValue"]
            if "BinaryValue" in attr:
                value = attr["BinaryValue"]
                converted["binaryValue"] = (
                    base64.b64encode(value).decode() if isinstance(value, bytes) else value
                )
            attributes[name] = converted
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": attributes,
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}


def parse_batch_item_failures(result: Any, message_ids: Iterable[str]) -> set[str] | None:
    """Which messages failed, by Lambda's partial batch response rules; None = whole batch.

    Success for a null/empty response or a null/empty ``batchItemFailures``; the whole batch
    fails when an entry lacks a non-empty ``itemIdentifier`` or names a message not in the
    batch, or the response is not a JSON object (AWS documents exactly these cases).
    """
    if result is None:
        return set()
    if not isinstance(result, dict):
        return None
    failures = result.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(message_ids)
    failed: set[str] = set()
    for entry in failures:
        if not isinstance(entry, dict):
            return None
        identifier = entry.get("itemIdentifier")
        if not isinstance(identifier, str) or not identifier or identifier not in known:
            return None
        failed.add(identifier)
    return failed


def build_scheduled_event(
    rule_arn: str,
    *,
    region: str = tpl.DEFAULT_REGION,
    account_id: str = tpl.DEFAULT_ACCOUNT_ID,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The event EventBridge sends to a schedule rule's target."""
    now = now or datetime.now(UTC)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }
