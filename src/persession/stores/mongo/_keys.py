"""Session keys as field names of the stored ``data`` sub-document, and back (see the package docs)."""

from __future__ import annotations

import re
from typing import Final

_ESCAPES: Final = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_UNESCAPES: Final = {code[1:]: char for char, code in _ESCAPES.items()}
_NEEDS_ESCAPE: Final = re.compile(r"[%.$\x00]")
_EMPTY_KEY: Final = "%"


def escape_key(key: str) -> str:
    """The field name under which session key ``key`` is stored (see the module docs)."""
    if not key:
        return _EMPTY_KEY
    if _NEEDS_ESCAPE.search(key) is None:
        return key
    return "".join(_ESCAPES.get(char, char) for char in key)


def unescape_key(name: str) -> str:
    """The session key stored as field ``name``; :class:`ValueError` unless ``escape_key`` made it.

    Strict on purpose: accepting a raw ``.`` or ``$`` here would give a key
    that ``$unset`` (which goes through :func:`escape_key`) could never reach.
    """
    if name == _EMPTY_KEY:
        return ""
    if not name or "." in name or "$" in name or "\x00" in name:
        raise ValueError("a field name in data is not escaped")
    if "%" not in name:
        return name
    head, *rest = name.split("%")
    parts = [head]
    for piece in rest:
        char = _UNESCAPES.get(piece[:2])
        if char is None:
            raise ValueError("a field name in data holds an unknown escape")
        parts.append(char)
        parts.append(piece[2:])
    return "".join(parts)
