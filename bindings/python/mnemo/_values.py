"""Python values <-> the JSON text that crosses the C boundary.

mnemo keeps numbers exactly as written, so integers of any size and floats at full
precision round-trip: Python writes the shortest text that reads back as the same float,
and the library stores that text unchanged. A number another program stored beyond a
float's range (``1e400``, or ``1e-400``, which a float reads as ``inf`` or ``0.0``) reads
as a :class:`decimal.Decimal` of its exact text, and a finite Decimal is written as its
text, so such values round-trip too.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from json import encoder as _json_encoder
from typing import Any

from .errors import InvalidArgument


#: One encoder for every call (``json.dumps`` with these options builds a new one each
#: time); ``encode`` keeps no state between calls, so threads may share it.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
#: The json module's C encoder with the same options, made once: ``JSONEncoder.encode``
#: builds a new one on every call, which costs more than encoding a small value. Without
#: circular-reference markers, as they would be shared by every call (a failed encoding
#: leaves its containers marked, so encoding them again would be refused as circular): a
#: cyclic value ends in RecursionError instead, which :func:`to_json` reports like any
#: other value JSON cannot represent. None where that C encoder cannot be made.
try:
    _C_ENCODE = _json_encoder.c_make_encoder(
        None,
        _ENCODER.default,
        _json_encoder.encode_basestring,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        _ENCODER.sort_keys,
        _ENCODER.skipkeys,
        _ENCODER.allow_nan,
    )
except TypeError:  # c_make_encoder is None, or a Python whose C encoder takes other arguments
    _C_ENCODE = None
#: ``json.loads``'s own parser, called directly: the library's JSON text has no
#: surrounding whitespace, so the common case skips ``loads``'s whitespace matching.
_scan = json.JSONDecoder().scan_once


def _exact_float(text: str) -> float | Decimal:
    """A JSON number with a fraction or exponent: a float, unless a float cannot hold its
    magnitude (it would read as ``inf``, or as ``0.0`` for a number that is not zero)."""
    value = float(text)
    mantissa = text.lower().partition("e")[0]
    if math.isinf(value) or (value == 0.0 and mantissa.strip("-0.") != ""):
        return Decimal(text)
    return value


#: The parser for texts that may hold a number past a float's range.
_decoder_exact = json.JSONDecoder(parse_float=_exact_float)
_scan_exact = _decoder_exact.scan_once
#: A run of digits as long as a number past a float's range without an exponent needs
#: (a float's largest has 309 digits before its point; its least, 323 zeros after it).
_LONG_DIGITS = re.compile(r"\d{300}")


def to_json(value: Any) -> str:
    """Serialises ``value`` as compact JSON text.

    Raises InvalidArgument for what JSON cannot represent faithfully: objects the json
    module cannot serialise (sets, bytes, non-string-like dict keys...), NaN and infinities,
    values nested too deeply for Python, and integers too long to convert to text.
    """
    try:
        if _C_ENCODE is None:
            return _ENCODER.encode(value)
        return "".join(_C_ENCODE(value, 0))
    except TypeError as e:
        if "Decimal" in str(e):
            try:
                return _with_decimals(value)
            except (TypeError, ValueError, RecursionError) as e2:
                e = e2
        raise InvalidArgument(f"invalid argument: value is not JSON-serialisable: {e}") from None
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"invalid argument: value is not JSON-serialisable: {e}") from None


def _with_decimals(value: Any) -> str:
    """:func:`to_json` of a value holding a :class:`decimal.Decimal`, written as its text
    (slower than the json module's encoder, which cannot write one; rare)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return str(value)
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            parts.append(_ENCODER.encode(_key_text(k)) + ":" + _with_decimals(v))
        return "{" + ",".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_with_decimals(v) for v in value) + "]"
    return _ENCODER.encode(value)


def from_json(text: str) -> Any:
    """Parses JSON text returned by the library.

    Raises InvalidArgument (a ValueError) for an integer with more digits than this Python
    converts (``sys.get_int_max_str_digits()``, 4300 by default; another program or device
    may have stored it): ``sys.set_int_max_str_digits`` raises the bound.
    """
    try:
        return _parsed(text)
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # only int() raises it here: too many digits
        raise InvalidArgument(
            f"invalid argument: the value holds an integer too long for this Python to read ({e})"
        ) from None


def _key_text(key: Any) -> str:
    """An object key as the json module writes it (str, int, float, bool or None)."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return _ENCODER.encode(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _parsed(text: str) -> Any:
    # Only a number with an exponent or hundreds of digits can pass a float's range; other
    # texts (most hold an "e" somewhere, in true, false or a string) take the same parser,
    # which calls back only for numbers with a fraction or exponent.
    exact = "e" in text or "E" in text or _LONG_DIGITS.search(text) is not None
    try:
        value, end = (_scan_exact if exact else _scan)(text, 0)
    except StopIteration:
        end = -1
    if end == len(text):
        return value
    # Not one bare value (whitespace, nothing, or more after it): json.loads decides,
    # with its own errors.
    return json.loads(text, parse_float=_exact_float if exact else None)
