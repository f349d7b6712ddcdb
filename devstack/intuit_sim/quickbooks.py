"""The QuickBooks Accounting API: today CompanyInfo, guarded like Intuit's gateway.

A token must be live and issued for the company it is used on: an expired or revoked one gets
Intuit's lower-case ``fault`` 401, another company's or one without the accounting scope 403.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from werkzeug.wrappers import Request, Response

from devstack.intuit_sim.common import _json
from devstack.intuit_sim.oauth import ACCOUNTING_SCOPE, OAuthServer

_COMPANYINFO_RE = re.compile(r"^/v3/company/([^/]+)/companyinfo/([^/]+)$")
_AUTH_FAILED_401 = {
    "fault": {
        "error": [
            {
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired or invalid",
                "code": "3200",
            }
        ],
        "type": "AUTHENTICATION",
    }
}
_AUTHZ_FAILED_403 = {
    "fault": {
        "error": [
            {
                "message": "message=ApplicationAuthorizationFailed; errorCode=003100; "
                "statusCode=403",
                "detail": "Token not authorised for this company or scope",
                "code": "3100",
            }
        ],
        "type": "AUTHORIZATION",
    }
}


class QuickBooksApi(OAuthServer):
    """``/v3/company/{realm}/...`` endpoints."""

    def _companyinfo(self, request: Request) -> Response:
        match = _COMPANYINFO_RE.match(request.path)
        assert match is not None
        realm, realm2 = match.groups()
        token = self._bearer(request)
        grant = self._grant_for_access_token(token) if token else None
        now_iso = datetime.fromtimestamp(self.now(), UTC).isoformat(timespec="milliseconds")
        if grant is None:
            return _json({**_AUTH_FAILED_401, "time": now_iso}, 401)
        if grant.realm_id != realm or realm2 != realm or ACCOUNTING_SCOPE not in grant.scopes:
            return _json({**_AUTHZ_FAILED_403, "time": now_iso}, 403)
        name = self.company_names.get(realm, self.company_name)
        created = datetime.fromtimestamp(grant.created_at, UTC).isoformat(timespec="seconds")
        return _json(
            {
                "CompanyInfo": {
                    "CompanyName": name,
                    "LegalName": name,
                    "CompanyAddr": {
                        "Id": "1",
                        "Line1": "123 Sierra Way",
                        "City": "San Pablo",
                        "CountrySubDivisionCode": "CA",
                        "PostalCode": "87999",
                    },
                    "Country": "US",
                    "Email": {"Address": "noreply@quickbooks.com"},
                    "SupportedLanguages": "en",
                    "domain": "QBO",
                    "sparse": False,
                    "Id": "1",
                    "SyncToken": "1",
                    "MetaData": {"CreateTime": created, "LastUpdatedTime": created},
                },
                "time": now_iso,
            }
        )
