"""Wrapper classes for the KVS's lattice types.

A plain Python object put with `Client.put` is pickled (cloudpickle) and
stored as last-writer-wins. To store another lattice, put an instance of one
of these classes; a get of such a key returns an instance of the same class.
Merges happen in the store: ``put(k, Set({b"a"}))`` then
``put(k, Set({b"b"}))`` leaves ``Set({b"a", b"b"})``.

Elements and payloads of these lattices are bytes (what `squall kv` writes
from the shell); a `str` given where bytes are expected is encoded as
UTF-8. Integers are 64-bit signed.

Pure Python, importable without the native extension. The native module
(`squall._native`) recognises each class by its ``_squall_kind`` attribute
and builds these classes when it decodes a value.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Optional, Tuple

__all__ = [
    "Lww",
    "Set",
    "OrderedSet",
    "Counter",
    "Max",
    "Min",
    "Map",
    "Priority",
    "VectorClock",
    "CausalVersion",
    "SingleKeyCausal",
    "MultiKeyCausal",
]


def _bytes(x, what: str = "element") -> bytes:
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"a lattice {what} must be bytes or str, not {type(x).__name__}")


class Lww:
    """Last-writer-wins raw bytes, stored as they are (not pickled).

    ``put(k, Lww(b"hello"))`` stores the bytes that ``squall kv get k``
    prints. The timestamp is stamped by the writer at put time; a get with
    ``raw=True`` returns an `Lww` with ``timestamp`` set to
    ``(wall_ms, logical, writer_id)``.
    """

    _squall_kind = "lww"
    __slots__ = ("value", "timestamp")

    def __init__(self, value, timestamp: Optional[Tuple[int, int, int]] = None) -> None:
        self.value = _bytes(value, "value")
        self.timestamp = timestamp

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lww) and other.value == self.value

    def __hash__(self) -> int:
        return hash((Lww, self.value))

    def __repr__(self) -> str:
        return f"Lww({self.value!r})"

    def __reduce__(self):
        return (Lww, (self.value, self.timestamp))


class Set(frozenset):
    """A grow-only set of byte strings; merge is union. A frozenset."""

    _squall_kind = "set"

    def __new__(cls, items: Iterable = ()):
        return super().__new__(cls, (_bytes(i) for i in items))

    def __repr__(self) -> str:
        return f"Set({set(self)!r})" if self else "Set()"

    def __reduce__(self):
        return (Set, (list(self),))


class OrderedSet(tuple):
    """A grow-only set of byte strings kept in sorted order; merge is union.
    A tuple of its elements, sorted, without duplicates."""

    _squall_kind = "ordered-set"

    def __new__(cls, items: Iterable = ()):
        return super().__new__(cls, sorted({_bytes(i) for i in items}))

    def __repr__(self) -> str:
        return f"OrderedSet({list(self)!r})"

    def __reduce__(self):
        return (OrderedSet, (list(self),))


class Counter(int):
    """A counter. Put ``Counter(delta)`` to add `delta` (negative
    subtracts); a get returns ``Counter(total)``. An int.

    Each client counts its own increments and decrements (a PN-counter), so
    concurrent increments from many clients all count.
    """

    _squall_kind = "counter"

    def __repr__(self) -> str:
        return f"Counter({int(self)})"

    def __reduce__(self):
        return (Counter, (int(self),))


class Max(int):
    """The maximum of every integer put. An int."""

    _squall_kind = "max"

    def __repr__(self) -> str:
        return f"Max({int(self)})"

    def __reduce__(self):
        return (Max, (int(self),))


class Min(int):
    """The minimum of every integer put. An int."""

    _squall_kind = "min"

    def __repr__(self) -> str:
        return f"Min({int(self)})"

    def __reduce__(self):
        return (Min, (int(self),))


class Map(dict):
    """A map from field names (str) to lattices, merged field by field.

    A field's value is one of these lattice classes, or a plain Python
    object, which is pickled and stored as a last-writer-wins field. A get
    returns fields the same way top-level values come back: a lattice
    class, or for last-writer-wins fields the unpickled object (or the raw
    bytes, if they are not a pickle: fields written by ``squall kv put -t
    map``).
    """

    _squall_kind = "map"

    def __repr__(self) -> str:
        return f"Map({dict(self)!r})"

    def __reduce__(self):
        return (Map, (dict(self),))


class Priority:
    """The entry with the lowest priority wins; equal priorities are broken
    by the smaller value bytes."""

    _squall_kind = "priority"
    __slots__ = ("priority", "value")

    def __init__(self, priority: float, value) -> None:
        self.priority = float(priority)
        self.value = _bytes(value, "value")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Priority)
            and (other.priority, other.value) == (self.priority, self.value)
        )

    def __hash__(self) -> int:
        return hash((Priority, self.priority, self.value))

    def __repr__(self) -> str:
        return f"Priority({self.priority!r}, {self.value!r})"

    def __reduce__(self):
        return (Priority, (self.priority, self.value))


class VectorClock(dict):
    """A vector clock: writer id (int) -> count (int); merge is the
    per-writer maximum."""

    _squall_kind = "vector-clock"

    def __repr__(self) -> str:
        return f"VectorClock({dict(self)!r})"

    def __reduce__(self):
        return (VectorClock, (dict(self),))


class CausalVersion(NamedTuple):
    """One version of a causal value: its bytes, the vector clock it was
    written at (``None`` in a put: supersede every version stored), and, for
    multi-key causal values, the clocks of the keys it depends on."""

    value: bytes
    clock: Optional[VectorClock]
    dependencies: Mapping[str, VectorClock]


class _Causal:
    __slots__ = ("versions",)

    def __init__(self, value=None, clock: Optional[Mapping[int, int]] = None, **kw) -> None:
        versions = kw.pop("versions", None)
        deps = kw.pop("dependencies", None) or {}
        if kw:
            raise TypeError(f"unexpected arguments {sorted(kw)}")
        if versions is None:
            if value is None:
                raise TypeError("a causal value needs a value")
            clock = VectorClock(clock) if clock is not None else None
            deps = {k: VectorClock(v) for k, v in deps.items()}
            versions = (CausalVersion(_bytes(value, "value"), clock, deps),)
        self.versions: Tuple[CausalVersion, ...] = tuple(versions)

    @classmethod
    def _from_versions(cls, versions):
        return cls(versions=[CausalVersion(*v) for v in versions])

    @property
    def values(self) -> Tuple[bytes, ...]:
        """The bytes of every concurrent version."""
        return tuple(v.value for v in self.versions)

    @property
    def value(self) -> bytes:
        """The value, if there is exactly one version; `ValueError` if
        concurrent writes left several (see ``versions``)."""
        if len(self.versions) != 1:
            raise ValueError(f"{len(self.versions)} concurrent versions; read .versions")
        return self.versions[0].value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.versions == other.versions  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(versions={list(self.versions)!r})"

    def __reduce__(self):
        return (type(self)._from_versions, (list(self.versions),))


class SingleKeyCausal(_Causal):
    """Single-key causal: concurrent values, each with its vector clock.

    ``SingleKeyCausal(b"v")`` writes a version that supersedes every version
    stored (the client reads the key's clock, merges, and counts one event
    of its own); ``SingleKeyCausal(b"v", clock={writer: n})`` writes at an
    explicit clock. A get returns one with every surviving version in
    ``versions``; ``value`` is the value when there is one.
    """

    _squall_kind = "single-key-causal"
    __slots__ = ()

    def __init__(self, value=None, clock: Optional[Mapping[int, int]] = None, *, versions=None):
        super().__init__(value, clock, versions=versions)


class MultiKeyCausal(_Causal):
    """Multi-key causal: like `SingleKeyCausal`, and each version also names
    the clocks of the keys it was computed from:
    ``MultiKeyCausal(b"v", dependencies={"other": {writer: n}})``."""

    _squall_kind = "multi-key-causal"
    __slots__ = ()

    def __init__(
        self,
        value=None,
        dependencies: Optional[Mapping[str, Mapping[int, int]]] = None,
        clock: Optional[Mapping[int, int]] = None,
        *,
        versions=None,
    ):
        super().__init__(value, clock, dependencies=dependencies, versions=versions)
