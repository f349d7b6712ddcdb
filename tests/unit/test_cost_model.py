"""bench/cost_model.py: the model derives each refresh's write units from the template and the
measured item sizes, and scales with refreshes, not with connections. No timing involved."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cost_model() -> Any:
    spec = importlib.util.spec_from_file_location(
        "cost_model", REPO_ROOT / "bench" / "cost_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cost_model"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def measured(cost_model: Any) -> Any:
    return cost_model.Measured(
        source="synthetic",
        latency_ms=300,
        writes=2.0,
        requests=2.01,
        queries=0.01,
        kms=1.0,
        sqs=0.3,
        worker_seconds=0.4,
        sweep_seconds_per_connection=0.005,
        log_bytes=470,
        batch_size=10,
        idle_item_bytes=653,
        warm_item_bytes=1511,
    )


def test_write_units_follow_the_item_size_and_the_template_projections(cost_model, measured):
    template = cost_model.Template.load()
    model = cost_model.Model(measured, template)
    # An idle item fits in 1 KB: 2 writes of 1 unit; a warm one (with its access token) 2 each.
    # The commit moves due_at (DueIndex: delete + put) and changes what TenantIndex projects;
    # the lease changes only lease attributes, which no index projects.
    assert model.write_units(keeps_access_token=False) == {
        "table": 2.0,
        "DueIndex": 2.0,
        "TenantIndex": 1.0,
    }
    assert model.write_units(keeps_access_token=True)["table"] == 4.0
    # Were the lease attributes projected, the lease would cost TenantIndex a write too
    projected = template.tenant_projection | {"lease_until"}
    leaky = cost_model.Model(measured, dataclasses.replace(template, tenant_projection=projected))
    assert leaky.write_units(keeps_access_token=False)["TenantIndex"] == 2.0


def test_cost_grows_with_refreshes_not_connections(cost_model, measured):
    model = cost_model.Model(measured, cost_model.Template.load())

    def variable(keep_alive_hours: float) -> float:
        lines = model.fleet(1_000_000, 0, keep_alive_hours)
        return sum(
            line.dollars
            for line in lines
            if not line.name.startswith(("fixed", "DynamoDB storage"))
        )

    assert variable(24) == pytest.approx(2 * variable(48))
    fixed = [line.dollars for line in model.fleet(10, 0, 48) if line.name.startswith("fixed")]
    assert fixed == [model.fixed()] and model.fixed() > 0
    # One KMS call per refresh at $0.03 per 10,000: 15 M refreshes a month cost $45
    kms = next(line for line in model.fleet(1_000_000, 0, 48) if line.name == "KMS")
    assert kms.dollars == pytest.approx(45.0)
