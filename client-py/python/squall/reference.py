"""`Reference`: a function argument that names a KVS key.

Pure Python, importable without the native extension: the executor
unpickles `Reference` objects and resolves each through its node's cache,
so the function receives the key's value instead.
"""

from __future__ import annotations

__all__ = ["Reference"]


class Reference:
    """A reference to KVS key `key`, passed as a call argument.

    Passed at the top level of a call's positional or keyword arguments
    (``client.call("f", Reference("k"))``), it is resolved by the executor:
    the function receives the key's value, read through the cache of the
    node it runs on, and the scheduler prefers an executor whose cache
    already holds the key.
    """

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        if not isinstance(key, str):
            raise TypeError(f"Reference key must be a str, not {type(key).__name__}")
        self.key = key

    def __repr__(self) -> str:
        return f"Reference({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and other.key == self.key

    def __hash__(self) -> int:
        return hash((Reference, self.key))

    def __reduce__(self):
        return (Reference, (self.key,))
