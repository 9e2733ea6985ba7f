"""Where a registered function came from, so that remote tracebacks can
show it.

cloudpickle keeps a function's code objects but not its source, and it
names the file of every code object it pickles ``<dynamic-code>``. A
traceback from an executor would then say ``File "<dynamic-code>", line
9, in f`` and show no source line. :func:`attach` records the function's
file name and source on the object before it is pickled (as the attribute
``__squall_source__``, which cloudpickle carries in the function's or the
class's ``__dict__``); the executor registers that source with
``linecache`` under that file name and gives the function's code objects
the name back, so its tracebacks read like local ones. Nothing here is
needed to run a function: an executor that finds no such attribute runs
it all the same.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Optional, Tuple

#: The attribute :func:`attach` sets: ``(filename, source or None)``.
ATTRIBUTE = "__squall_source__"


def _target(obj: Any) -> Any:
    """The function or class whose code `obj` runs: a bound method's
    function, a ``functools.partial``'s function, a callable instance's
    class."""
    for _ in range(8):
        if inspect.ismethod(obj):
            obj = obj.__func__
        elif isinstance(obj, functools.partial):
            obj = obj.func
        else:
            break
    if not (inspect.isfunction(obj) or inspect.isclass(obj)) and callable(obj):
        obj = type(obj)
    return obj


def source_of(obj: Any) -> Optional[Tuple[str, Optional[str]]]:
    """``(filename, source)`` of a function, method or class: the file it
    was defined in and its text there, preceded by blank lines so that its
    line numbers are those of the file. ``source`` is ``None`` when only
    the file name is known (a function typed at the interactive prompt);
    the result is ``None`` when not even that is (a builtin)."""
    target = _target(obj)
    try:
        filename = inspect.getsourcefile(target) or inspect.getfile(target)
    except (TypeError, OSError):
        code = getattr(target, "__code__", None)
        filename = getattr(code, "co_filename", None)
    if not filename:
        return None
    try:
        lines, first = inspect.getsourcelines(target)
    except (TypeError, OSError, IndexError):
        return (filename, None)
    # getsourcelines gives 0 for a whole module, else the 1-based line.
    padding = "\n" * max(first - 1, 0)
    return (filename, padding + "".join(lines))


def attach(obj: Any) -> Any:
    """Records :func:`source_of` `obj` on the function or class it runs
    (the attribute :data:`ATTRIBUTE`) so that it travels with the pickle;
    returns `obj`. An object that takes no attributes is left as it is."""
    found = source_of(obj)
    if found is None:
        return obj
    target = _target(obj)
    try:
        setattr(target, ATTRIBUTE, found)
    except (AttributeError, TypeError):
        pass
    return obj
