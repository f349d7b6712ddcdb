"""The proxy's request rules (hostile paths refused, reserved query names) and Intuit's fault
bodies in every form they come in (JSON, lower-case, XML, a 200 that carries one)."""

from __future__ import annotations

import pytest

from qbo_connect.api.faults import is_throttle, normalise
from qbo_connect.api.paths import check_path, company_url, masked
from qbo_connect.api.request import ApiRequest
from qbo_connect.errors import InvalidRequest

HOSTILE_PATHS = [
    "../123/companyinfo/123",
    "companyinfo/../../456",
    "companyinfo/./123",
    "a//b",
    "/companyinfo/123",
    "companyinfo/123/",
    "https://evil.example/x",
    "//evil.example/x",
    "evil.example:443/x",
    "companyinfo%2F..%2F456",
    "%2e%2e/456",
    "companyinfo\\..\\456",
    "invoice/1\r\nHost: evil",
    "invoice/1\x00",
    "invoice/1?requestid=x",
    "invoice/1#frag",
    "invoice/ 1",
    "invoice/\uff11",  # a full-width digit
    "",
    "x" * 600,
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_paths_are_invalid_requests(path):
    with pytest.raises(InvalidRequest) as refused:
        check_path(path)
    assert refused.value.code == "invalid_request"


@pytest.mark.parametrize(
    "path", ["companyinfo/9130", "query", "invoice/123", "batch", "cdc", "reports/ProfitAndLoss"]
)
def test_company_paths_are_accepted_and_stay_inside_the_company(path):
    url = company_url("https://qb.example", "9130", check_path(path))
    assert url == f"https://qb.example/v3/company/9130/{path}"


def test_uploads_are_out_of_scope():
    with pytest.raises(InvalidRequest) as refused:
        check_path("upload")
    assert refused.value.reason == "upload_not_supported"


def payload(**overrides):
    base = {"realm_id": "9130", "method": "GET", "path": "companyinfo/9130"}
    base.update(overrides)
    return base


@pytest.mark.parametrize("name", ["minorversion", "requestid", "RequestId", "MINORVERSION"])
def test_reserved_query_names_are_refused(name):
    with pytest.raises(InvalidRequest) as refused:
        ApiRequest.from_payload(payload(query={name: "1"}))
    assert refused.value.reason == "reserved_query_parameter"


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "DELETE"},
        {"method": "GET", "body": {"a": 1}},
        {"realm_id": "91 30"},
        {"request_id": "x" * 51, "method": "POST"},
        {"request_id": "x" * 37, "method": "POST", "path": "batch"},
        {"request_id": "with space", "method": "POST"},
        {"max_wait_seconds": 61},
        {"minorversion": "75"},
        {"content_type": "multipart/form-data", "method": "POST", "body": "x"},
        {"unexpected": 1},
    ],
)
def test_bad_payloads_are_invalid_requests(overrides):
    with pytest.raises(InvalidRequest):
        ApiRequest.from_payload(payload(**overrides))


def test_masked_path_hides_ids():
    assert masked("invoice/123") == "invoice/*"
    assert masked("companyinfo/9130") == "companyinfo/*"
    assert masked("reports/ProfitAndLoss") == "reports/ProfitAndLoss"


THROTTLE = {
    "type": "SERVICE",
    "code": "3001",
    "message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
    "detail": "The request limit was reached. Try again later",
    "element": "",
}


def test_json_fault_is_normalised():
    body = {
        "Fault": {
            "Error": [
                {"Message": "Duplicate Name", "Detail": "exists", "code": "6240", "element": "N"}
            ],
            "type": "ValidationFault",
        },
        "time": "2026-12-02T10:00:00.000-08:00",
    }
    assert normalise(body) == {
        "type": "ValidationFault",
        "code": "6240",
        "message": "Duplicate Name",
        "detail": "exists",
        "element": "N",
    }


def test_lower_case_gateway_fault_is_normalised():
    body = {
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": "Token expired",
                    "code": "3200",
                }
            ],
            "type": "AUTHENTICATION",
        },
        "time": 1,
    }
    fault = normalise(body)
    assert fault is not None
    assert (fault["type"], fault["code"], fault["detail"]) == (
        "AUTHENTICATION",
        "3200",
        "Token expired",
    )


def test_xml_throttle_is_normalised_and_recognised():
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="2026-12-02T10:00:00">'
        '<Fault type="SERVICE"><Error code="3001">'
        "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        "<Detail>The request limit was reached. Try again later</Detail>"
        "</Error></Fault></IntuitResponse>"
    )
    fault = normalise(xml, "application/xml")
    assert fault == THROTTLE
    assert is_throttle(403, fault)
    assert is_throttle(429, None)


def test_a_200_carrying_a_fault_is_normalised():
    body = {
        "BatchItemResponse": [],
        "Fault": {"Error": [{"Message": "m", "code": "10"}], "type": "SystemFault"},
    }
    fault = normalise(body)
    assert fault is not None and fault["type"] == "SystemFault" and fault["code"] == "10"
    assert not is_throttle(200, fault)


def test_no_fault_and_hostile_xml_give_none():
    assert normalise({"CompanyInfo": {"CompanyName": "x"}}) is None
    assert normalise("<a><b/></a>") is None
    assert normalise('<!DOCTYPE x [<!ENTITY e "boom">]><Fault>&e;</Fault>') is None
    assert normalise("not xml <") is None
