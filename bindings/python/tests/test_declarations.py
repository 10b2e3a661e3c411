"""The _native table must declare exactly the functions of include/mnemo.h, with the
same argument count and the ctypes types the C types map to."""

from __future__ import annotations

import re

from conftest import REPO_DIR

from mnemo import _native

HEADER = REPO_DIR / "include" / "mnemo.h"

# A declaration starts at column 0 with an optional must-use marker and a return type,
# then the function name and its opening parenthesis.
_DECL = re.compile(
    r"^(?:MNEMO_MUST_USE\s+)?"
    r"(?P<ret>(?:const\s+)?(?:struct\s+)?\w+(?:\s*\*)*)\s*"
    r"\b(?P<name>mnemo_\w+)\s*\(",
    re.MULTILINE,
)


def _split_args(text: str, open_paren: int) -> tuple[list[str], int]:
    """The top-level comma-separated parameters after `open_paren`, and the end index."""
    depth, start, args = 0, open_paren + 1, []
    for i in range(open_paren, len(text)):
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(text[start:i])
                return [a.strip() for a in args if a.strip()], i
        elif c == "," and depth == 1:
            args.append(text[start:i])
            start = i + 1
    raise AssertionError("unbalanced parentheses in the header")


def _param_type(param: str) -> str:
    """`const char *url` -> `const char *`; `void` -> `void`."""
    m = re.match(r"^(?P<type>.*?[\s*])(?P<name>\w+)$", param.strip())
    return param.strip() if m is None else m.group("type").strip()


def parse_header() -> dict[str, tuple[str, list[str]]]:
    """name -> (C return type, [C parameter types]) for every function in the header."""
    text = HEADER.read_text(encoding="utf-8")
    # Drop comments so that prose mentioning mnemo_x( is never taken for a declaration.
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"//[^\n]*", "", text)
    found: dict[str, tuple[str, list[str]]] = {}
    for m in _DECL.finditer(text):
        if m.group("ret").split()[0] in ("typedef", "return", "define"):
            continue
        args, _ = _split_args(text, m.end() - 1)
        if args == ["void"]:
            args = []
        assert m.group("name") not in found, f"{m.group('name')} declared twice"
        found[m.group("name")] = (m.group("ret"), [_param_type(a) for a in args])
    return found


def test_header_parses() -> None:
    decls = parse_header()
    # Sanity: a broken regex must not make the comparisons below pass vacuously.
    assert len(decls) >= 20
    assert decls["mnemo_version"] == ("const char *", [])
    assert decls["mnemo_db_get"][1][-1].replace(" ", "") == "char**"


def test_every_header_function_is_declared() -> None:
    missing = sorted(set(parse_header()) - set(_native.SIGNATURES))
    assert not missing, f"add to _native.SIGNATURES: {missing}"


def test_every_declared_function_is_in_the_header() -> None:
    extra = sorted(set(_native.SIGNATURES) - set(parse_header()))
    assert not extra, f"not in include/mnemo.h: {extra}"


def test_signatures_match_the_header() -> None:
    for name, (c_ret, c_args) in parse_header().items():
        restype, argtypes = _native.SIGNATURES[name]
        assert len(argtypes) == len(c_args), f"{name}: {len(c_args)} parameters in the header"
        assert restype is _native.ctypes_for(c_ret), f"{name}: return type {c_ret}"
        for i, c_arg in enumerate(c_args):
            try:
                expected = _native.ctypes_for(c_arg)
            except KeyError:
                continue  # e.g. a callback type: only the count is checked
            assert argtypes[i] is expected, f"{name}: parameter {i} is {c_arg}"


def test_loaded_functions_carry_the_table() -> None:
    for name, (restype, argtypes) in _native.SIGNATURES.items():
        fn = getattr(_native.lib, name)
        assert fn.restype is restype
        assert list(fn.argtypes) == list(argtypes)


_TYPEDEF = re.compile(r"typedef\s+(?P<ret>[\w\s*]+?)\s*\(\s*\*\s*(?P<name>mnemo_\w+)\s*\)\s*\(")


def test_callback_types_match_the_header_typedefs() -> None:
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(encoding="utf-8"), flags=re.DOTALL)
    typedefs = {}
    for m in _TYPEDEF.finditer(text):
        args, _ = _split_args(text, m.end() - 1)
        typedefs[m.group("name")] = (m.group("ret"), [_param_type(a) for a in args])
    assert set(typedefs) == {"mnemo_change_cb", "mnemo_destroy_cb"}
    for name, (c_ret, c_args) in typedefs.items():
        cfunctype = _native.ctypes_for(name)
        assert cfunctype._restype_ is _native.ctypes_for(c_ret), name
        assert list(cfunctype._argtypes_) == [_native.ctypes_for(a) for a in c_args], name
