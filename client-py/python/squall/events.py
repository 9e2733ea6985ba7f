"""Triggers' events: what a function registered with
`Client.register_trigger` is called with, once per change of a key.

This module loads no native code until a value is read.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

__all__ = ["Event", "Timestamp", "Trigger"]


class Timestamp(NamedTuple):
    """When a change was written: the writer's hybrid clock
    (milliseconds since the epoch, a logical count within the
    millisecond) and the writer's id. A change delivered twice carries the
    same timestamp: compare events by ``(key, kind, timestamp)`` to
    recognise a duplicate."""

    wall_ms: int
    logical: int
    writer: int


class Trigger(NamedTuple):
    """A registered trigger: `function` runs once per change of kind `on`
    (``"put"`` or ``"delete"``) of a key starting with `key_prefix`."""

    name: str
    function: str
    key_prefix: str
    on: str


_MISSING = object()


class Event:
    """One change of a key, as a trigger's function gets it.

    Attributes:
        key: the key that changed.
        kind: ``"put"`` or ``"delete"``.
        timestamp: a `Timestamp`; the same for a change delivered twice.
        trigger: the name of the trigger that fired.
        value: the key's value after a put (as ``get`` returns it), None
            after a delete.
    """

    __slots__ = ("key", "kind", "timestamp", "trigger", "_raw", "_value")

    def __init__(
        self,
        key: str,
        kind: str,
        timestamp: Timestamp,
        trigger: str = "",
        value: Any = None,
        _raw: Optional[bytes] = None,
    ) -> None:
        self.key = key
        self.kind = kind
        self.timestamp = timestamp
        self.trigger = trigger
        self._raw = _raw
        self._value = value if _raw is None else _MISSING

    @property
    def value(self) -> Any:
        if self._value is _MISSING:
            raw, self._raw = self._raw, None
            if not raw:
                self._value = None
            else:
                from squall import _native

                self._value = _native.decode_lattice(raw)
        return self._value

    def __reduce__(self):
        return (Event, (self.key, self.kind, self.timestamp, self.trigger, self.value))

    def __repr__(self) -> str:
        return f"Event(key={self.key!r}, kind={self.kind!r}, timestamp={tuple(self.timestamp)!r})"


def _change(
    trigger: str, key: str, kind: str, wall_ms: int, logical: int, writer: int, raw: bytes
) -> Event:
    """The event a scheduler pickles for a trigger's call (see
    scheduler/src/triggers.rs): the value stays encoded until read."""
    return Event(key, kind, Timestamp(wall_ms, logical, writer), trigger, _raw=raw)
