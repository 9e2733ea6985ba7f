"""`Reference`: a function argument that names a KVS key.

Pure Python, importable without the native extension: the executor
unpickles `Reference` objects and resolves each through its node's cache,
so the function receives the key's value instead.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

__all__ = ["Reference"]


class Reference:
    """A reference to KVS key `key`, passed as a call argument.

    Passed at the top level of a call's positional or keyword arguments
    (``client.call("f", Reference("k"))``), it is resolved by the executor:
    the function receives the key's value, read through the cache of the
    node it runs on, and the scheduler prefers an executor whose cache
    already holds the key.

    By default every call gets its own copy of the value, decoded afresh,
    so a function may change its argument freely. With ``readonly=True``
    the function gets a shared, read-only value instead: a NumPy array
    comes with ``flags.writeable`` off (writing to it raises
    ``ValueError``), and an executor that already decoded the key's
    current version hands the same object to its later calls without
    decoding (or copying) it again. Values that cannot be made read-only
    (lists, dicts, arrays of Python objects, other classes) are still
    decoded afresh for every call.
    """

    __slots__ = ("key", "readonly")

    def __init__(self, key: str, readonly: bool = False) -> None:
        if not isinstance(key, str):
            raise TypeError(f"Reference key must be a str, not {type(key).__name__}")
        self.key = key
        self.readonly = bool(readonly)

    def __repr__(self) -> str:
        if self.readonly:
            return f"Reference({self.key!r}, readonly=True)"
        return f"Reference({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Reference)
            and other.key == self.key
            and other.readonly == self.readonly
        )

    def __hash__(self) -> int:
        return hash((Reference, self.key, self.readonly))

    def __reduce__(self):
        if self.readonly:
            return (Reference, (self.key, True))
        return (Reference, (self.key,))


_IMMUTABLE = (bytes, str, int, float, complex, bool, type(None), range)


def freeze(value: Any, depth: int = 0) -> Optional[int]:
    """What a ``readonly=True`` reference makes of its value: read-only
    where it can be (a NumPy array's ``writeable`` flag off, also inside
    tuples). Returns the value's size in bytes if it may then be shared
    between calls, or None if some part of it stays mutable (a list, a
    dict, an array of Python objects, any other class)."""
    if isinstance(value, _IMMUTABLE):
        return sys.getsizeof(value)
    if type(value) in (tuple, frozenset):
        if depth >= 8:
            return None
        sizes = [freeze(v, depth + 1) for v in value]
        return None if None in sizes else sum(sizes) + sys.getsizeof(value)  # type: ignore[arg-type]
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(value) is numpy.ndarray:
        value.flags.writeable = False
        return None if value.dtype.hasobject else int(value.nbytes)
    return None
