"""``__eq__``, ``__hash__`` and ``__repr__`` for the package's dataclasses, written once.

``@dataclass`` writes these methods as source text and compiles it for every class, when the
class is made: that compiling happens on every cold start (bytecode cannot hold it), and for
the classes GetTokenFunction imports it was the largest part of the package's own import time
(``Settings`` alone, with its 56 fields, about 3 ms of compiling ``__eq__`` and ``__hash__``).

A dataclass declared with ``eq=False, repr=False`` on top of :class:`Fieldwise` compares,
hashes and prints as the generated methods would: the fields with ``compare=False`` or
``repr=False`` are left out, an instance is hashable only when the class is frozen, and only
an instance of the same class can be equal. The methods read the fields when called, which
costs a few microseconds more per call and nothing at import.
"""

from __future__ import annotations

from dataclasses import Field, fields
from reprlib import recursive_repr
from typing import Any, ClassVar


class Fieldwise:
    """Base of a dataclass declared ``eq=False, repr=False`` (see the module's docstring)."""

    __slots__ = ()
    # What makes an instance a dataclass instance to type checkers (set by @dataclass).
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Fieldwise)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        if not getattr(self, "__dataclass_params__").frozen:  # noqa: B009 (set by @dataclass)
            raise TypeError(f"unhashable type: {type(self).__name__!r}")
        return hash(self._compared())

    @recursive_repr()
    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"{type(self).__qualname__}({shown})"
