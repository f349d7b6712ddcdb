"""Usage items: CorePlus and Core call counts per month, tenant and realm, and tenant quotas.

Keys (no ``tenant_id`` or ``due_shard`` attribute, so neither index sees them: the tenant and
realm a count belongs to are stored as ``usage_tenant`` and ``usage_realm``):

- ``pk = "USAGE#<YYYY-MM>"``, ``sk = "R#<tenant>#<realm>"``: one realm's counts for the month;
- ``pk = "USAGE#<YYYY-MM>"``, ``sk = "T#<tenant>"``: the tenant's counts for the month, and the
  marker of its quota crossing;
- ``pk = "USAGE#<YYYY-MM>"``, ``sk = "TOTAL"``: the deployment's counts for the month, and one
  marker per budget threshold crossed (``th_<pct>``, then ``th_<pct>_sent`` once its event is
  out);
- ``pk = "USAGE#QUOTA"``, ``sk = "T#<tenant>"``: a tenant's own monthly CorePlus quota.

Counters are ``core_api``, ``coreplus_api``, ``core_service``, ``coreplus_service`` and, for
sandbox calls Intuit does not meter, ``sandbox_core``/``sandbox_coreplus``. A container adds its
buffered counts with one UpdateItem per item, ``ADD`` for the counters and ``SET f_<container> =
<seq>`` conditioned on the stored sequence being lower: boto3's retry of a flush whose answer was
lost meets its own sequence and is recognised, never counted twice. Month items live 13 months
(TTL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import ClientError

from qbo_connect.store.table import Repository, number, to_python

COUNTERS = (
    "core_api",
    "coreplus_api",
    "core_service",
    "coreplus_service",
    "sandbox_core",
    "sandbox_coreplus",
)
TOTAL_SK = "TOTAL"
QUOTA_PK = "USAGE#QUOTA"
RETENTION_SECONDS = 400 * 86400  # 13 months and a little


def month_pk(month: str) -> str:
    return f"USAGE#{month}"


def realm_sk(tenant_id: str, realm_id: str) -> str:
    return f"R#{tenant_id}#{realm_id}"


def tenant_sk(tenant_id: str) -> str:
    return f"T#{tenant_id}"


class UsageRepository(Repository):
    """Adds, reads and reports usage counts; stores tenant quotas."""

    def add(
        self,
        month: str,
        sk: str,
        counts: Mapping[str, int],
        *,
        container: str,
        seq: int,
        month_start: float,
        attributes: Mapping[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """Add ``counts`` to one item once per (container, seq); the item after the write, or
        None when this very flush was applied already (a retry meeting its own success)."""
        names = {"#f": f"f_{container}", "#ttl": "ttl"}
        values: dict[str, Any] = {":seq": seq, ":ttl": number(month_start + RETENTION_SECONDS)}
        adds = []
        for index, (counter, count) in enumerate(sorted(counts.items())):
            if counter not in COUNTERS or not count:
                continue
            names[f"#c{index}"] = counter
            values[f":c{index}"] = count
            adds.append(f"#c{index} :c{index}")
        sets = ["#f = :seq", "#ttl = :ttl"]
        for index, (name, value) in enumerate(sorted((attributes or {}).items())):
            names[f"#a{index}"] = name
            values[f":a{index}"] = value
            sets.append(f"#a{index} = :a{index}")
        expression = "SET " + ", ".join(sets) + (" ADD " + ", ".join(adds) if adds else "")
        try:
            response = self.table.update_item(
                Key={"pk": month_pk(month), "sk": sk},
                UpdateExpression=expression,
                ConditionExpression="attribute_not_exists(#f) OR #f < :seq",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return to_python(response.get("Attributes") or {})

    def mark_once(self, month: str, sk: str, marker: str, *, now: float) -> bool:
        """Set ``marker`` on an item if it is not set yet; True for the one caller that did."""
        try:
            self.table.update_item(
                Key={"pk": month_pk(month), "sk": sk},
                UpdateExpression="SET #m = :now",
                ConditionExpression="attribute_not_exists(#m)",
                ExpressionAttributeNames={"#m": marker},
                ExpressionAttributeValues={":now": number(now)},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get(self, month: str, sk: str) -> dict[str, Any]:
        item = self.table.get_item(Key={"pk": month_pk(month), "sk": sk}, ConsistentRead=True)
        return to_python(item.get("Item") or {})

    def month_items(self, month: str) -> list[dict[str, Any]]:
        """Every usage item of the month (one Query on its partition, paged)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": month_pk(month)},
            "ConsistentRead": True,
        }
        while True:
            page = self.table.query(**kwargs)
            items += [to_python(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_quota(self, tenant_id: str, monthly_quota: int | None, *, now: float) -> None:
        """A tenant's own quota (0 = none); None deletes it (back to the deployment default)."""
        key = {"pk": QUOTA_PK, "sk": tenant_sk(tenant_id)}
        if monthly_quota is None:
            self.table.delete_item(Key=key)
            return
        self.table.put_item(Item={**key, "monthly_quota": monthly_quota, "updated_at": number(now)})

    def quotas(self, tenant_ids: Iterable[str] | None = None) -> dict[str, int]:
        """Every tenant's own quota (one Query on the quota partition)."""
        found: dict[str, int] = {}
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": QUOTA_PK},
        }
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                found[str(item["sk"])[2:]] = int(item["monthly_quota"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if tenant_ids is not None:
            wanted = set(tenant_ids)
            return {t: q for t, q in found.items() if t in wanted}
        return found
