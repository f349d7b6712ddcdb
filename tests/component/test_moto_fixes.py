"""devstack.moto_fixes: the moto server's speed-ups answer what moto itself answers."""

from __future__ import annotations

import os

import moto
from jsonpath_ng.ext.parser import parse as unpatched_parse

from devstack import moto_fixes


def test_server_fixes_route_and_parse_as_moto_does() -> None:
    moto_fixes.apply_server_fixes()
    moto_fixes.apply_server_fixes()  # idempotent: a second call patches nothing twice
    import jsonpath_ng.ext
    import moto.backends as moto_backends

    package = os.path.dirname(moto.__file__)
    expected = sorted(
        name
        for name in os.listdir(package)
        if os.path.isdir(os.path.join(package, name)) and not name.startswith("__")
    )
    assert list(moto_backends.list_of_moto_modules()) == expected
    assert {"dynamodb", "events", "sqs", "kms"} <= set(expected)

    event = {"detail": {"realm_id": "9130", "items": [{"id": 1}, {"id": 2}]}}
    for path in ("$.detail.realm_id", "$.detail.items[*].id", "$.detail"):
        cached = jsonpath_ng.ext.parse(path)
        assert cached is jsonpath_ng.ext.parse(path)  # parsed once, then reused
        assert [m.value for m in cached.find(event)] == [
            m.value for m in unpatched_parse(path).find(event)
        ]
