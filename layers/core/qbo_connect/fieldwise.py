"""Dataclasses whose methods are written once, not compiled for each class at import.

``@dataclass`` writes ``__init__``, ``__eq__``, ``__hash__``, ``__repr__`` (and, frozen,
``__setattr__`` and ``__delattr__``) as source text and compiles it for every class when the
class is made. That compiling happens on every cold start (bytecode cannot hold it), and for
the classes GetTokenFunction imports it was the largest part of the package's own import time:
``Settings`` alone, with its 56 fields, cost about as much as the rest of the settings module
and the store together.

:func:`record` and :func:`frozen` stand for ``@dataclass`` and ``@dataclass(frozen=True)`` on a
:class:`Fieldwise` subclass; type checkers see exactly those (``dataclass_transform``). At run
time the class is a dataclass (``fields``, ``replace``, ``asdict`` work) whose methods are the
ones below, which read the fields when called and behave as the generated ones: ``__init__``
takes the fields in order or by name, fills defaults and default factories and then calls
``__post_init__``; equality compares the fields with ``compare=True`` of two instances of the
same class; ``repr`` leaves out ``repr=False`` fields; only frozen instances are hashable, and
they refuse every assignment and deletion after ``__init__`` with dataclasses' own
``FrozenInstanceError``. Each call costs a few microseconds more than a generated method, and
importing the class costs nothing. tests/unit/test_fieldwise.py compares both side by side.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, FrozenInstanceError, dataclass, field, fields
from reprlib import recursive_repr
from typing import Any, ClassVar, TypeVar, dataclass_transform

T = TypeVar("T")


class _InitPlan:
    """What ``__init__`` needs to know about a class's fields, worked out on first use."""

    def __init__(self, cls: type) -> None:
        self.name = f"{cls.__qualname__}.__init__()"
        self.fields: list[Field[Any]] = list(fields(cls))
        self.params = [f.name for f in self.fields if f.init]
        self.accepted = frozenset(self.params)
        self.required = [
            f.name
            for f in self.fields
            if f.init and f.default is MISSING and f.default_factory is MISSING
        ]
        self.post_init = hasattr(cls, "__post_init__")


def _names(missing: list[str]) -> str:
    quoted = [repr(name) for name in missing]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


class Fieldwise:
    """Base of a :func:`record` or :func:`frozen` class (see the module's docstring)."""

    __slots__ = ()
    # What makes an instance a dataclass instance to type checkers (set by @dataclass).
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    __fieldwise_frozen__: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        plan: _InitPlan | None = type(self).__dict__.get("__fieldwise_plan__")
        if plan is None:
            plan = _InitPlan(type(self))
            type.__setattr__(type(self), "__fieldwise_plan__", plan)
        if len(args) > len(plan.params):
            least, most = len(plan.required) + 1, len(plan.params) + 1
            takes = f"{most}" if least == most else f"from {least} to {most}"
            raise TypeError(
                f"{plan.name} takes {takes} positional arguments but {len(args) + 1} were given"
            )
        given = dict(zip(plan.params, args, strict=False))
        for name, value in kwargs.items():
            if name not in plan.accepted:
                raise TypeError(f"{plan.name} got an unexpected keyword argument {name!r}")
            if name in given:
                raise TypeError(f"{plan.name} got multiple values for argument {name!r}")
            given[name] = value
        missing = [name for name in plan.required if name not in given]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise TypeError(
                f"{plan.name} missing {len(missing)} required positional argument{plural}: "
                f"{_names(missing)}"
            )
        for f in plan.fields:
            if f.name in given:
                value = given[f.name]
            elif f.default is not MISSING:
                value = f.default
            elif f.default_factory is not MISSING:
                value = f.default_factory()
            else:  # a field with init=False and no default: left unset, as @dataclass does
                continue
            object.__setattr__(self, f.name, value)
        if plan.post_init:
            self.__post_init__()  # type: ignore[attr-defined]

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Fieldwise)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        frozen = self.__fieldwise_frozen__ or getattr(self, "__dataclass_params__").frozen  # noqa: B009
        if not frozen:
            raise TypeError(f"unhashable type: {type(self).__name__!r}")
        return hash(self._compared())

    @recursive_repr()
    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"{type(self).__qualname__}({shown})"


def _refuse_assignment(self: Fieldwise, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(self: Fieldwise, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _made(cls: type[T]) -> type[T]:
    if not issubclass(cls, Fieldwise):
        raise TypeError(f"{cls.__name__} must subclass Fieldwise")
    # init=False: the class keeps Fieldwise.__init__; eq/repr=False: it keeps Fieldwise's.
    return dataclass(init=False, eq=False, repr=False)(cls)


@dataclass_transform(field_specifiers=(field, Field))
def record(cls: type[T]) -> type[T]:
    """``@dataclass`` for a :class:`Fieldwise` subclass, its methods shared (mutable)."""
    return _made(cls)


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def frozen(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True)`` for a :class:`Fieldwise` subclass, its methods shared."""
    made = _made(cls)
    made.__fieldwise_frozen__ = True  # type: ignore[attr-defined]
    made.__setattr__ = _refuse_assignment  # type: ignore[assignment,method-assign]
    made.__delattr__ = _refuse_deletion  # type: ignore[assignment,method-assign]
    return made
