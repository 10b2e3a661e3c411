"""Python values <-> the JSON text that crosses the C boundary.

mnemo keeps numbers exactly as written, so integers of any size and floats at full
precision round-trip: Python writes the shortest text that reads back as the same float,
and the library stores that text unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidArgument


#: One encoder for every call (``json.dumps`` with these options builds a new one each
#: time); ``encode`` keeps no state between calls, so threads may share it.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
#: ``json.loads``'s own parser, called directly: the library's JSON text has no
#: surrounding whitespace, so the common case skips ``loads``'s whitespace matching.
_scan = json.JSONDecoder().scan_once


def to_json(value: Any) -> str:
    """Serialises ``value`` as compact JSON text.

    Raises InvalidArgument for what JSON cannot represent faithfully: objects the json
    module cannot serialise (sets, bytes, non-string-like dict keys...), NaN and infinities,
    values nested too deeply for Python, and integers too long to convert to text.
    """
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidArgument(f"invalid argument: value is not JSON-serialisable: {e}") from None


def from_json(text: str) -> Any:
    """Parses JSON text returned by the library."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        end = -1
    if end == len(text):
        return value
    # Not one bare value (whitespace, nothing, or more after it): json.loads decides,
    # with its own errors.
    return json.loads(text)
