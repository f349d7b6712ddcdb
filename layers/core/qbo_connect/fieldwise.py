"""``__eq__``, ``__hash__``, ``__repr__`` and frozenness for the package's dataclasses, once.

``@dataclass`` writes these methods as source text and compiles it for every class, when the
class is made: that compiling happens on every cold start (bytecode cannot hold it), and for
the classes GetTokenFunction imports it was the largest part of the package's own import time
(``Settings`` alone, with its 56 fields, about 3 ms of compiling ``__eq__`` and ``__hash__``;
``frozen=True`` doubles the cost of a small class with two more methods).

A dataclass declared with ``eq=False, repr=False`` on top of :class:`Fieldwise` compares,
hashes and prints as the generated methods would: the fields with ``compare=False`` or
``repr=False`` are left out, an instance is hashable only when the class is frozen, and only
an instance of the same class can be equal. :func:`frozen` stands for ``@dataclass(frozen=True,
eq=False, repr=False)`` the same way: its instances refuse every assignment and deletion once
``__init__`` has set the fields, with dataclasses' own ``FrozenInstanceError``, and type
checkers treat the class as a frozen dataclass. The methods read the fields when called, which
costs a microsecond or two more per call and nothing at import.
"""

from __future__ import annotations

from dataclasses import Field, FrozenInstanceError, dataclass, field, fields
from reprlib import recursive_repr
from typing import Any, ClassVar, TypeVar, dataclass_transform

T = TypeVar("T")


class Fieldwise:
    """Base of a dataclass declared ``eq=False, repr=False`` (see the module's docstring)."""

    __slots__ = ()
    # What makes an instance a dataclass instance to type checkers (set by @dataclass).
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    #: Set by :func:`frozen`.
    __fieldwise_frozen__: ClassVar[bool] = False

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


def _set_once(self: Fieldwise, name: str, value: Any) -> None:
    # __init__ sets each field once; anything after that (or any other name) is refused.
    if name in self.__dict__ or name not in self.__dataclass_fields__:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    object.__setattr__(self, name, value)


def _no_delete(self: Fieldwise, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field, Field))
def frozen(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True, eq=False, repr=False)`` for a :class:`Fieldwise` subclass,
    with the two frozen methods shared instead of compiled for the class."""
    if not issubclass(cls, Fieldwise):
        raise TypeError(f"{cls.__name__} must subclass Fieldwise")
    made = dataclass(eq=False, repr=False)(cls)
    made.__fieldwise_frozen__ = True  # type: ignore[attr-defined]
    made.__setattr__ = _set_once  # type: ignore[assignment,method-assign]
    made.__delattr__ = _no_delete  # type: ignore[assignment,method-assign]
    return made
