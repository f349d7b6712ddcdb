"""@record and @frozen classes behave as what @dataclass generates (qbo_connect.fieldwise)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from qbo_connect.fieldwise import Fieldwise, frozen, record


@dataclass(frozen=True)
class FrozenGenerated:
    name: str
    secret: str = field(repr=False)
    note: str = field(default="", compare=False)
    items: tuple[int, ...] = ()


@frozen
class FrozenFieldwise(Fieldwise):
    name: str
    secret: str = field(repr=False)
    note: str = field(default="", compare=False)
    items: tuple[int, ...] = ()


@dataclass
class MutableGenerated:
    name: str
    children: list[object] = field(default_factory=list)


@record
class MutableFieldwise(Fieldwise):
    name: str
    children: list[object] = field(default_factory=list)


def pair(generated: type, fieldwise: type, *args: object, **kwargs: object):
    return generated(*args, **kwargs), fieldwise(*args, **kwargs)


def test_repr_is_the_generated_one_and_hides_repr_false_fields():
    generated, fieldwise = pair(FrozenGenerated, FrozenFieldwise, "a", "s3cret", "n", (1, 2))
    assert repr(fieldwise) == repr(generated).replace("FrozenGenerated", "FrozenFieldwise")
    assert "s3cret" not in repr(fieldwise)


def test_repr_of_a_record_that_contains_itself_ends():
    generated, fieldwise = pair(MutableGenerated, MutableFieldwise, "root")
    generated.children.append(generated)
    fieldwise.children.append(fieldwise)
    assert repr(fieldwise) == repr(generated).replace("MutableGenerated", "MutableFieldwise")


def test_equality_compares_the_compared_fields_of_the_same_class_only():
    a = FrozenFieldwise("a", "s", note="one", items=(1,))
    assert a == FrozenFieldwise("a", "s", note="two", items=(1,))  # note: compare=False
    assert a != FrozenFieldwise("a", "other", note="one", items=(1,))
    assert a != FrozenGenerated("a", "s", note="one", items=(1,))
    assert (a == object()) is False


def test_hash_like_the_generated_one_frozen_only():
    generated, fieldwise = pair(FrozenGenerated, FrozenFieldwise, "a", "s", "n", (1,))
    assert hash(fieldwise) == hash(generated)
    assert {fieldwise: 1}[FrozenFieldwise("a", "s", "other note", (1,))] == 1
    with pytest.raises(TypeError):
        hash(MutableGenerated("a"))
    with pytest.raises(TypeError):
        hash(MutableFieldwise("a"))


@pytest.mark.parametrize("record", [FrozenGenerated("a", "s"), FrozenFieldwise("a", "s")])
def test_a_frozen_record_refuses_every_assignment_and_deletion(record):
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'name'"):
        record.name = "b"
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'other'"):
        record.other = 1
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'note'"):
        del record.note
    assert (record.name, record.note) == ("a", "")


def test_frozen_replace_and_fields_still_work():
    fieldwise = FrozenFieldwise("a", "s")
    assert dataclasses.replace(fieldwise, name="b") == FrozenFieldwise("b", "s")
    assert [f.name for f in dataclasses.fields(fieldwise)] == ["name", "secret", "note", "items"]
    assert dataclasses.is_dataclass(fieldwise)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'secret'"):
        FrozenFieldwise("a")  # type: ignore[call-arg]


def test_frozen_needs_the_fieldwise_methods():
    class Plain:
        name: str

    with pytest.raises(TypeError, match="must subclass Fieldwise"):
        frozen(Plain)


class _InitFields:
    """One class body for both makers, so the comparison cannot drift between two copies."""

    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)
    d: int = field(default=4, init=False)
    seen: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.seen.append(f"post {self.a} {self.d}")


def _made_by(make: Any, name: str, *bases: type) -> Any:
    skip = ("__dict__", "__weakref__", "__qualname__")
    namespace = {k: v for k, v in vars(_InitFields).items() if k not in skip}
    return make(type(name, bases or (object,), namespace))


InitGenerated = _made_by(dataclass, "InitGenerated")
InitFieldwise = _made_by(record, "InitFieldwise", Fieldwise)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, "x"), {}), ((1,), {"c": [2]}), ((), {"a": 1, "b": "y", "c": [3]})],
)
def test_init_fills_fields_as_the_generated_one(args, kwargs):
    generated, fieldwise = pair(InitGenerated, InitFieldwise, *args, **kwargs)
    assert dataclasses.asdict(fieldwise) == dataclasses.asdict(generated)
    assert fieldwise.seen == generated.seen == ["post 1 4"]
    assert repr(fieldwise) == repr(generated).replace("InitGenerated", "InitFieldwise")


def test_default_factories_run_for_each_instance():
    first, second = InitFieldwise(1), InitFieldwise(2)
    first.c.append(1)
    assert second.c == [] and first.c is not second.c


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing 1 required positional argument: 'a'"),
        ((1, "b", [], [], 5), {}, "takes from 2 to 5 positional arguments but 6 were given"),
        ((1,), {"a": 2}, "got multiple values for argument 'a'"),
        ((1,), {"d": 2}, "got an unexpected keyword argument 'd'"),
    ],
)
def test_init_refuses_what_the_generated_one_refuses(args, kwargs, message):
    for cls in (InitGenerated, InitFieldwise):
        with pytest.raises(TypeError, match=message):
            cls(*args, **kwargs)
