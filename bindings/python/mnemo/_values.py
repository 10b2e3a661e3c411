"""Python values <-> the JSON text that crosses the C boundary.

mnemo keeps numbers exactly as written, so integers of any size and floats at full
precision round-trip: Python writes the shortest text that reads back as the same float,
and the library stores that text unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidArgument


def to_json(value: Any) -> str:
    """Serialises ``value`` as compact JSON text.

    Raises InvalidArgument for what JSON cannot represent faithfully: objects the json
    module cannot serialise (sets, bytes, non-string-like dict keys...), NaN and infinities,
    values nested too deeply for Python, and integers too long to convert to text.
    """
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidArgument(f"invalid argument: value is not JSON-serialisable: {e}") from None


def from_json(text: str) -> Any:
    """Parses JSON text returned by the library."""
    return json.loads(text)
