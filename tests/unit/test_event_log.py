"""devstack.event_log: one readable, terminal-safe line per published event."""

from __future__ import annotations

from devstack.event_log import describe_event


def test_a_lifecycle_event_is_its_type_then_the_fields_that_matter_first():
    line = describe_event(
        {
            "detail-type": "connection.created",
            "detail": {
                "event_id": "e1",
                "scopes": ["com.intuit.quickbooks.accounting"],
                "tenant_id": "acme-inc",
                "realm_id": "9130357766042906",
                "environment": "sandbox",
            },
        }
    )
    assert line == (
        "event connection.created realm_id=9130357766042906 tenant_id=acme-inc "
        "environment=sandbox scopes=com.intuit.quickbooks.accounting"
    )


def test_an_entity_change_names_the_entity_first():
    line = describe_event(
        {
            "detail-type": "quickbooks.entity_changed",
            "detail": {
                "entity": "Vendor",
                "entity_id": "33",
                "operation": "Merge",
                "deleted_id": "34",
                "realm_id": "1",
                "tenant_id": "t",
                "occurred_at": "2026-12-03T05:00:00Z",
            },
        }
    )
    assert line == (
        "event quickbooks.entity_changed Vendor 33 Merge realm_id=1 tenant_id=t deleted_id=34 "
        "occurred_at=2026-12-03T05:00:00Z"
    )


def test_values_from_outside_cannot_break_the_line_or_drive_the_terminal():
    line = describe_event(
        {
            "detail-type": "x",
            "detail": {"tenant_id": "a b\n\x1b[31mred", "reason": "r" * 200, "none": None},
        }
    )
    assert "\n" not in line and "\x1b" not in line
    assert 'tenant_id="a b\\n\\u001b[31mred"' in line
    assert "r" * 77 + "..." in line and "r" * 78 not in line
    assert "none=" not in line
