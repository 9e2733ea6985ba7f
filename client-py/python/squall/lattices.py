"""Wrapper classes for the KVS's lattice types.

A plain Python object put with `Client.put` is pickled (cloudpickle) and
stored as last-writer-wins. To store another lattice, put an instance of one
of these classes; a get of such a key returns an instance of the same class.
Merges happen in the store: ``put(k, Set({"a"}))`` then
``put(k, Set({"b"}))`` leaves ``Set({"a", "b"})``.

Lattices only grow, except the observed-remove ones: `ORSet` (a set you
can remove from) and `ORMap` (a map whose fields you can remove). With
them, a remove removes what the remover had read, and an add or update it
had not read survives it.

Elements of `Set` and `ORSet` are ``str`` or ``bytes`` and come back as
they were put (a ``str`` is stored behind a marker byte, ``0xFF``, that
UTF-8 never contains; bytes are stored as they are, so elements written by
the shell or by older clients come back as ``bytes``). Other payloads
(`Lww`, `OrderedSet`, `Priority`, causal values) are bytes, what `squall
kv` writes from the shell; a `str` given there is encoded as UTF-8.
Integers are 64-bit signed.

Pure Python, importable without the native extension. The native module
(`squall._native`) recognises each class by its ``_squall_kind`` attribute
and builds these classes when it decodes a value.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from collections.abc import Set as AbstractSet
from typing import Any, Dict, Iterable, Iterator, Mapping, NamedTuple, Optional, Tuple

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
    "ORSet",
    "ORMap",
]


def _element(x):
    """A set element: a str as it is, a bytes-like object as bytes."""
    if isinstance(x, str):
        return x
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"a set element must be str or bytes, not {type(x).__name__}")


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
    """A grow-only set of str and bytes elements; merge is union. A
    frozenset. Elements can be added, never removed: see `ORSet` for a set
    that shrinks."""

    _squall_kind = "set"

    def __new__(cls, items: Iterable = ()):
        return super().__new__(cls, (_element(i) for i in items))

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
    Fields are never removed (a ``None`` value is a pickled ``None``, not a
    removal): see `ORMap` for a map whose fields can be removed.

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


# A tag of an add: (writer id, wall-clock ms, logical count).
_Tag = Tuple[int, int, int]


class ORSet(AbstractSet):
    """An observed-remove set of str and bytes elements: a set that shrinks.

    ``put(k, ORSet({"a", "b"}))`` adds; to remove, read, change, put back::

        tags = client.get(k)        # ORSet({'a', 'b'})
        tags.discard("a")           # or tags.remove("a"): KeyError if absent
        tags.add("c")
        client.put(k, tags)         # sends the changes only

    A put sends the changes made to the object, never its whole contents:
    each add is tagged with the writer and a fresh time; a remove removes
    the adds the object was read with. So a concurrent add of an element
    (by anyone, or a later one by the same writer) survives a remove that
    did not see it (add wins), and a removed element stays removed however
    late other replicas' copies arrive. ``discard(x)`` on an ORSet made
    without a read removes `x` as the store holds it when it is put.

    Reading works like a frozenset (``in``, ``len``, iteration, ``==``, set
    operators, which return frozensets); an ORSet is not hashable.
    """

    _squall_kind = "or-set"

    def __init__(self, items: Iterable = ()) -> None:
        self._items: set = set()
        self._tags: Dict[Any, Tuple[_Tag, ...]] = {}
        self._adds: set = set()
        self._removes: Dict[Any, Optional[Tuple[_Tag, ...]]] = {}
        self._observed = False
        for i in items:
            self.add(i)

    @classmethod
    def _from_state(cls, items, tags) -> "ORSet":
        """As read from the store: `items`, and per element the tags of its
        adds (what a remove of it removes)."""
        s = cls()
        s._items = set(items)
        s._tags = {e: tuple(tuple(t) for t in ts) for e, ts in tags.items()}
        s._observed = True
        return s

    @classmethod
    def _from_iterable(cls, it):
        return frozenset(it)

    def __contains__(self, x: object) -> bool:
        return x in self._items

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    __hash__ = None  # type: ignore[assignment]

    def add(self, x) -> None:
        """Adds `x` (a str or bytes)."""
        x = _element(x)
        self._items.add(x)
        self._adds.add(x)
        self._removes.pop(x, None)

    def discard(self, x) -> None:
        """Removes `x` if it is there (as read; for an ORSet made without a
        read, as stored when it is put)."""
        x = _element(x)
        self._items.discard(x)
        self._adds.discard(x)
        if not self._observed:
            self._removes[x] = None
        elif x in self._tags:
            self._removes[x] = self._tags[x]

    def remove(self, x) -> None:
        """Removes `x`; `KeyError` if it is not there."""
        if _element(x) not in self._items:
            raise KeyError(x)
        self.discard(x)

    def __repr__(self) -> str:
        return f"ORSet({self._items!r})" if self._items else "ORSet()"

    def __reduce__(self):
        return (_restore, (ORSet, self.__dict__.copy()))


class ORMap(MutableMapping):
    """An observed-remove map from field names (str) to lattices: a map
    whose fields can be removed.

    Field values are what `Map` takes: a lattice class, or a plain object
    (pickled, last-writer-wins). Read, change, put back::

        m = client.get(k)                     # ORMap({'n': Counter(3), 'who': 'ada'})
        del m["who"]                          # remove a field
        m["n"] = squall.Counter(1)            # add 1 to the counter field
        client.put(k, m)                      # sends the changes only

    ``put(k, ORMap({"a": 1}))`` sets fields without a read;
    ``ORMap().discard("a")`` removes field ``a`` as stored when put.

    A put sends only the fields set (assigned) and removed on this object:
    assign a field to send it (a value changed in place is not noticed). A
    removal removes the field as it was read; an update the remover did not
    read (concurrent, or later) keeps the field. A removal hides the field
    but does not empty its value: a last-writer-wins field shows the next
    write, but a counter field set again goes on from its old count and a
    set field keeps its elements, and a field keeps its lattice type.
    """

    _squall_kind = "or-map"

    def __init__(self, fields: Any = (), **kw: Any) -> None:
        self._fields: Dict[str, Any] = {}
        self._tags: Dict[str, Tuple[_Tag, ...]] = {}
        self._updates: Dict[str, Any] = {}
        self._removes: Dict[str, Optional[Tuple[_Tag, ...]]] = {}
        self._observed = False
        self.update(fields, **kw)

    @classmethod
    def _from_state(cls, fields, tags) -> "ORMap":
        m = cls()
        m._fields = dict(fields)
        m._tags = {f: tuple(tuple(t) for t in ts) for f, ts in tags.items()}
        m._observed = True
        return m

    def __getitem__(self, field: str) -> Any:
        return self._fields[field]

    def __setitem__(self, field: str, value: Any) -> None:
        if not isinstance(field, str):
            raise TypeError(f"squall.ORMap field names must be str, not {type(field).__name__}")
        self._fields[field] = value
        self._updates[field] = value
        self._removes.pop(field, None)

    def __delitem__(self, field: str) -> None:
        if field not in self._fields:
            raise KeyError(field)
        self.discard(field)

    def discard(self, field: str) -> None:
        """Removes `field` if it is there (as read; for an ORMap made
        without a read, as stored when it is put)."""
        self._fields.pop(field, None)
        self._updates.pop(field, None)
        if not self._observed:
            self._removes[field] = None
        elif field in self._tags:
            self._removes[field] = self._tags[field]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ORMap):
            return self._fields == other._fields
        if isinstance(other, Mapping):
            return self._fields == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ORMap({self._fields!r})"

    def __reduce__(self):
        return (_restore, (ORMap, self.__dict__.copy()))


def _restore(cls, state):
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj
